"""A Qt table model over a pyarrow Table, for previews of files with any number of rows.

Nothing is converted up front: the view asks for the cells it paints, and rows are turned into
Python strings a block at a time (a few hundred rows), kept in a small LRU cache. Scrolling
through 100,000 rows therefore touches only the blocks that come into view, and the row count,
the scroll bar and jumping to a line are exact from the start. Row headers are the file's line
numbers, so they match the line numbers in validation messages.
"""

from __future__ import annotations

from collections import OrderedDict

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QFont

BLOCK_ROWS = 256
CACHED_BLOCKS = 64
SHOWN_CHARS = 300  # a cell shows this much; the tooltip has more
TOOLTIP_CHARS = 2000


def _flat(value) -> str:
    if value is None:
        return ""
    s = str(value)
    if len(s) > SHOWN_CHARS:
        s = s[:SHOWN_CHARS] + "…"
    return s.replace("\r", " ").replace("\n", " ⏎ ").replace("\t", " ")


class ArrowTableModel(QAbstractTableModel):
    def __init__(self, table, columns: list[str], line_column: str | None = None, parent=None) -> None:
        super().__init__(parent)
        import numpy as np

        self._table = table
        self._columns = list(columns)
        self._arrays = [table.column(c) for c in columns]
        self._line_column = line_column
        self._lines = (
            table.column(line_column).to_numpy().astype(np.int64) if line_column else np.arange(1, table.num_rows + 1)
        )
        self._blocks: OrderedDict[int, list[list]] = OrderedDict()
        self._roles: dict[str, str] = {}
        self._bold = QFont()
        self._bold.setBold(True)
        self.blocks_converted = 0  # how many blocks were turned into Python objects (tests check laziness)

    # ---- Qt model interface -------------------------------------------------------------------------
    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else self._table.num_rows

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._columns)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return _flat(self._cell(index.row(), index.column()))
        if role == Qt.ItemDataRole.ToolTipRole:
            value = self._cell(index.row(), index.column())
            if value is not None and len(str(value)) > 60:
                return str(value)[:TOOLTIP_CHARS]
        return None

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Vertical:
            if role == Qt.ItemDataRole.DisplayRole:
                return str(int(self._lines[section]))
            if role == Qt.ItemDataRole.ToolTipRole:
                return f"Line {int(self._lines[section])} of the file"
            return None
        name = self._columns[section]
        role_name = self._roles.get(name)
        if role == Qt.ItemDataRole.DisplayRole:
            return f"{name}  ·  {role_name}" if role_name and role_name != name.lower() else name
        if role == Qt.ItemDataRole.FontRole and role_name:
            return self._bold
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"Column '{name}'" + (f", used as the {role_name}" if role_name else ", not used")
        return None

    # ---- helpers ------------------------------------------------------------------------------------
    @property
    def columns(self) -> list[str]:
        return list(self._columns)

    def set_roles(self, roles: dict[str, str]) -> None:
        """Mark columns with their role (``{"sentence": "text", "label": "label"}``) in the header."""
        self._roles = dict(roles)
        if self._columns:
            self.headerDataChanged.emit(Qt.Orientation.Horizontal, 0, len(self._columns) - 1)

    def line_of_row(self, row: int) -> int:
        return int(self._lines[row])

    def row_of_line(self, line: int) -> tuple[int, bool]:
        """The row holding file line ``line`` (or the nearest one after it), and whether it is exact."""
        import numpy as np

        n = len(self._lines)
        if n == 0:
            return -1, False
        row = int(np.searchsorted(self._lines, line))
        if row >= n:
            return n - 1, False
        return row, int(self._lines[row]) == line

    def _cell(self, row: int, column: int):
        block, offset = divmod(row, BLOCK_ROWS)
        rows = self._blocks.get(block)
        if rows is None:
            start = block * BLOCK_ROWS
            rows = [a.slice(start, BLOCK_ROWS).to_pylist() for a in self._arrays]
            self._blocks[block] = rows
            self.blocks_converted += 1
            if len(self._blocks) > CACHED_BLOCKS:
                self._blocks.popitem(last=False)
        else:
            self._blocks.move_to_end(block)
        return rows[column][offset]
