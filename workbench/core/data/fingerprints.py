"""What identifies a data file or image folder, so that a resumed run, a quantized export or an
unpacked run can tell whether the data it names is the data it was made from."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from ..cancel import NEVER, CancelToken

_CHUNK = 1 << 20


def fingerprint(path: Path, cancel: CancelToken = NEVER) -> dict[str, Any]:
    """A file's size and BLAKE2b; a folder's files' names, sizes and modification times, hashed
    (reading every image of a large folder would take minutes)."""
    h = hashlib.blake2b(digest_size=16)
    if path.is_dir():
        for f in sorted(path.rglob("*")):
            cancel.raise_if_cancelled()
            if f.is_file():
                st = f.stat()
                h.update(f"{f.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return {"folder": h.hexdigest()}
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            cancel.raise_if_cancelled()
            h.update(chunk)
    return {"size": path.stat().st_size, "blake2b": h.hexdigest()}


def data_fingerprints(paths: list[str]) -> dict[str, Any]:
    """``fingerprint`` of each path, by the path as given (the run's ``resolved.data_fingerprint``)."""
    return {p: fingerprint(Path(p)) for p in paths}
