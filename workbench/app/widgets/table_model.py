"""The part of a flat Qt table model every table of the app writes the same way: one row per item,
one column per header, the headers' texts and tooltips."""

from __future__ import annotations

from typing import ClassVar

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt

RIGHT = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)  # numbers line up on the right


class HeadedTableModel(QAbstractTableModel):
    """Columns are ``HEADERS`` (``TIPS``: their tooltips; ``RIGHT_HEADERS``: sections aligned right);
    subclasses give :meth:`row_count` and ``data``."""

    HEADERS: ClassVar[tuple[str, ...]] = ()
    TIPS: ClassVar[tuple[str, ...]] = ()
    RIGHT_HEADERS: ClassVar[tuple[int, ...]] = ()

    def row_count(self) -> int:
        raise NotImplementedError

    def column_count(self) -> int:
        return len(self.HEADERS)

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802 - Qt API
        return 0 if parent.isValid() else self.row_count()

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802 - Qt API
        return 0 if parent.isValid() else self.column_count()

    def headerData(self, section: int, orientation: Qt.Orientation,  # noqa: N802 - Qt API
                   role: int = Qt.ItemDataRole.DisplayRole):
        if orientation != Qt.Orientation.Horizontal:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return self.HEADERS[section]
        if role == Qt.ItemDataRole.ToolTipRole and self.TIPS:
            return self.TIPS[section]
        if role == Qt.ItemDataRole.TextAlignmentRole and section in self.RIGHT_HEADERS:
            return RIGHT
        return None


class ListTableModel(HeadedTableModel):
    """A :class:`HeadedTableModel` over a list, ``rows``: one table row per item, replaced at once."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.rows: list = []

    def set_rows(self, rows) -> None:
        self.beginResetModel()
        self.rows = list(rows)
        self.endResetModel()

    def row_count(self) -> int:
        return len(self.rows)
