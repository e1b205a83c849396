"""Task registry. Each task is named here and imported only when used, so listing the tasks (for
`--help` or the app's task picker) imports no torch, transformers or datasets.

A new task adds one entry to ``_REGISTRY``; nothing else in the code base names tasks.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:
    from .base import Task

# name -> ("module:Class", what the app's task picker calls it); registration order breaks ties in
# --task auto. The picker's wording lives here, not in the class, so listing the tasks imports none.
_REGISTRY: dict[str, tuple[str, str]] = {
    "text-classification": ("workbench.core.tasks.text_classification:TextClassification", "Text classification"),
    "token-classification": ("workbench.core.tasks.token_classification:TokenClassification",
                             "Token tagging (entities, parts of speech)"),
    "text-pair-classification": ("workbench.core.tasks.text_pair:TextPairClassification", "Sentence pairs"),
    "text-regression": ("workbench.core.tasks.regression:TextRegression", "Scores (regression)"),
    "image-classification": ("workbench.core.tasks.image_classification:ImageClassification", "Image classification"),
    "masked-lm": ("workbench.core.tasks.masked_lm:MaskedLanguageModeling", "Masked-LM adaptation (unlabelled text)"),
}
# Tasks run by their own command, not picked for `train` (nor by --task auto): `workbench adapt`.
_OWN_COMMAND = frozenset({"masked-lm"})
ALIASES = {"classification": "text-classification", "text": "text-classification", "tagging": "token-classification",
           "ner": "token-classification", "pos": "token-classification", "pairs": "text-pair-classification",
           "regression": "text-regression"}


def task_names() -> list[str]:
    return ["auto", *(name for name in _REGISTRY if name not in _OWN_COMMAND)]


def task_menu_titles() -> dict[str, str]:
    """Task name -> its title in a task picker, "auto" first; imports no task module."""
    return {"auto": "Automatic (from the data)",
            **{name: title for name, (_, title) in _REGISTRY.items() if name not in _OWN_COMMAND}}


def task_class(name: str) -> "type[Task]":
    module, cls = _REGISTRY[name][0].split(":")
    return getattr(importlib.import_module(module), cls)


def detect_task(data_path: str | Path) -> "type[Task]":
    """The registered task whose ``sniff`` scores DATA highest (ties: registration order)."""
    path = Path(data_path)
    best, best_score = None, -1.0
    for name in task_names()[1:]:
        cls = task_class(name)
        score = cls.sniff(path)
        if score > best_score:
            best, best_score = cls, score
    return best


def get_task(name: str | None, data_path: str | Path | None = None) -> "Task":
    key = (name or "auto").lower()
    key = ALIASES.get(key, key)
    if key == "auto":
        return detect_task(data_path)() if data_path else task_class("text-classification")()
    if key not in _REGISTRY:
        raise InputError(f"unknown task {name!r}; choose one of: {', '.join(task_names())}")
    return task_class(key)()
