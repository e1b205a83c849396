"""`workbench track` and `workbench runs`: runs and the experiment trackers.

    workbench track RUN_DIR... [--report-to tensorboard,mlflow] [--mlflow-uri URI] [--force]
    workbench runs [--tensorboard [--port N]]

``track`` logs finished runs afterwards from their run directories (what `train --report-to` logs
live); ``runs`` lists the runs home, or opens TensorBoard on it. The last stdout line is JSON. Exit
status: 0 done, 1 a tracker failed part way, 2 bad input (not a run, a run still going, a tracker
not installed).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from ..core.config import TRACKERS
from .exits import EXIT_INTERNAL, EXIT_OK, EXIT_USAGE, UsageError

TRACK_COMMANDS = ("track", "runs")
INSTALL_HINT = 'pip install "workbench[track]"'


def report_to(text: str) -> list[str]:
    """--report-to's comma-separated tracker names, checked."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if names == ["none"]:
        return []
    if not names or any(n not in TRACKERS for n in names):
        raise argparse.ArgumentTypeError(f"takes {', '.join(TRACKERS)} or both comma-separated, got {text!r}")
    return list(dict.fromkeys(names))


def add_tracking_flags(parser, default: str | None) -> None:
    """--report-to and --mlflow-uri, for train, search and track."""
    parser.add_argument("--report-to", type=report_to, default=default, metavar="TRACKERS",
                        help="also log the run to these experiment trackers: tensorboard (RUN/tensorboard/), mlflow "
                             "(a local store under the runs home unless --mlflow-uri or $MLFLOW_TRACKING_URI), or "
                             f"tensorboard,mlflow (needs {INSTALL_HINT})"
                             + (f"; default {default}" if default else "; default none"))
    parser.add_argument("--mlflow-uri", metavar="URI", help="MLflow tracking server or store, e.g. "
                        "http://mlflow.example:5000 or sqlite:///path/mlflow.db (default: $MLFLOW_TRACKING_URI, "
                        "else RUNS_HOME/mlflow/mlflow.db)")


def add_parsers(sub) -> None:
    t = sub.add_parser("track", help="log finished runs to TensorBoard and/or MLflow from their run directories",
                       description="Log each RUN_DIR (its metrics.jsonl, config.json, report and model) to the "
                                   "experiment trackers, as `workbench train --report-to` does while a run trains. A "
                                   "run already logged to a tracker is skipped unless --force.")
    t.add_argument("run_dirs", metavar="RUN_DIR", nargs="+", help="run folders (e.g. RUNS_HOME/2026...)")
    add_tracking_flags(t, "tensorboard,mlflow")
    t.add_argument("--force", action="store_true", help="log again a run a tracker has already (TensorBoard: its "
                   "events are written anew; MLflow: a new MLflow run)")
    r = sub.add_parser("runs", help="list the runs in the runs home, or open TensorBoard on them",
                       description="List the runs under the runs home (newest first), or with --tensorboard start "
                                   "TensorBoard on it (every run trained with --report-to tensorboard or logged "
                                   "with `workbench track`).")
    r.add_argument("--tensorboard", action="store_true", help="start TensorBoard on the runs home (Ctrl+C stops "
                   "it); without the tensorboard package, print the command to run once it is installed")
    r.add_argument("--port", type=int, default=6006, help="TensorBoard's port (default 6006)")


def run_track_command(args: argparse.Namespace) -> int:
    return cmd_track(args) if args.command == "track" else cmd_runs(args)


def cmd_track(args: argparse.Namespace) -> int:
    from ..core.tracking.backfill import track_run

    if not args.report_to:
        raise UsageError("workbench track: --report-to names no tracker")
    status, results = EXIT_OK, []
    for run_dir in args.run_dirs:
        done = track_run(run_dir, args.report_to, args.mlflow_uri, args.force)
        for name, why in done.skipped.items():
            print(f"{done.run_dir}: {name}: skipped: {why} (--force logs it again)", file=sys.stderr)
        for problem in done.problems:
            print(f"{done.run_dir}: error: {problem}", file=sys.stderr)
            status = EXIT_INTERNAL
        if done.logged:
            print(f"{done.run_dir}: logged to {', '.join(done.logged)}", file=sys.stderr)
        results.append(done.to_dict())
    print(json.dumps({"tracked": results}))
    return status


def tensorboard_command(logdir: Path, port: int) -> list[str] | None:
    """How to start TensorBoard here, or None when the tensorboard package is missing."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        return None
    exe = shutil.which("tensorboard")
    start = [exe] if exe else [sys.executable, "-m", "tensorboard.main"]
    return [*start, "--logdir", str(logdir), "--port", str(port)]


def cmd_runs(args: argparse.Namespace) -> int:
    from ..core.home import runs_home

    home = runs_home()
    if args.tensorboard:
        command = tensorboard_command(home, args.port)
        if command is None:
            print(f"workbench: TensorBoard is not installed; install it with {INSTALL_HINT}, then run:\n"
                  f"  tensorboard --logdir {home} --port {args.port}", file=sys.stderr)
            return EXIT_USAGE
        print(f"TensorBoard on {home}: http://localhost:{args.port}/ (Ctrl+C stops it)", file=sys.stderr)
        try:
            return subprocess.call(command)
        except KeyboardInterrupt:
            return EXIT_OK
    return _list_runs(home)


def _list_runs(home: Path) -> int:
    from ..core.run.history import list_runs

    runs = list_runs(home)
    for run in runs:
        value = run.main_value
        score = f"{run.main_title} {value:.4f}" if value is not None else ""
        print(f"{run.name}  {run.state:<11} {run.task or '':<24} {score}")
    print(json.dumps({"runs_home": str(home), "runs": [str(r.path) for r in runs]}))
    return EXIT_OK
