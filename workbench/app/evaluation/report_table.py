"""Per-class precision/recall/F1/support, sortable by any column."""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableView

from ..widgets.table_model import RIGHT, ListTableModel

SORT_ROLE = Qt.ItemDataRole.UserRole  # numbers sort as numbers, not as text


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
        self.verticalHeader().hide()
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        header.setMinimumSectionSize(self.fontMetrics().horizontalAdvance("0.000") + 16)

    def set_rows(self, rows: list[dict]) -> None:
        self.source.set_rows(rows)
