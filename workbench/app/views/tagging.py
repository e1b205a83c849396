"""Evaluation of a token-classification run: scores, the per-entity (or per-tag) report, a confusion
matrix over tags, every test sentence with gold and predicted tags (entity spans highlighted,
disagreements marked, a filter to sentences with errors), and a box that tags typed text.

Sentences come from the run's predictions.jsonl (tokens, gold, predicted, confidence per sentence);
the typed text is tagged by the engine's ``Tagger`` (first sub-word per word, as training aligned
it) on a worker thread, loaded once per model.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PySide6.QtCore import QModelIndex, QPersistentModelIndex, Qt, Signal, Slot
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QAbstractItemView, QTextBrowser, QWidget

from ...core.run.history import RunData
from ..evaluation.confusion import ConfusionView
from ..evaluation.report_table import PerClassTable
from ..evaluation.tiles import MetricTile
from ..evaluation.try_it_base import TextTryIt, TryIt
from ..evaluation.view_base import ExampleFilters, RunView
from ..model_cache import MODELS
from ..widgets.build import column, rows_table, section, side_by_side
from ..widgets.table_model import RIGHT, HeadedTableModel

# Background colours for entity types (first type, second, ...), light enough for dark text.
SPAN_COLOURS = ("#ffe08a", "#a8e6a1", "#9fd3ff", "#f7b2d9", "#d4c2ff", "#ffc59e", "#b8f0ec", "#e6e6a1")
ERROR_COLOUR = "#d62d20"


# ---------------------------------------------------------------------------- data


@dataclass
class TaggedSentences:
    """The evaluated sentences, as plain lists (read once, on the loading thread)."""

    rows: list[int] = field(default_factory=list)
    tokens: list[list[str]] = field(default_factory=list)
    gold: list[list[str]] = field(default_factory=list)
    predicted: list[list[str]] = field(default_factory=list)
    confidence: list[list[float]] = field(default_factory=list)
    errors: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    texts: list[str] = field(default_factory=list)  # tokens joined, lower-cased: for search

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def from_table(cls, table) -> "TaggedSentences":
        if table.num_rows == 0 or "tokens" not in table.column_names:
            return cls()
        def col(name: str):
            return table.column(name).to_pylist() if name in table.column_names else None

        tokens, gold, pred = col("tokens"), col("gold"), col("predicted")
        conf = col("confidence") or [[1.0] * len(t) for t in tokens]
        errors = np.array([sum(g != p for g, p in zip(gs, ps)) for gs, ps in zip(gold, pred)], dtype=np.int64)
        rows = col("row") or list(range(1, len(tokens) + 1))
        return cls(rows, tokens, gold, pred, conf, errors, [" ".join(t).lower() for t in tokens])


def span_colour(entity_type: str, types: list[str]) -> str:
    k = types.index(entity_type) if entity_type in types else hash(entity_type)
    return SPAN_COLOURS[k % len(SPAN_COLOURS)]


def spans_html(tokens: list[str], tags: list[str], types: list[str], wrong: list[bool] | None = None) -> str:
    """The sentence with each entity span on its type's colour and the type after it; tokens in
    ``wrong`` are underlined in red. For plain tags (POS) each token carries its tag below it."""
    # Imported here: the package pulls in pyarrow/datasets, which the window's first paint never needs.
    from ...core.data.tag_schemes import split_tag, to_spans

    is_spans = all(split_tag(t)[0] is not None for t in tags) and any(t != "O" for t in tags) if tags else False
    out: list[str] = []
    if is_spans:
        starts = {s.start: s for s in to_spans(tags)}
        i = 0
        while i < len(tokens):
            span = starts.get(i)
            if span is None:
                out.append(_token(tokens[i], wrong[i] if wrong else False))
                i += 1
                continue
            words = " ".join(_token(tokens[j], wrong[j] if wrong else False) for j in range(span.start, span.end))
            out.append(f'<span style="background-color:{span_colour(span.type, types)}; color:#111111;">&nbsp;{words}'
                       f'&nbsp;<sup><b>{html.escape(span.type)}</b></sup>&nbsp;</span>')
            i = span.end
        return " ".join(out)
    for i, (tok, tag) in enumerate(zip(tokens, tags)):
        colour = f' style="color:{ERROR_COLOUR};"' if wrong and wrong[i] else ""
        out.append(f"{_token(tok, wrong[i] if wrong else False)}<sub{colour}>{html.escape(tag)}</sub>")
    return " ".join(out)


def _token(text: str, wrong: bool) -> str:
    t = html.escape(text)
    return f'<u style="color:{ERROR_COLOUR};"><b>{t}</b></u>' if wrong else t


def sentence_html(tokens, gold, predicted, confidence, types: list[str], row: int | None = None) -> str:
    """The detail of one sentence: gold and predicted renderings, then a token table marking disagreements."""
    wrong = [g != p for g, p in zip(gold, predicted)]
    head = f"<p><b>Line {row}</b> &middot; {sum(wrong)} of {len(tokens)} tokens wrong</p>" if row is not None else ""
    parts = [head,
             f"<p><b>Gold</b><br>{spans_html(tokens, gold, types)}</p>",
             f"<p><b>Predicted</b><br>{spans_html(tokens, predicted, types, wrong)}</p>",
             '<table cellspacing="0" cellpadding="3" border="1" style="border-collapse:collapse;">',
             "<tr><th>#</th><th>Token</th><th>Gold</th><th>Predicted</th><th>Confidence</th></tr>"]
    for i, (tok, g, p) in enumerate(zip(tokens, gold, predicted)):
        mark = f' style="background-color:{ERROR_COLOUR}; color:#ffffff;"' if g != p else ""
        c = confidence[i] if confidence and i < len(confidence) else None
        parts.append(f"<tr{mark}><td>{i + 1}</td><td>{html.escape(tok)}</td><td>{html.escape(g)}</td>"
                     f"<td>{html.escape(p)}</td><td>{'' if c is None else f'{c:.2f}'}</td></tr>")
    parts.append("</table>")
    return "".join(parts)


# ---------------------------------------------------------------------------- sentence list


class SentencesModel(HeadedTableModel):
    """Line, sentence, errors; filtered to errors only, to a tag confusion cell, or by a search."""

    LINE, TEXT, ERRORS = range(3)
    HEADERS = ("Line", "Sentence", "Errors")
    filtered = Signal(int, int)  # shown, total

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.data_ = TaggedSentences()
        self.visible = np.zeros(0, np.int64)
        self._errors_only = False
        self._query = ""
        self._cell: tuple[str, str] | None = None

    def set_sentences(self, sentences: TaggedSentences) -> None:
        self.data_ = sentences
        self._cell = None
        self._refilter()

    def set_errors_only(self, on: bool) -> None:
        self._errors_only = bool(on)
        self._refilter()

    def set_query(self, text: str) -> None:
        self._query = text.strip().lower()
        self._refilter()

    def set_cell(self, gold: str | None, predicted: str | None = None) -> None:
        self._cell = (gold, predicted) if gold is not None else None
        self._refilter()

    def _refilter(self) -> None:
        d = self.data_
        keep = np.ones(len(d), dtype=bool)
        if self._errors_only:
            keep &= d.errors > 0
        if self._query:
            keep &= np.array([self._query in t for t in d.texts], dtype=bool)
        if self._cell is not None:
            g0, p0 = self._cell
            keep &= np.array([any(g == g0 and p == p0 for g, p in zip(gs, ps)) for gs, ps in zip(d.gold, d.predicted)],
                             dtype=bool)
        self.beginResetModel()
        self.visible = np.flatnonzero(keep)
        self.endResetModel()
        self.filtered.emit(len(self.visible), len(d))

    def sentence_index(self, view_row: int) -> int:
        return int(self.visible[view_row])

    def row_count(self) -> int:
        return len(self.visible)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        i = int(self.visible[index.row()])
        d = self.data_
        if role == Qt.ItemDataRole.DisplayRole:
            if index.column() == self.LINE:
                return str(d.rows[i])
            if index.column() == self.TEXT:
                return " ".join(d.tokens[i])
            return str(int(d.errors[i]))
        if role == Qt.ItemDataRole.ForegroundRole and index.column() == self.ERRORS and d.errors[i]:
            return QColor(ERROR_COLOUR)
        if role == Qt.ItemDataRole.TextAlignmentRole and index.column() != self.TEXT:
            return RIGHT
        return None


# ---------------------------------------------------------------------------- try it


KIND = "tagger"  # the model cache's name for the engine's Tagger


def _load_tagger(folder: Path):
    from ...core.tasks.token_classification import Tagger

    return Tagger(folder)


def tagger_for(model_dir: str | Path):
    """The cached engine Tagger for ``model_dir``; reloaded when the folder was rewritten."""
    return MODELS.get(KIND, model_dir, _load_tagger)


def tag_text(model_dir: str | Path, text: str) -> list[dict]:
    return tagger_for(model_dir).tag(text)


class TagTryIt(TextTryIt):
    """Type a sentence, press Enter: every word with the tag the model gives it, entities highlighted."""

    model_kind = KIND
    predict_texts = staticmethod(tag_text)
    busy_text = "Tagging..."
    placeholder = "Type a sentence and press Enter to tag it"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Tag", parent)
        self._types: list[str] = []
        self.result = QTextBrowser()
        self.result.setOpenLinks(False)
        self.add_result(self.result, stretch=1)
        self.set_model(None)

    @property
    def tagged(self):
        """``predicted`` under the name the tagging tests know: [{"word", "start", "end", "tag", "confidence"}, ...]."""
        return self.predicted

    def configure(self, types: list[str] | None = None, **options) -> None:
        super().configure(**options)
        self._types = list(types or [])

    def show_prediction(self, tagged: list[dict]) -> None:
        words = [t["word"] for t in tagged]
        tags = [t["tag"] for t in tagged]
        self.result.setHtml(f"<p>{spans_html(words, tags, self._types)}</p>" + "".join(
            f"<br>{html.escape(t['word'])} &rarr; {html.escape(t['tag'])} ({t['confidence']:.0%})" for t in tagged))

    def clear_result(self) -> None:
        self.result.clear()


# ---------------------------------------------------------------------------- the view


def _cell_text(gold: str, predicted: str) -> str:
    return f"Tokens tagged <b>{html.escape(gold)}</b>, predicted <b>{html.escape(predicted)}</b>"


class TaggingView(RunView):
    """Shows one token-classification run; ``prepare`` reads the predictions on the loading thread."""

    @staticmethod
    def prepare(run: RunData) -> TaggedSentences:
        return TaggedSentences.from_table(run.predictions())

    def __init__(self, parent: QWidget | None = None, try_it: TryIt | None = None) -> None:
        sentences_tile, errors_tile = MetricTile("Sentences"), MetricTile("Sentences with errors")
        super().__init__(try_it if try_it is not None else TagTryIt(), sentences_tile, errors_tile, parent=parent)
        self.sentences_tile, self.errors_tile = sentences_tile, errors_tile
        self._types: list[str] = []
        self.per_class = PerClassTable()
        self.per_class_box = section("Per entity", self.per_class)
        self.confusion = ConfusionView()
        sections = side_by_side(
            self.per_class_box,
            section("Tag confusion", self.confusion, hint="Rows: gold tag, columns: predicted tag, per token. Click "
                                                          "a cell to list the sentences with such a token."),
            section("Try it", self.try_it), stretch=(2, 3, 2))
        self.arrange(sections, section("Sentences", self._build_sentences()))

    def _build_sentences(self) -> QWidget:
        self.model = SentencesModel(self)
        self.model.filtered.connect(self._on_filtered)
        self.table = rows_table(self.model, SentencesModel.TEXT, selection=QAbstractItemView.SelectionMode.SingleSelection)
        hh = self.table.horizontalHeader()
        hh.resizeSection(SentencesModel.LINE, self.fontMetrics().horizontalAdvance("0") * 8 + 16)
        hh.resizeSection(SentencesModel.ERRORS, self.fontMetrics().horizontalAdvance("Errors") + 24)
        self.table.selectionModel().currentRowChanged.connect(self._on_row)
        self.detail = QTextBrowser()
        self.detail.setOpenLinks(False)
        self.filters = ExampleFilters(self.model, self.confusion, _cell_text, "Sentences with errors only",
                                      "Search sentences", "sentences")
        f = self.filters
        self.errors_only, self.search, self.show_all, self.count = f.errors_only, f.search, f.show_all, f.count
        return column(self.filters, (side_by_side(self.table, self.detail, stretch=(3, 2)), 1))

    def show_run(self, run: RunData, sentences: TaggedSentences) -> None:
        report = run.report or {}
        metrics = report.get("metrics", {})
        spans = report.get("tag_kind") == "spans"
        self.score_tiles.show_metrics(run.metric_specs, metrics)
        self.sentences_tile.value.setText(f"{report.get('n', len(sentences)):,}")
        self.errors_tile.value.setText(f"{int((sentences.errors > 0).sum()):,}")
        self.per_class_box.setTitle("Per entity type" if spans else "Per tag")
        self.per_class.set_rows(report.get("per_class", []))
        self._types = [r["label"] for r in report.get("per_class", [])] if spans else []
        labels = report.get("confusion_labels") or report.get("labels") or []
        self.confusion.set_matrix(labels, report.get("confusion_matrix") or [[0] * len(labels) for _ in labels])
        self.filters.clear_cell()
        self.model.set_sentences(sentences)
        self.detail.clear()
        self._select_first()
        self.show_model(run, types=self._types)

    def clear(self) -> None:
        self.score_tiles.show_metrics((), {})
        super().clear()
        self.per_class.set_rows([])
        self.confusion.set_matrix([], [])
        self.model.set_sentences(TaggedSentences())
        self.detail.clear()

    def show_sentence(self, i: int) -> None:
        d = self.model.data_
        self.detail.setHtml(sentence_html(d.tokens[i], d.gold[i], d.predicted[i], d.confidence[i], self._types,
                                          row=d.rows[i]))

    @Slot(QModelIndex, QModelIndex)
    def _on_row(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if current.isValid():
            self.show_sentence(self.model.sentence_index(current.row()))

    @Slot(int, int)
    def _on_filtered(self, shown: int, _total: int) -> None:
        if shown and not self.table.selectionModel().hasSelection():
            self._select_first()

    def _select_first(self) -> None:
        # selectRow does not signal when the row was already current (a model reset keeps it), so
        # the sentence is shown here rather than left to _on_row.
        if len(self.model.visible):
            self.table.selectRow(0)
            self.show_sentence(self.model.sentence_index(0))
