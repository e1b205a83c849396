"""Evaluation of a text-regression run: error and correlation scores, a predicted-vs-gold scatter
plot (pyqtgraph, with the y = x line a perfect model would sit on), the predictions with their
errors (largest first), and a box that scores typed text (or a typed pair)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, Signal, Slot
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from ...core.runs import RunData
from ..evaluation.classification import _section
from ..evaluation.predictions_model import PAIR_SEPARATOR
from ..evaluation.tiles import MetricTile, MetricTiles
from ..evaluation.try_it import load_pipeline
from ..jobs import Jobs, describe
from ..model_cache import MODELS


@dataclass
class ScoredRows:
    line: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    text: list[str] = field(default_factory=list)
    gold: np.ndarray = field(default_factory=lambda: np.zeros(0))
    predicted: np.ndarray = field(default_factory=lambda: np.zeros(0))
    has_pair: bool = False

    def __len__(self) -> int:
        return len(self.gold)

    @classmethod
    def from_table(cls, table) -> "ScoredRows":
        if table.num_rows == 0 or "gold" not in table.column_names:
            return cls()
        text = table.column("text").to_pylist() if "text" in table.column_names else [""] * table.num_rows
        pair = "text_pair" in table.column_names
        if pair:
            # Both texts of a pair in one column, as the classification view shows them.
            text = [f"{a}{PAIR_SEPARATOR}{b}" for a, b in zip(text, table.column("text_pair").to_pylist())]
        line = table.column("row").to_numpy() if "row" in table.column_names else np.arange(1, table.num_rows + 1)
        return cls(np.asarray(line, dtype=np.int64), text,
                   np.asarray(table.column("gold").to_numpy(), dtype=np.float64),
                   np.asarray(table.column("predicted").to_numpy(), dtype=np.float64), pair)


class ScoredModel(QAbstractTableModel):
    """Line, input, gold, predicted, error; sorted by the size of the error, largest first."""

    HEADERS = ("Line", "Input", "Gold", "Predicted", "Error")

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.rows = ScoredRows()
        self.order = np.zeros(0, np.int64)

    def set_rows(self, rows: ScoredRows) -> None:
        self.beginResetModel()
        self.rows = rows
        self.order = np.argsort(-np.abs(rows.predicted - rows.gold), kind="stable")
        self.endResetModel()

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        r = self.rows
        keys = {0: r.line, 2: r.gold, 3: r.predicted, 4: r.predicted - r.gold}
        self.layoutAboutToBeChanged.emit()
        if column == 1:
            idx = np.array(sorted(range(len(r)), key=lambda i: r.text[i].lower()), dtype=np.int64)
        elif column in keys:
            idx = np.argsort(keys[column], kind="stable")
        else:
            idx = np.argsort(-np.abs(r.predicted - r.gold), kind="stable")
        self.order = idx[::-1].copy() if order == Qt.SortOrder.DescendingOrder and column >= 0 else idx
        self.layoutChanged.emit()

    def row_index(self, view_row: int) -> int:
        return int(self.order[view_row])

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.order)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.HEADERS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.HEADERS[section]
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        i = int(self.order[index.row()])
        r, c = self.rows, index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if c == 0:
                return str(int(r.line[i]))
            if c == 1:
                return r.text[i]
            value = (r.gold[i], r.predicted[i], r.predicted[i] - r.gold[i])[c - 2]
            return f"{value:+.4g}" if c == 4 else f"{value:.4g}"
        if role == Qt.ItemDataRole.ToolTipRole and c == 1:
            return r.text[i][:2000]
        if role == Qt.ItemDataRole.TextAlignmentRole and c != 1:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


class ScatterPlot(QWidget):
    """Predicted (y) against gold (x), one dot per evaluated row, and the y = x line."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        import pyqtgraph as pg  # imported with the view, never at app start

        self.plot = pg.PlotWidget()
        self.plot.setBackground(self.palette().color(QPalette.ColorRole.Base))
        self.plot.setLabel("bottom", "gold")
        self.plot.setLabel("left", "predicted")
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.diagonal = self.plot.plot([], [], pen=pg.mkPen("#888888", width=1, style=Qt.PenStyle.DashLine))
        self.scatter = pg.ScatterPlotItem(size=5, pen=None, brush=pg.mkBrush(47, 127, 216, 140))
        self.plot.addItem(self.scatter)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot)

    def set_points(self, gold: np.ndarray, predicted: np.ndarray) -> None:
        self.scatter.setData(x=gold, y=predicted)
        if len(gold):
            lo = float(min(gold.min(), predicted.min()))
            hi = float(max(gold.max(), predicted.max()))
            self.diagonal.setData([lo, hi], [lo, hi])
        else:
            self.diagonal.setData([], [])

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.scatter.getData()
        return np.asarray(x), np.asarray(y)


# ---------------------------------------------------------------------------- try it


def _load_scorer(folder: Path):
    return load_pipeline(folder, function_to_apply="none")  # the raw output is the number


def predict_value(model_dir: str | Path, text: str, text_pair: str | None = None) -> float:
    """The exported regression model's number for ``text`` (and ``text_pair``), in the user's units."""
    pipe = MODELS.get("text-regression", model_dir, _load_scorer)
    inputs = {"text": text, "text_pair": text_pair} if text_pair is not None else text
    out = pipe(inputs, truncation=True)
    if isinstance(out, list):
        out = out[0]
    return float(out["score"])


class ScoreTryIt(QWidget):
    predicted = Signal(float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._model_dir: str | None = None
        self._pair = False
        self.jobs = Jobs(self)  # one thread: the pipeline is never used by two at once
        self.input = QLineEdit()
        self.input.setClearButtonEnabled(True)
        self.input.returnPressed.connect(self.predict)
        self.input_pair = QLineEdit()
        self.input_pair.setPlaceholderText("Second text of the pair")
        self.input_pair.returnPressed.connect(self.predict)
        self.button = QPushButton("Predict")
        self.button.clicked.connect(self.predict)
        self.value = QLabel("")
        font = self.value.font()
        font.setPointSizeF(font.pointSizeF() * 1.6)
        font.setBold(True)
        self.value.setFont(font)
        self.status = QLabel()
        self.status.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.input, 1)
        row.addWidget(self.button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.input_pair)
        layout.addWidget(self.value)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.set_model(None)

    def set_model(self, model_dir, why_not: str = "", pair: bool = False) -> None:
        self._model_dir = str(model_dir) if model_dir else None
        self._pair = pair
        self.jobs.cancel()  # answers still on their way belong to the previous model
        self.input_pair.setVisible(pair)
        self.input.setPlaceholderText("First text of the pair" if pair else "Type a text and press Enter to score it")
        enabled = self._model_dir is not None
        for w in (self.input, self.input_pair, self.button):
            w.setEnabled(enabled)
        self.value.setText("")
        self.status.setText("" if enabled else (why_not or "This run has no exported model to try."))

    @Slot()
    def predict(self) -> None:
        text = self.input.text().strip()
        pair = self.input_pair.text().strip() if self._pair else None
        if not self._model_dir or not text or (self._pair and not pair):
            return
        loaded = MODELS.holds("text-regression", self._model_dir)
        self.status.setText("Predicting..." if loaded else "Loading the model (first time only)...")
        self.button.setEnabled(False)
        self.jobs.submit(predict_value, self._model_dir, text, pair, on_done=self._on_done, on_error=self._on_failed)

    def _on_done(self, value: float) -> None:
        self.button.setEnabled(True)
        self.status.setText("")
        self.value.setText(f"{value:.4g}")
        self.predicted.emit(value)

    def _on_failed(self, error: Exception) -> None:
        self.button.setEnabled(self._model_dir is not None)
        self.status.setText(f"Could not run the model: {describe(error)}")

    def shutdown(self, timeout_ms: int = 5000) -> None:
        self.jobs.shutdown(timeout_ms)


# ---------------------------------------------------------------------------- the view


class RegressionView(QWidget):
    @staticmethod
    def prepare(run: RunData) -> ScoredRows:
        return ScoredRows.from_table(run.predictions())

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.examples = MetricTile("Examples")
        self.score_tiles = MetricTiles(self.examples)
        self.scatter = ScatterPlot()
        self.try_it = ScoreTryIt()
        top = QSplitter(Qt.Orientation.Horizontal)
        top.setChildrenCollapsible(False)
        top.addWidget(_section("Predicted vs gold", self.scatter,
                               hint="Each dot is one evaluated row; a perfect model puts every dot on the dashed line."))
        top.addWidget(_section("Try it", self.try_it))
        top.setStretchFactor(0, 3)
        top.setStretchFactor(1, 2)
        self.model = ScoredModel(self)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(-1, Qt.SortOrder.AscendingOrder)
        self.table.setAlternatingRowColors(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setWordWrap(False)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 8)
        hh = self.table.horizontalHeader()
        hh.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        hh.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        top_w = QWidget()
        tl = QVBoxLayout(top_w)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.addWidget(self.score_tiles)
        tl.addWidget(top, 1)
        split = QSplitter(Qt.Orientation.Vertical)
        split.setChildrenCollapsible(False)
        split.addWidget(top_w)
        split.addWidget(_section("Predictions (largest errors first)", self.table))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(split)

    @property
    def tiles(self) -> dict[str, MetricTile]:
        return self.score_tiles.tiles

    def show_run(self, run: RunData, rows: ScoredRows) -> None:
        report = run.report or {}
        self.score_tiles.show_metrics(run.metric_specs, report.get("metrics", {}), ".4g")
        self.examples.value.setText(f"{report.get('n', len(rows)):,}")
        self.scatter.set_points(rows.gold, rows.predicted)
        self.model.set_rows(rows)
        if run.model_dir is not None:
            self.try_it.set_model(run.model_dir, pair=rows.has_pair)
        else:
            self.try_it.set_model(None, "This run has no exported model (it did not finish), so there is nothing to try.")

    def clear(self) -> None:
        self.score_tiles.clear()
        self.scatter.set_points(np.zeros(0), np.zeros(0))
        self.model.set_rows(ScoredRows())
        self.try_it.set_model(None, "")

    def shutdown(self) -> None:
        self.try_it.shutdown()
