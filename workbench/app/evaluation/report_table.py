"""Per-class precision/recall/F1/support, sortable by any column; never narrower than its headers."""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QStyle, QTableView

from ..widgets.table_model import RIGHT, ListTableModel

SORT_ROLE = Qt.ItemDataRole.UserRole  # numbers sort as numbers, not as text
LABEL_EMS = 14  # the label column asks for its longest label up to this many widths of "M"; longer ones elide


# (the report's key, header, tooltip) per column
_COLUMNS = (
    ("label", "Label", "The class name"),
    ("precision", "Precision", "Of the examples predicted as this label, the share that really are"),
    ("recall", "Recall", "Of the examples that really are this label, the share the model found"),
    ("f1", "F1", "Harmonic mean of precision and recall"),
    ("support", "Support", "Examples of this label in the evaluated split"),
)


class PerClassModel(ListTableModel):
    """The report's per-class rows (dicts with the keys of ``_COLUMNS``)."""

    KEYS, HEADERS, TIPS = (tuple(c) for c in zip(*_COLUMNS))

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        value = self.rows[index.row()].get(self.KEYS[index.column()])
        if role == Qt.ItemDataRole.DisplayRole:
            if index.column() in (1, 2, 3) and isinstance(value, (int, float)):
                return f"{value:.3f}"
            return "" if value is None else str(value)
        if role == SORT_ROLE:
            return value
        if role == Qt.ItemDataRole.TextAlignmentRole and index.column() > 0:
            return RIGHT
        return None


class PerClassTable(QTableView):
    """The number columns as wide as their headers (sort arrow included) or values, the label column
    taking the rest; the table asks its parent for that much width, so a splitter or a narrow window
    never cuts a column or adds a horizontal scroll bar."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.source = PerClassModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.source)
        self.proxy.setSortRole(SORT_ROLE)
        self.setModel(self.proxy)
        self.setSortingEnabled(True)
        self.sortByColumn(-1, Qt.SortOrder.AscendingOrder)  # the report's own order until a header is clicked
        self.setAlternatingRowColors(True)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setWordWrap(False)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # a long label keeps its start and end
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # the width is asked for instead
        self.verticalHeader().hide()
        header = self.horizontalHeader()
        header.setMinimumSectionSize(self.fontMetrics().horizontalAdvance("0.000") + 16)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for c in range(1, self.source.columnCount()):
            header.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        self.fit_width()

    def set_rows(self, rows: list[dict]) -> None:
        self.source.set_rows(rows)
        self.fit_width()

    def column_widths(self) -> list[int]:
        """The width each column needs: its header (text, margins, sort arrow) or its widest value;
        the label column at most ``LABEL_EMS`` ems."""
        header = self.horizontalHeader()
        widths = [max(header.sectionSizeHint(c), self.sizeHintForColumn(c)) for c in range(self.proxy.columnCount())]
        if widths:
            widths[0] = min(widths[0], max(header.sectionSizeHint(0), self.fontMetrics().horizontalAdvance("M") * LABEL_EMS))
        return widths

    def fit_width(self) -> None:
        """Ask for the width every column needs, a vertical scroll bar's and the frame's included."""
        bar = self.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent, None, self)
        self.setMinimumWidth(sum(self.column_widths()) + bar + 2 * self.frameWidth())

    def changeEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().changeEvent(event)
        if event.type() in (event.Type.FontChange, event.Type.StyleChange):
            self.fit_width()
