"""Task registry. Each task is described in ``table.py`` (``TASKS``) and its module imported only
when used, so listing the tasks (for `--help` or the app's task picker) imports no torch,
transformers or datasets.

A new task adds one TaskSpec to ``table.TASKS``; nothing else in the code base names tasks.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from .table import DEFAULT_TASK, TASKS, task_spec, trainable_task_names

if TYPE_CHECKING:
    from ..config import DataConfig
    from .base import Task


def task_names() -> list[str]:
    return ["auto", *trainable_task_names()]


def task_menu_titles() -> dict[str, str]:
    """Task name -> its title in a task picker, "auto" first; imports no task module."""
    return {"auto": "Automatic (from the data)", **{name: TASKS[name].title for name in trainable_task_names()}}


def task_class(name: str) -> "type[Task]":
    module, cls = TASKS[name].task_class.split(":")
    return getattr(importlib.import_module(module), cls)


def detect_task(data_path: str | Path, data: "DataConfig | None" = None) -> "type[Task]":
    """The registered task whose ``sniff`` scores DATA highest (ties: registration order); with the
    data settings ``data``, a task that they alone choose (``sniff_settings``) counts too."""
    path = Path(data_path)
    classes = [task_class(name) for name in task_names()[1:]]

    def score(cls: "type[Task]") -> float:
        return max(cls.sniff(path), cls.sniff_settings(data) if data is not None else 0.0)

    return max(classes, key=score)  # max keeps the first of equal scores


def get_task(name: str | None, data_path: str | Path | None = None, data: "DataConfig | None" = None) -> "Task":
    if not name or name.lower() == "auto":
        return detect_task(data_path, data)() if data_path else task_class(DEFAULT_TASK)()
    return task_class(task_spec(name).name)()
