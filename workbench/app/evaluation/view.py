"""What the Evaluate page asks of the view that shows a task's runs, and how it finds that view.

The task table (``core/tasks/table.py``) names each task's view and "Try it" box as "module:Class"
strings, so the core stays free of Qt; :func:`view_classes` imports them when a run of the task is
first shown. A task without a view gets the plain-text report.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from typing import Any, Protocol, runtime_checkable

from ...core.run.history import RunData
from ...core.tasks.table import spec_or_none


@runtime_checkable
class EvaluateView(Protocol):
    """A QWidget that shows one finished run. ``prepare`` does the slow part (reading the
    predictions) and may run on a worker thread; the rest run on the GUI thread.

    Views with a "Try it" box take it as ``__init__(try_it=...)``; the page builds the box the table
    names for the task."""

    @staticmethod
    def prepare(run: RunData) -> Any: ...

    def show_run(self, run: RunData, prepared: Any) -> None: ...

    def clear(self) -> None: ...

    def shutdown(self) -> None: ...


@lru_cache(maxsize=None)
def import_object(path: str) -> Any:
    """The object a "package.module:Name" string names."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def view_classes(task: str | None) -> tuple[type | None, type | None]:
    """(evaluate view class, "Try it" class) the task table names for ``task``; None where it names none."""
    spec = spec_or_none(task)
    if spec is None or spec.evaluate_view is None:
        return None, None
    try_it = import_object(spec.try_it_view) if spec.try_it_view else None
    return import_object(spec.evaluate_view), try_it
