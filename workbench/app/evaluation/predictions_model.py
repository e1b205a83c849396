"""A table model over a run's predictions that filters and sorts with numpy.

QSortFilterProxyModel calls back into Python for every comparison and every row it filters, which
takes seconds at 100,000 rows. Here the columns are numpy arrays and one index array maps view rows
to prediction rows, so a filter or a sort is a few vectorised operations and one model reset.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QApplication

from ..widgets.table_model import HeadedTableModel

ERROR_COLOUR = QColor("#d64541")  # readable on light and dark bases alike
PAIR_SEPARATOR = "  \u2016  "  # between the two texts of a sentence pair


class PredictionColumns:
    """The columns the table shows, as numpy arrays (labels as codes) and one Arrow text array.

    Built from predictions.jsonl's table without Qt, so a worker thread can do it: at 100,000 rows
    the reading and encoding take a good part of a second.
    """

    def __init__(self, n, line, text, labels, gold, pred, conf, probs) -> None:
        self.n, self.line, self.text, self.labels = n, line, text, labels
        self.gold, self.pred, self.conf, self.probs = gold, pred, conf, probs
        self.has_pair = False

    @classmethod
    def empty(cls) -> "PredictionColumns":
        z = np.zeros(0, np.int32)
        return cls(0, np.zeros(0, np.int64), None, [], z, z, np.zeros(0), None)

    @classmethod
    def from_table(cls, table) -> "PredictionColumns":
        import pyarrow as pa
        import pyarrow.compute as pc

        if table is None or table.num_rows == 0:
            return cls.empty()
        n = table.num_rows

        def col(name):
            return table.column(name).combine_chunks() if name in table.column_names else None

        line = col("row")
        line = line.to_numpy(zero_copy_only=False).astype(np.int64) if line is not None else np.arange(1, n + 1)
        text = col("text")
        text = pc.fill_null(text.cast(pa.string()), "") if text is not None else pa.array([""] * n)
        pair = col("text_pair")
        if pair is not None:
            # Sentence pairs: both texts in the one Input column, so search and sort see both.
            text = pc.binary_join_element_wise(text, pc.fill_null(pair.cast(pa.string()), ""), PAIR_SEPARATOR)
        gold = col("gold")
        gold = gold.cast(pa.string()) if gold is not None else pa.nulls(n, pa.string())
        pred = col("predicted")
        pred = pred.cast(pa.string()) if pred is not None else gold
        # Gold and predicted share one label list so their codes compare directly.
        labels = [l for l in pc.unique(pa.concat_arrays([gold, pred])).to_pylist() if l is not None]
        lookup = pa.array(labels, pa.string())

        def codes(values):
            return pc.fill_null(pc.index_in(values, value_set=lookup), -1).to_numpy(zero_copy_only=False).astype(np.int32)

        conf = col("confidence")
        conf = (
            pc.fill_null(conf.cast(pa.float64()), float("nan")).to_numpy(zero_copy_only=False)
            if conf is not None
            else np.full(n, np.nan)
        )
        cols = cls(n, line, text, labels, codes(gold), codes(pred), conf, col("probabilities"))
        cols.has_pair = pair is not None
        return cols

    def text_at(self, i: int) -> str:
        return self.text[i].as_py() if self.text is not None else ""

    def matches(self, query: str) -> np.ndarray:
        import pyarrow.compute as pc

        if self.text is None:
            return np.zeros(self.n, bool)
        hit = pc.match_substring(self.text, pattern=query, ignore_case=True)
        return pc.fill_null(hit, False).to_numpy(zero_copy_only=False)

    def text_rank(self) -> np.ndarray:
        import pyarrow.compute as pc

        if self.text is None:
            return np.zeros(self.n, np.int64)
        return pc.rank(self.text, sort_keys="ascending", tiebreaker="first").to_numpy(zero_copy_only=False)


class PredictionsModel(HeadedTableModel):
    LINE, TEXT, GOLD, PREDICTED, CONFIDENCE = range(5)
    HEADERS = ("Line", "Input", "Gold", "Predicted", "Confidence")
    TIPS = (
        "Line of the example in its data file",
        "The input the model saw (hover for all of it)",
        "The label in the data",
        "The label the model chose",
        "The probability the model gave its choice",
    )

    RIGHT_HEADERS = (LINE, CONFIDENCE)

    # Emitted after every filter change with (rows shown, rows in total).
    filtered = Signal(int, int)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._set_empty()

    def _set_empty(self) -> None:
        self._cols = PredictionColumns.empty()
        self._order = np.zeros(0, np.int64)
        self._text_rank: np.ndarray | None = None
        self._errors_only = False
        self._cell: tuple[str, str] | None = None
        self._query = ""
        self._sort: tuple[int, Qt.SortOrder] | None = None

    # ---- data in --------------------------------------------------------------------------------
    def set_table(self, table) -> None:
        """Show a pyarrow Table with row/text/gold/predicted/confidence columns."""
        self.set_columns(PredictionColumns.from_table(table))

    def set_columns(self, cols: "PredictionColumns") -> None:
        """Show columns prepared by ``PredictionColumns.from_table`` (which may run on a worker thread)."""
        # The sort, errors-only and search stay as the controls show them; a cell filter belongs
        # to the previous run's confusion matrix and goes.
        kept = self._sort, self._errors_only, self._query
        self.beginResetModel()
        self._set_empty()
        self._cols = cols
        self._sort, self._errors_only, self._query = kept
        self._order = self._compute_order()
        self.endResetModel()
        self.filtered.emit(len(self._order), self._n)

    @property
    def _n(self) -> int:
        return self._cols.n

    # ---- filtering and sorting ------------------------------------------------------------------
    def _code(self, label: str) -> int:
        try:
            return self._cols.labels.index(label)
        except ValueError:
            return -2  # a label no prediction has: matches nothing

    def _compute_order(self) -> np.ndarray:
        mask = np.ones(self._n, bool)
        if self._errors_only:
            mask &= self._cols.gold != self._cols.pred
        if self._cell is not None:
            mask &= (self._cols.gold == self._code(self._cell[0])) & (self._cols.pred == self._code(self._cell[1]))
        if self._query:
            mask &= self._cols.matches(self._query)
        rows = np.flatnonzero(mask)
        if self._sort is not None and len(rows):
            column, order = self._sort
            key = self._sort_key(column)
            if key is not None:
                rows = rows[np.argsort(key[rows], kind="stable")]
                if order == Qt.SortOrder.DescendingOrder:
                    rows = rows[::-1]
        return rows

    def _sort_key(self, column: int):
        if column == self.LINE:
            return self._cols.line
        if column == self.CONFIDENCE:
            return np.nan_to_num(self._cols.conf, nan=-1.0)
        if column in (self.GOLD, self.PREDICTED):
            # By label name, not by first appearance.
            rank = np.argsort(np.argsort(np.array(self._cols.labels, dtype=object))) if self._cols.labels else np.zeros(0, int)
            codes = self._cols.gold if column == self.GOLD else self._cols.pred
            return np.where(codes >= 0, rank[np.clip(codes, 0, None)] if len(rank) else 0, -1)
        if column == self.TEXT:
            if self._text_rank is None:
                self._text_rank = self._cols.text_rank()
            return self._text_rank
        return None

    def _refilter(self) -> None:
        self.beginResetModel()
        self._order = self._compute_order()
        self.endResetModel()
        self.filtered.emit(len(self._order), self._n)

    def set_errors_only(self, on: bool) -> None:
        if on != self._errors_only:
            self._errors_only = on
            self._refilter()

    def set_cell(self, gold: str | None, predicted: str | None = None) -> None:
        """Only examples with this gold and this predicted label; ``None`` shows all again."""
        cell = None if gold is None or predicted is None else (str(gold), str(predicted))
        if cell != self._cell:
            self._cell = cell
            self._refilter()

    def set_query(self, text: str) -> None:
        text = text.strip()
        if text != self._query:
            self._query = text
            self._refilter()

    @property
    def cell(self) -> tuple[str, str] | None:
        return self._cell

    @property
    def errors_only(self) -> bool:
        return self._errors_only

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        self.layoutAboutToBeChanged.emit()
        # Selected and current rows follow their examples to where the sort puts them.
        persistent = self.persistentIndexList()
        sources = [int(self._order[i.row()]) for i in persistent]
        self._sort = (column, order)
        self._order = self._compute_order()
        position = np.empty(self._n, np.int64)
        position[self._order] = np.arange(len(self._order))
        self.changePersistentIndexList(
            persistent, [self.index(int(position[s]), i.column()) for s, i in zip(sources, persistent)]
        )
        self.layoutChanged.emit()

    # ---- reading rows back (tests, the try-it box) ----------------------------------------------
    @property
    def has_pair(self) -> bool:
        """Sentence pairs: the Input column holds both texts, joined by PAIR_SEPARATOR."""
        return bool(self._cols.has_pair)

    def total_rows(self) -> int:
        return self._n

    def row_record(self, view_row: int) -> dict:
        i = int(self._order[view_row])
        return {
            "index": i,  # the row of the run's predictions table
            "row": int(self._cols.line[i]),
            "text": self._cols.text_at(i),
            "gold": self._cols.labels[self._cols.gold[i]] if self._cols.gold[i] >= 0 else None,
            "predicted": self._cols.labels[self._cols.pred[i]] if self._cols.pred[i] >= 0 else None,
            "confidence": float(self._cols.conf[i]),
        }

    # ---- Qt model interface ---------------------------------------------------------------------
    def row_count(self) -> int:
        return len(self._order)

    def _label(self, code: int) -> str:
        return self._cols.labels[code] if code >= 0 else ""

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        i = int(self._order[index.row()])
        c = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if c == self.LINE:
                return str(self._cols.line[i])
            if c == self.TEXT:
                # One line per row: a newline in the data would otherwise double a row's height.
                return self._cols.text_at(i).replace("\n", " ")
            if c == self.GOLD:
                return self._label(self._cols.gold[i])
            if c == self.PREDICTED:
                return self._label(self._cols.pred[i])
            if c == self.CONFIDENCE:
                v = self._cols.conf[i]
                return "" if np.isnan(v) else f"{v:.3f}"
        elif role == Qt.ItemDataRole.TextAlignmentRole:
            if c in (self.LINE, self.CONFIDENCE):
                return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        elif role == Qt.ItemDataRole.ForegroundRole:
            if c == self.PREDICTED and self._cols.gold[i] != self._cols.pred[i]:
                return ERROR_COLOUR
        elif role == Qt.ItemDataRole.FontRole:
            if c == self.PREDICTED and self._cols.gold[i] != self._cols.pred[i]:
                font = QApplication.font()
                font.setBold(True)
                return font
        elif role == Qt.ItemDataRole.ToolTipRole:
            if c == self.TEXT:
                return _wrap(self._cols.text_at(i))
            if c in (self.PREDICTED, self.CONFIDENCE):
                return self._probabilities_tip(i)
        elif role == Qt.ItemDataRole.UserRole:
            return self.row_record(index.row())
        return None

    def probabilities(self, view_row: int) -> list[tuple[str, float]]:
        """The recorded probability of every label for the listed row, best first ([] when the run
        recorded none)."""
        if self._cols.probs is None or not 0 <= view_row < len(self._order):
            return []
        probs = self._cols.probs[int(self._order[view_row])].as_py() or {}
        return sorted(((k, float(v)) for k, v in probs.items() if v is not None), key=lambda kv: -kv[1])

    def _probabilities_tip(self, i: int) -> str | None:
        if self._cols.probs is None:
            return None
        probs = self._cols.probs[i].as_py() or {}
        top = sorted(probs.items(), key=lambda kv: kv[1] if kv[1] is not None else -1, reverse=True)[:10]
        return "\n".join(f"{k}: {v:.3f}" for k, v in top if v is not None)


def _wrap(text: str, width: int = 100, limit: int = 2000) -> str:
    import textwrap

    text = text if len(text) <= limit else text[:limit] + " ..."
    return "\n".join(textwrap.wrap(text, width)) or text
