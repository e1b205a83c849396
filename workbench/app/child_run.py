"""A run on several GPUs, started as a child process group and followed through its run directory.

The GUI process never joins a torch process group: it starts `python -m workbench train --config CFG
--num-processes N` (the launcher, workbench/launcher.py) in a session of its own, reads the lines
that rank 0 appends to RUN/metrics.jsonl as they come, and reads RUN/status.json when the launcher
exits. Cancel sends SIGINT to the launcher, which passes it on to the ranks (they stop together at
the next batch); a group that has not ended a while later is killed. Pause sends SIGUSR1 to the
launcher, which passes it on to rank 0; the ranks agree to write a checkpoint and stop at the end of
the step.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..core.config import RunConfig

KILL_AFTER_S = 90.0  # after Cancel: longer than the launcher's own grace period (launcher.SHUTDOWN_TIMEOUT_S)


def child_command(config: RunConfig | None, run_dir: str, config_file: str | None) -> list[str]:
    """The launcher's command line: a new run of ``config`` in ``run_dir``, or (no config) a resume."""
    base = [sys.executable, "-m", "workbench", "train"]
    if config is None:
        return base + ["--resume", run_dir, "--quiet"]
    args = base + ["--config", config_file, "--run-dir", run_dir, "--num-processes", str(config.train.num_processes),
                   "--quiet"]
    if config.export_dir:
        args += ["--export", config.export_dir] + (["--overwrite"] if config.overwrite_export else [])
    return args


class ChildRun:
    def __init__(self, config: RunConfig | None, run_dir: str) -> None:
        self.run_dir = Path(run_dir)
        self._config_file = None
        if config is not None:
            fd, self._config_file = tempfile.mkstemp(prefix="workbench-run-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(config.to_dict(), f)
        metrics = self.run_dir / "metrics.jsonl"
        # A resumed run's earlier lines are already shown (from its folder): follow from the end.
        self._offset = metrics.stat().st_size if config is None and metrics.is_file() else 0
        self._partial = b""
        self._output = tempfile.TemporaryFile()
        self.command = child_command(config, str(self.run_dir), self._config_file)
        self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=self._output,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self._kill_at: float | None = None
        self.interrupted = False
        self._pause_pending = False  # asked before rank 0 opened the run: sent once it has

    # ---- following ----------------------------------------------------------------------------------
    def new_events(self) -> list[dict]:
        """The complete lines rank 0 has appended to metrics.jsonl since the last call."""
        try:
            with open(self.run_dir / "metrics.jsonl", "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except OSError:
            return []
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()  # the line being written, if any
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def poll(self) -> int | None:
        code = self.proc.poll()
        if code is None and self._pause_pending:
            self.pause()
        if code is None and self._kill_at is not None and time.monotonic() >= self._kill_at:
            self._signal(signal.SIGKILL)
        return code

    def wait(self, timeout: float | None) -> bool:
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def output_tail(self, limit: int = 4000) -> str:
        self._output.seek(0, os.SEEK_END)
        size = self._output.tell()
        self._output.seek(max(0, size - limit))
        return self._output.read().decode("utf-8", "replace")

    # ---- stopping -----------------------------------------------------------------------------------
    def interrupt(self) -> None:
        """Ctrl+C for the launcher; the group is killed if it has not ended after KILL_AFTER_S."""
        self._signal(signal.SIGINT)
        self.interrupted = True
        if self._kill_at is None:
            self._kill_at = time.monotonic() + KILL_AFTER_S

    def pause(self) -> None:
        """Ask the run to write a checkpoint at the end of the step and stop (launcher.pass_pause_on).
        Until rank 0 has opened the run the launcher may still be starting: the request waits."""
        from ..core.run.directory import read_json_or_none

        if self.proc.poll() is not None or not hasattr(signal, "SIGUSR1"):
            return
        status = read_json_or_none(self.run_dir / "status.json") or {}
        opened = status.get("state") in ("running", "resumed")  # written by rank 0 alone
        self._pause_pending = not opened
        if opened:
            self._signal(signal.SIGUSR1)  # the launcher's group: the workers have sessions of their own

    def _signal(self, sig) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def outcome(self) -> tuple[str, str, str]:
        """(finished | paused | cancelled | failed, message, details) from the run directory once the
        launcher has exited; the launcher's own words where rank 0 wrote none."""
        from ..core.run.directory import read_json_or_none

        status = read_json_or_none(self.run_dir / "status.json") or {}
        state = status.get("state")
        tail = self.output_tail()
        said = [line[len("workbench: "):] for line in tail.splitlines() if line.startswith("workbench: ")
                and not line.startswith("workbench: starting ")]
        if state in ("finished", "paused", "cancelled"):
            return state, status.get("message", ""), ""
        if self.interrupted:  # cancelled, and the group had to be killed before rank 0 could say so
            from ..launcher import close_status

            close_status(str(self.run_dir), "cancelled", state="cancelled")
            return "cancelled", "", ""
        message = status.get("message") or (said[-1] if said else f"the launcher exited with status {self.proc.returncode}")
        message = message.removeprefix("error: ")
        try:
            details = (self.run_dir / "error.txt").read_text(encoding="utf-8")
        except OSError:
            details = tail
        return "failed", message, details

    def close(self) -> None:
        self._output.close()
        if self._config_file:
            Path(self._config_file).unlink(missing_ok=True)
