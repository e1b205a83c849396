"""Write-then-replace: the one way the engine writes a file or folder that someone may be reading.

A reader (the app, another process, a user's script) sees the old content or the new content, never a
half-written one: the new content is written to a temporary name beside the target (same folder, so the
final ``os.replace`` is a rename on one file system) and moved into place only when it is complete. On any
error, or Ctrl+C, the temporary goes and the target is as it was.

    with replacing(path) as tmp:          # a file: write tmp however you like
        tmp.write_bytes(data)
    write_text_atomic(path, text)         # the common cases
    write_json_atomic(path, data)
    with replacing(folder, folder=True) as tmp:   # a folder: fill tmp, then it replaces the old folder

Temporary names start with a dot and carry the writer's pid (``.NAME.writing-PID-XXXX``) so that sweepers
(export targets, checkpoints) can tell a dead writer's leftovers from a live writer's work. An existing folder
is first moved aside to ``.NAME.old-PID-XXXX/x`` (a sweeper puts it back if the writer died in between) and
removed once the new one is in place.

Only the standard library: every layer of the engine may use it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def temp_beside(target: Path, *, folder: bool = False, prefix: str | None = None) -> Path:
    """Create an empty temporary file (or folder) beside ``target``; OSError as the file system says."""
    prefix = prefix or f".{target.name}.writing-{os.getpid()}-"
    if folder:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    # Not mkstemp: its 0600 would become the target's mode; a file we write is an ordinary file (umask).
    for _ in range(100):
        path = target.parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free temporary name beside {target}")


def remove(path: Path) -> None:
    """Remove a temporary file or folder; never raises (it is cleanup on the way out of an error)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass


def move_into_place(tmp: Path, target: Path) -> None:
    """``tmp`` becomes ``target``; an existing folder at ``target`` is swapped out, then removed."""
    if tmp.is_dir() and target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-{os.getpid()}-", dir=target.parent))
        os.replace(target, old / "x")
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


@contextmanager
def replacing(target: str | Path, *, folder: bool = False, prefix: str | None = None,
              tmp: Path | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` (an empty file, or with ``folder`` an empty folder; or the
    caller's ``tmp``, created beforehand); when the block ends it replaces ``target``. On any error the
    temporary is removed and the error goes on."""
    target = Path(target)
    tmp = tmp if tmp is not None else temp_beside(target, folder=folder, prefix=prefix)
    try:
        yield tmp
        move_into_place(tmp, target)
    except BaseException:
        remove(tmp)
        raise


def write_bytes_atomic(path: str | Path, data: bytes, *, fsync: bool = False) -> Path:
    """Write ``data`` to ``path`` through a temporary beside it; ``fsync`` for files that must survive a
    power cut (run status, manifests)."""
    path = Path(path)
    with replacing(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
    return path


def write_text_atomic(path: str | Path, text: str, *, fsync: bool = False) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"), fsync=fsync)


def write_json_atomic(path: str | Path, data: Any, *, fsync: bool = True) -> Path:
    """JSON as the run directory writes it: indented, UTF-8 as is (label names are the user's text)."""
    return write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False), fsync=fsync)
