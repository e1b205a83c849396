"""The Runs page's diff of two runs: metric deltas with paired p-values, per-class deltas, and the
examples the newer run fixed or broke, filterable by kind and by confusion cell (gold, A's answer,
B's answer). Regression adds a scatter of A's errors against B's. Text-generation runs list the
examples whose score B raised or lowered, largest change first, with the prompt, the reference and
both answers. Computed on a worker thread (``workbench.core.analysis.compare``), the same numbers as
`workbench compare`."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QSplitter,
    QStackedWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ...core.errors import InputError
from ...core.tasks.table import DEFAULT_TASK, prediction_kind
from ..jobs import Jobs, describe
from ..widgets.build import items_table
from ..wording import in_app_words

ALL = "All cells"
EXAMPLE_HEADS = ("Change", "Row", "Gold", "A said", "B said", "Text")
GENERATION_HEADS = ("Change", "Row", "Reference", "A said", "B said", "Prompt")


def _kind(diff) -> str | None:
    """What the compared runs predict (classes, tags, values); runs without a recorded task were classifiers."""
    return prediction_kind(diff.task or DEFAULT_TASK)


def _note(text: str = "") -> QLabel:
    """A centred line in place of a table with nothing to show, saying why."""
    label = QLabel(text)
    label.setAlignment(Qt.AlignmentFlag.AlignCenter)
    label.setWordWrap(True)
    label.setEnabled(False)  # the dimmed text of a placeholder
    return label


def _shown(value) -> str:
    """A gold or predicted value as a cell: a multi-label run's label set joined by "|" ("-" when empty)."""
    return ("|".join(map(str, value)) or "-") if isinstance(value, list) else str(value)


def _cell(text: str) -> QTableWidgetItem:
    """A text cell on one line (line breaks shown as escapes), the whole text in its tooltip."""
    from ...core.escaping import one_line

    item = QTableWidgetItem(one_line(text))
    item.setToolTip(text)
    return item


def _num(value, fmt="{:.4f}") -> QTableWidgetItem:
    item = QTableWidgetItem("" if value is None else fmt.format(value))
    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return item


class RunDiffView(QDialog):
    def __init__(self, run_a: str, run_b: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from pathlib import Path

        self.setWindowTitle(f"{Path(run_a).name} → {Path(run_b).name}")
        self.resize(1100, 700)  # fits a 1280x800 screen with its panel and title bar
        self.diff = None
        self.jobs = Jobs(self)
        self.head = QLabel(f"A: {Path(run_a).name}    B: {Path(run_b).name}")
        self.head.setWordWrap(True)
        self.head.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.metrics = items_table(("Metric", "A", "B", "B − A", "p-value", "test"))
        self.per_class = items_table(("Class", "F1 A", "F1 B", "B − A", "support"))
        self.kind = QComboBox()
        self.kind.addItems(["Fixed and broken", "Fixed", "Broken"])
        self.cell = QComboBox()
        self.cell.setToolTip("A confusion cell: the gold label, A's answer and B's answer")
        self.count = QLabel()
        for combo in (self.kind, self.cell):
            combo.currentIndexChanged.connect(self._fill_examples)
        self.examples = items_table(EXAMPLE_HEADS)
        self.examples.horizontalHeader().setSectionResizeMode(5, QHeaderView.ResizeMode.Stretch)
        self.no_examples = _note()  # in place of the examples when no row changed
        self.example_stack = QStackedWidget()
        self.example_stack.addWidget(self.examples)
        self.example_stack.addWidget(self.no_examples)
        self.scatter = None  # regression: A's error against B's

        top = QSplitter(Qt.Orientation.Horizontal)
        top.addWidget(self.metrics)
        top.addWidget(self.per_class)
        filters = QHBoxLayout()
        self.show_label = QLabel("Show:")
        filters.addWidget(self.show_label)
        filters.addWidget(self.kind)
        filters.addWidget(self.cell, 1)
        filters.addWidget(self.count)
        bottom = QWidget()
        bl = QVBoxLayout(bottom)
        bl.setContentsMargins(0, 0, 0, 0)
        bl.addLayout(filters)
        bl.addWidget(self.example_stack, 1)
        self.split = QSplitter(Qt.Orientation.Vertical)
        self.split.addWidget(top)
        self.split.addWidget(bottom)
        self.split.setSizes([260, 480])
        # Until the comparison is there, or when it cannot be made, a message instead of empty tables.
        self.message = _note("Comparing the two runs' predictions…")
        self.body = QStackedWidget()
        self.body.addWidget(self.message)
        self.body.addWidget(self.split)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        self.close_button = buttons.button(QDialogButtonBox.StandardButton.Close)
        # Escape closes wherever the focus is (a table or a filter would otherwise keep the key).
        QShortcut(QKeySequence(Qt.Key.Key_Escape), self, self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(self.head)
        lay.addWidget(self.body, 1)
        lay.addWidget(buttons)
        from ...core.analysis.compare import compare_runs

        self.jobs.submit(compare_runs, run_a, run_b, on_done=self.show_diff, on_error=self._failed)

    def _failed(self, error: Exception) -> None:
        text = describe(error)
        if isinstance(error, InputError):  # the engine's reason; the head names the runs already
            text = error.problem[:1].upper() + error.problem[1:]
        text = in_app_words(text)
        self.message.setText(f"Nothing to compare. {text}{'' if text.endswith('.') else '.'}")
        self.message.setEnabled(True)  # a reason to read, not a placeholder
        self.body.setCurrentWidget(self.message)

    def show_diff(self, diff) -> None:
        self.diff = diff
        from pathlib import Path

        generation = _kind(diff) == "text"
        moved = (f"B scored {len(diff.fixed):,} higher and {len(diff.broken):,} lower." if generation
                 else f"B fixed {len(diff.fixed):,} and broke {len(diff.broken):,}.")
        self.head.setText(
            f"A: {Path(diff.run_a).name}    B: {Path(diff.run_b).name}    {diff.split} split, {diff.n:,} {diff.unit} "
            f"scored by both.  {moved}" + "".join(f"\n{in_app_words(n)}" for n in diff.notes))
        if generation:  # generated answers: scores moved up or down, beside the prompt and reference
            self.examples.setHorizontalHeaderLabels(GENERATION_HEADS)
            for i, text in enumerate(("Higher and lower", "Higher (fixed)", "Lower (broken)")):
                self.kind.setItemText(i, text)
        self.body.setCurrentWidget(self.split)
        rows = [m for m in diff.metrics if m.a is not None and m.b is not None]
        self.metrics.setRowCount(len(rows))
        for i, m in enumerate(rows):
            delta = _num(m.delta, "{:+.4f}")
            better = (m.delta > 0) == m.greater_is_better if m.delta else None
            significant = m.p_value is not None and m.p_value < 0.05
            if better is not None and significant:
                delta.setForeground(QColor(30, 140, 60) if better else QColor(200, 50, 40))
            for col, item in enumerate((QTableWidgetItem(m.title), _num(m.a), _num(m.b), delta,
                                        _num(m.p_value, "{:.3g}"), QTableWidgetItem(m.test))):
                self.metrics.setItem(i, col, item)
        self.per_class.setVisible(bool(diff.per_class))
        self.per_class.setRowCount(len(diff.per_class))
        for i, r in enumerate(diff.per_class):
            for col, item in enumerate((QTableWidgetItem(str(r["label"])), _num(r["f1_a"]), _num(r["f1_b"]),
                                        _num(r["delta"], "{:+.4f}"), _num(r["support"], "{:,}"))):
                self.per_class.setItem(i, col, item)
        self.cell.blockSignals(True)
        self.cell.clear()
        self.cell.addItem(ALL)
        if _kind(diff) == "classes":  # a confusion cell: gold label, A's answer, B's answer
            cells = sorted({(e["gold"], e["a"], e["b"]) for e in diff.changed})
            for gold, a, b in cells:
                self.cell.addItem(f"gold {gold}: A {a}, B {b}", (gold, a, b))
        self.cell.setVisible(self.cell.count() > 1)
        self.cell.blockSignals(False)
        if diff.errors is not None:
            self._add_scatter(diff.errors)
        self._fill_examples()

    def shown_examples(self) -> list[dict]:
        if self.diff is None:
            return []
        kind = {0: None, 1: "fixed", 2: "broken"}[self.kind.currentIndex()]
        cell = self.cell.currentData()
        return [e for e in self.diff.changed if (kind is None or e["change"] == kind)
                and (cell is None or (e["gold"], e["a"], e["b"]) == tuple(cell))]

    def _fill_examples(self) -> None:
        shown = self.shown_examples()
        self.count.setText(f"{len(shown):,} {self.diff.unit if self.diff else 'examples'}")
        generation = self.diff is not None and _kind(self.diff) == "text"
        if self.diff is not None and not self.diff.changed:
            self.no_examples.setText(
                f"B scored each of the {self.diff.n:,} {self.diff.unit} of the {self.diff.split} split as A did."
                if generation else
                f"B fixed none and broke none of the {self.diff.n:,} {self.diff.unit} of the {self.diff.split} split: "
                "where A was right B was too, and where A was wrong so was B.")
        changed = self.diff is None or bool(self.diff.changed)
        self.example_stack.setCurrentWidget(self.examples if changed else self.no_examples)
        for w in (self.show_label, self.kind, self.count):  # nothing to filter when no row changed
            w.setVisible(changed)
        shown = shown[:5000]
        self.examples.setRowCount(len(shown))
        fmt = (lambda v: f"{v:.3f}") if self.diff is not None and _kind(self.diff) == "values" else _shown
        for i, e in enumerate(shown):
            change = QTableWidgetItem(f"{e['change']} {e['delta']:+.2f}" if generation else e["change"])
            change.setForeground(QColor(30, 140, 60) if e["change"] == "fixed" else QColor(200, 50, 40))
            if generation:
                change.setToolTip(f"score {e['score_a']:.4f} in A, {e['score_b']:.4f} in B")
            cells = [_cell(fmt(e[key])) for key in ("gold", "a", "b")] + [_cell(str(e["text"]))]
            for col, item in enumerate([change, _num(e["row"], "{}")] + cells):
                self.examples.setItem(i, col, item)

    def _add_scatter(self, errors) -> None:
        import numpy as np
        import pyqtgraph as pg

        plot = pg.PlotWidget(background="w")
        plot.setLabel("bottom", "error of A (predicted − gold)")
        plot.setLabel("left", "error of B")
        a, b = np.asarray(errors["a"]), np.asarray(errors["b"])
        plot.plot(a, b, pen=None, symbol="o", symbolSize=4, symbolBrush=(40, 90, 200, 120), symbolPen=None)
        lim = float(max(np.abs(a).max(initial=0), np.abs(b).max(initial=0), 1e-6))
        plot.plot([-lim, lim], [-lim, lim], pen=pg.mkPen((150, 150, 150), style=Qt.PenStyle.DashLine))
        self.scatter = plot
        self.split.insertWidget(1, plot)

    def done(self, result: int) -> None:
        self.jobs.shutdown(2000)
        super().done(result)
