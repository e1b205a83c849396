"""One bar per class with its probability, best first: what every Try-it that shows class scores draws."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QGridLayout, QLabel, QProgressBar, QSizePolicy, QWidget

MAX_BARS = 8  # the best few labels; a 50-class model would otherwise list 50 bars


class ScoreBars(QWidget):
    """Label, bar and percentage per class; the best label in bold, the rest summed up in one line."""

    def __init__(self, parent: QWidget | None = None, max_bars: int = MAX_BARS) -> None:
        super().__init__(parent)
        self.max_bars = max_bars
        self.grid = QGridLayout(self)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setColumnStretch(1, 1)
        self.grid.setHorizontalSpacing(8)

    def show_scores(self, scores: list[tuple[str, float]]) -> None:
        """``scores``: (label, probability) best first."""
        self.clear()
        for i, (label, score) in enumerate(scores[:self.max_bars]):
            self.grid.addWidget(self._name(label, bold=i == 0), i, 0)
            self.grid.addWidget(_bar(score), i, 1)
            self.grid.addWidget(self._percent(score), i, 2)
        if len(scores) > self.max_bars:
            rest = QLabel(f"... and {len(scores) - self.max_bars} more labels below "
                          f"{scores[self.max_bars - 1][1]:.1%}")
            rest.setEnabled(False)
            self.grid.addWidget(rest, self.max_bars, 0, 1, 3)

    def clear(self) -> None:
        while self.grid.count():
            item = self.grid.takeAt(0)
            widget = item.widget() if item is not None else None
            if widget is not None:
                widget.deleteLater()

    def top_label(self) -> str | None:
        """The label of the best bar shown, or None (for tests and accessibility)."""
        item = self.grid.itemAtPosition(0, 0)
        widget = item.widget() if item else None
        return widget.text() if isinstance(widget, QLabel) else None

    @staticmethod
    def _name(label: str, bold: bool) -> QLabel:
        name = QLabel(label)
        if bold:
            font = name.font()
            font.setBold(True)
            name.setFont(font)
        return name

    @staticmethod
    def _percent(score: float) -> QLabel:
        value = QLabel(f"{score:.1%}")
        value.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        value.setMinimumWidth(value.fontMetrics().horizontalAdvance("100.0%") + 4)  # the bars line up
        return value


def _bar(score: float) -> QProgressBar:
    bar = QProgressBar()
    bar.setRange(0, 1000)
    bar.setValue(round(score * 1000))
    bar.setTextVisible(False)
    bar.setMaximumHeight(14)
    bar.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
    return bar
