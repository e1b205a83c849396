"""Confusion matrix as a heat map: gold labels down, predicted labels across, counts in the cells.

Cell colour is the share of the gold row (recall), so a small class's mistakes show as clearly as a
large one's. Correct cells are tinted blue, mistakes orange, each blended over the palette's base
colour, and the text colour is picked for contrast, so it reads on light and dark palettes.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QRect, QSize, Qt, Signal, Slot
from PySide6.QtGui import QColor, QPainter, QPalette, QPen
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableView,
)

from ..widgets.table_model import HeadedTableModel

CORRECT_HUE = QColor("#2f7fd8")
ERROR_HUE = QColor("#e8743b")


def blend(base: QColor, hue: QColor, amount: float) -> QColor:
    a = max(0.0, min(1.0, amount))
    return QColor.fromRgbF(
        base.redF() * (1 - a) + hue.redF() * a,
        base.greenF() * (1 - a) + hue.greenF() * a,
        base.blueF() * (1 - a) + hue.blueF() * a,
    )


def contrast_text(background: QColor) -> QColor:
    # Relative luminance (sRGB weights); 0.5 splits black from white text well enough here.
    lum = 0.2126 * background.redF() + 0.7152 * background.greenF() + 0.0722 * background.blueF()
    return QColor("#111111") if lum > 0.5 else QColor("#f5f5f5")


class ConfusionModel(HeadedTableModel):
    """Gold labels down, predicted labels across: the headers are the labels on both axes."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.labels: list[str] = []
        self.counts = np.zeros((0, 0), np.int64)
        self._share = np.zeros((0, 0))
        self.base = QColor("white")

    def set_matrix(self, labels: list[str], counts) -> None:
        self.beginResetModel()
        self.labels = [str(l) for l in labels]
        self.counts = np.asarray(counts, dtype=np.int64).reshape(len(self.labels), len(self.labels))
        totals = self.counts.sum(axis=1, keepdims=True)
        self._share = np.divide(self.counts, totals, out=np.zeros(self.counts.shape), where=totals > 0)
        self.endResetModel()

    def set_base(self, base: QColor) -> None:
        self.base = base
        if self.labels:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self.labels) - 1, len(self.labels) - 1))

    def row_count(self) -> int:
        return len(self.labels)

    def column_count(self) -> int:
        return len(self.labels)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.DisplayRole:
            return self.labels[section]
        if role == Qt.ItemDataRole.ToolTipRole:
            kind = "Gold" if orientation == Qt.Orientation.Vertical else "Predicted"
            total = self.counts[section].sum() if orientation == Qt.Orientation.Vertical else self.counts[:, section].sum()
            return f"{kind} label {self.labels[section]}: {total} example(s)"
        return None

    def cell_colour(self, row: int, col: int) -> QColor:
        share = float(self._share[row, col])
        if self.counts[row, col] == 0:
            return self.base
        # A floor so a single mistake is still visibly tinted.
        return blend(self.base, CORRECT_HUE if row == col else ERROR_HUE, 0.12 + 0.8 * share)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        r, c = index.row(), index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return str(int(self.counts[r, c]))
        if role == Qt.ItemDataRole.BackgroundRole:
            return self.cell_colour(r, c)
        if role == Qt.ItemDataRole.ForegroundRole:
            return contrast_text(self.cell_colour(r, c))
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return int(Qt.AlignmentFlag.AlignCenter)
        if role == Qt.ItemDataRole.ToolTipRole:
            gold, pred, n = self.labels[r], self.labels[c], int(self.counts[r, c])
            what = "correct" if r == c else f"{gold} predicted as {pred}"
            return f"{what}: {n} example(s), {self._share[r, c]:.1%} of gold {gold}\nClick to list them below."
        if role == Qt.ItemDataRole.UserRole:
            return (self.labels[r], self.labels[c])
        return None


class _CellDelegate(QStyledItemDelegate):
    """Paints the heat colour itself, so a selected cell keeps it and gets a frame instead."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index) -> None:
        painter.save()
        rect: QRect = option.rect.adjusted(1, 1, -1, -1)
        painter.fillRect(rect, index.data(Qt.ItemDataRole.BackgroundRole))
        painter.setPen(index.data(Qt.ItemDataRole.ForegroundRole))
        font = option.font
        if index.row() == index.column():
            font.setBold(True)
        painter.setFont(font)
        painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, index.data(Qt.ItemDataRole.DisplayRole))
        if option.state & QStyle.StateFlag.State_Selected:
            pen = QPen(option.palette.color(QPalette.ColorRole.Text), 3)
            painter.setPen(pen)
            painter.drawRect(rect.adjusted(1, 1, -2, -2))
        painter.restore()

    def sizeHint(self, option, index) -> QSize:
        return QSize(56, 36)


class ConfusionView(QTableView):
    """Emits ``cell_chosen(gold, predicted)`` on a click, and ``cell_cleared`` on a second click."""

    cell_chosen = Signal(str, str)
    cell_cleared = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.matrix = ConfusionModel(self)
        self.setModel(self.matrix)
        self.setItemDelegate(_CellDelegate(self))
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setShowGrid(False)
        self.setCornerButtonEnabled(False)
        self.setWordWrap(False)
        for header in (self.horizontalHeader(), self.verticalHeader()):
            header.setHighlightSections(True)
            header.setSectionsClickable(False)
        self.horizontalHeader().setDefaultAlignment(Qt.AlignmentFlag.AlignCenter)
        self.verticalHeader().setDefaultAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self._chosen: tuple[int, int] | None = None
        self.clicked.connect(self._on_clicked)
        self._sync_palette()

    def set_matrix(self, labels: list[str], counts) -> None:
        self._chosen = None
        self.clearSelection()
        self.matrix.set_matrix(labels, counts)
        n = len(labels)
        # Few labels: stretch to fill; many: fixed square cells and scroll bars.
        mode = QHeaderView.ResizeMode.Stretch if n <= 8 else QHeaderView.ResizeMode.Fixed
        self.horizontalHeader().setSectionResizeMode(mode)
        self.verticalHeader().setSectionResizeMode(mode if n <= 8 else QHeaderView.ResizeMode.Fixed)
        self.horizontalHeader().setDefaultSectionSize(self.cell_width())
        self.verticalHeader().setDefaultSectionSize(36)
        self.updateGeometry()

    def cell_width(self) -> int:
        """A column's width: its label's (the header's text and margins, up to 12 ems) or 56 pixels."""
        header = self.horizontalHeader()
        cap = self.fontMetrics().horizontalAdvance("M") * 12
        return max([56, *(min(header.sectionSizeHint(c), cap) for c in range(len(self.matrix.labels)))])

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt API
        """Few labels: every column as wide as its label, so no header is cut; many: what scrolls."""
        hint = super().minimumSizeHint()
        n = len(self.matrix.labels)
        if not 0 < n <= 8:
            return hint
        width = self.verticalHeader().sizeHint().width() + n * self.cell_width() + 2 * self.frameWidth()
        return QSize(max(hint.width(), width), hint.height())

    def choose(self, gold: str, predicted: str) -> None:
        """Select a cell by label names, as a click on it does."""
        r, c = self.matrix.labels.index(gold), self.matrix.labels.index(predicted)
        self._on_clicked(self.matrix.index(r, c))

    def clear_choice(self) -> None:
        if self._chosen is not None:
            self._chosen = None
            self.clearSelection()
            self.cell_cleared.emit()

    @Slot(QModelIndex)
    def _on_clicked(self, index: QModelIndex) -> None:
        cell = (index.row(), index.column())
        if cell == self._chosen:
            self.clear_choice()  # the same cell again: back to all examples
            return
        self._chosen = cell
        self.setCurrentIndex(index)
        self.selectionModel().select(index, self.selectionModel().SelectionFlag.ClearAndSelect)
        gold, pred = self.matrix.labels[cell[0]], self.matrix.labels[cell[1]]
        self.cell_chosen.emit(gold, pred)

    def _sync_palette(self) -> None:
        self.matrix.set_base(self.palette().color(QPalette.ColorRole.Base))

    def changeEvent(self, event) -> None:
        super().changeEvent(event)
        if event.type() in (event.Type.PaletteChange, event.Type.StyleChange):
            self._sync_palette()

    def sizeHint(self) -> QSize:
        n = max(1, len(self.matrix.labels))
        w = self.verticalHeader().sizeHint().width() + self.cell_width() * min(n, 8) + 4
        h = self.horizontalHeader().sizeHint().height() + 36 * min(n, 8) + 4
        return QSize(max(w, 220), max(h, 120))
