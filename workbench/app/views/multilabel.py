"""Evaluation of a multi-label run (several labels per example, a threshold per label): headline
scores at the tuned thresholds beside the same at 0.5, the per-label table with each threshold and
where it came from, each label's TP/FP/FN/TN counts (a click lists those examples), the examples
worst first, and a box that scores every label of a typed text (or a dropped image) against its
threshold with the export's own Predictor, so it decides exactly as predict and serve do; for an
image, the saliency map of a label picked from them (the most confident decided one first)."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QRect, QRectF, QSize, Qt, Signal, Slot
from PySide6.QtGui import QColor, QImage, QPainter, QPalette, QPen, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QGridLayout,
    QHeaderView,
    QLabel,
    QScrollArea,
    QSizePolicy,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableView,
    QWidget,
)

from ...core.run.history import RunData
from ..evaluation.confusion import CORRECT_HUE, ERROR_HUE, blend, contrast_text
from ..evaluation.predictions_model import ERROR_COLOUR, _wrap
from ..evaluation.report_table import PerClassModel, PerClassTable
from ..evaluation.tiles import MetricTile
from ..evaluation.try_it_base import TextTryIt, TryIt
from ..evaluation.view_base import ExampleFilters, RunView
from ..model_cache import MODELS
from ..widgets.build import column, rows_table, section, set_column, side_by_side, text_label
from ..widgets.table_model import RIGHT, HeadedTableModel
from .images import ImageTryIt

KIND = "multilabel-predictor"  # the model cache's name for the export's Predictor
LIST_JOIN = ", "  # how a row's labels are shown in one cell
NO_LABEL = "\u2014"  # an empty label set, in a cell
# (report key, tile title, what the tile's tooltip says); the first three are the task's headline metrics.
SCORES = (
    ("micro_f1", "Micro F1", "F1 over every (example, label) decision together: frequent labels weigh most"),
    ("macro_f1", "Macro F1", "The mean of the labels' F1: every label weighs the same, rare ones included"),
    ("subset_accuracy", "Exact-match accuracy", "Share of examples whose whole label set is exactly right"),
    ("hamming_loss", "Hamming loss", "Share of (example, label) decisions that are wrong; lower is better"),
    ("lrap", "LRAP", "Label-ranking average precision: how well the scores rank each example's true labels "
                     "above the others (thresholds play no part)"),
)
KINDS = ("tp", "fp", "fn", "tn")
KIND_TEXT = {"tp": "found (true positives)", "fp": "predicted but not true (false positives)",
             "fn": "missed (false negatives)", "tn": "rightly left out (true negatives)"}


# ---------------------------------------------------------------------------- the evaluated rows


@dataclass
class LabelRows:
    """A run's predictions.jsonl as arrays: per row its file line and input, and per (row, label) the
    truth, the decision and the score; built without Qt, on a worker thread."""

    names: list[str] = field(default_factory=list)
    line: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    text: list[str] = field(default_factory=list)  # the text, or the image's path
    gold: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))
    pred: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    images: bool = False

    def __len__(self) -> int:
        return len(self.line)

    @classmethod
    def from_table(cls, table, names: list[str] | None = None) -> "LabelRows":
        if table is None or table.num_rows == 0 or "labels" not in table.column_names:
            return cls(names=list(names or []))
        cols = table.column_names
        gold_lists = [v or [] for v in table.column("labels").to_pylist()]
        pred_lists = [v or [] for v in table.column("predicted").to_pylist()] if "predicted" in cols else gold_lists
        if not names:  # a report without its label list: every label the rows name, sorted
            names = sorted({n for lists in (gold_lists, pred_lists) for row in lists for n in row})
        index = {n: j for j, n in enumerate(names)}
        images = "path" in cols and "text" not in cols
        n = table.num_rows
        text = [str(t or "") for t in table.column("path" if images else "text").to_pylist()] if (
            images or "text" in cols) else [""] * n
        line = table.column("row").to_numpy().astype(np.int64) if "row" in cols else np.arange(1, n + 1)
        return cls(list(names), line, text, _hot(gold_lists, index, n), _hot(pred_lists, index, n),
                   _score_matrix(table, names), images)

    @property
    def missed(self) -> np.ndarray:
        return self.gold & ~self.pred

    @property
    def extra(self) -> np.ndarray:
        return self.pred & ~self.gold

    @property
    def exact(self) -> np.ndarray:
        return ~(self.gold ^ self.pred).any(axis=1) if len(self) else np.zeros(0, bool)

    def worst_first(self) -> np.ndarray:
        """Rows by their wrong decisions (most first), then by how far the scores are from the truth."""
        if not len(self):
            return np.zeros(0, np.int64)
        wrong = (self.gold ^ self.pred).sum(axis=1)
        distance = np.abs(self.gold.astype(float) - self.scores).sum(axis=1)
        return np.lexsort((-distance, -wrong)).astype(np.int64)

    def cell_mask(self, label: str, kind: str) -> np.ndarray:
        """Rows whose decision on ``label`` is ``kind`` (tp, fp, fn, tn)."""
        if label not in self.names:
            return np.zeros(len(self), bool)
        j = self.names.index(label)
        g, p = self.gold[:, j], self.pred[:, j]
        return {"tp": g & p, "fp": ~g & p, "fn": g & ~p, "tn": ~g & ~p}[kind]

    def labels_at(self, matrix: np.ndarray, i: int) -> list[str]:
        return [self.names[j] for j in np.flatnonzero(matrix[i])]


def _hot(lists: list[list[str]], index: dict[str, int], n: int) -> np.ndarray:
    out = np.zeros((n, len(index)), bool)
    for r, labels in enumerate(lists):
        for label in labels:
            j = index.get(label)
            if j is not None:
                out[r, j] = True
    return out


def _score_matrix(table, names: list[str]) -> np.ndarray:
    """The ``scores`` struct column as a rows x labels array (0 for a label a row has no score for)."""
    out = np.zeros((table.num_rows, len(names)))
    if "scores" not in table.column_names:
        return out
    import pyarrow.compute as pc

    scores = table.column("scores").combine_chunks()
    fields = {scores.type.field(k).name for k in range(scores.type.num_fields)} if hasattr(scores.type, "num_fields") \
        else set()
    for j, name in enumerate(names):
        if name in fields:
            out[:, j] = pc.fill_null(pc.struct_field(scores, name).cast("float64"), 0.0).to_numpy(zero_copy_only=False)
    return out


# ---------------------------------------------------------------------------- the examples list


class LabelPredictionsModel(HeadedTableModel):
    """One row per evaluated example, worst first; filtered by errors, a search and a label's count
    (``set_cell(label, kind)``), sorted by any column. ``filtered(shown, total)`` after each change."""

    LINE, INPUT, GOLD, PREDICTED, MISSED, EXTRA, EXACT = range(7)
    HEADERS = ("Line", "Input", "True labels", "Predicted", "Missed", "Extra", "Exact")
    TIPS = ("Line of the example in its data file", "The input the model saw (hover for all of it)",
            "The labels in the data", "The labels whose score reached their threshold",
            "True labels the model did not predict", "Labels the model predicted that are not true",
            "Whether the predicted set is exactly the true one")
    RIGHT_HEADERS = (LINE,)
    filtered = Signal(int, int)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.rows = LabelRows()
        self._order = np.zeros(0, np.int64)
        self._errors_only = False
        self._query = ""
        self._cell: tuple[str, str] | None = None
        self._sort: tuple[int, Qt.SortOrder] | None = None
        self._texts: list[list[str]] = []  # per row: gold, predicted, missed, extra as cell strings

    def set_rows(self, rows: LabelRows) -> None:
        self.beginResetModel()
        self.rows, self._cell = rows, None
        self._texts = [[_joined(rows.labels_at(m, i)) for m in (rows.gold, rows.pred, rows.missed, rows.extra)]
                       for i in range(len(rows))]
        self._order = self._compute_order()
        self.endResetModel()
        self.filtered.emit(len(self._order), len(rows))

    # ---- filters (ExampleFilters calls these) ------------------------------------------------------
    def set_errors_only(self, on: bool) -> None:
        self._errors_only = bool(on)
        self._refilter()

    def set_query(self, text: str) -> None:
        self._query = text.strip().lower()
        self._refilter()

    def set_cell(self, label: str | None, kind: str | None = None) -> None:
        self._cell = None if label is None or kind is None else (label, kind)
        self._refilter()

    @property
    def cell(self) -> tuple[str, str] | None:
        return self._cell

    def _refilter(self) -> None:
        self.beginResetModel()
        self._order = self._compute_order()
        self.endResetModel()
        self.filtered.emit(len(self._order), len(self.rows))

    def _compute_order(self) -> np.ndarray:
        r = self.rows
        mask = np.ones(len(r), bool)
        if self._errors_only:
            mask &= ~r.exact
        if self._cell is not None:
            mask &= r.cell_mask(*self._cell)
        if self._query:
            q = self._query
            mask &= np.array([q in t.lower() or any(q in c.lower() for c in cells)
                              for t, cells in zip(r.text, self._texts)], bool) if len(r) else mask
        order = r.worst_first()
        if self._sort is not None and self._sort[0] >= 0 and len(order):
            order = self._sorted(order, *self._sort)
        return order[mask[order]]

    def _sorted(self, order: np.ndarray, column: int, how: Qt.SortOrder) -> np.ndarray:
        r = self.rows
        if column == self.INPUT:
            key: Any = np.array([t.lower() for t in r.text], dtype=object)
        elif column in (self.GOLD, self.PREDICTED):
            key = np.array([t[column - self.GOLD] for t in self._texts], dtype=object)
        else:
            key = {self.LINE: r.line, self.MISSED: r.missed.sum(axis=1), self.EXTRA: r.extra.sum(axis=1),
                   self.EXACT: r.exact.astype(int)}[column]
        ranked = order[np.argsort(key[order], kind="stable")]
        return ranked[::-1].copy() if how == Qt.SortOrder.DescendingOrder else ranked

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        self.layoutAboutToBeChanged.emit()
        self._sort = (column, order)
        self._order = self._compute_order()
        self.layoutChanged.emit()

    # ---- reading rows back -------------------------------------------------------------------------
    def row_count(self) -> int:
        return len(self._order)

    def total_rows(self) -> int:
        return len(self.rows)

    def row_record(self, view_row: int) -> dict:
        i = int(self._order[view_row])
        r = self.rows
        return {"index": i, "row": int(r.line[i]), "text": r.text[i], "labels": r.labels_at(r.gold, i),
                "predicted": r.labels_at(r.pred, i), "scores": dict(zip(r.names, map(float, r.scores[i]))),
                "correct": bool(r.exact[i])}

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        i, c = int(self._order[index.row()]), index.column()
        exact = bool(self.rows.exact[i])
        if role == Qt.ItemDataRole.DisplayRole:
            if c == self.LINE:
                return str(int(self.rows.line[i]))
            if c == self.INPUT:
                return self.rows.text[i].replace("\n", " ")
            if c == self.EXACT:
                return "yes" if exact else "no"
            cell = self._texts[i][c - self.GOLD]
            return cell or ("" if c in (self.MISSED, self.EXTRA) else NO_LABEL)
        if role == Qt.ItemDataRole.ForegroundRole and (c in (self.MISSED, self.EXTRA) or (c == self.EXACT and not exact)):
            return ERROR_COLOUR
        if role == Qt.ItemDataRole.TextAlignmentRole and c == self.LINE:
            return RIGHT
        if role == Qt.ItemDataRole.ToolTipRole:
            if c == self.INPUT:
                return _wrap(self.rows.text[i])
            if c in (self.GOLD, self.PREDICTED, self.MISSED, self.EXTRA):
                return self._scores_tip(i)
        if role == Qt.ItemDataRole.UserRole:
            return self.row_record(index.row())
        return None

    def _scores_tip(self, i: int) -> str:
        r = self.rows
        order = np.argsort(-r.scores[i], kind="stable")[:12]
        return "\n".join(f"{r.names[j]}: {r.scores[i, j]:.3f}{'  (true)' if r.gold[i, j] else ''}" for j in order)


def _joined(labels: list[str]) -> str:
    return LIST_JOIN.join(labels)


# ---------------------------------------------------------------------------- per-label tables


class PerLabelModel(PerClassModel):
    """The report's per_label rows: precision, recall, F1, support, then the threshold and its source."""

    KEYS = (*PerClassModel.KEYS, "threshold", "tuned")
    HEADERS = (*PerClassModel.HEADERS[:4], "Support", "Threshold", "Source")
    TIPS = (*PerClassModel.TIPS[:4], "Examples with this label in the evaluated split",
            "A label is predicted where its score reaches this", "Tuned on the validation split for the best F1, or "
            "the default 0.5 (too few validation examples of the label, or no validation split)")

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or index.column() < 5:
            return super().data(index, role)
        row = self.rows[index.row()]
        if index.column() == 5:
            if role == Qt.ItemDataRole.DisplayRole:
                return f"{row.get('threshold', 0.5):.3f}"
            if role in (Qt.ItemDataRole.UserRole, Qt.ItemDataRole.TextAlignmentRole):
                return row.get("threshold") if role == Qt.ItemDataRole.UserRole else RIGHT
            return None
        tuned = bool(row.get("tuned"))
        if role == Qt.ItemDataRole.DisplayRole:
            return "tuned" if tuned else "0.5 (default)"
        if role == Qt.ItemDataRole.UserRole:
            return int(tuned)
        if role == Qt.ItemDataRole.ForegroundRole and not tuned:
            return QColor("#8a8a8a")
        if role == Qt.ItemDataRole.ToolTipRole:
            return ("Tuned on the validation split to give this label its best F1" if tuned else
                    "Kept at the default 0.5: too few validation examples of this label to tune on")
        return None


class PerLabelTable(PerClassTable):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.source = PerLabelModel(self)
        self.proxy.setSourceModel(self.source)
        header = self.horizontalHeader()
        for c in range(1, self.source.columnCount()):
            header.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        self.fit_width()


class LabelCountsModel(HeadedTableModel):
    """Per label: how many examples it was found on (TP), wrongly given (FP), missed (FN) and rightly
    left off (TN). Cells are tinted by their share of the examples: blue right, orange wrong."""

    HEADERS = ("Label", "TP\nfound", "FP\nextra", "FN\nmissed", "TN\nleft out")
    TIPS = ("The label", "True positives: true and predicted", "False positives: predicted but not true",
            "False negatives: true but not predicted", "True negatives: neither true nor predicted")
    RIGHT_HEADERS = (1, 2, 3, 4)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.rows: list[dict] = []
        self.base = QColor("white")

    def set_rows(self, rows: list[dict]) -> None:
        self.beginResetModel()
        self.rows = list(rows)
        self.endResetModel()

    def row_count(self) -> int:
        return len(self.rows)

    def count(self, row: int, kind: str) -> int:
        return int(self.rows[row].get(kind, 0))

    def colour(self, row: int, col: int) -> QColor:
        kind = KINDS[col - 1]
        n = sum(self.count(row, k) for k in KINDS) or 1
        value = self.count(row, kind)
        if value == 0:
            return self.base
        return blend(self.base, CORRECT_HUE if kind in ("tp", "tn") else ERROR_HUE, 0.12 + 0.6 * value / n)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        r, c = index.row(), index.column()
        label = str(self.rows[r]["label"])
        if c == 0:
            return label if role == Qt.ItemDataRole.DisplayRole else None
        kind = KINDS[c - 1]
        if role == Qt.ItemDataRole.DisplayRole:
            return f"{self.count(r, kind):,}"
        if role == Qt.ItemDataRole.BackgroundRole:
            return self.colour(r, c)
        if role == Qt.ItemDataRole.ForegroundRole:
            return contrast_text(self.colour(r, c))
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return RIGHT
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{label}: {self.count(r, kind):,} example(s) {KIND_TEXT[kind]}\nClick to list them below."
        return None


class LabelCountsView(QTableView):
    """The counts table; a click on a count emits ``cell_chosen(label, kind)``, a second click (or
    ``clear_choice``) ``cell_cleared``: the signals ExampleFilters listens to."""

    cell_chosen = Signal(str, str)
    cell_cleared = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.counts = LabelCountsModel(self)
        self.setModel(self.counts)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setWordWrap(False)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.setItemDelegate(_CountDelegate(self))
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # the width is asked for instead
        self.verticalHeader().hide()
        header = self.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        for c in range(1, 5):
            header.setSectionResizeMode(c, QHeaderView.ResizeMode.Stretch)
        self._chosen: tuple[int, int] | None = None
        self.clicked.connect(self._on_clicked)
        self.counts.base = self.palette().color(QPalette.ColorRole.Base)

    def set_rows(self, rows: list[dict]) -> None:
        self._chosen = None
        self.clearSelection()
        self.counts.set_rows(rows)
        self._fit()

    def _fit(self) -> None:
        """The label column as wide as its longest label (at most 14 ems), each count column as its
        header or largest count; the table asks for that much width."""
        fm, header = self.fontMetrics(), self.horizontalHeader()
        label = min(max([fm.horizontalAdvance(str(r["label"])) for r in self.counts.rows] + [fm.horizontalAdvance(
            "Label")]) + 16, fm.horizontalAdvance("M") * 14)
        header.resizeSection(0, label)
        widest = max([header.sectionSizeHint(c) for c in range(1, 5)]
                     + [fm.horizontalAdvance(f"{self.counts.count(r, k):,}") + 16 for r in range(len(self.counts.rows))
                        for k in KINDS])
        header.setMinimumSectionSize(min(widest, fm.horizontalAdvance("0") * 12))
        bar = self.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent, None, self)
        self.setMinimumWidth(label + 4 * header.minimumSectionSize() + bar + 2 * self.frameWidth())

    def choose(self, label: str, kind: str) -> None:
        """Select a count by label and kind, as a click on it does."""
        row = next(r for r, x in enumerate(self.counts.rows) if x["label"] == label)
        self._on_clicked(self.counts.index(row, KINDS.index(kind) + 1))

    def clear_choice(self) -> None:
        if self._chosen is not None:
            self._chosen = None
            self.clearSelection()
            self.cell_cleared.emit()

    @Slot(QModelIndex)
    def _on_clicked(self, index: QModelIndex) -> None:
        if index.column() == 0:
            return
        cell = (index.row(), index.column())
        if cell == self._chosen:
            self.clear_choice()
            return
        self._chosen = cell
        self.setCurrentIndex(index)
        self.cell_chosen.emit(str(self.counts.rows[cell[0]]["label"]), KINDS[cell[1] - 1])

    def changeEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().changeEvent(event)
        if event.type() in (event.Type.PaletteChange, event.Type.StyleChange):
            self.counts.base = self.palette().color(QPalette.ColorRole.Base)


class _CountDelegate(QStyledItemDelegate):
    """Paints a count's tint itself, so the chosen count keeps it and gets a frame instead."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index) -> None:
        if index.column() == 0:
            super().paint(painter, option, index)
            return
        painter.save()
        rect: QRect = option.rect.adjusted(1, 1, -1, -1)
        painter.fillRect(rect, index.data(Qt.ItemDataRole.BackgroundRole))
        painter.setPen(index.data(Qt.ItemDataRole.ForegroundRole))
        painter.drawText(rect.adjusted(0, 0, -6, 0), Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                         index.data(Qt.ItemDataRole.DisplayRole))
        if option.state & QStyle.StateFlag.State_Selected:
            painter.setPen(QPen(option.palette.color(QPalette.ColorRole.Text), 3))
            painter.drawRect(rect.adjusted(1, 1, -2, -2))
        painter.restore()


# ---------------------------------------------------------------------------- try it


def _load_predictor(folder: Path):
    from ...core.predict.predictor import Predictor

    return Predictor(folder)  # the backend predict and serve pick by default (ONNX Runtime when exported)


def predict_labels(model_dir: str | Path, item: Any, text_pair: str | None = None) -> dict[str, Any]:
    """The export's answer for one text (or image path): decided ``labels`` and every label's
    ``scores`` as ``Predictor.predict`` gives them, with each label's ``thresholds`` and the labels
    left at the default (``fallback``), label order."""
    predictor = MODELS.get(KIND, model_dir, _load_predictor)
    answer = predictor.predict([[item, text_pair] if predictor.pairs else item])[0]
    return {**answer, "thresholds": dict(zip(predictor.labels, map(float, predictor.thresholds))),
            "fallback": list(predictor.thresholds_fallback)}


class ThresholdBar(QWidget):
    """A score as a bar from 0 to 1 with its threshold as a tick: filled in the highlight colour when
    the score reaches the threshold (the label is decided), dimmed below it."""

    def __init__(self, score: float, threshold: float, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.score, self.threshold = float(score), float(threshold)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip(f"score {self.score:.3f}, threshold {self.threshold:.3f}")

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(160, 16)

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        w, h = self.width() - 2, self.height()
        track = QColor(pal.color(QPalette.ColorRole.WindowText))
        track.setAlphaF(0.08)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(track)
        p.drawRoundedRect(QRectF(1, 3, w, h - 6), 3, 3)
        fill = QColor(pal.color(QPalette.ColorRole.Highlight))
        if self.score < self.threshold:
            fill.setAlphaF(0.35)
        p.setBrush(fill)
        p.drawRoundedRect(QRectF(1, 3, max(2.0, w * self.score), h - 6), 3, 3)
        p.setPen(QPen(pal.color(QPalette.ColorRole.WindowText), 2))
        x = 1 + w * self.threshold
        p.drawLine(int(round(x)), 0, int(round(x)), h)


class ThresholdBars(QWidget):
    """Every label, best score first: its name (bold when decided), its score against its threshold,
    the score and the threshold in figures; above them, the decided labels."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.decided = text_label()
        self.decided.setTextFormat(Qt.TextFormat.RichText)
        self.grid_widget = QWidget()
        self.grid = QGridLayout(self.grid_widget)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setColumnStretch(1, 1)
        self.grid.setHorizontalSpacing(8)
        self.grid.setVerticalSpacing(2)
        scroll = QScrollArea()
        scroll.setWidget(self.grid_widget)
        self.grid_widget.setAutoFillBackground(False)  # setWidget turned it on: the box's background shows
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.viewport().setAutoFillBackground(False)  # the box's own background, not the base colour
        self.scroll_area = scroll
        self.rows: list[tuple[str, float, float, bool]] = []  # (label, score, threshold, decided), as shown
        set_column(self, self.decided, (scroll, 1))
        self.clear()

    def show_answer(self, answer: dict[str, Any]) -> None:
        self.clear()
        scores, thresholds = answer["scores"], answer["thresholds"]
        decided, fallback = set(answer["labels"]), set(answer.get("fallback", []))
        self.rows = sorted(((n, float(s), float(thresholds.get(n, 0.5)), n in decided) for n, s in scores.items()),
                           key=lambda r: -r[1])
        names = [n for n in scores if n in decided]  # label order, as predict writes them
        self.decided.setText("Predicted: " + (", ".join(f"<b>{html.escape(n)}</b>" for n in names) if names else
                                              "<i>no label</i> (no score reaches its threshold)"))
        for i, (name, score, threshold, on) in enumerate(self.rows):
            label = QLabel(name)
            label.setToolTip(name)
            if on:
                font = label.font()
                font.setBold(True)
                label.setFont(font)
            self.grid.addWidget(label, i, 0)
            self.grid.addWidget(ThresholdBar(score, threshold), i, 1)
            value = QLabel(f"{score:.1%}")
            value.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            value.setMinimumWidth(value.fontMetrics().horizontalAdvance("100.0%") + 4)
            self.grid.addWidget(value, i, 2)
            sign = "\u2265" if on else "<"
            mark = QLabel(f"{sign} {threshold:.1%}" + (" (default)" if name in fallback else ""))
            mark.setEnabled(on)  # below the threshold: dimmed
            mark.setToolTip("Its threshold: " + ("the default 0.5 (too few validation examples to tune)" if name in
                                                 fallback else "tuned on the validation split"))
            self.grid.addWidget(mark, i, 3)
        self.grid.setRowStretch(len(self.rows), 1)

    def clear(self) -> None:
        self.rows = []
        self.decided.setText("")
        while self.grid.count():
            item = self.grid.takeAt(0)
            widget = item.widget() if item is not None else None
            if widget is not None:
                widget.deleteLater()

    def decided_labels(self) -> list[str]:
        return [n for n, _, _, on in self.rows if on]


class MultiLabelTryIt(TextTryIt):
    """Type a text, press Enter: every label's score against its threshold, and the labels decided."""

    model_kind = KIND
    predict_texts = staticmethod(predict_labels)
    placeholder = "Type a text and press Enter to see every label's score (Shift+Enter: new line)"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent=parent)
        self.bars = ThresholdBars()
        self.add_result(self.bars, stretch=1)
        self.set_model(None)

    def show_prediction(self, answer: dict[str, Any]) -> None:
        self.bars.show_answer(answer)

    def clear_result(self) -> None:
        self.bars.clear()

    def try_example(self, text: str) -> None:
        """An example of the predictions list: into the field and scored."""
        if self._model_dir:
            self.input.setText(text)
            self.predict()


def _try_labels_image(state, model_dir: str, path: str) -> dict[str, Any]:
    """The image try-it job: the preview first (as progress, shown while the model works), then the
    export's answer for the file, decoded at the model's own size as evaluation did."""
    from .thumbnails import THUMB, decode_preview

    state.progress(decode_preview(path, 2 * THUMB))  # raises ImageProblem for a file the model cannot read
    return predict_labels(model_dir, path)


def _label_saliency(model_dir: str, path: str, label: str) -> tuple[QImage, dict[str, Any]]:
    """The image as the model saw it with ``label``'s gradient saliency over it, at the Try it box's
    size, and the label's score, threshold and whether it is decided (core/analysis/explain.py)."""
    from ...core.analysis.explain import image_saliencies, overlay
    from .thumbnails import THUMB

    x = image_saliencies(model_dir, path, [label])[0]
    shown = np.ascontiguousarray(overlay(x.image, x.saliency))
    h, w, _ = shown.shape
    image = QImage(shown.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()  # owns its pixels
    side = 2 * THUMB
    image = image.scaled(side, side, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)
    return image, {"label": x.label, "score": x.score, "threshold": x.threshold, "decided": x.decided}


def saliency_choices(answer: dict[str, Any]) -> list[str]:
    """The labels a user can ask the saliency of, in the picker's order: the decided ones, then the
    others, each most confident first (the first is the default)."""
    decided = set(answer.get("labels") or [])
    scores = answer.get("scores") or {}
    return sorted(scores, key=lambda n: (n not in decided, -float(scores[n])))


class MultiLabelImageTryIt(ImageTryIt):
    """Drop an image (or choose one): every label's score against its threshold, and the labels
    decided, from the export's Predictor; Show Saliency draws where the model looked for the label
    picked beside it (Workbench image models)."""

    model_kind = KIND

    def __init__(self, parent: QWidget | None = None) -> None:
        # Before ImageTryIt's __init__, which sets no model and so clears the result.
        self.label_bars = ThresholdBars()
        self.saliency_label = QComboBox()
        self.saliency_label.setToolTip("The label whose saliency Show Saliency draws (decided labels first)")
        self._explainable = False  # a Workbench image model: its gradients can be taken
        super().__init__(parent)
        self.input_row.insertWidget(self.input_row.indexOf(self.saliency), self.saliency_label)
        self.saliency.setToolTip("Overlay where the pixels most change the picked label's score (gradient "
                                 "saliency); Workbench image models")
        self.saliency_label.activated.connect(lambda _index: self.explain())
        self.bars.hide()
        self.add_result(self.label_bars, stretch=1)

    def set_model(self, model_dir: str | Path | None, why_not: str = "", **options: Any) -> None:
        from ...core.tasks.image.models import read_image_config

        self._explainable = bool(model_dir) and read_image_config(str(model_dir)) is not None
        super().set_model(model_dir, why_not, **options)

    @Slot()
    def explain(self) -> None:
        label = self.saliency_label.currentData()
        if self._model_dir and self._path and label and self._explainable:
            self.run_model(_label_saliency, self._path, label, show=self._show_saliency, button=self.saliency,
                           busy=f"Computing where the model looks for “{label}”…")

    def _show_saliency(self, answer) -> None:
        image, x = answer
        self.picture.setPixmap(QPixmap.fromImage(image))
        mark = "\u2265" if x["decided"] else "<"
        against = f" {mark} threshold {x['threshold']:.1%}" if x["threshold"] is not None else ""
        self.status.setText(f"Where the model looked for “{html.escape(x['label'])}” (brighter = more influence): "
                            f"score {x['score']:.1%}{against}")
        self.saliency.setEnabled(True)

    def predict_file(self, path: str) -> None:
        if not self._model_dir:
            return
        self._path = path
        self.clear_result()
        self.run_prediction(_try_labels_image, path, state=True, on_progress=self._on_preview)

    def show_prediction(self, answer: dict[str, Any]) -> None:  # type: ignore[override]
        self.label_bars.show_answer(answer)
        self.saliency_label.clear()
        for name in saliency_choices(answer):
            score = float(answer["scores"][name])
            self.saliency_label.addItem(f"{name} ({score:.0%})", name)
        self.saliency_label.setEnabled(self._explainable and self.saliency_label.count() > 0)
        self.saliency.setEnabled(self._explainable and self.saliency_label.count() > 0)

    def pick_saliency_label(self, label: str) -> None:
        """Choose the label Show Saliency explains (as the picker does)."""
        index = self.saliency_label.findData(label)
        if index < 0:
            raise ValueError(f"no label {label!r} in the picker")
        self.saliency_label.setCurrentIndex(index)

    def clear_result(self) -> None:
        super().clear_result()
        self.label_bars.clear()
        self.saliency_label.clear()
        self.saliency_label.setEnabled(False)


# ---------------------------------------------------------------------------- the view


class MultiLabelView(RunView):
    @staticmethod
    def prepare(run: RunData) -> LabelRows:
        return LabelRows.from_table(run.predictions(), (run.report or {}).get("labels"))

    def __init__(self, parent: QWidget | None = None, try_it: TryIt | None = None) -> None:
        self.extra_tiles = {key: MetricTile(title) for key, title, _ in SCORES[3:]}
        self.examples_tile = MetricTile("Examples")
        self.thresholds_tile = MetricTile("Thresholds tuned")
        super().__init__(try_it if try_it is not None else MultiLabelTryIt(), *self.extra_tiles.values(),
                         self.examples_tile, self.thresholds_tile, parent=parent)
        self.per_label = PerLabelTable()
        self.counts = LabelCountsView()
        self.note = text_label(dimmed=True)
        sections = side_by_side(
            section("Per label", self.per_label, self.note),
            section("Examples per label", self.counts, hint="Click a count to list its examples below."),
            stretch=(3, 2))
        self.model = LabelPredictionsModel(self)
        self.table = rows_table(self.model, LabelPredictionsModel.INPUT, sort_column=-1)
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.table.doubleClicked.connect(lambda index: self.try_row(index.row()))
        self.table.setToolTip("Double-click an example to score it in Try it")
        self.filters = ExampleFilters(self.model, self.counts, _cell_text, "Errors only", "Search inputs and labels",
                                      "examples")
        self.filters.errors_only.setToolTip("List only the examples whose predicted labels are not exactly the true ones")
        self.counts.cell_chosen.connect(lambda *_: self.table.scrollToTop())
        f = self.filters
        self.errors_only, self.search, self.show_all, self.count = f.errors_only, f.search, f.show_all, f.count
        examples = side_by_side(section("Predictions (worst first)", column(self.filters, (self.table, 1))),
                                section("Try it", self.try_it), stretch=(2, 1))
        self.arrange(sections, examples)

    def show_run(self, run: RunData, rows: LabelRows) -> None:
        report = run.report or {}
        metrics = report.get("metrics", {})
        self.score_tiles.show_metrics(run.metric_specs, metrics)
        for key, tile in self.extra_tiles.items():
            value = metrics.get(key)
            tile.value.setText(f"{value:.3f}" if isinstance(value, (int, float)) else "-")
        self._compare_at_half(report)
        self.examples_tile.value.setText(f"{report.get('n', len(rows)):,}")
        self.examples_tile.title.setText(f"{str(report.get('split') or 'evaluated').capitalize()} examples")
        per_label = report.get("per_label", [])
        tuned = sum(bool(r.get("tuned")) for r in per_label)
        self.thresholds_tile.value.setText(f"{tuned} of {len(per_label)}")
        self.per_label.set_rows(per_label)
        self.counts.set_rows(per_label)
        self.note.setText(_thresholds_note(report))
        self.filters.clear_cell()
        self.model.set_rows(rows)
        self._size_columns()
        self.table.scrollToTop()
        self.show_model(run)

    def _compare_at_half(self, report: dict) -> None:
        """Under each score, the same at a global 0.5: what tuning the thresholds changed."""
        half = report.get("at_0_5") or {}
        tuned = bool(report.get("thresholds_tuned"))
        tips = {key: tip for key, _, tip in SCORES}
        tiles = {**self.tiles, **self.extra_tiles}
        for key, tile in tiles.items():
            line = tile.findChild(QLabel, "at_half")
            if line is None:
                line = QLabel()
                line.setObjectName("at_half")
                line.setEnabled(False)
                layout = tile.layout()
                if layout is not None:
                    layout.addWidget(line)
            value = half.get(key)
            line.setText(f"{value:.3f} at 0.5" if tuned and isinstance(value, (int, float)) else "")
            tile.setToolTip(tips.get(key, "") + (". Below: the same with every threshold at 0.5." if tuned else ""))

    def _size_columns(self) -> None:
        """The label columns as wide as their header or the widest of their first rows (at most 9 ems,
        6 for Missed and Extra), so the input keeps most of the width."""
        header, fm = self.table.horizontalHeader(), self.table.fontMetrics()
        m = self.model
        lines = [m.index(r, m.LINE).data() for r in range(min(m.rowCount(), 200))]
        header.resizeSection(m.LINE, max(header.sectionSizeHint(m.LINE), *(fm.horizontalAdvance(x) + 16 for x in lines)))
        for c, ems in ((m.GOLD, 9), (m.PREDICTED, 9), (m.MISSED, 6), (m.EXTRA, 6)):
            cells = [m.index(r, c).data() for r in range(min(m.rowCount(), 200))]
            widest = max([header.sectionSizeHint(c)] + [fm.horizontalAdvance(x) + 16 for x in cells])
            header.resizeSection(c, min(widest, max(header.sectionSizeHint(c), fm.horizontalAdvance("M") * ems)))
        header.resizeSection(m.EXACT, header.sectionSizeHint(m.EXACT))

    def try_row(self, view_row: int) -> None:
        """Score the listed example at ``view_row`` (its text, or its image) in Try it."""
        if not 0 <= view_row < self.model.rowCount():
            return
        item = self.model.row_record(view_row)["text"]
        if isinstance(self.try_it, MultiLabelTryIt):
            self.try_it.try_example(item)
        elif hasattr(self.try_it, "predict_file"):
            self.try_it.predict_file(item)

    def clear(self) -> None:
        super().clear()
        self.per_label.set_rows([])
        self.counts.set_rows([])
        self.note.setText("")
        self.filters.clear_cell()
        self.model.set_rows(LabelRows())


def _thresholds_note(report: dict) -> str:
    from ...core.tasks.multilabel.scoring import thresholds_note

    labels, fallback = report.get("labels", []), report.get("thresholds_fallback", [])
    note = thresholds_note(labels, fallback, bool(report.get("thresholds_tuned")))
    if report.get("tuned_on_this_split"):
        note += " They were tuned on these same rows (no test split), so these figures are optimistic."
    return note


def _cell_text(label: str, kind: str) -> str:
    return f"<b>{html.escape(label)}</b>: {KIND_TEXT.get(kind, kind)}"
