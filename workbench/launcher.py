"""`workbench train ... --num-processes N`: the same command on N processes, started by
torch.distributed.run (torchrun, which ships with torch) in this process.

This process is the launcher: it prints the command it runs, starts the N workers (each is
`python -m workbench train` with the same arguments; WORLD_SIZE in their environment tells them they
are ranks, so they do not launch again), and waits. Ctrl+C reaches it alone (torchrun starts each
worker in a session of its own) and it passes SIGINT on once, so the ranks stop together at the
next batch and rank 0 records the cancel. When a worker dies, torchrun stops the others and this
process names the rank, marks the run directory failed if rank 0 could not, and exits non-zero.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
from pathlib import Path

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_WRITE, EXIT_PAUSED, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
# Seconds the workers get to stop after Ctrl+C or a failed rank before they are killed: a cancel
# waits for the end of the current batch.
SHUTDOWN_TIMEOUT_S = 60


def under_launcher() -> bool:
    """This process was started by a launcher (torchrun, accelerate, srun) as one of its ranks."""
    return "WORLD_SIZE" in os.environ


def torchrun_arguments(processes: int, child_argv: list[str]) -> list[str]:
    return ["--standalone", "--nproc-per-node", str(processes), "--max-restarts", "0",
            "--shutdown-timeout", str(SHUTDOWN_TIMEOUT_S), "-m", "workbench", *child_argv]


def launch_command(processes: int, child_argv: list[str]) -> str:
    """The command this launcher runs, as a person would type it."""
    return shlex.join([sys.executable, "-m", "torch.distributed.run", *torchrun_arguments(processes, child_argv)])


def check_devices(processes: int, device: str) -> str | None:
    """Why ``processes`` processes cannot train on ``device`` here, or None."""
    import torch

    req = (device or "auto").lower()
    if req == "mps":
        return "--num-processes needs CUDA GPUs or the CPU; MPS trains in one process"
    if req.startswith("cuda") and ":" in req:
        return (f"--device {device} names one GPU; with --num-processes each process takes its own GPU: use "
                "--device cuda (or auto)")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if req == "cpu" or (req == "auto" and gpus == 0):
        return None
    if req.startswith("cuda") and gpus == 0:
        return "--device cuda: no CUDA GPU is available here"
    if processes > gpus:
        return (f"--num-processes {processes} needs {processes} GPUs (one per process); this machine has {gpus}. "
                f"Use --num-processes {gpus}, or --device cpu for CPU processes")
    return None


def launch(processes: int, child_argv: list[str], run_dir: str | None, device: str) -> int:
    """Run ``workbench`` + ``child_argv`` on ``processes`` processes; returns the exit status."""
    problem = check_devices(processes, device)
    if problem:
        print(f"workbench: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if (device or "auto").lower() == "cpu" or not _has_cuda():
        # Each process its share of the cores (torchrun would otherwise give each one thread).
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    print(f"workbench: starting {processes} processes: {launch_command(processes, child_argv)}", file=sys.stderr,
          flush=True)
    for name in ("torch.distributed.elastic", "torch.distributed.run"):
        logging.getLogger(name).setLevel(logging.ERROR)  # its notes are for torchrun's own users
    args = get_args_parser().parse_args(torchrun_arguments(processes, child_argv))
    pause_signal = getattr(signal, "SIGUSR1", None)
    if pause_signal:
        signal.signal(pause_signal, lambda signum, frame: pass_pause_on(run_dir))
    try:
        run(args)
    except ChildFailedError as e:
        code, message = describe_failure(e.failures)
        if message:
            print(f"workbench: {message}", file=sys.stderr)
        close_status(run_dir, message)
        return code
    except SignalException as e:
        where = f" ({run_dir})" if run_dir else ""
        if e.sigval == signal.SIGINT:
            print(f"workbench: cancelled; the run directory{where} keeps what was done so far.", file=sys.stderr)
            close_status(run_dir, "cancelled", state="cancelled")
            return EXIT_INTERRUPTED
        message = f"stopped by {e.sigval.name}; the run directory{where} keeps what was done so far"
        print(f"workbench: {message}", file=sys.stderr)
        close_status(run_dir, message)
        return EXIT_INTERNAL
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_DFL)
        if pause_signal:  # a late pause finds the run over: nothing to do, and no reason to die of it
            signal.signal(pause_signal, signal.SIG_IGN)
    return EXIT_OK


def pass_pause_on(run_dir: str | None, tries: int = 120) -> bool:
    """SIGUSR1 to the launcher (the app's Pause, or `kill -USR1`): passed on to rank 0, whose pid its
    run directory holds; the ranks then agree to pause at the end of the step. The workers run in
    sessions of their own, so the signal reaches none of them by itself. Before rank 0 has opened
    the run it is tried again each second (``tries`` times). Returns whether it was passed on now."""
    pid = _rank_zero_pid(run_dir)
    if pid is None:
        if tries > 1:
            import threading

            timer = threading.Timer(1.0, pass_pause_on, (run_dir, tries - 1))
            timer.daemon = True
            timer.start()
        else:
            print("workbench: could not pause: rank 0 never opened the run", file=sys.stderr, flush=True)
        return False
    try:
        os.kill(pid, signal.SIGUSR1)
    except OSError as e:
        print(f"workbench: could not pass the pause on to rank 0 (pid {pid}): {e}", file=sys.stderr, flush=True)
        return False
    return True


def _rank_zero_pid(run_dir: str | None) -> int | None:
    """The pid of the live process that is running ``run_dir`` (rank 0), from its status.json."""
    from .core.processes import run_owner
    from .core.run.directory import read_json_or_none

    pid = run_owner(read_json_or_none(Path(run_dir) / "status.json")) if run_dir else None
    return pid if pid != os.getpid() else None


def describe_failure(failures: dict) -> tuple[int, str]:
    """The launcher's exit status and message for the ranks that ended badly ({rank: ProcessFailure}).

    A rank killed by a signal or ending with an internal error is named; a cancel (130), a pause (4),
    bad input (2) or a write failure (3) is what rank 0 reported itself, so its status is passed on."""
    if not failures:
        return EXIT_INTERNAL, "a process of the run failed"
    codes = {rank: f.exitcode for rank, f in failures.items()}
    # The launcher stops the other ranks with SIGTERM once one has ended badly, and may record them
    # in the same poll: a rank killed by something else, or the status a rank ended with, comes first.
    signalled = {rank: f for rank, f in failures.items() if f.exitcode < 0 and f.exitcode != -signal.SIGTERM}
    if not signalled and all(c == -signal.SIGTERM for c in codes.values()):
        signalled = failures
    if signalled:
        rank, f = min(signalled.items(), key=lambda kv: (kv[1].timestamp, kv[0]))
        try:
            name = signal.Signals(-f.exitcode).name
        except ValueError:
            name = f"signal {-f.exitcode}"
        return EXIT_INTERNAL, (f"rank {rank} (pid {f.pid}) was killed by {name}; the other processes were stopped "
                               "and the run ended")
    for code in (EXIT_INTERRUPTED, EXIT_PAUSED, EXIT_USAGE, EXIT_WRITE):
        if codes.get(0) == code or (codes.get(0, -signal.SIGTERM) == -signal.SIGTERM and code in codes.values()):
            return code, ""  # rank 0 printed what happened
    rank = min((r for r, c in codes.items() if c > 0), default=min(codes))
    return EXIT_INTERNAL, (f"rank {rank} (pid {failures[rank].pid}) failed with exit status {codes[rank]}; the "
                           "other processes were stopped and the run ended")


def close_status(run_dir: str | None, message: str, state: str = "failed") -> None:
    """A run directory still marked running after its ranks ended (rank 0 was killed) says how it
    ended; one that rank 0 already closed is left as it is."""
    if not run_dir:
        return
    from .core.atomic import write_json_atomic
    from .core.run.directory import read_json_or_none

    path = Path(run_dir) / "status.json"
    status = read_json_or_none(path)
    if not isinstance(status, dict) or status.get("state") not in ("running", "resumed"):
        return
    from datetime import datetime

    status.update(state=state, message=message, ended=datetime.now().isoformat(timespec="seconds"))
    try:
        write_json_atomic(path, status)
    except OSError as e:  # the message is on stderr already; the run list will show it as interrupted
        print(f"workbench: could not record how the run ended in {path}: {e}", file=sys.stderr)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
