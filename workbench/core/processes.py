"""Is the process that wrote a run directory, a lock or a temporary folder still alive?

Run directories, export locks and half-written export folders carry the pid of the process that
made them; a later process cleans up after one that was killed. A pid can be reused, so the
process's start time (Linux /proc) is compared with when the thing was made.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any


def process_start(pid: int) -> datetime | None:
    """When process ``pid`` started (Linux /proc only), to tell a live owner from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, after the parenthesised name
        btime = next(int(l.split()[1]) for l in Path("/proc/stat").read_text().splitlines() if l.startswith("btime"))
        return datetime.fromtimestamp(btime + ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def run_owner(status: Any) -> int | None:
    """The pid of the live process that a run's status.json marks as running it ("running" or
    "resumed", with its pid and start time), or None: not running, or its process is gone."""
    if not isinstance(status, dict) or status.get("state") not in ("running", "resumed"):
        return None
    try:
        started = datetime.fromisoformat(status.get("pid_started") or status.get("started") or "")
    except (TypeError, ValueError):
        started = None
    pid = status.get("pid")
    return pid if pid_alive(pid, started) else None


def pid_alive(pid: Any, started: datetime | None = None) -> bool:
    """Whether ``pid`` is a live process that could be the one that began at ``started``."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    if pid == os.getpid():
        return True  # this very process (the app trains in a thread)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    except OSError:
        return False
    # A pid reused by a process that began after the owner did is not the owner.
    begun = process_start(pid)
    if begun is not None and started is not None and (begun - started).total_seconds() > 5:
        return False
    return True
