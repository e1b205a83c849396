"""Backbones adapted to the user's texts (``workbench adapt``, core/adaptation/adapt.py): which folders hold one,
what to call them ("M adapted on FILE"), and the list the backbone catalog reads."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ..export.target import MARKER
from ..tasks.table import task_run_by

log = logging.getLogger(__name__)

TASK = task_run_by("adapt")  # the task of an adaptation run, recorded in its model folder's marker


def _registry() -> Path:
    from ..home import runs_home

    return runs_home().parent / "adapted-backbones.json"


def adapted_info(folder: str | Path) -> dict[str, Any] | None:
    """What a folder's Workbench marker says of an adapted backbone (None: it is not one)."""
    try:
        meta = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("task") == TASK else None


def adapted_name(meta: dict[str, Any]) -> str:
    source = Path(str(meta.get("trained_on") or "texts")).name
    return f"{meta.get('backbone', 'backbone')} adapted on {source}"


def remember(folder: str | Path) -> None:
    """Add an adapted backbone to the list the catalog reads (written atomically; best effort: a
    read-only home only means the catalog does not list it)."""
    from ..atomic import write_json_atomic

    path = _registry()
    known = [p for p in remembered() if p != str(Path(folder).resolve())]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, [str(Path(folder).resolve()), *known])
    except OSError as e:  # the folder still works with --model; only the catalog's listing is missing
        log.warning("could not record %s in the list of adapted backbones (%s): %s", folder, path, e)


def remembered() -> list[str]:
    """Adapted backbone folders that still exist, newest first."""
    try:
        paths = json.loads(_registry().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [p for p in paths if isinstance(p, str) and os.path.isdir(p) and adapted_info(p) is not None]
