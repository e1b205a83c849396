"""What the task views of the Evaluate page share: score tiles over a row of sections, the evaluated
examples below them, a "Try it" box, and the bar that filters the examples."""

from __future__ import annotations

from typing import Any, Callable, Protocol

from PySide6.QtCore import SignalInstance, Slot
from PySide6.QtWidgets import QCheckBox, QLabel, QLineEdit, QWidget

from ...core.run.history import RunData
from ..widgets.build import button, row, set_column, stacked
from .confusion import ConfusionView
from .tiles import MetricTile, MetricTiles
from .try_it_base import UNFINISHED, TryIt


class RunView(QWidget):
    """The frame of a task's :class:`~workbench.app.evaluation.view.EvaluateView`. Subclasses build
    their sections and examples list, then call :meth:`arrange`."""

    def __init__(self, try_it: TryIt, *tiles: MetricTile, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.try_it = try_it
        self.score_tiles = MetricTiles(*tiles)  # the run's headline metrics, then ``tiles``

    def arrange(self, sections: QWidget, examples: QWidget, stretch: tuple[int, ...] = (2, 3)) -> None:
        """The tiles over ``sections`` on top, ``examples`` below; ``stretch``: their shares of the height."""
        top = QWidget()
        set_column(top, self.score_tiles, (sections, 1))
        set_column(self, stacked(top, examples, stretch=stretch))

    @property
    def tiles(self) -> dict[str, MetricTile]:
        return self.score_tiles.tiles

    def show_model(self, run: RunData, **options: Any) -> None:
        """Let "Try it" use the run's exported model; ``options`` describe its inputs (``pair``, ...)."""
        self.try_it.set_model(run.model_dir, UNFINISHED, **options)

    def clear(self) -> None:
        self.score_tiles.clear()
        self.try_it.set_model(None, "")

    def shutdown(self) -> None:
        self.try_it.shutdown()


class CellChooser(Protocol):
    """What narrows a list of examples to a cell: a confusion matrix, or a multi-label view's counts per
    label (``cell_chosen(label, kind)``)."""

    cell_chosen: SignalInstance
    cell_cleared: SignalInstance

    def clear_choice(self) -> None: ...


class ExampleFilters(QWidget):
    """Above a list of examples: errors only, a search, the confusion cell the list is narrowed to
    (a click in ``confusion``; Show all widens it again), then ``extra`` widgets and the count of rows shown.

    ``model`` is the list's model: ``set_errors_only(bool)``, ``set_query(str)``, ``set_cell(gold,
    predicted)`` (``set_cell(None)``: every cell) and a ``filtered(shown, total)`` signal. ``cell_text``
    says which cell the list shows (rich text)."""

    def __init__(self, model, confusion: ConfusionView | CellChooser, cell_text: Callable[[str, str], str], errors_text: str,
                 search_text: str, noun: str, *extra: QWidget) -> None:
        super().__init__()
        self.model, self.cell_text = model, cell_text
        self.noun = noun  # "examples", "sentences"
        self.errors_only = QCheckBox(errors_text)
        self.errors_only.setToolTip("List only the examples the model got wrong")
        self.errors_only.toggled.connect(model.set_errors_only)
        self.search = QLineEdit()
        self.search.setPlaceholderText(search_text)
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(model.set_query)
        self.cell_label = QLabel()
        self.show_all = button("Show all", confusion.clear_choice, "Clear the confusion-matrix filter", visible=False)
        self.count = QLabel()
        layout = row(self.errors_only, (self.search, 1), self.cell_label, self.show_all, *extra, self.count)
        layout.setContentsMargins(0, 0, 0, 0)
        self.setLayout(layout)
        confusion.cell_chosen.connect(self.show_cell)
        confusion.cell_cleared.connect(self.clear_cell)
        model.filtered.connect(self.show_count)

    @Slot(str, str)
    def show_cell(self, gold: str, predicted: str) -> None:
        """Narrow the list to the examples of gold ``gold`` predicted ``predicted``."""
        self.model.set_cell(gold, predicted)
        self.cell_label.setText(self.cell_text(gold, predicted))
        self.show_all.setVisible(True)

    @Slot()
    def clear_cell(self) -> None:
        self.model.set_cell(None)
        self.cell_label.setText("")
        self.show_all.setVisible(False)

    @Slot(int, int)
    def show_count(self, shown: int, total: int) -> None:
        self.count.setText(f"{total:,} {self.noun}" if shown == total else f"{shown:,} of {total:,} {self.noun}")
