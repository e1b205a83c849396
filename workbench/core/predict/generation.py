"""A loaded text-generation export that answers: chat, plain completion, streamed or not, and batches.

    p = GenerationPredictor("RUN/model")                       # CUDA in bf16 when there is a GPU, else CPU fp32
    p.chat([{"role": "user", "content": "Capital of France?"}])   # "Paris."
    for piece in p.stream_chat(messages): print(piece, end="")
    p.complete("Once upon a time")                             # raw continuation, no chat template

An export (``workbench.json`` with task ``text-generation``) is a Hugging Face folder that
``pipeline("text-generation")`` loads, with its chat template; its ``generation`` settings are the
defaults here, and every call may pass others. One generation runs at a time (calls from other
threads wait): the tokenizer is not for two threads at once, and a second generation would only
halve the speed of the first.

Also the reading of prompt files for ``workbench predict`` (``read_prompt_records``) and the batch job
(``predict_generation_file``): JSON Lines (or a JSON list) of records in any training format's user
side, or a text file with one prompt a line, answered into JSON Lines.
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Generator, Iterator

from ..atomic import move_into_place, remove, temp_beside
from ..cancel import NEVER, CancelToken
from ..errors import InputError, write_failure
from ..events import Callbacks, Progress
from ..export.target import MARKER, missing_tokenizer
from ..tasks.generation.generate import (
    TASK,
    GenerationSettings,
    check_prompt_length,
    context_length,
    generate_texts,
    stream_text,
)
from ..tasks.generation.template import prompt_ids
from .inputs import Problem
from .loading import error_line
from .predictor import _read_json

PHASE = "generating"
CHUNK_RECORDS = 256  # records read, answered and written at a time: memory stays flat, batches sort within it
MAX_REPORTED = 1000
ROLES = ("system", "user", "assistant")


def is_generation_export(folder: str | Path) -> bool:
    """Whether ``folder``'s workbench.json names the text-generation task (False for anything unreadable:
    the ordinary checks then say what is wrong)."""
    try:
        meta = json.loads((Path(folder).expanduser() / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("task") == TASK


def read_generation_meta(folder: Path) -> dict[str, Any]:
    """workbench.json of a text-generation export; InputError naming the folder or file for anything else."""
    again = "give RUN/model or a folder written by --export or the Export page"
    if not folder.exists():
        raise InputError("model folder not found", path=folder)
    if not folder.is_dir():
        raise InputError(f"is a file, not a model folder; {again}", path=folder)
    if not (folder / MARKER).exists() or not (folder / "config.json").exists():
        raise InputError(f"is not a Workbench export (no workbench.json and config.json); {again}", path=folder)
    meta = _read_json(folder / MARKER, "what Workbench knows about the model: task, generation settings")
    if meta.get("task") != TASK:
        raise InputError(f"was exported for task {meta.get('task')!r}, not {TASK}", path=folder)
    reason = missing_tokenizer(folder, TASK)
    if reason:
        raise InputError(reason, path=folder)
    return meta


@contextmanager
def quiet_loading() -> Iterator[None]:
    """transformers' "Loading weights" progress bars off while a model loads: `predict -q`, `chat` and
    `serve` keep stderr for their own messages (and the app has no terminal for them)."""
    from transformers.utils import logging

    was = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:  # whoever turned them off for good (the app, a run) keeps them off
            logging.enable_progress_bar()


def _device_and_dtype(requested: str):
    """CUDA in bf16 where the GPU has it (fp32 otherwise); anything else fp32, as the report measured."""
    import torch

    from ..device import resolve_device

    device = resolve_device(requested)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return device, torch.bfloat16
    return device, torch.float32


class GenerationPredictor:
    def __init__(self, export_dir: str | Path, device: str = "auto") -> None:
        folder = Path(export_dir).expanduser().resolve()
        self.folder = folder
        self.meta = read_generation_meta(folder)
        self.task = TASK
        self.settings = GenerationSettings.from_dict(self.meta.get("generation"), path=folder / MARKER)
        self.device, self.dtype = _device_and_dtype(device)
        self._lock = threading.Lock()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
        except (MemoryError, ImportError):
            raise
        except Exception as e:  # a damaged tokenizer.json or tokenizer_config.json
            raise InputError(f"its tokenizer cannot be loaded ({error_line(e)}); export the model again",
                             path=folder) from None
        try:
            with quiet_loading():
                model = AutoModelForCausalLM.from_pretrained(folder, dtype=self.dtype)
        except (MemoryError, ImportError):
            raise
        except Exception as e:  # a damaged model.safetensors or config.json, missing weights
            raise InputError(f"its model cannot be loaded ({error_line(e)}); export the model again",
                             path=folder) from None
        self.model = model.to(self.device).eval()

    @property
    def context_length(self) -> int | None:
        """How many tokens the model reads, prompt and answer together (None: its config does not say)."""
        return context_length(self.model)

    # ---- prompts --------------------------------------------------------------------------------
    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """The conversation's tokens up to the answer, by the export's chat template (a trailing assistant
        turn is left out: it is the answer)."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise InputError("has no chat template (tokenizer_config.json or chat_template.jinja), so it cannot "
                             "chat; use complete for plain continuation, or export the model again", path=self.folder)
        with self._lock:
            return prompt_ids(self.tokenizer, messages)

    def text_ids(self, text: str) -> list[int]:
        """Plain text's tokens, as the tokenizer encodes text (with a bos where the model expects one)."""
        with self._lock:
            return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def count_tokens(self, text: str) -> int:
        with self._lock:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_problem(self, ids: list[int], settings: GenerationSettings | None = None) -> str | None:
        """Why a prompt cannot be answered (empty, or as long as the model's context), or None."""
        return check_prompt_length(self.model, len(ids), settings or self.settings)

    def fit(self, messages: list[dict[str, str]], settings: GenerationSettings | None = None) -> list[dict[str, str]]:
        """``messages`` less their oldest turns (system turns kept) until the prompt fits the model's
        context: for a long chat. InputError when even the last turn alone does not fit."""
        kept = list(messages)
        while True:
            problem = self.prompt_problem(self.prompt_ids(kept), settings)
            if problem is None:
                return kept
            first = next((i for i, m in enumerate(kept) if m.get("role") != "system"), None)
            rest = [m for m in kept if m.get("role") != "system"]
            if first is None or len(rest) <= 1:
                raise InputError(problem)
            del kept[first]

    # ---- answers --------------------------------------------------------------------------------
    def _settings(self, settings: GenerationSettings | None) -> GenerationSettings:
        return self.settings if settings is None else settings

    def generate_ids(self, prompts: list[list[int]], settings: GenerationSettings | None = None, batch_size: int = 8,
                     cancel: CancelToken | None = None,
                     progress: Callable[[int, int], None] | None = None) -> list[str]:
        with self._lock:
            return generate_texts(self.model, self.tokenizer, prompts, self._settings(settings), batch_size,
                                  cancel, progress)

    def stream_ids(self, prompt: list[int], settings: GenerationSettings | None = None,
                   stop: CancelToken | threading.Event | None = None) -> Generator[str, None, None]:
        with self._lock:  # held until the answer ends or the caller closes the iterator
            yield from stream_text(self.model, self.tokenizer, prompt, self._settings(settings), stop)

    def chat(self, messages: list[dict[str, str]], settings: GenerationSettings | None = None) -> str:
        """The next assistant turn of the conversation."""
        return self.generate_ids([self.prompt_ids(messages)], settings)[0]

    def stream_chat(self, messages: list[dict[str, str]], settings: GenerationSettings | None = None,
                    stop: CancelToken | threading.Event | None = None) -> Generator[str, None, None]:
        """The next assistant turn, piece by piece; closing the iterator (or setting ``stop``) ends it."""
        return self.stream_ids(self.prompt_ids(messages), settings, stop)

    def complete(self, prompt: str, settings: GenerationSettings | None = None) -> str:
        """The continuation of plain text (no chat template)."""
        return self.generate_ids([self.text_ids(prompt)], settings)[0]

    def stream_complete(self, prompt: str, settings: GenerationSettings | None = None,
                        stop: CancelToken | threading.Event | None = None) -> Generator[str, None, None]:
        return self.stream_ids(self.text_ids(prompt), settings, stop)

    def generate_batch(self, conversations: list[list[dict[str, str]]], settings: GenerationSettings | None = None,
                       batch_size: int = 8, cancel: CancelToken | None = None,
                       progress: Callable[[int, int], None] | None = None) -> list[str]:
        """The next assistant turn of each conversation, in order, generated in batches."""
        return self.generate_ids([self.prompt_ids(m) for m in conversations], settings, batch_size, cancel, progress)

    def describe(self) -> dict[str, Any]:
        return {"task": self.task, "backend": "torch", "device": str(self.device),
                "dtype": str(self.dtype).replace("torch.", ""), "context_length": self.context_length,
                "generation": self.settings.to_dict(),
                "chat_template": bool(getattr(self.tokenizer, "chat_template", None))}


# ---- prompt files ---------------------------------------------------------------------------------
@dataclass
class PromptRecord:
    line: int  # the physical line the record starts on
    record: dict[str, Any]  # as read; a text file's line becomes {"prompt": line}
    messages: list[dict[str, str]]  # the conversation to answer: it ends with a user turn
    format: str  # "messages", "sharegpt", "prompt", "alpaca" or "text"
    reference: str | None = None  # an answer the record held (a last assistant turn, Alpaca's output)


class _Bad(ValueError):
    """A record's problem, said with its line by the reader."""


def _text(record: dict[str, Any], key: str, optional: bool = False) -> str:
    value = record.get(key)
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise _Bad(f"'{key}' is {'missing' if value is None else type(value).__name__}, not a string")
    return value


def _turns(record: dict[str, Any], key: str) -> list[dict[str, str]]:
    """OpenAI ``messages`` (role/content) or ShareGPT ``conversations`` (from/value) as messages."""
    from ..tasks.generation.conversations import SHAREGPT_ROLES

    items = record[key]
    if not isinstance(items, list) or not items:
        raise _Bad(f"'{key}' is not a list of turns" if not isinstance(items, list) else f"'{key}' is empty")
    out = []
    for i, item in enumerate(items, 1):
        role_key, content_key = ("from", "value") if isinstance(item, dict) and "from" in item else ("role", "content")
        if not isinstance(item, dict) or not isinstance(item.get(content_key), str):
            raise _Bad(f"turn {i} of '{key}' is not an object with a {role_key} and a text {content_key}")
        raw = item.get(role_key)
        role = SHAREGPT_ROLES.get(raw.strip().lower()) if isinstance(raw, str) else None
        if role is None:
            raise _Bad(f"turn {i} of '{key}' has the unknown role {raw!r}; the roles are {', '.join(ROLES)}")
        out.append({"role": role, "content": item[content_key]})
    return out


def record_messages(record: Any) -> tuple[str, list[dict[str, str]], str | None]:
    """(format, conversation to answer, reference) of a record in any training format's user side; raises
    ValueError naming its problem. A last assistant turn (or Alpaca's ``output``) is the reference: the
    model answers the turns before it."""
    if not isinstance(record, dict):
        raise _Bad(f"is a JSON {type(record).__name__}, not an object")
    reference: str | None = None
    if "messages" in record or "conversations" in record:
        fmt = "messages" if "messages" in record else "sharegpt"
        messages = _turns(record, fmt if fmt == "messages" else "conversations")
        if messages[-1]["role"] == "assistant":
            reference = messages.pop()["content"]
    elif "prompt" in record:
        fmt, messages = "prompt", [{"role": "user", "content": _text(record, "prompt")}]
    elif "instruction" in record:
        instruction, extra = _text(record, "instruction"), _text(record, "input", optional=True)
        fmt = "alpaca"
        messages = [{"role": "user", "content": f"{instruction}\n\n{extra}" if extra.strip() else instruction}]
        reference = _text(record, "output") if isinstance(record.get("output"), str) else None
    else:
        keys = ", ".join(f"'{k}'" for k in record) or "none"
        raise _Bad(f"has none of 'messages', 'conversations', 'prompt' or 'instruction' (its keys: {keys})")
    system = _text(record, "system", optional=True) if fmt in ("prompt", "alpaca") else ""
    if system:
        messages.insert(0, {"role": "system", "content": system})
    if not messages or messages[-1]["role"] != "user":
        raise _Bad("does not end with a user turn (or a user turn and its answer): there is nothing to answer")
    if not messages[-1]["content"].strip():
        raise _Bad("its last user turn is empty")
    return fmt, messages, reference


def _json_items(text: str) -> Iterator[tuple[int, Any] | Problem]:
    """(line, value) of each item of a JSON list, or one Problem where the list stops being JSON."""
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        line = text.count("\n", 0, pos) + 1
        if pos >= len(text):
            yield Problem(line, "the JSON list is not closed with ]")
            return
        if text[pos] == "]":
            return
        try:
            value, end = decoder.raw_decode(text, pos)
        except ValueError as e:
            yield Problem(line, f"is not valid JSON ({e}); the items after it are not read")
            return
        yield line, value
        pos = end


def _lines(raw: bytes) -> Iterator[tuple[int, str] | Problem]:
    """(line, text) of each line that is not blank; a line that is not UTF-8 is a Problem."""
    for n, line in enumerate(raw.splitlines(), 1):
        try:
            text = line.decode("utf-8-sig" if n == 1 else "utf-8")
        except UnicodeDecodeError:
            yield Problem(n, "is not valid UTF-8 text")
            continue
        if text.strip():
            yield n, text


def _entries(path: Path) -> Iterator[tuple[int, Any, bool] | Problem]:
    """(line, record, from a text line) of each item of the file, or Problems: JSON Lines, a JSON list or
    one JSON object (by content, whatever the name), or a text file's lines as {"prompt": line}."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot be read: {e.strerror or e}", path=path) from None
    head = raw.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if path.suffix.lower() == ".txt" or head not in (b"{", b"["):
        for entry in _lines(raw):
            yield entry if isinstance(entry, Problem) else (entry[0], {"prompt": entry[1].strip()}, True)
        return
    if head == b"[" or path.suffix.lower() == ".json":
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InputError("is not valid UTF-8 text", path=path) from None
        if head == b"[":
            for item in _json_items(text):
                yield item if isinstance(item, Problem) else (*item, False)
            return
        try:  # one object written over several lines
            yield 1, json.loads(text), False
            return
        except ValueError:
            pass  # JSON Lines under a .json name
    for entry in _lines(raw):
        if isinstance(entry, Problem):
            yield entry
            continue
        try:
            yield entry[0], json.loads(entry[1]), False
        except ValueError as e:
            yield Problem(entry[0], f"is not valid JSON ({e})")


def read_prompt_records(path: str | Path) -> Iterator[PromptRecord | Problem]:
    """The records of a prompt file, in order, with a Problem (line, what is wrong) for each bad one."""
    for entry in _entries(Path(path)):
        if isinstance(entry, Problem):
            yield entry
            continue
        line, record, from_text = entry
        try:
            fmt, messages, reference = record_messages(record)
        except ValueError as e:
            yield Problem(line, str(e))
            continue
        yield PromptRecord(line, record, messages, "text" if from_text else fmt, reference)


def answered(item: PromptRecord, output: str) -> dict[str, Any]:
    """The output record: the input record and the model's ``output``; a chat record's turns end with the
    answer; a reference the record held under ``output`` or as its last turn moves to ``reference``."""
    out = dict(item.record)
    if item.format in ("messages", "sharegpt"):
        key = "messages" if item.format == "messages" else "conversations"
        turns = list(out[key][:-1] if item.reference is not None else out[key])
        turns.append({"role": "assistant", "content": output} if item.format == "messages"
                     else {"from": "gpt", "value": output})
        out[key] = turns
    if item.reference is not None:
        out["reference"] = item.reference
    out["output"] = output
    return out


# ---- the batch job ------------------------------------------------------------------------------------
@dataclass
class GenerationSummary:
    input: str
    output: str
    task: str
    device: str
    generation: dict[str, Any]  # the settings the answers were generated with
    rows: int = 0  # answered and written
    skipped: int = 0  # bad records, reported and left out
    seconds: float = 0.0
    problems: list[dict[str, Any]] = field(default_factory=list)  # the first MAX_REPORTED: {"where", "problem"}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rows_per_second"] = round(self.rows / self.seconds, 3) if self.seconds else None
        d["seconds"] = round(self.seconds, 3)
        d.pop("problems")
        return d


def default_generation_output(source: str | Path) -> Path:
    """Beside the input: ``prompts.jsonl`` -> ``prompts.predictions.jsonl``."""
    p = Path(source).expanduser().resolve()
    return p.parent / f"{p.stem}.predictions.jsonl"


def _report(problem: Problem, summary: GenerationSummary, on_problem: Callable[[Problem], None] | None) -> None:
    summary.skipped += 1
    if len(summary.problems) < MAX_REPORTED:
        summary.problems.append({"where": problem.where, "problem": problem.message})
    if on_problem is not None:
        on_problem(problem)


def predict_generation_file(predictor: GenerationPredictor, source: str | Path, output: str | Path | None = None, *,
                            overwrite: bool = False, batch_size: int = 8, settings: GenerationSettings | None = None,
                            callbacks: Callbacks | None = None, cancel: CancelToken = NEVER,
                            on_problem: Callable[[Problem], None] | None = None,
                            chunk_records: int = CHUNK_RECORDS) -> GenerationSummary:
    """Answer every record of ``source`` into the JSON Lines file ``output`` (default: beside the input), in
    input order: each record with the model's ``output`` (``answered``). Bad records are reported with
    their line and skipped. The output appears only when complete: written under a temporary name and
    moved into place, so an interruption or failure leaves nothing half-written."""
    from ..paths import check_data_path
    from .batch import check_output

    callbacks = callbacks or Callbacks()
    src = check_data_path(Path(source).expanduser().resolve())
    out = check_output(output or default_generation_output(src), src, overwrite, predictor.folder)
    settings = settings or predictor.settings
    settings.check()
    summary = GenerationSummary(str(src), str(out), predictor.task, str(predictor.device), settings.to_dict())
    items: list[PromptRecord] = []
    for entry in read_prompt_records(src):
        cancel.raise_if_cancelled()
        if isinstance(entry, Problem):
            _report(entry, summary, on_problem)
        else:
            items.append(entry)
    if not items:
        _nothing_to_answer(src, summary)
    start = time.perf_counter()
    tmp = temp_beside(out)
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            for first in range(0, len(items), chunk_records):
                def progress(done: int, total: int, first: int = first) -> None:
                    callbacks.on_event(Progress(PHASE, min(first + done, len(items)), len(items)))

                chunk = _answerable(predictor, items[first:first + chunk_records], settings, summary, on_problem)
                answers = predictor.generate_ids([ids for _, ids in chunk], settings, batch_size, cancel, progress)
                for (item, _), answer in zip(chunk, answers):
                    f.write(json.dumps(answered(item, answer), ensure_ascii=False) + "\n")
                summary.rows += len(chunk)
                progress(chunk_records, chunk_records)
        if summary.rows == 0:
            _nothing_to_answer(src, summary)
        cancel.raise_if_cancelled()
        move_into_place(tmp, out)
    except BaseException as e:
        remove(tmp)
        failure = write_failure(e, out, permission_too=True)
        if failure is not None:
            raise failure from e
        raise
    summary.seconds = time.perf_counter() - start
    return summary


def _answerable(predictor: GenerationPredictor, items: list[PromptRecord], settings: GenerationSettings,
                summary: GenerationSummary,
                on_problem: Callable[[Problem], None] | None) -> list[tuple[PromptRecord, list[int]]]:
    """The records with their prompt tokens; those the template refuses or the context cannot hold are
    reported and left out."""
    out = []
    for item in items:
        try:
            ids = predictor.prompt_ids(item.messages)
        except InputError as e:  # the chat template refuses the turns (order, roles)
            _report(Problem(item.line, e.problem), summary, on_problem)
            continue
        problem = predictor.prompt_problem(ids, settings)
        if problem:
            _report(Problem(item.line, problem), summary, on_problem)
            continue
        out.append((item, ids))
    return out


def _nothing_to_answer(src: Path, summary: GenerationSummary) -> None:
    if summary.skipped:
        first = summary.problems[0]
        raise InputError(f"no record could be answered: all {summary.skipped:,} were bad (first: line "
                         f"{first['where']}: {first['problem']})", path=src)
    raise InputError("holds no prompts (expected JSON Lines records with 'messages', 'prompt' or 'instruction', "
                     "or a text file with one prompt a line)", path=src)
