"""`workbench search`: find the best settings for DATA within a budget (Optuna; core/search).

    workbench search DATA --trials N [--timeout MIN] [--workers N] [--storage URL] [--name NAME]
                     [--final] [train's flags: --task, --model, --method, --lr ...]
    workbench search DATA [train's flags] --train-best     the final run of a finished search

A flag given is kept fixed in every trial; the rest of the learning rate, epochs, batch size, warm-up,
weight decay (and LoRA's rank and alpha) is searched. Run the same command again and the search goes
on where it stopped. The last stdout line is JSON. Exit status: 0 done, 2 bad input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys

from ..core.command import TRAIN_FLAGS
from .exits import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError
from .progress import add_quiet_flag
from .track import add_tracking_flags

# What config_from_args reads that a search does not offer: left at train's defaults.
_TRAIN_ONLY = dict(config=None, header=False, no_header=False, skip_bad_rows=False, group_by_length=False,
                   no_group_by_length=False, freeze_backbone=False, lora_targets=None, export_adapter=False,
                   keep_checkpoints=False, compile=False, refit=None, run_dir=None, quantize=None, overwrite=False,
                   no_base_eval=False, gradient_checkpointing=False)


def add_parsers(sub) -> None:
    s = sub.add_parser("search", help="find the best settings within a budget (hyper-parameter search, Optuna)",
                       description="Train N trials of DATA with settings chosen by Optuna's TPE sampler (learning "
                                   "rate, epochs, batch size, warm-up, weight decay; LoRA rank and alpha for "
                                   "lora/adalora), stopping bad trials at an evaluation (median pruner), choosing by "
                                   "the validation metric only. Trials are run directories under "
                                   "RUNS_HOME/searches/NAME/; the same command again goes on with the search. Flags "
                                   "of `workbench train` given here are fixed in every trial.")
    s.add_argument("data", help="training data, as for workbench train")
    s.add_argument("--trials", type=int, default=None, help="trials in all (finished ones of earlier runs of this "
                   "search count; required unless --train-best)")
    s.add_argument("--timeout", type=float, metavar="MIN", help="start no trial after MIN minutes")
    s.add_argument("--workers", type=int, default=1, help="processes trying trials at once, sharing the study "
                   "(default 1); other machines join with the same --storage")
    s.add_argument("--storage", metavar="URL", help="Optuna storage (default: sqlite:///RUNS_HOME/searches/NAME/"
                   "study.db); an RDB URL such as postgresql://... lets several machines share one study")
    s.add_argument("--name", help="the search's name (default: DATA's name, the task and the method)")
    s.add_argument("--final", action="store_true", help="then train with the best settings: the final run, "
                   "tested once on the test split and exported (as --train-best does)")
    s.add_argument("--train-best", action="store_true", help="do not search: train the final run with the best "
                   "settings of this (finished) search")
    s.add_argument("--export", dest="export_dir", help="the final run's export folder (with --final or --train-best)")
    s.add_argument("--no-preflight", action="store_true", help="start without the estimate of the search's time")
    s.add_argument("--task", default=None, help="auto or a task name (default auto)")
    for flag, (_, _, typ, help_) in TRAIN_FLAGS.items():
        s.add_argument(flag, type=typ, default=None, help=help_)
    add_tracking_flags(s, None)
    add_quiet_flag(s)
    s.add_argument("--verbose", "-v", action="store_true", help="also show the engine's log on stderr")
    s.set_defaults(**_TRAIN_ONLY)


def _fixed(args: argparse.Namespace) -> list[str]:
    """The RunConfig fields the user set: kept in every trial."""
    return [f"{section}.{field}" for flag, (section, field, _, _) in TRAIN_FLAGS.items()
            if getattr(args, flag.lstrip("-").replace("-", "_")) is not None]


def _workers(argv: list[str], n: int) -> list[subprocess.Popen]:
    """n more processes of this search, sharing its study (the preflight was said once, here)."""
    plain, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--workers":
            skip = True
        elif not a.startswith("--workers=") and a not in ("--final", "--train-best"):
            plain.append(a)
    command = [sys.executable, "-m", "workbench", *plain, "--workers", "1", "--no-preflight", "-q"]
    return [subprocess.Popen(command) for _ in range(n)]


def cmd_search(args: argparse.Namespace, argv: list[str], config) -> int:
    """``config``: the settings train's flags give (cli/main.py config_from_args), the base of every trial."""
    from ..core.cancel import CancelToken
    from ..core.errors import Cancelled
    from ..core.search.study import plan_search
    from .progress import TerminalProgress, log_to_terminal

    if args.train_best == (args.trials is not None):
        raise UsageError("workbench search: give --trials N (to search) or --train-best (to train the best settings)")
    if args.workers < 1:
        raise UsageError("workbench search: --workers must be at least 1")
    trials = 1 if args.trials is None else args.trials  # --train-best: the search's own count does not matter
    search = plan_search(config, trials, args.name, args.storage, args.timeout, _fixed(args))
    cancel = CancelToken()
    previous = signal.signal(signal.SIGINT, lambda signum, frame: cancel.cancel())
    progress = TerminalProgress(enabled=not args.quiet)
    handler = log_to_terminal(progress, args.verbose)
    try:
        if args.train_best:
            return _train_best(search, args, progress, cancel)
        return _search(search, args, argv, progress, cancel)
    except Cancelled:
        progress.close()
        print(f"workbench: search cancelled; run the same command again to go on ({search.folder})", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGINT, previous)
        import logging

        logging.getLogger("workbench").removeHandler(handler)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _search(search, args, argv, progress, cancel) -> int:
    from ..core.search.study import estimate_search, run_search

    if not args.no_preflight:
        estimate = estimate_search(search, None, cancel)
        _say(f"Search {search.name}: {estimate['text']}; folder {search.folder}")
    workers = _workers(argv, args.workers - 1) if args.workers > 1 else []

    def on_trial(t: dict, study) -> None:
        value = f"{search.metric} {t['value']:.4f}" if isinstance(t["value"], float) else ""
        if not args.quiet:
            _say(f"trial {t['number']}{' (the defaults)' if t.get('defaults') else ''}: {t['state']} {value} "
                 f"{json.dumps(t['params'])}")

    try:
        result = run_search(search, progress, cancel, on_trial=on_trial)
    finally:
        for w in workers:
            if cancel.cancelled:
                w.send_signal(signal.SIGINT)
            w.wait()
    progress.close()
    if result.best is None:
        _say("workbench: no trial finished; nothing to choose from")
        print(json.dumps({"search": result.summary()}))
        return EXIT_USAGE
    best = result.best
    if not args.quiet:
        _say(f"best: trial {best['trial']}, validation {search.metric} {best['value']:.4f}: "
             f"{json.dumps(best['params'])}"
             f"\ntrain with these settings: {best['command']}\n(or: workbench search ... --train-best)")
    summary = {"search": result.summary()}
    if args.final:
        summary["final"] = _final(search, args, progress, cancel)
    print(json.dumps(summary))
    return EXIT_OK


def _final(search, args, progress, cancel) -> dict:
    from ..core.search.study import train_best

    result = train_best(search, progress, cancel, args.export_dir)
    progress.close()
    print(result.report_text)
    return result.summary()


def _train_best(search, args, progress, cancel) -> int:
    print(json.dumps({"final": _final(search, args, progress, cancel)}))
    return EXIT_OK
