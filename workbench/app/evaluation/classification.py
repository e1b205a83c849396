"""Evaluation of a text-classification run: scores, per-class table, confusion matrix, predictions,
and a box to try the model on new text."""

from __future__ import annotations

from PySide6.QtCore import Qt, Slot
from PySide6.QtGui import QFontMetrics
from PySide6.QtWidgets import QLabel, QWidget

from ...core.run.history import RunData
from ..widgets.build import button, column, rows_table, section, side_by_side
from .confusion import ConfusionView
from .predictions_model import PAIR_SEPARATOR, PredictionColumns, PredictionsModel
from .report_table import PerClassTable
from .tiles import MetricTile
from .try_it import TryItBox
from .try_it_base import TryIt
from .view_base import ExampleFilters, RunView


class ClassificationView(RunView):
    """Shows one run; ``prepare`` does the slow part and may run on a worker thread."""

    @staticmethod
    def prepare(run: RunData) -> PredictionColumns:
        return PredictionColumns.from_table(run.predictions())

    def __init__(self, parent: QWidget | None = None, try_it: TryIt | None = None) -> None:
        examples = MetricTile("Examples")
        # Image runs: a logistic regression on the frozen backbone's features, beside the fine-tuned scores.
        baseline = MetricTile("Baseline accuracy")
        baseline.setVisible(False)
        super().__init__(try_it if try_it is not None else TryItBox(), examples, baseline, parent=parent)
        self.examples, self.baseline = examples, baseline
        self.per_class = PerClassTable()
        self.confusion = ConfusionView()
        from .calibration import ReliabilityView

        self.reliability = ReliabilityView()
        self.reliability.setToolTip("Accuracy per confidence bin: a calibrated model follows the diagonal.")
        # The reports on top; the examples below, with Try it beside them: an explained example
        # shows next to its row, and the box has the height for a few lines of text.
        examples = side_by_side(section("Predictions", self._build_predictions()), section("Try it", self.try_it),
                                stretch=(3, 2))
        self.arrange(self._build_sections(), examples)

    def _build_sections(self) -> QWidget:
        axis = QLabel("Rows: gold label  \u00b7  Columns: predicted label")
        axis.setEnabled(False)
        axis.setWordWrap(True)
        return side_by_side(
            section("Per class", self.per_class),
            section("Confusion matrix", column(axis, (self.confusion, 1)), hint="Click a cell to list its examples below."),
            section("Calibration", self.reliability),
            stretch=(2, 3, 2))

    def _build_predictions(self) -> QWidget:
        self.predictions_model = PredictionsModel(self)
        self.predictions = rows_table(self.predictions_model, PredictionsModel.TEXT, sort_column=-1)
        self.predictions.setTextElideMode(Qt.TextElideMode.ElideRight)
        digit = self.fontMetrics().horizontalAdvance("0")
        hh = self.predictions.horizontalHeader()
        hh.resizeSection(PredictionsModel.LINE, digit * 8 + 16)
        hh.resizeSection(PredictionsModel.CONFIDENCE, self.fontMetrics().horizontalAdvance("Confidence") + 36)
        self.explain_button = button("Explain", self._explain_current,
                                     "Why the model predicted what it did for the selected example (or double-click "
                                     "a row): shown in Try it")
        self.predictions.doubleClicked.connect(lambda index: self.explain_row(index.row()))
        self.filters = ExampleFilters(self.predictions_model, self.confusion, _cell_text, "Errors only", "Search inputs",
                                      "examples", self.explain_button)
        self.confusion.cell_chosen.connect(self._on_cell_chosen)
        f = self.filters
        self.errors_only, self.search, self.show_all, self.count = f.errors_only, f.search, f.show_all, f.count
        return column(self.filters, (self.predictions, 1))

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
        self.filters.clear_cell()
        self.predictions_model.set_columns(columns)
        self._fit_label_columns(columns.labels)
        self.predictions.scrollToTop()
        self.show_model(run, pair=columns.has_pair)

    def _fit_label_columns(self, labels: list[str]) -> None:
        """Gold and Predicted as wide as their header or longest label (at most 16 ems): the
        input takes the rest."""
        metrics = self.predictions.fontMetrics()
        bold = self.predictions.font()
        bold.setBold(True)  # a mistaken prediction is shown in bold
        bold_metrics = QFontMetrics(bold)
        header = self.predictions.horizontalHeader()
        for c in (PredictionsModel.GOLD, PredictionsModel.PREDICTED):
            widest = max((bold_metrics.horizontalAdvance(str(l)) + 16 for l in labels), default=0)
            header.resizeSection(c, min(max(header.sectionSizeHint(c), widest), metrics.horizontalAdvance("M") * 16))

    def show_baseline(self, baseline: dict | None, metrics: dict) -> None:
        """The frozen-feature baseline's accuracy, with its macro-F1 and cost in the tooltip."""
        self.baseline.setVisible(bool(baseline))
        if not baseline:
            return
        if "accuracy" not in baseline:
            self.baseline.value.setText("-")
            self.baseline.setToolTip(f"The quick baseline was not computed: {baseline.get('error', 'unknown error')}")
            return
        from ...core.tasks.image.baseline import baseline_text

        self.baseline.value.setText(f"{baseline['accuracy']:.3f}")
        self.baseline.title.setText(f"Baseline accuracy (frozen {baseline.get('backbone', 'backbone')} + logistic "
                                    "regression)")
        self.baseline.setToolTip(baseline_text(baseline, metrics) + ". When the fine-tuned accuracy is not clearly "
                                 "higher, fine-tuning did not pay on this data.")

    def clear(self) -> None:
        super().clear()
        self.baseline.setVisible(False)
        self.per_class.set_rows([])
        self.confusion.set_matrix([], [])
        self.reliability.set_calibration(None)
        self.filters.clear_cell()
        self.predictions_model.set_columns(PredictionColumns.empty())

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
        self.predictions.scrollToTop()  # the filters narrowed the list to the cell


def _cell_text(gold: str, predicted: str) -> str:
    what = "correct" if gold == predicted else "mistakes"
    return f"Gold <b>{_html(gold)}</b>, predicted <b>{_html(predicted)}</b> ({what})"


def _example_caption(record: dict) -> str:
    """"Line 12, gold <b>pos</b>, predicted <b>neg</b> (71%)" for an explained example."""
    return (f"Line {record['row']}, gold <b>{_html(record['gold'] or '?')}</b>, predicted "
            f"<b>{_html(record['predicted'] or '?')}</b> ({record['confidence']:.0%})")


def _html(text: str) -> str:
    import html

    return html.escape(text)
