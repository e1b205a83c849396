"""The run directory: the contract between the engine and every front end.

    RUN/config.json        the resolved config; `workbench train --config RUN/config.json` repeats it
    RUN/status.json        running | resumed | paused | finished | failed | cancelled | interrupted,
                           replaced atomically
    RUN/metrics.jsonl      every event, appended and flushed as it happens (survives kill -9)
    RUN/validation.json    the data validation report
    RUN/report.json        final metrics, per-class table, confusion matrix
    RUN/report.txt         the same for people
    RUN/predictions.jsonl  one line per evaluated row
    RUN/model/             the fine-tuned model, in the export format
    RUN/error.txt          details of a failure
    RUN/checkpoints/       step-N/ (the last two) and best/: what --resume goes on from; removed
                           when the run finishes (TrainConfig.keep_checkpoints keeps them)
    RUN/cache/             tokenized or decoded data while the run works; removed when it ends
                           (and by the next run when its process was killed)
    RUN/.run.lock          locked (flock) by the one process that writes the run, holding its pid:
                           a second `train --resume RUN` or `train --run-dir RUN` is refused
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from ..atomic import write_json_atomic, write_text_atomic
from ..errors import InputError, write_failure
from ..events import Callbacks, Event
from ..home import runs_home  # noqa: F401 - where callers have always imported it from

log = logging.getLogger(__name__)


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:limit].strip("-._")


def default_run_path(data_stem: str, task: str) -> Path:
    """A new folder under the runs home: ``20261128-032636-reviews-text-classification``. The data's
    name is shortened, never the task's, and the name never ends in a dash."""
    label = "-".join(p for p in (_slug(data_stem), _slug(task)) if p) or "run"
    base = runs_home() / f"{datetime.now():%Y%m%d-%H%M%S}-{label}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


RESERVE_NAME = ".reserve"
RESERVE_BYTES = 256 * 1024  # freed when the disk fills, so status.json and error.txt can still be written
LOCK_NAME = ".run.lock"


class RunInUse(InputError):
    """Another process holds the run directory's lock: it is training (or resuming) that run."""

    def __init__(self, folder: Path, pid: int | None):
        self.pid = pid
        who = f"process {pid}" if pid and pid != os.getpid() else "this process" if pid else "another process"
        super().__init__(f"another Workbench run ({who}) is writing this run directory; wait for it to end (or stop "
                         "it) and try again", path=folder)


class RunLock:
    """An exclusive lock (flock) on a run directory's ``.run.lock``, taken before anything in the
    folder is read for writing or changed, and held until the run ends (the process's end releases
    it whatever happens: a kill -9 leaves no stale lock). The file holds the owner's pid, to name it.
    Where flock is not available (Windows, some network filesystems) the lock is a no-op and the
    status.json owner check stands alone."""

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path, self._fd = path, fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    @classmethod
    def acquire(cls, folder: str | Path) -> "RunLock":
        """The lock of ``folder`` (which must exist), or ``RunInUse`` naming the process that holds
        it. OSError when the lock file cannot be created (a read-only folder)."""
        lock_path = Path(folder) / LOCK_NAME
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return cls(lock_path, None)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunInUse(Path(folder), cls.holder(folder)) from None
            log.info("run directory %s cannot be locked (%s); relying on status.json", folder, e)
            return cls(lock_path, None)  # ENOLCK, EOPNOTSUPP...: no locks on this filesystem
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass  # a full disk: the lock holds all the same, only the pid is not there to name it
        return cls(lock_path, fd)

    @staticmethod
    def holder(folder: str | Path, wait: float = 1.0) -> int | None:
        """The pid written in ``folder``'s lock file (its holder writes it just after locking)."""
        deadline = time.monotonic() + wait
        while True:
            try:
                return int((Path(folder) / LOCK_NAME).read_text().strip())
            except (OSError, ValueError):
                if time.monotonic() >= deadline:
                    return None
                time.sleep(0.05)

    @classmethod
    def refuse_if_held(cls, folder: str | Path) -> None:
        """``RunInUse`` when a process holds ``folder``'s lock; the lock file is not created here."""
        if not (Path(folder) / LOCK_NAME).is_file():
            return
        try:
            cls.acquire(folder).release()
        except OSError:
            pass

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)  # closing the file releases the flock; the file stays (removing it would race)
            except OSError:
                pass


def _new_default_folder(data_stem: str, task: str) -> Path:
    """A new folder under the runs home, made here: two runs started in the same second never share one."""
    for _ in range(1000):
        path = default_run_path(data_stem, task)
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
        except OSError as e:
            raise (write_failure(e, path, permission_too=True) or e) from None
    raise InputError("cannot make a new run folder: too many runs started at once", path=runs_home())


def _entries(folder: Path) -> list[Path]:
    """What a folder holds besides a run lock."""
    return [p for p in folder.iterdir() if p.name != LOCK_NAME]


@dataclass
class RunDirectory(Callbacks):
    path: Path
    training_started: bool = False
    created: bool = True  # False: the user made the (empty) folder, so it is kept if the run is discarded
    # When this process took the run on: with the pid, it tells a live run from a reused pid.
    opened: str = field(default_factory=lambda: datetime.now().isoformat(timespec="seconds"))
    lock: RunLock | None = field(default=None, repr=False, compare=False)  # held while this process writes it
    # metrics.jsonl, opened for appending by create/reopen (no default: unset until then)
    _metrics: TextIO = field(init=False, repr=False, compare=False)

    @classmethod
    def create(cls, requested: str | None, data_stem: str, task: str) -> "RunDirectory":
        if requested:
            path = Path(requested).expanduser()
            if path.exists() and not path.is_dir():
                raise InputError("--run-dir is a file, not a folder; give a new or empty folder", path=path.resolve())
            not_empty = InputError("run directory already exists and is not empty; choose another --run-dir",
                                   path=path.resolve())
            if path.is_dir() and _entries(path):
                RunLock.refuse_if_held(path)  # a run being written there: name its process
                raise not_empty
            created = not path.exists()
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise (write_failure(e, path, permission_too=True) or e) from None
        else:
            sweep_interrupted_runs(runs_home())
            path, created = _new_default_folder(data_stem, task), True
        try:
            lock = RunLock.acquire(path)  # two runs started at once on one --run-dir: one goes on
        except OSError as e:
            raise (write_failure(e, path, permission_too=True) or e) from None
        if requested and _entries(path):  # another process wrote it between the check and the lock
            lock.release()
            raise not_empty
        rd = cls(path.resolve(), created=created, lock=lock)
        try:
            rd._reserve()
            rd._metrics = open(rd.path / "metrics.jsonl", "a", encoding="utf-8")
            rd.set_status("running")
        except OSError as e:
            rd.discard()
            raise (write_failure(e, path, permission_too=True) or e) from None
        return rd

    @classmethod
    def reopen(cls, path: str | Path, lock: RunLock | None = None) -> "RunDirectory":
        """An existing run's folder, to go on with it (``--resume``): status "resumed", metrics.jsonl
        appended to (``prepare_resume`` has cut it back to the checkpoint). ``lock``: the folder's
        lock, already taken (else it is taken here)."""
        path = Path(path).resolve()
        if lock is None:
            try:
                lock = RunLock.acquire(path)
            except OSError as e:
                raise (write_failure(e, path, permission_too=True) or e) from None
        rd = cls(path, training_started=False, created=False, lock=lock)
        try:
            rd._reserve()
            rd._metrics = open(rd.path / "metrics.jsonl", "a", encoding="utf-8")
            rd.set_status("resumed", resumed=datetime.now().isoformat(timespec="seconds"))
        except OSError as e:
            rd.close()
            rd.release_reserve()
            rd.release_lock()
            raise (write_failure(e, path, permission_too=True) or e) from None
        return rd

    def release_lock(self) -> None:
        """Let another process take the run on (its end: every file of this one is written)."""
        if self.lock is not None:
            self.lock.release()

    def metrics_position(self) -> int:
        """The length of metrics.jsonl with every event so far written out (a checkpoint records it)."""
        self._metrics.flush()
        return self._metrics.tell()

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    def _reserve(self) -> None:
        with open(self.path / RESERVE_NAME, "wb") as f:
            f.write(b"\0" * RESERVE_BYTES)  # real blocks, not a sparse file: deleting it frees them
            f.flush()
            os.fsync(f.fileno())

    def release_reserve(self) -> None:
        (self.path / RESERVE_NAME).unlink(missing_ok=True)

    def _with_room(self, write) -> None:
        """Run ``write``; if the disk is full, free the reserve and try once more."""
        try:
            write()
        except OSError as e:
            if write_failure(e) is None or not (self.path / RESERVE_NAME).exists():
                raise
            self.release_reserve()
            write()

    # Each event is one JSON line, flushed at once: a run killed with -9 keeps everything up to it.
    def on_event(self, event: Event) -> None:
        if event.__class__.__name__ == "Progress":
            return  # progress ticks are for live displays, not for the record
        d = event.to_dict()
        d["time"] = round(time.time(), 3)
        self._metrics.write(json.dumps(d, ensure_ascii=False) + "\n")
        self._metrics.flush()

    def set_status(self, state: str, **extra: Any) -> None:
        status_path = self.path / "status.json"
        current = {}
        if status_path.exists():
            try:
                current = json.loads(status_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                current = {}
            if not isinstance(current, dict):  # damaged: written again whole
                current = {}
        current.setdefault("started", datetime.now().isoformat(timespec="seconds"))
        current.update(state=state, pid=os.getpid(), pid_started=self.opened, **extra)
        if state != "running":
            current["ended"] = datetime.now().isoformat(timespec="seconds")
        self._with_room(lambda: write_json_atomic(status_path, current))

    def write_json(self, name: str, data: Any) -> None:
        write_json_atomic(self.path / name, data)

    def write_text(self, name: str, text: str) -> None:
        self._with_room(lambda: write_text_atomic(self.path / name, text))

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def cache_dir(self) -> Path:
        return self.path / "cache"

    def remove_scratch(self) -> None:
        """What only a running run needs: the tokenized/decoded data cache and the space reserve."""
        shutil.rmtree(self.cache_dir, ignore_errors=True)
        self.release_reserve()

    def discard(self) -> None:
        """Remove what this run wrote (bad input found before training: nothing worth keeping). A
        folder the user made is emptied, not removed."""
        self.close()
        if self.created:
            shutil.rmtree(self.path, ignore_errors=True)
            self.release_lock()
            return
        for child in self.path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
        self.release_lock()

    def close(self) -> None:
        """Close metrics.jsonl and let the run go (its lock): this process writes no more of it."""
        metrics = getattr(self, "_metrics", None)
        if metrics is not None and not metrics.closed:
            try:
                metrics.close()
            except OSError:
                pass  # a full disk refused the last buffered line; the file keeps every line before it
        self.release_lock()


def sweep_interrupted_runs(home: Path) -> list[Path]:
    """Runs under ``home`` still marked running whose process is gone (killed, crashed, power cut):
    their scratch files are removed and status.json says "interrupted". Returns those runs."""
    from ..processes import run_owner

    swept: list[Path] = []
    try:
        children = [p for p in home.iterdir() if p.is_dir()]
    except OSError:
        return swept
    for run in children:
        status_path = run / "status.json"
        try:
            status = json.loads(status_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(status, dict) or status.get("state") not in ("running", "resumed") or run_owner(status):
            continue
        shutil.rmtree(run / "cache", ignore_errors=True)
        (run / RESERVE_NAME).unlink(missing_ok=True)
        from ..export.model import sweep_stale_temporaries

        sweep_stale_temporaries(run)
        status.update(state="interrupted", message=f"its process (pid {status.get('pid')}) ended without finishing: "
                                                   "killed, crashed, or the machine stopped")
        try:
            write_json_atomic(status_path, status)
        except OSError:
            continue
        swept.append(run)
    return swept


def read_json_or_none(path: Path) -> Any:
    """A JSON file's content, or None when it is missing, half-written or not JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every complete line of metrics.jsonl; a line cut short by a kill is ignored."""
    out = []
    try:
        with open(Path(run_dir) / "metrics.jsonl", encoding="utf-8") as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
    except FileNotFoundError:
        pass
    return out


class RankDirectory(RunDirectory):
    """What a process other than rank 0 of a distributed run has in place of the run directory:
    rank 0's path (its checkpoints, read on --resume) and a scratch folder of its own (its copy of
    the tokenized data; on another machine the run directory may not exist). Nothing is written:
    rank 0 alone writes the run directory."""

    def __init__(self, path: Path) -> None:
        import tempfile

        super().__init__(Path(path), created=False)
        self._scratch = Path(tempfile.mkdtemp(prefix="workbench-rank-"))

    @property
    def cache_dir(self) -> Path:
        return self._scratch / "cache"

    @property
    def model_dir(self) -> Path:
        return self._scratch / "model"

    def metrics_position(self) -> int:
        return 0

    def on_event(self, event: Event) -> None:
        pass

    def set_status(self, state: str, **extra: Any) -> None:
        pass

    def write_json(self, name: str, data: Any) -> None:
        pass

    def write_text(self, name: str, text: str) -> None:
        pass

    def release_reserve(self) -> None:
        pass

    def discard(self) -> None:
        pass

    def close(self) -> None:
        pass

    def remove_scratch(self) -> None:
        shutil.rmtree(self._scratch, ignore_errors=True)
