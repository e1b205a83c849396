"""Evaluation of a text-regression run: error and correlation scores, a predicted-vs-gold scatter
plot (pyqtgraph, with the y = x line a perfect model would sit on), the predictions with their
errors (largest first), and a box that scores typed text (or a typed pair)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PySide6.QtCore import QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from ...core.run.history import RunData
from ..evaluation.predictions_model import PAIR_SEPARATOR
from ..evaluation.tiles import MetricTile
from ..evaluation.try_it_base import TextTryIt, TryIt, load_pipeline
from ..evaluation.view_base import RunView
from ..model_cache import MODELS
from ..widgets.build import enlarge, rows_table, section, side_by_side
from ..widgets.table_model import RIGHT, HeadedTableModel


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


class ScoredModel(HeadedTableModel):
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

    def row_count(self) -> int:
        return len(self.order)

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
            return RIGHT
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


KIND = "text-scorer"  # the model cache's name for the pipeline below


def _load_scorer(folder: Path):
    return load_pipeline(folder, function_to_apply="none")  # the raw output is the number


def predict_value(model_dir: str | Path, text: str, text_pair: str | None = None) -> float:
    """The exported regression model's number for ``text`` (and ``text_pair``), in the user's units."""
    pipe = MODELS.get(KIND, model_dir, _load_scorer)
    inputs = {"text": text, "text_pair": text_pair} if text_pair is not None else text
    out = pipe(inputs, truncation=True)
    if isinstance(out, list):
        out = out[0]
    return float(out["score"])


class ScoreTryIt(TextTryIt):
    """Type a text (or a pair), press Enter: the model's number for it."""

    model_kind = KIND
    predict_texts = staticmethod(predict_value)
    placeholder = "Type a text and press Enter to score it"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent=parent)
        self.value = QLabel("")
        enlarge(self.value, 1.6)
        self.add_result(self.value)
        self.set_model(None)

    def show_prediction(self, value: float) -> None:
        self.value.setText(f"{value:.4g}")

    def clear_result(self) -> None:
        self.value.setText("")


# ---------------------------------------------------------------------------- the view


class RegressionView(RunView):
    @staticmethod
    def prepare(run: RunData) -> ScoredRows:
        return ScoredRows.from_table(run.predictions())

    def __init__(self, parent: QWidget | None = None, try_it: TryIt | None = None) -> None:
        examples = MetricTile("Examples")
        super().__init__(try_it if try_it is not None else ScoreTryIt(), examples, parent=parent)
        self.examples = examples
        self.scatter = ScatterPlot()
        sections = side_by_side(
            section("Predicted vs gold", self.scatter,
                    hint="Each dot is one evaluated row; a perfect model puts every dot on the dashed line."),
            section("Try it", self.try_it), stretch=(3, 2))
        self.model = ScoredModel(self)
        self.table = rows_table(self.model, 1, sort_column=-1)
        self.arrange(sections, section("Predictions (largest errors first)", self.table), stretch=())

    def show_run(self, run: RunData, rows: ScoredRows) -> None:
        report = run.report or {}
        self.score_tiles.show_metrics(run.metric_specs, report.get("metrics", {}), ".4g")
        self.examples.value.setText(f"{report.get('n', len(rows)):,}")
        self.scatter.set_points(rows.gold, rows.predicted)
        self.model.set_rows(rows)
        self.show_model(run, pair=rows.has_pair)

    def clear(self) -> None:
        super().clear()
        self.scatter.set_points(np.zeros(0), np.zeros(0))
        self.model.set_rows(ScoredRows())
