"""Checks on the paths a user gives, cheap enough for the GUI thread (no heavy imports)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterable

from .errors import InputError, WriteFailed


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


EXISTS_HINT = "pass --overwrite to replace it, or choose another file with -o"


def check_output_path(output: str | Path, reads: Iterable[tuple[str, str | Path | None]] = (), *,
                      what: str = "the output", overwrite: bool = False, exists_hint: str = EXISTS_HINT,
                      folder_ok: bool = False) -> Path:
    """The absolute path a command may write ``what`` to, checked before any work is done (the one
    check of `predict -o`, `label-issues -o` and `--corrected`, the CLI's and the app's).

    Never one of the files or folders the command reads (``reads``: (role, path) pairs such as
    ("the input", DATA), ("the model folder", EXPORT_DIR)), the same file under another name (a
    symbolic or hard link), anything inside a folder it reads, or a folder holding what it reads; never
    an existing file unless ``overwrite``; never a folder unless ``folder_ok``. The folder it goes in
    must exist and be writable. InputError (exit 2) for all of these, except a folder this user cannot
    write in: WriteFailed (exit 3), as when the write itself fails."""
    out = Path(os.path.abspath(Path(output).expanduser())).resolve()
    for role, source in reads:
        if source is None or str(source) == "":
            continue
        src = Path(os.path.abspath(Path(source).expanduser())).resolve()
        if out == src or _same_file(out, src):
            raise InputError(f"is {role} itself; write {what} to another file", path=out)
        if src in out.parents and src.is_dir():
            raise InputError(f"is inside {role} ({src}), which is being read; write {what} outside that folder",
                             path=out)
        if folder_ok and out in src.parents:  # a folder written over would take what is read with it
            raise InputError(f"holds {role} ({src}); write {what} to a new file or folder", path=out)
    if out.is_dir() and not folder_ok:
        raise InputError(f"is a folder; give a file name for {what}", path=out)
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise InputError(f"exists already; {exists_hint}", path=out)
        if not (out.is_file() or (folder_ok and out.is_dir())):
            raise InputError("exists and is not a regular file (a pipe, device or socket); choose another name",
                             path=out)
    parent = out.parent
    if not parent.exists():
        raise InputError(f"the folder to write it in ({parent}) does not exist; create it first or choose another "
                         "place", path=out)
    if not parent.is_dir():
        raise InputError(f"cannot be written: {parent} is a file, not a folder", path=out)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise WriteFailed(f"cannot write {out}: this user may not write in {parent}. Choose a folder you can write to",
                          path=out)
    return out


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False
