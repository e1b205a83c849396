"""`workbench predict` and `workbench serve`: using an exported model from the command line.

    workbench predict EXPORT_DIR INPUT [-o OUT.tsv] [--backend onnx|torch] [--batch-size N]
    workbench serve EXPORT_DIR [--port 8000] [--host 127.0.0.1] [--api-key KEY]

``predict`` streams INPUT (a TSV/CSV file, a CoNLL or plain-text file for tagging, a folder of images)
into a TSV (for a multi-label model: a ``labels`` column, the decided labels joined by the export's
separator, and the ``p_<label>`` scores); bad rows are reported on stderr by line or path and skipped;
the last stdout line is a JSON summary. With a text-generation export INPUT holds prompts (JSON Lines or a
JSON list of records in a training format's user side: ``messages``, ``conversations``, ``prompt``,
``instruction``/``input``; or a text file, one prompt a line), answered into JSON Lines: each record with
the model's ``output``. Exit status as for ``train``: 0 done (even with skipped rows),
2 bad input, 3 the output could not be written, 130 interrupted (nothing is left behind). ``serve``
answers POST /predict, or for a text-generation export the OpenAI-compatible /v1/chat/completions and
/v1/completions (streamed on request; serve_openai.py).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

from .progress import add_quiet_flag


def add_commands(sub) -> None:
    p = sub.add_parser("predict", help="label a file or a folder of images with an exported model",
                       description="Predict every row of INPUT (a .tsv/.csv file; a CoNLL or plain-text file, one "
                                   "sentence a line, for tagging; a folder of images, searched recursively) with "
                                   "the model in EXPORT_DIR, into a TSV. A text-generation model answers prompts "
                                   "instead: JSON Lines records with 'messages', 'prompt' or 'instruction' (and "
                                   "'input'), or a text file with one prompt a line, into JSON Lines (each record "
                                   "with its 'output').")
    p.add_argument("export_dir", metavar="EXPORT_DIR", help="RUN/model, or a folder written by --export or the Export page")
    p.add_argument("input", metavar="INPUT", help="the file or folder to predict")
    p.add_argument("-o", "--output", help="the TSV to write (default: INPUT's name + .predictions.tsv, beside it; "
                   ".predictions.jsonl for text generation)")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    p.add_argument("--backend", choices=("auto", "onnx", "torch"), default="auto",
                   help="ONNX Runtime (model.onnx) or PyTorch; default auto: ONNX when the export has it")
    p.add_argument("--int8", action="store_true", help="use the int8 model (model.int8.onnx, see train --quantize)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="--backend torch: bf16 autocast where the CPU has bf16 units (AMX, AVX512-BF16) with auto, "
                        "or forced; ONNX Runtime runs fp32")
    p.add_argument("--batch-size", type=int, default=None,
                   help="rows per model call (default 32; 8 prompts for a text-generation model)")
    p.add_argument("--text-column", help="the text column (default: the one the model was trained on, or the only one)")
    p.add_argument("--text-pair-column", help="sentence pairs: the second text column (default: as in training)")
    p.add_argument("--format", choices=("auto", "conll", "conllu", "text"), default="auto",
                   help="tagging: how INPUT holds its sentences (default: detected; text = one sentence a line)")
    from .chat import add_generation_flags

    add_generation_flags(p)
    add_quiet_flag(p)

    s = sub.add_parser("serve", help="answer prediction requests over HTTP on this machine",
                       description="Serve the model in EXPORT_DIR: POST /predict with {\"inputs\": [...]} answers "
                                   "{\"predictions\": [...]}; GET /health says it is up. A text-generation model is "
                                   "served OpenAI-compatible instead (point an OpenAI client's base_url at "
                                   "http://HOST:PORT/v1): POST /v1/chat/completions with {\"messages\": [...]} and "
                                   "POST /v1/completions with {\"prompt\": \"...\"}, each streamed as server-sent "
                                   "events with \"stream\": true; GET /v1/models and GET /health; --max-inputs "
                                   "then counts messages. SIGTERM or Ctrl+C stops it after answering the requests in "
                                   "flight.")
    s.add_argument("export_dir", metavar="EXPORT_DIR")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only; "
                   "any other address, e.g. 0.0.0.0, lets other machines in, with a warning)")
    s.add_argument("--port", type=_port, default=8000, help="port, 0 to 65535 (default 8000; 0 picks a free one)")
    s.add_argument("--api-key", metavar="KEY", help="require \"Authorization: Bearer KEY\" on every request but GET "
                   "/health (which then answers without details); default: the WORKBENCH_API_KEY environment "
                   "variable, which keeps the key off the command line")
    s.add_argument("--backend", choices=("auto", "onnx", "torch"), default="auto",
                   help="ONNX Runtime (model.onnx) or PyTorch; default auto: ONNX when the export has it (a "
                        "text-generation model always runs in PyTorch)")
    s.add_argument("--int8", action="store_true", help="serve model.int8.onnx")
    s.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="--backend torch: bf16 autocast where the CPU has bf16 units (auto), or forced")
    s.add_argument("--max-inputs", type=int, default=256, help="most inputs in one request, or messages in one "
                   "chat for a text-generation model (default 256)")
    s.add_argument("--max-bytes", type=int, default=10 * 1024 * 1024, help="largest request body (default 10 MiB)")


def cmd_predict(args: argparse.Namespace) -> int:
    from ..core.predict.batch import predict_file
    from ..core.predict.predictor import Predictor
    from .exits import EXIT_OK, UsageError
    from .interrupt import cancelled_by_ctrl_c
    from .progress import TerminalProgress

    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError("workbench predict: --batch-size must be at least 1")
    from ..core.predict.generation import is_generation_export

    if is_generation_export(args.export_dir):
        return cmd_predict_generation(args)
    if args.batch_size is None:
        args.batch_size = 32
    # Before the model is loaded: a folder that is no export, a missing input or a refused output is
    # said at once (Predictor and predict_file check them again, for the app).
    from pathlib import Path

    from ..core.paths import check_data_path
    from ..core.predict.batch import check_output, default_output
    from ..core.predict.predictor import read_meta

    read_meta(Path(args.export_dir).expanduser().resolve())
    source = Path(args.input).expanduser()
    check_data_path(source, folder_ok=True)
    check_output(args.output or default_output(source), source, args.overwrite, args.export_dir)
    progress = TerminalProgress(enabled=not args.quiet)

    def report(problem) -> None:  # a line of the input file, or an image's path
        where = f"{args.input}, line {problem.where}" if isinstance(problem.where, int) else problem.where
        progress.write(f"skipped: {where}: {problem.message}")

    with cancelled_by_ctrl_c(progress, "workbench: cancelled; no output was written.") as cancel:
        predictor = Predictor(args.export_dir, backend=args.backend, int8=args.int8, precision=args.precision)
        summary = predict_file(predictor, args.input, args.output, overwrite=args.overwrite,
                               batch_size=args.batch_size, fmt=args.format, text_column=args.text_column,
                               pair_column=args.text_pair_column, callbacks=progress, cancel=cancel, on_problem=report)
    if summary.skipped:
        print(f"workbench: {summary.skipped:,} bad row(s) skipped (listed above); {summary.rows:,} predicted",
              file=sys.stderr)
    if summary.text_column is not None:  # which column was read: the JSON line's text_column says it too
        pair = f", second text from {summary.text_pair_column!r}" if summary.text_pair_column else ""
        print(f"text read from column {summary.text_column!r} ({summary.text_column_reason}){pair}"
              + (f"; file read as {summary.encoding}" if summary.encoding != "utf-8" else ""), file=sys.stderr)
    print(f"predictions: {summary.output}", file=sys.stderr)
    print(json.dumps(summary.to_dict()))
    return EXIT_OK


def cmd_predict_generation(args: argparse.Namespace) -> int:
    """`workbench predict` with a text-generation export: prompts (JSON Lines records or text lines) answered
    into JSON Lines."""
    from pathlib import Path

    from ..core.paths import check_data_path
    from ..core.predict.batch import check_output
    from ..core.predict.generation import (
        GenerationPredictor,
        default_generation_output,
        predict_generation_file,
        read_generation_meta,
    )
    from .chat import settings_from_args
    from .exits import EXIT_OK, UsageError
    from .interrupt import cancelled_by_ctrl_c
    from .progress import TerminalProgress

    unused = [flag for flag, given in (("--backend onnx", args.backend == "onnx"), ("--int8", args.int8),
                                       ("--precision", args.precision != "auto"), ("--text-column", args.text_column),
                                       ("--text-pair-column", args.text_pair_column), ("--format", args.format != "auto"))
              if given]
    if unused:
        raise UsageError(f"workbench predict: {', '.join(unused)} do(es) not apply to a text-generation model (it runs "
                         "in PyTorch, fp32 on the CPU and bf16 on a GPU, and reads records by their keys)")
    folder = Path(args.export_dir).expanduser().resolve()
    settings = settings_from_args(read_generation_meta(folder), folder, args)
    source = Path(args.input).expanduser()
    check_data_path(source)
    check_output(args.output or default_generation_output(source), source, args.overwrite, folder)
    progress = TerminalProgress(enabled=not args.quiet)

    def report(problem) -> None:
        progress.write(f"skipped: {args.input}, line {problem.where}: {problem.message}")

    with cancelled_by_ctrl_c(progress, "workbench: cancelled; no output was written.") as cancel:
        predictor = GenerationPredictor(folder)
        summary = predict_generation_file(predictor, source, args.output, overwrite=args.overwrite,
                                          batch_size=args.batch_size or 8, settings=settings, callbacks=progress,
                                          cancel=cancel, on_problem=report)
    if summary.skipped:
        print(f"workbench: {summary.skipped:,} bad record(s) skipped (listed above); {summary.rows:,} answered",
              file=sys.stderr)
    print(f"predictions: {summary.output}", file=sys.stderr)
    print(json.dumps(summary.to_dict()))
    return EXIT_OK


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number; give 0 to 65535") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number; give 0 to 65535 (0 picks a free one)")
    return port


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from .exits import EXIT_OK, UsageError
    from .serve import API_KEY_ENV, Terminated, check_api_key, on_sigterm, serve

    if args.max_inputs < 1 or args.max_bytes < 1024:
        raise UsageError("workbench serve: --max-inputs must be at least 1 and --max-bytes at least 1024")
    api_key = args.api_key if args.api_key is not None else (os.environ.get(API_KEY_ENV) or None)
    if api_key is not None and check_api_key(api_key):
        source = "--api-key" if args.api_key is not None else API_KEY_ENV
        raise UsageError(f"workbench serve: {source}: {check_api_key(api_key)}")
    # SIGTERM (kill, systemd, docker stop) stops the server gracefully: uvicorn answers the requests in
    # flight, then calls this handler, which ends the command with status 0 (also while the model loads).
    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, on_sigterm)
        serve(args.export_dir, host=args.host, port=args.port, backend=args.backend, int8=args.int8,
              max_inputs=args.max_inputs, max_bytes=args.max_bytes, precision=args.precision, api_key=api_key)
    except Terminated:
        print("workbench: stopped (SIGTERM)", file=sys.stderr, flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return EXIT_OK
