"""`workbench chat EXPORT_DIR`: a conversation with a text-generation export in the terminal.

    workbench chat RUN/model [--system TEXT] [--temperature T] [--top-p P] [--max-new-tokens N] [--seed S]

Each line read is a user turn; the answer is streamed to stdout as it is generated, and the
conversation goes on from it (multi-turn). ``/reset`` starts a new conversation (the system prompt
stays), ``/exit`` or end of input (Ctrl+D) quits. Ctrl+C while an answer is written stops that answer
(what was written stays in the conversation) and the chat goes on. When the conversation outgrows the
model's context, its oldest turns are left out (said on stderr). Messages for people go to stderr, so
stdout holds only the answers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

COMMANDS = "/reset starts over, /exit or Ctrl+D quits, Ctrl+C stops an answer"


def add_parser(sub) -> None:
    c = sub.add_parser("chat", help="talk with a text-generation model in the terminal",
                       description="Chat with the text-generation model in EXPORT_DIR: type a message, read the "
                                   "answer as it is written. " + COMMANDS + ".")
    c.add_argument("export_dir", metavar="EXPORT_DIR", help="RUN/model, or a folder written by --export or the "
                   "Export page, of a text-generation run")
    c.add_argument("--system", metavar="TEXT", help="a system prompt before the conversation (kept by /reset)")
    add_generation_flags(c)
    c.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda, cuda:N or mps")


def add_generation_flags(parser) -> None:
    """The decoding flags of `predict` and `chat` (defaults: the export's generation settings)."""
    parser.add_argument("--max-new-tokens", type=int, metavar="N", help="text generation: the longest answer in "
                        "tokens (default: the export's, 128 when it gives none)")
    parser.add_argument("--temperature", type=float, metavar="T", help="text generation: 0 picks the most likely "
                        "token each step (greedy, repeatable); above 0 samples, more varied as it grows (default: "
                        "the export's, 0)")
    parser.add_argument("--top-p", type=float, metavar="P", help="text generation, sampling: draw from the most "
                        "likely tokens whose probabilities add up to P (default: the export's, 1)")
    parser.add_argument("--seed", type=int, help="text generation, sampling: the same seed gives the same answers "
                        "(default: the export's, 0)")


def settings_from_args(meta: dict, folder: Path, args: argparse.Namespace):
    """The export's generation settings with the flags given on top; InputError for a value out of range."""
    from ..core.export.target import MARKER
    from ..core.tasks.generation.generate import GenerationSettings

    return GenerationSettings.from_dict(meta.get("generation"), path=folder / MARKER).updated(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed)


def cmd_chat(args: argparse.Namespace, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    from ..core.predict.generation import GenerationPredictor, read_generation_meta
    from .exits import EXIT_OK

    folder = Path(args.export_dir).expanduser().resolve()
    settings = settings_from_args(read_generation_meta(folder), folder, args)  # before the slow load
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    interactive = stdin.isatty()
    print(f"Loading {folder} ...", file=sys.stderr, flush=True)
    predictor = GenerationPredictor(folder, device=args.device)
    print(f"Chatting with {folder.name} on {predictor.device} ({COMMANDS}).", file=sys.stderr, flush=True)
    system = [{"role": "system", "content": args.system}] if args.system else []
    history: list[dict[str, str]] = list(system)
    while True:
        line = _read_line(stdin, interactive)
        if line is None:
            break
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            break
        if text == "/reset":
            history = list(system)
            print("(a new conversation)", file=sys.stderr, flush=True)
            continue
        if text.startswith("/") and " " not in text:
            print(f"unknown command {text}; {COMMANDS}", file=sys.stderr, flush=True)
            continue
        history = _answer(predictor, history + [{"role": "user", "content": line.rstrip("\r\n")}], settings, stdout)
    if interactive:
        print(file=sys.stderr)
    return EXIT_OK


def _read_line(stdin: TextIO, interactive: bool) -> str | None:
    """The next line, None at the end of input. At a terminal, Ctrl+C on the prompt line says how to quit."""
    while True:
        try:
            if interactive and stdin is sys.stdin:
                return input("you> ")  # line editing, and the prompt
            line = stdin.readline()
            return line if line else None
        except EOFError:
            return None
        except KeyboardInterrupt:
            print(f"\n({COMMANDS})", file=sys.stderr, flush=True)


def _answer(predictor, messages: list[dict[str, str]], settings, stdout: TextIO) -> list[dict[str, str]]:
    """Stream the answer to ``messages`` to ``stdout``; the conversation with it (its oldest turns left out
    when they no longer fit the context). A problem is said and the unanswered turn dropped."""
    from ..core.errors import InputError

    try:
        fitted = predictor.fit(messages, settings)
    except InputError as e:
        print(f"workbench: {e}", file=sys.stderr, flush=True)
        return messages[:-1]
    if len(fitted) < len(messages):
        print("(the oldest turns no longer fit the model's context and are left out)", file=sys.stderr, flush=True)
    pieces: list[str] = []
    stream = predictor.stream_chat(fitted, settings)
    try:
        for piece in stream:
            stdout.write(piece)
            stdout.flush()
            pieces.append(piece)  # what was shown is what the conversation keeps
    except KeyboardInterrupt:
        print("\n(stopped)", file=sys.stderr, flush=True)
    finally:
        stream.close()  # stops the generation thread if the answer was cut short
    stdout.write("\n")
    stdout.flush()
    answer = "".join(pieces)
    if not answer:  # nothing came: the turn is dropped rather than kept with an empty answer
        return fitted[:-1]
    return fitted + [{"role": "assistant", "content": answer}]
