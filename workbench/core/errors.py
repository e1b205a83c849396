"""Errors the engine raises on purpose. Front ends show their message; they never show a traceback."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import cast


class WorkbenchError(Exception):
    """Base class for errors whose message is meant for the user."""


class InputError(WorkbenchError):
    """Bad user input: a data file, a column name, an option. The CLI exits with status 2.

    ``path`` and ``line`` (1-based physical line in the file) are kept apart from the message so the
    app can jump to the offending row; ``str(err)`` already names both.
    """

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None):
        self.path = str(path) if path is not None else None
        self.line = line
        where = ""
        if self.path is not None:
            where = f"{self.path}"
            if line is not None:
                where += f", line {line}"
            where += ": "
        super().__init__(where + message)
        self.problem = message


class BackboneError(InputError):
    """A model name that cannot be resolved to weights on this machine."""


class Cancelled(WorkbenchError):
    """Raised inside the engine when the cancel token was set; the run ends as 'cancelled'."""

    def __init__(self, message: str = "cancelled by the user"):
        super().__init__(message)


class Paused(WorkbenchError):
    """The run stopped after writing a checkpoint (the user paused it); ``workbench train --resume
    RUN`` carries on from there."""

    def __init__(self, step: int, message: str = "paused"):
        super().__init__(message)
        self.step = step


class OutOfMemory(WorkbenchError):
    """A training step does not fit in memory even one row at a time."""


class WriteFailed(WorkbenchError):
    """Writing failed for a reason outside Workbench and outside the data: the disk is full, a quota
    is reached, or the folder is read-only or not writable. The CLI exits with status 3."""

    def __init__(self, message: str, *, path: str | Path | None = None):
        self.path = str(path) if path is not None else None
        super().__init__(message)


# errno values that mean "this place cannot take more bytes" or "cannot be written at all".
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}
_FULL_TEXT = ("no space left on device", "storagefull", "disk quota exceeded", "os error 28", "errno 28",
              # torch.save's writer (inline_container.cc) says only that a short write happened:
              # "PytorchStreamWriter failed writing file data/0: file write failed"
              "pytorchstreamwriter failed writing file", "file write failed")


def _causes(exc: BaseException):
    """``exc``, its causes and contexts, and the errors a shutil.Error carries, once each."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__]
        if isinstance(e, shutil.Error) and e.args and isinstance(e.args[0], list):
            for item in e.args[0]:  # (src, dst, why) triples; why is a string
                if isinstance(item, tuple) and len(item) == 3:
                    yield OSError(errno.ENOSPC if _is_full_text(str(item[2])) else 0, str(item[2]), item[1])


def _is_full_text(text: str) -> bool:
    low = text.lower()
    return any(t in low for t in _FULL_TEXT)


def write_failure(exc: BaseException, where: str | Path | None = None, *, permission_too: bool = False) -> WriteFailed | None:
    """A ``WriteFailed`` saying what went wrong, when ``exc`` (or what caused it) is a full disk, a
    quota or, with ``permission_too``, a folder that cannot be written; None for anything else.

    Libraries wrap these in their own types (safetensors' SafetensorError carries only the Rust
    error's text, shutil.Error a list of tuples), so the message text counts as well as errno."""
    for e in _causes(exc):
        code = getattr(e, "errno", None) if isinstance(e, OSError) else None
        full = code in _DISK_FULL or _is_full_text(str(e))
        if not full and not (permission_too and code in _NOT_WRITABLE):
            continue
        path = getattr(e, "filename", None) or where
        place = f" while writing {path}" if path else ""
        if full:
            free = _free_space(path)
            message = (f"the disk is full{place}{free}. Free some space (or choose a folder on another disk) "
                       "and run again")
        else:
            # code is in _NOT_WRITABLE here, so an int
            message = f"cannot write{place}: {os.strerror(cast(int, code))}. Choose a folder you can write to"
        return WriteFailed(message, path=path)
    return None


def _free_space(path: str | Path | None) -> str:
    p = Path(path) if path else None
    while p is not None and not p.exists() and p != p.parent:
        p = p.parent
    if p is None:
        return ""
    try:
        free = shutil.disk_usage(p).free
    except OSError:
        return ""
    return f" ({free / 1e6:,.1f} MB free there)"
