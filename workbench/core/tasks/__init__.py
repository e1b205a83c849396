"""Task registry. Later tasks (token tagging, pairs, regression, images) add themselves here."""

from __future__ import annotations

from ..errors import InputError
from .base import EncodedSplit, EvalResult, PreparedData, Task
from .text_classification import TextClassification

TASKS: dict[str, type[Task]] = {TextClassification.name: TextClassification}
ALIASES = {"classification": TextClassification.name, "text": TextClassification.name}


def task_names() -> list[str]:
    return ["auto", *TASKS]


def get_task(name: str, data_path: str | None = None) -> Task:
    key = (name or "auto").lower()
    key = ALIASES.get(key, key)
    if key == "auto":
        # Only one task so far: tabular files train a text classifier.
        return TextClassification()
    if key not in TASKS:
        raise InputError(f"unknown task {name!r}; choose one of: {', '.join(task_names())}")
    return TASKS[key]()


__all__ = ["EncodedSplit", "EvalResult", "PreparedData", "Task", "TASKS", "get_task", "task_names"]
