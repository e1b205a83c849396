"""Checks on the paths a user gives, cheap enough for the GUI thread (no heavy imports)."""

from __future__ import annotations

import stat
from pathlib import Path

from .errors import InputError


def check_data_path(p: Path, *, folder_ok: bool = False) -> Path:
    """``p`` exists and is a regular file (or, with ``folder_ok``, a folder). A named pipe, device or
    socket would block or never end when read, so it is refused before anything opens it."""
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        if p.is_symlink():
            raise InputError("is a symbolic link to something that does not exist", path=p) from None
        raise InputError("file not found", path=p) from None
    except OSError as e:
        raise InputError(f"cannot be read: {e.strerror or e}", path=p) from None
    if stat.S_ISDIR(mode):
        if folder_ok:
            return p
        raise InputError("is a folder, not a data file; choose a .tsv or .csv file", path=p)
    if not stat.S_ISREG(mode):
        kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
        raise InputError(f"is {kind}, not a data file; save the data to a file and give that", path=p)
    return p
