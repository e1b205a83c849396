"""Evaluation of a text-classification run: scores, per-class table, confusion matrix, predictions,
and a box to try the model on new text."""

from __future__ import annotations

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QGroupBox,
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
from .confusion import ConfusionView
from .predictions_model import PAIR_SEPARATOR, PredictionColumns, PredictionsModel
from .report_table import PerClassTable
from .tiles import MetricTile, MetricTiles
from .try_it import TryItBox


def _section(title: str, *widgets: QWidget, hint: str = "") -> QGroupBox:
    box = QGroupBox(title)
    layout = QVBoxLayout(box)
    if hint:
        label = QLabel(hint)
        label.setWordWrap(True)
        label.setEnabled(False)
        layout.addWidget(label)
    for w in widgets:
        layout.addWidget(w)
    return box


class ClassificationView(QWidget):
    """Shows one run; ``prepare`` does the slow part and may run on a worker thread."""

    @staticmethod
    def prepare(run: RunData) -> PredictionColumns:
        return PredictionColumns.from_table(run.predictions())

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        # Scores
        self.examples = MetricTile("Examples")
        # Image runs: a logistic regression on the frozen backbone's features, beside the fine-tuned scores.
        self.baseline = MetricTile("Baseline accuracy")
        self.baseline.setVisible(False)
        self.score_tiles = MetricTiles(self.examples, self.baseline)

        # Per-class report, confusion matrix, try it
        self.per_class = PerClassTable()
        self.confusion = ConfusionView()
        self.confusion.cell_chosen.connect(self._on_cell_chosen)
        self.confusion.cell_cleared.connect(self._on_cell_cleared)
        confusion_box = QWidget()
        cb = QVBoxLayout(confusion_box)
        cb.setContentsMargins(0, 0, 0, 0)
        axis = QLabel("Rows: gold label  \u00b7  Columns: predicted label")
        axis.setEnabled(False)
        cb.addWidget(axis)
        cb.addWidget(self.confusion, 1)
        self.try_it = TryItBox()

        top = QSplitter(Qt.Orientation.Horizontal)
        top.setChildrenCollapsible(False)
        top.addWidget(_section("Per class", self.per_class))
        top.addWidget(_section("Confusion matrix", confusion_box, hint="Click a cell to list its examples below."))
        top.addWidget(_section("Try it", self.try_it))
        from .calibration import ReliabilityView

        self.reliability = ReliabilityView()
        top.addWidget(_section("Calibration", self.reliability))
        self.reliability.setToolTip("Accuracy per confidence bin: a calibrated model follows the diagonal.")
        top.setStretchFactor(0, 3)
        top.setStretchFactor(1, 3)
        top.setStretchFactor(2, 3)
        top.setStretchFactor(3, 2)

        # Predictions
        self.predictions_model = PredictionsModel(self)
        self.predictions_model.filtered.connect(self._on_filtered)
        self.predictions = QTableView()
        self.predictions.setModel(self.predictions_model)
        self.predictions.setSortingEnabled(True)
        self.predictions.sortByColumn(-1, Qt.SortOrder.AscendingOrder)
        self.predictions.setAlternatingRowColors(True)
        self.predictions.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.predictions.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.predictions.setWordWrap(False)
        self.predictions.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.predictions.verticalHeader().hide()
        # Fixed row heights and column widths: nothing is measured per row, so 100k rows scroll freely.
        vh = self.predictions.verticalHeader()
        vh.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        vh.setDefaultSectionSize(self.fontMetrics().height() + 8)
        hh = self.predictions.horizontalHeader()
        hh.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        hh.setSectionResizeMode(PredictionsModel.TEXT, QHeaderView.ResizeMode.Stretch)
        digit = self.fontMetrics().horizontalAdvance("0")
        hh.resizeSection(PredictionsModel.LINE, digit * 8 + 16)
        hh.resizeSection(PredictionsModel.CONFIDENCE, self.fontMetrics().horizontalAdvance("Confidence") + 36)

        self.errors_only = QCheckBox("Errors only")
        self.errors_only.setToolTip("List only the examples the model got wrong")
        self.errors_only.toggled.connect(self.predictions_model.set_errors_only)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search inputs")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self.predictions_model.set_query)
        self.cell_label = QLabel()
        self.show_all = QPushButton("Show all")
        self.show_all.setToolTip("Clear the confusion-matrix filter")
        self.show_all.clicked.connect(self.confusion.clear_choice)
        self.show_all.setVisible(False)
        self.count = QLabel()
        self.explain_button = QPushButton("Explain")
        self.explain_button.setToolTip("Why the model predicted what it did for the selected example (or "
                                       "double-click a row): shown in Try it")
        self.explain_button.clicked.connect(self._explain_current)
        self.predictions.doubleClicked.connect(lambda index: self.explain_row(index.row()))
        bar = QHBoxLayout()
        bar.addWidget(self.errors_only)
        bar.addWidget(self.search, 1)
        bar.addWidget(self.cell_label)
        bar.addWidget(self.show_all)
        bar.addStretch(0)
        bar.addWidget(self.explain_button)
        bar.addWidget(self.count)
        bottom = QWidget()
        bl = QVBoxLayout(bottom)
        bl.setContentsMargins(0, 0, 0, 0)
        bl.addLayout(bar)
        bl.addWidget(self.predictions, 1)
        predictions_box = _section("Predictions", bottom)

        split = QSplitter(Qt.Orientation.Vertical)
        split.setChildrenCollapsible(False)
        top_w = QWidget()
        tl = QVBoxLayout(top_w)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.addWidget(self.score_tiles)
        tl.addWidget(top, 1)
        split.addWidget(top_w)
        split.addWidget(predictions_box)
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 3)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(split)

    @property
    def tiles(self) -> dict[str, MetricTile]:
        return self.score_tiles.tiles

    # ---- content --------------------------------------------------------------------------------
    def show_run(self, run: RunData, columns: PredictionColumns) -> None:
        report = run.report or {}
        self.score_tiles.show_metrics(run.metric_specs, report.get("metrics", {}))
        self.examples.value.setText(f"{report.get('n', columns.n):,}")
        self.examples.title.setText(f"{str(report.get('split') or 'evaluated').capitalize()} examples")
        self.show_baseline(report.get("baseline"), report.get("metrics", {}))
        self.per_class.set_rows(report.get("per_class", []))
        self.reliability.set_calibration(report.get("calibration"))
        labels = report.get("labels") or [r["label"] for r in report.get("per_class", [])]
        self.confusion.set_matrix(labels, report.get("confusion_matrix") or [[0] * len(labels) for _ in labels])
        self._on_cell_cleared()
        self.predictions_model.set_columns(columns)
        self.predictions.scrollToTop()
        if run.model_dir is not None:
            self.try_it.set_model(run.model_dir, pair=columns.has_pair)
        else:
            self.try_it.set_model(None, "This run has no exported model (it did not finish), so there is nothing to try.")

    def show_baseline(self, baseline: dict | None, metrics: dict) -> None:
        """The frozen-feature baseline's accuracy, with its macro-F1 and cost in the tooltip."""
        self.baseline.setVisible(bool(baseline))
        if not baseline:
            return
        if "accuracy" not in baseline:
            self.baseline.value.setText("-")
            self.baseline.setToolTip(f"The quick baseline was not computed: {baseline.get('error', 'unknown error')}")
            return
        from ...core.baseline import baseline_text

        self.baseline.value.setText(f"{baseline['accuracy']:.3f}")
        self.baseline.title.setText(f"Baseline accuracy (frozen {baseline.get('backbone', 'backbone')} + logistic "
                                    "regression)")
        self.baseline.setToolTip(baseline_text(baseline, metrics) + ". When the fine-tuned accuracy is not clearly "
                                 "higher, fine-tuning did not pay on this data.")

    def clear(self) -> None:
        self.score_tiles.clear()
        self.baseline.setVisible(False)
        self.per_class.set_rows([])
        self.confusion.set_matrix([], [])
        self.reliability.set_calibration(None)
        self._on_cell_cleared()
        self.predictions_model.set_columns(PredictionColumns.empty())
        self.try_it.set_model(None, "")

    def shutdown(self) -> None:
        self.try_it.shutdown()

    # ---- explanations ---------------------------------------------------------------------------
    @Slot()
    def _explain_current(self) -> None:
        index = self.predictions.currentIndex()
        if not index.isValid():
            self.try_it.status.setText("Select an example in the predictions list first.")
            return
        self.explain_row(index.row())

    def explain_row(self, view_row: int) -> None:
        """Explain the listed example at ``view_row`` with the run's model, in the Try it box."""
        if not 0 <= view_row < self.predictions_model.rowCount():
            return
        record = self.predictions_model.row_record(view_row)
        text, _, text_pair = record["text"].partition(PAIR_SEPARATOR)
        self.try_it.explain_example(text, text_pair if self.predictions_model.has_pair else None,
                                    _example_caption(record))

    # ---- filters --------------------------------------------------------------------------------
    @Slot(str, str)
    def _on_cell_chosen(self, gold: str, predicted: str) -> None:
        self.predictions_model.set_cell(gold, predicted)
        what = "correct" if gold == predicted else "mistakes"
        self.cell_label.setText(f"Gold <b>{_html(gold)}</b>, predicted <b>{_html(predicted)}</b> ({what})")
        self.show_all.setVisible(True)
        self.predictions.scrollToTop()

    @Slot()
    def _on_cell_cleared(self) -> None:
        self.predictions_model.set_cell(None)
        self.cell_label.setText("")
        self.show_all.setVisible(False)

    @Slot(int, int)
    def _on_filtered(self, shown: int, total: int) -> None:
        self.count.setText(f"{total:,} examples" if shown == total else f"{shown:,} of {total:,} examples")


def _example_caption(record: dict) -> str:
    """"Line 12, gold <b>pos</b>, predicted <b>neg</b> (71%)" for an explained example."""
    return (f"Line {record['row']}, gold <b>{_html(record['gold'] or '?')}</b>, predicted "
            f"<b>{_html(record['predicted'] or '?')}</b> ({record['confidence']:.0%})")


def _html(text: str) -> str:
    import html

    return html.escape(text)
