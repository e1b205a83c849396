"""Evaluation of a text-generation run: each score of the fine-tuned model beside the base model's
(what fine-tuning changed), the test examples worst first (prompt, reference, both models' answers,
their scores), searchable, with the selected example in full; for generative classification (a small
set of target strings) the per-class table and confusion matrix; and a chat box that streams the
exported model's answers, beside the base model's when asked.

The run's folder holds predictions.jsonl (one test example a line: ``row``, ``line``, ``messages``,
``prompt``, ``reference``, ``output``, ``base_output``, ``score``, ``base_score``) and its report the
``generation`` section (``headline``, ``metrics``, ``base_metrics``, ``classes``, ``settings``).
"""

from __future__ import annotations

import html
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PySide6.QtCore import QEvent, QModelIndex, QPersistentModelIndex, QSize, Qt, Signal, Slot
from PySide6.QtGui import QColor, QPainter, QPalette
from PySide6.QtWidgets import (
    QCheckBox,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QScrollArea,
    QTextBrowser,
    QWidget,
)

from ...core.errors import InputError
from ...core.predict.generation import GenerationPredictor
from ...core.run.history import RunData
from ...core.tasks.generation.generate import GenerationSettings
from ...core.tasks.generation.scoring import OTHER
from ...core.tasks.table import TEXT_GENERATION
from ..evaluation.confusion import ConfusionView
from ..evaluation.predictions_model import ERROR_COLOUR, _wrap
from ..evaluation.report_table import PerClassTable
from ..evaluation.tiles import MetricTile
from ..evaluation.try_it_base import LOADING, TextInput, TryIt
from ..evaluation.view_base import ExampleFilters, RunView
from ..jobs import JobState
from ..model_cache import MODELS
from ..widgets.build import (
    Selection,
    button,
    column,
    row,
    rows_table,
    section,
    set_column,
    side_by_side,
    stacked,
    text_label,
)
from ..widgets.spinboxes import float_spin, int_spin
from ..widgets.table_model import RIGHT, HeadedTableModel
from .conversations import block_html, turn_colours, turns_html

GOOD_COLOUR = QColor("#2e9e5b")  # a gain; readable on light and dark bases alike, as ERROR_COLOUR is
# The scores a generation report may hold, in the order their tiles are shown (the headline first).
METRIC_TITLES = {
    "exact_match": ("Exact match", "Share of answers equal to the reference (after normalising case, spaces and "
                                   "punctuation)"),
    "token_f1": ("Token F1", "Word overlap of answer and reference (F1 over their tokens), averaged over examples"),
    "chrf": ("chrF", "Character n-gram F-score of the answers against the references (sacrebleu)"),
    "bleu": ("BLEU", "Word n-gram precision of the answers against the references, with a brevity penalty "
                     "(sacrebleu)"),
    "rouge_l": ("ROUGE-L", "Longest common subsequence of answer and reference, as an F-score (rouge-score)"),
    "entity_f1": ("Entity F1", "F1 of the items of answers that are JSON lists (entities) against the reference's"),
}
NO_TEXT = "\u2014"  # a missing answer (no base model output), in a cell


def score_text(value: float | None) -> str:
    """A score (0..1, as the scoring writes every one), or "" where there is none."""
    if value is None or not np.isfinite(value):
        return ""
    return f"{value:.3f}"


def delta_text(delta: float) -> str:
    return f"{delta:+.3f}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------------------- the evaluated rows


@dataclass
class GenerationRows:
    """A run's predictions.jsonl as columns; built without Qt, on a worker thread. Missing scores are NaN."""

    line: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    messages: list[list[dict[str, Any]]] = field(default_factory=list)
    prompt: list[str] = field(default_factory=list)
    reference: list[str] = field(default_factory=list)
    output: list[str] = field(default_factory=list)
    base_output: list[str | None] = field(default_factory=list)
    score: np.ndarray = field(default_factory=lambda: np.zeros(0))
    base_score: np.ndarray = field(default_factory=lambda: np.zeros(0))
    search: list[str] = field(default_factory=list)  # per row: every text of it, lower-cased

    def __len__(self) -> int:
        return len(self.line)

    @property
    def has_base(self) -> bool:
        return any(b is not None for b in self.base_output)

    @property
    def change(self) -> np.ndarray:
        """Fine-tuned score minus the base model's (NaN where the base was not scored)."""
        return self.score - self.base_score

    @classmethod
    def from_records(cls, records: list[dict[str, Any]]) -> "GenerationRows":
        def number(value: Any) -> float:
            return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else np.nan

        def text(value: Any) -> str:
            return "" if value is None else str(value)

        messages = [[m for m in (r.get("messages") or []) if isinstance(m, dict)] for r in records]
        prompt = [text(r.get("prompt")) or _last_user(m) for r, m in zip(records, messages)]
        reference = [text(r.get("reference")) for r in records]
        output = [text(r.get("output")) for r in records]
        base = [None if r.get("base_output") is None else str(r["base_output"]) for r in records]
        line = np.array([int(r.get("line") or r.get("row") or i + 1) for i, r in enumerate(records)], np.int64)
        search = ["\n".join([p, f, o, b or "", *(text(m.get("content")) for m in ms)]).lower()
                  for p, f, o, b, ms in zip(prompt, reference, output, base, messages)]
        return cls(line, messages, prompt, reference, output, base,
                   np.array([number(r.get("score")) for r in records], float),
                   np.array([number(r.get("base_score")) for r in records], float), search)

    @classmethod
    def read(cls, run: RunData) -> "GenerationRows":
        table = run.predictions()
        return cls.from_records(table.to_pylist() if table.num_rows else [])

    def worst_first(self) -> np.ndarray:
        """Lowest score first; among equal scores the largest loss against the base model, then file order."""
        if not len(self):
            return np.zeros(0, np.int64)
        score = np.where(np.isnan(self.score), np.inf, self.score)
        change = np.where(np.isnan(self.change), 0.0, self.change)
        return np.lexsort((self.line, change, score)).astype(np.int64)


def _last_user(messages: list[dict[str, Any]]) -> str:
    return next((str(m.get("content") or "") for m in reversed(messages) if m.get("role") == "user"), "")


def class_of(text: str, labels: list[str]) -> str:
    """The class of the report's ``labels`` a reference or an answer counts as, compared stripped and
    case-folded as the scoring does; anything else is the report's "(other)"."""
    folded = {label.strip().casefold(): label for label in labels if label != OTHER}
    return folded.get(text.strip().casefold(), OTHER)


# ---------------------------------------------------------------------------- the examples list


class GenerationModel(HeadedTableModel):
    """One row per test example, worst first; filtered by imperfect answers, a search over every text
    and a confusion cell, sorted by any column; ``filtered(shown, total)`` after each change."""

    LINE, PROMPT, REFERENCE, BASE, OUTPUT, SCORE, BASE_SCORE, CHANGE = range(8)
    HEADERS = ("Line", "Prompt", "Reference", "Base model", "Fine-tuned", "Score", "Base", "Change")
    TIPS = ("Line of the example in its data file", "The last user turn (the whole conversation is shown below)",
            "The answer in the data", "The base model's answer, before fine-tuning",
            "The fine-tuned model's answer", "The headline score of the fine-tuned answer",
            "The same score of the base model's answer", "Fine-tuned score minus base score")
    RIGHT_HEADERS = (LINE, SCORE, BASE_SCORE, CHANGE)
    TEXT_COLUMNS = (PROMPT, REFERENCE, BASE, OUTPUT)
    filtered = Signal(int, int)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.rows = GenerationRows()
        self._order = np.zeros(0, np.int64)
        self._errors_only = False
        self._query = ""
        self._cell: tuple[str, str] | None = None
        self._classes: list[tuple[str, str]] = []  # per row: (reference's class, answer's class)
        self._sort: tuple[int, Qt.SortOrder] | None = None

    def set_rows(self, rows: GenerationRows, labels: list[str] | None = None) -> None:
        self.beginResetModel()
        self.rows, self._cell = rows, None
        names = [str(label) for label in labels or []]
        self._classes = [(class_of(f, names), class_of(o, names)) for f, o in zip(rows.reference, rows.output)] \
            if names else []
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

    def set_cell(self, gold: str | None, predicted: str | None = None) -> None:
        self._cell = None if gold is None or predicted is None else (gold, predicted)
        self._refilter()

    def _refilter(self) -> None:
        self.beginResetModel()
        self._order = self._compute_order()
        self.endResetModel()
        self.filtered.emit(len(self._order), len(self.rows))

    def _compute_order(self) -> np.ndarray:
        r = self.rows
        mask = np.ones(len(r), bool)
        if self._errors_only:
            mask &= ~(r.score >= 1.0 - 1e-9)  # a perfect answer scores 1 (NaN: not scored, kept)
        if self._query:
            mask &= np.fromiter((self._query in s for s in r.search), bool, len(r))
        if self._cell is not None and self._classes:
            mask &= np.array([pair == self._cell for pair in self._classes], bool)
        order = r.worst_first()
        if self._sort is not None and self._sort[0] >= 0 and len(order):
            order = self._sorted(order, *self._sort)
        return order[mask[order]]

    def _sorted(self, order: np.ndarray, column: int, how: Qt.SortOrder) -> np.ndarray:
        r = self.rows
        if column in self.TEXT_COLUMNS:
            texts = {self.PROMPT: r.prompt, self.REFERENCE: r.reference, self.OUTPUT: r.output,
                     self.BASE: [b or "" for b in r.base_output]}[column]
            key: Any = np.array([t.lower() for t in texts], dtype=object)
        else:
            key = {self.LINE: r.line, self.SCORE: r.score, self.BASE_SCORE: r.base_score, self.CHANGE: r.change}[column]
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

    def row_record(self, view_row: int) -> dict[str, Any]:
        """The example at ``view_row`` as predictions.jsonl holds it."""
        i = int(self._order[view_row])
        r = self.rows

        def number(value: float) -> float | None:
            return None if np.isnan(value) else float(value)

        return {"index": i, "line": int(r.line[i]), "messages": r.messages[i], "prompt": r.prompt[i],
                "reference": r.reference[i], "output": r.output[i], "base_output": r.base_output[i],
                "score": number(r.score[i]), "base_score": number(r.base_score[i])}

    def _text(self, i: int, c: int) -> str:
        r = self.rows
        if c == self.BASE:
            return r.base_output[i] if r.base_output[i] is not None else ""
        return {self.PROMPT: r.prompt, self.REFERENCE: r.reference, self.OUTPUT: r.output}[c][i]

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        i, c, r = int(self._order[index.row()]), index.column(), self.rows
        if role == Qt.ItemDataRole.DisplayRole:
            if c == self.LINE:
                return str(int(r.line[i]))
            if c in self.TEXT_COLUMNS:
                if c == self.BASE and r.base_output[i] is None:
                    return NO_TEXT
                return _one_line(self._text(i, c))
            value = {self.SCORE: r.score, self.BASE_SCORE: r.base_score, self.CHANGE: r.change}[c][i]
            return delta_text(value) if c == self.CHANGE and np.isfinite(value) else score_text(value)
        if role == Qt.ItemDataRole.ForegroundRole and c == self.CHANGE and np.isfinite(r.change[i]) and r.change[i]:
            return GOOD_COLOUR if r.change[i] > 0 else ERROR_COLOUR
        if role == Qt.ItemDataRole.TextAlignmentRole and c in self.RIGHT_HEADERS:
            return RIGHT
        if role == Qt.ItemDataRole.ToolTipRole and c in self.TEXT_COLUMNS:
            return _wrap(self._text(i, c)) or None
        if role == Qt.ItemDataRole.UserRole:
            return self.row_record(index.row())
        return None


# ---------------------------------------------------------------------------- the tiles and the detail


class WrappingTile(MetricTile):
    """A tile whose texts stay on one line where the row has room and wrap where it has not: five
    scores and three counts fit a 1280-pixel window only when the tiles may narrow."""

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(title, parent)
        self.title.setWordWrap(True)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        """As wide as its longest text on one line (a wrapped label's own hint is narrower)."""
        hint = super().sizeHint()
        layout = self.layout()
        if layout is None:
            return hint
        margins = layout.contentsMargins()
        widest = max((label.fontMetrics().horizontalAdvance(label.text()) for label in self.findChildren(QLabel)
                      if label.isVisibleTo(self)), default=0)
        return QSize(max(hint.width(), widest + margins.left() + margins.right() + 2 * self.frameWidth() + 2),
                     hint.height())


class DeltaTile(WrappingTile):
    """A score of the fine-tuned model and, under it, the base model's with the difference: green
    when fine-tuning raised it, red when it lowered it."""

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(title, parent)
        self.delta = QLabel()
        self.delta.setWordWrap(True)
        layout = self.layout()
        if layout is not None:
            layout.addWidget(self.delta)

    def show_scores(self, value: float | None, base: float | None) -> None:
        self.value.setText(score_text(value) if isinstance(value, (int, float)) else "-")
        colour = None
        if isinstance(value, (int, float)) and isinstance(base, (int, float)):
            change = float(value) - float(base)
            self.delta.setText(f"base {score_text(base)}  ({delta_text(change)})")
            colour = GOOD_COLOUR if change > 1e-12 else ERROR_COLOUR if change < -1e-12 else None
        else:
            self.delta.setText("base model not scored")
        palette = QPalette()  # resolves nothing: the tile's own colours, in either scheme
        if colour is not None:
            palette.setColor(QPalette.ColorRole.WindowText, colour)
        self.delta.setPalette(palette)
        self.delta.setEnabled(colour is not None)  # no change: dimmed as the title is


class ExampleDetail(QTextBrowser):
    """The selected example in full: its conversation's turns, the reference, both answers and their
    scores, each wrapped, tinted from the palette."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setOpenLinks(False)
        self.setPlaceholderText("Select an example to read it in full.")
        self.record: dict[str, Any] | None = None

    def show_record(self, record: dict[str, Any] | None) -> None:
        self.record = record
        if record is None:
            self.clear()
            return
        colours = turn_colours(self.palette())
        messages = record["messages"] or [{"role": "user", "content": record["prompt"]}]
        score, base_score = record["score"], record["base_score"]
        parts = [f"<p><b>Line {record['line']}</b></p>", turns_html(messages, self.palette()),
                 block_html("Reference", record["reference"], colours["system"])]
        if record["base_output"] is not None:
            parts.append(block_html("Base model", record["base_output"], colours[""],
                                    f"score {score_text(base_score)}" if base_score is not None else ""))
        parts.append(block_html("Fine-tuned", record["output"], colours["assistant"],
                                f"score {score_text(score)}" if score is not None else ""))
        self.setHtml("".join(parts))

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt API
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange and self.record is not None:
            self.show_record(self.record)


# ---------------------------------------------------------------------------- try it: the chat

KIND = "generation-predictor"  # the model cache's name for a loaded GenerationPredictor
TUNED, BASE = "tuned", "base"  # the two sides of a compared turn
SIDE_TITLES = {TUNED: "Fine-tuned", BASE: "Base model"}
SETTING_KEYS = ("max_new_tokens", "temperature", "top_p")


def base_model_dir(config: dict[str, Any]) -> Path | None:
    """The folder of the backbone a run fine-tuned (the base model the chat compares with), when it is
    a folder on this machine: config.json's resolved backbone, else the model it names."""
    backbone = (config.get("resolved") or {}).get("backbone") or {}
    for candidate in (backbone.get("path"), (config.get("model") or {}).get("name")):
        if isinstance(candidate, str) and candidate and (Path(candidate).expanduser() / "config.json").is_file():
            return Path(candidate).expanduser()
    return None


class BaseModelPredictor(GenerationPredictor):
    """The backbone a run started from, answering as the export does: a plain Hugging Face folder (no
    workbench.json), given the plain default chat template where it has none, as training gave it."""

    def __init__(self, folder: str | Path, device: str = "auto") -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ...core.predict.generation import _device_and_dtype
        from ...core.tasks.generation.template import ensure_chat_template

        self.folder = Path(folder).expanduser().resolve()
        self.meta, self.task, self.settings = {}, TEXT_GENERATION, GenerationSettings()
        self.device, self.dtype = _device_and_dtype(device)
        self._lock = threading.Lock()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
            model = AutoModelForCausalLM.from_pretrained(self.folder, dtype=self.dtype)
        except (MemoryError, ImportError):
            raise
        except Exception as e:  # no weights, a damaged config: say which folder
            raise InputError(f"the base model cannot be loaded ({type(e).__name__}: {e})", path=self.folder) from None
        ensure_chat_template(self.tokenizer)
        self.model = model.to(self.device).eval()


def _quiet_transformers() -> None:
    """No "Loading weights" bars or warnings on the app's stderr (as ``load_pipeline`` does)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def load_generation_predictor(folder: Path) -> GenerationPredictor:
    _quiet_transformers()
    return GenerationPredictor(folder)


def load_base_predictor(folder: Path) -> GenerationPredictor:
    _quiet_transformers()
    return BaseModelPredictor(folder)


def stream_replies(state: JobState, model_dir: str, requests: list[tuple[str, str, list[dict[str, str]]]],
                   values: dict[str, Any], loaders: dict[str, Callable[[Path], Any]]) -> dict[str, str]:
    """The worker's part of a chat turn: each (side, model folder, messages) of ``requests`` answered in
    turn, every piece handed to the GUI thread as progress ``(side, piece)`` (``(side, "")`` once the
    model is loaded); the whole answers, by side, at the end. Stops at the next piece once cancelled."""
    settings = GenerationSettings.from_dict(values)
    replies: dict[str, str] = {}
    for side, folder, messages in requests:
        predictor = MODELS.get(f"{KIND}:{side}", folder, loaders[side])
        state.raise_if_cancelled()
        fit = getattr(predictor, "fit", None)
        turns = fit(messages, settings) if callable(fit) else messages  # a long chat loses its oldest turns
        state.progress((side, ""))
        parts: list[str] = []
        pieces = predictor.stream_chat(turns, settings, stop=state.token)
        try:
            for piece in pieces:
                if state.cancelled:
                    break
                parts.append(piece)
                state.progress((side, piece))
        finally:
            close = getattr(pieces, "close", None)
            if callable(close):
                close()  # ends the generation thread and frees the model for the next turn
        state.raise_if_cancelled()
        replies[side] = "".join(parts)
    return replies


class Bubble(QFrame):
    """One speaker's text in the transcript, on its role's tint (from the palette, at paint time, so
    a change of scheme needs nothing). ``append`` adds a streamed piece."""

    def __init__(self, title: str, role: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.role, self._title = role, title
        self.title = QLabel(title)
        font = self.title.font()
        font.setBold(True)
        self.title.setFont(font)
        self.body = text_label()
        self.body.setTextFormat(Qt.TextFormat.PlainText)
        set_column(self, self.title, self.body, margins=8).setSpacing(2)

    def append(self, piece: str) -> None:
        self.body.setText(self.body.text() + piece)

    def set_text(self, text: str) -> None:
        self.body.setText(text)

    def text(self) -> str:
        return self.body.text()

    def set_note(self, note: str) -> None:
        """"writing...", "stopped": after the speaker's name."""
        self.title.setText(f"{self._title} \u00b7 {note}" if note else self._title)

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt API
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(turn_colours(self.palette()).get(self.role, "")))
        painter.drawRoundedRect(self.rect().adjusted(0, 0, -1, -1), 8, 8)
        painter.end()


class Transcript(QScrollArea):
    """The chat so far: each user turn, then the answer (or base and fine-tuned answers side by side).
    Follows the newest text while the reader is at the bottom."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.inner = QWidget()
        self.column = set_column(self.inner, margins=4)
        self.column.setSpacing(6)
        self.placeholder = text_label("Chat with the fine-tuned model: type a message below. Tick \"Compare with "
                                      "base model\" to see the base model's answer beside it.", dimmed=True)
        self.column.addWidget(self.placeholder)
        self.column.addStretch(1)
        self.setWidget(self.inner)
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.inner.setAutoFillBackground(False)
        self.viewport().setBackgroundRole(QPalette.ColorRole.Base)
        self.rows: list[QWidget] = []
        self._follow = True
        bar = self.verticalScrollBar()
        bar.rangeChanged.connect(lambda _lo, hi: bar.setValue(hi) if self._follow else None)
        bar.valueChanged.connect(lambda value: setattr(self, "_follow", value >= bar.maximum() - 4))

    def add_turn(self, text: str, sides: tuple[str, ...]) -> dict[str, Bubble]:
        """The user's ``text`` and an empty answer bubble per side; returns the answer bubbles by side."""
        self.placeholder.hide()
        user = Bubble("You", "user")
        user.set_text(text)
        answers = {side: Bubble(SIDE_TITLES[side], "assistant" if side == TUNED else "system") for side in sides}
        for bubble in answers.values():
            bubble.set_note("waiting")
        self._add(row(_gap(48), (user, 1)))
        self._add(row(*((answers[s], 1) for s in (BASE, TUNED) if s in answers), _gap(48)))
        self._follow = True
        return answers

    def _add(self, layout: QHBoxLayout) -> None:
        holder = QWidget()
        layout.setContentsMargins(0, 0, 0, 0)
        holder.setLayout(layout)
        self.column.insertWidget(self.column.count() - 1, holder)
        self.rows.append(holder)

    def clear(self) -> None:
        for holder in self.rows:
            self.column.removeWidget(holder)
            holder.deleteLater()
        self.rows = []
        self.placeholder.show()


def _gap(width: int) -> QWidget:
    """A fixed blank: the user's turns sit to the right, the answers to the left."""
    spacer = QWidget()
    spacer.setFixedWidth(width)
    return spacer


@dataclass
class ChatTurn:
    user: str
    sides: tuple[str, ...]
    bubbles: dict[str, Bubble]
    answers: dict[str, str] = field(default_factory=dict)


class ChatTryIt(TryIt):
    """A chat with the run's exported model: a system prompt, the decoding settings, the transcript, and
    a message box (Enter sends, Shift+Enter starts a new line). Answers stream in from the worker
    thread; Stop ends one, Clear starts a new conversation. "Compare with base model" answers each turn
    with the run's backbone too, side by side (loaded the first time it is asked for).

    ``predictor_factory(folder)`` (and ``base_factory``) build what answers; tests give stand-ins."""

    model_kind = KIND + ":" + TUNED
    busy_text = "Writing..."

    def __init__(self, parent: QWidget | None = None, predictor_factory: Callable[[Path], Any] | None = None,
                 base_factory: Callable[[Path], Any] | None = None) -> None:
        super().__init__("Send", parent)
        self.loaders = {TUNED: predictor_factory or load_generation_predictor,
                        BASE: base_factory or predictor_factory or load_base_predictor}
        self.base_dir: str | None = None
        self.turns: list[ChatTurn] = []
        self.pending: ChatTurn | None = None
        self._build()
        self.set_model(None)

    def _build(self) -> None:
        self.system = QPlainTextEdit()
        self.system.setPlaceholderText("System prompt (optional): how the assistant should behave")
        self.system.setTabChangesFocus(True)
        self.system.setFixedHeight(self.system.fontMetrics().lineSpacing() * 2 + 14)
        self.max_tokens = int_spin(1, 8192, "The most tokens an answer may have")
        self.temperature = float_spin(0.0, 2.0, 0.1, 2, "0: always the most likely token (greedy, repeatable); "
                                      "higher: more varied answers")
        self.top_p = float_spin(0.05, 1.0, 0.05, 2, "When sampling (temperature above 0): draw from the most "
                                "likely tokens whose probabilities add up to this")
        settings = row(QLabel("Temperature"), self.temperature, QLabel("Top-p"), self.top_p, QLabel("Max tokens"),
                       self.max_tokens)
        settings.addStretch(1)
        self.transcript = Transcript()
        self.transcript.setMinimumHeight(160)
        self.input = TextInput("Type a message and press Enter to send it (Shift+Enter: new line)")
        self.input.returnPressed.connect(self.predict)
        self.compare = QCheckBox("Compare with base model")
        self.stop_button = button("Stop", self.stop, "Stop the answer being written", enabled=False)
        self.clear_button = button("Clear", self.clear_chat, "Start a new conversation")
        self.input_row.insertWidget(0, self.compare)
        self.input_row.insertStretch(1, 1)
        at = self.input_row.indexOf(self.button)
        self.input_row.insertWidget(at, self.clear_button)
        self.input_row.insertWidget(at + 1, self.stop_button)
        self.column.insertWidget(0, self.system)
        self.column.insertLayout(1, settings)
        self.column.insertWidget(2, self.transcript, 1)
        self.column.insertWidget(3, self.input)
        self.column.setStretch(self.column.count() - 1, 0)  # the transcript takes the spare height
        self._controls += [self.system, self.max_tokens, self.temperature, self.top_p, self.input, self.clear_button]
        self.configure()

    # ---- the model -------------------------------------------------------------------------------
    def set_model(self, model_dir: str | Path | None, why_not: str = "", **options: Any) -> None:
        self.pending = None  # set_model cancels the jobs: no answer is on its way any more
        super().set_model(model_dir, why_not, **options)
        self.clear_chat()

    def configure(self, base_model: str | Path | None = None, settings: dict[str, Any] | None = None,
                  **_: Any) -> None:
        """The run's backbone folder (the base model to compare with) and its decoding settings."""
        self.base_dir = str(base_model) if base_model else None
        values = {**GenerationSettings().to_dict(), **{k: v for k, v in (settings or {}).items() if k in SETTING_KEYS}}
        self.max_tokens.setValue(int(values["max_new_tokens"]))
        self.temperature.setValue(float(values["temperature"]))
        self.top_p.setValue(float(values["top_p"]))
        if not self.base_dir:
            self.compare.setChecked(False)
        self.compare.setToolTip(f"Answer each message with the base model too ({self.base_dir}), beside the "
                                "fine-tuned answer" if self.base_dir else "The run's base model is not a folder on "
                                "this machine, so there is nothing to compare with")

    def _enable_controls(self) -> None:
        super()._enable_controls()
        self.compare.setEnabled(self._model_dir is not None and self.base_dir is not None)
        self.button.setEnabled(self._model_dir is not None and self.pending is None)

    def settings_values(self) -> dict[str, Any]:
        return {"max_new_tokens": self.max_tokens.value(), "temperature": round(self.temperature.value(), 4),
                "top_p": round(self.top_p.value(), 4)}

    # ---- a turn ----------------------------------------------------------------------------------
    def messages_for(self, side: str, text: str) -> list[dict[str, str]]:
        """The conversation ``side``'s model answers: the system prompt, the turns so far with that
        model's own answers (the fine-tuned one's where it gave none), then ``text``."""
        system = self.system.toPlainText().strip()
        messages = [{"role": "system", "content": system}] if system else []
        for turn in self.turns:
            if turn is self.pending:
                continue
            answer = turn.answers.get(side, turn.answers.get(TUNED, ""))
            messages += [{"role": "user", "content": turn.user}, {"role": "assistant", "content": answer}]
        return [*messages, {"role": "user", "content": text}]

    @Slot()
    def predict(self) -> None:
        """Send the typed message: its answer (and the base model's) streams into the transcript."""
        text = self.input.text().strip()
        if not self._model_dir or not text or self.pending is not None:
            return
        sides = (TUNED, BASE) if self.compare.isChecked() and self.base_dir else (TUNED,)
        folders = {TUNED: self._model_dir, BASE: self.base_dir or ""}
        requests = [(side, folders[side], self.messages_for(side, text)) for side in sides]
        self.input.setText("")
        turn = ChatTurn(text, sides, self.transcript.add_turn(text, sides))
        self.turns.append(turn)
        self.pending = turn
        self.stop_button.setEnabled(True)
        loaded = all(MODELS.holds(f"{KIND}:{side}", folder) for side, folder, _ in requests)
        self.run_prediction(stream_replies, requests, self.settings_values(), self.loaders, state=True,
                            on_progress=self._on_piece, busy=self.busy_text if loaded else LOADING)

    def _on_piece(self, value: tuple[str, str]) -> None:
        side, piece = value
        turn = self.pending
        if turn is None or side not in turn.bubbles:
            return
        bubble = turn.bubbles[side]
        if not piece:  # the model is loaded and writing
            bubble.set_note("writing...")
            self.status.setText(f"{SIDE_TITLES[side]}: writing...")
            return
        turn.answers[side] = turn.answers.get(side, "") + piece
        bubble.append(piece)

    def show_prediction(self, replies: dict[str, str]) -> None:
        turn = self.pending
        self.pending = None
        self.stop_button.setEnabled(False)
        self._enable_controls()
        if turn is None:
            return
        for side, bubble in turn.bubbles.items():
            turn.answers[side] = replies.get(side, turn.answers.get(side, ""))
            bubble.set_text(turn.answers[side] or "")
            bubble.set_note("" if turn.answers[side] else "(empty answer)")
        self.input.setFocus()

    @Slot()
    def stop(self) -> None:
        """Stop the answer being written; what it wrote so far stays, in the transcript and the history."""
        turn = self.pending
        if turn is None:
            return
        self.jobs.cancel()  # the worker stops at its next piece; its answer and pieces are dropped
        self.pending = None
        for side, bubble in turn.bubbles.items():
            turn.answers.setdefault(side, "")
            bubble.set_note("stopped")
        self.stop_button.setEnabled(False)
        self._enable_controls()
        self.status.setText("Stopped.")

    @Slot()
    def clear_chat(self) -> None:
        """A new conversation: the transcript and the history go (an answer being written stops)."""
        if self.pending is not None:
            self.jobs.cancel()
            self.pending = None
        self.turns = []
        self.transcript.clear()
        self.stop_button.setEnabled(False)
        self._enable_controls()
        if self._model_dir:
            self.status.setText("")

    def clear_result(self) -> None:
        """The answer failed (or another model came): the turn being answered is dropped from the history."""
        turn = self.pending
        self.pending = None
        self.stop_button.setEnabled(False)
        if turn is not None:
            for bubble in turn.bubbles.values():
                bubble.set_note("failed")
            if turn in self.turns:
                self.turns.remove(turn)
        self._enable_controls()

    def history(self) -> list[tuple[str, dict[str, str]]]:
        """(user message, answers by side) per turn so far (tests)."""
        return [(t.user, dict(t.answers)) for t in self.turns]


# ---------------------------------------------------------------------------- the view


class GenerationView(RunView):
    @staticmethod
    def prepare(run: RunData) -> GenerationRows:
        return GenerationRows.read(run)

    def __init__(self, parent: QWidget | None = None, try_it: TryIt | None = None) -> None:
        self.examples_tile = WrappingTile("Test examples")
        self.perplexity_tile = WrappingTile("Perplexity")
        self.perplexity_tile.setToolTip("Of the reference answers under the fine-tuned model (exp of the answer-token "
                                        "loss); lower is better")
        self.better_tile = WrappingTile("Better than the base model")
        self.better_tile.setToolTip("Examples whose fine-tuned answer scores higher than the base model's (and lower, "
                                    "below)")
        self.worse = QLabel()
        self.worse.setEnabled(False)
        self.worse.setWordWrap(True)
        layout = self.better_tile.layout()
        if layout is not None:
            layout.addWidget(self.worse)
        super().__init__(try_it if try_it is not None else ChatTryIt(), self.examples_tile,
                         self.perplexity_tile, self.better_tile, parent=parent)
        self.delta_tiles: dict[str, DeltaTile] = {}
        self.per_class = PerClassTable()
        self.confusion = ConfusionView()
        axis = text_label("Rows: reference  \u00b7  Columns: the model's answer", selectable=False, dimmed=True)
        self.classes = side_by_side(
            section("Per class", self.per_class),
            section("Confusion matrix", column(axis, (self.confusion, 1)), hint="Click a cell to list its examples."),
            stretch=(2, 3))
        self.model = GenerationModel(self)
        self.table = rows_table(self.model, GenerationModel.PROMPT, sort_column=-1, selection=Selection.SingleSelection)
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
        # Four texts share a narrow table at 1280 pixels: their titles end in "..." rather than cut at both ends.
        self.table.horizontalHeader().setTextElideMode(Qt.TextElideMode.ElideRight)
        self.filters = ExampleFilters(self.model, self.confusion, _cell_text, "Imperfect only",
                                      "Search prompts, references and answers", "examples")
        self.filters.errors_only.setToolTip("List only the examples whose answer does not score a perfect 1")
        f = self.filters
        self.errors_only, self.search, self.show_all, self.count = f.errors_only, f.search, f.show_all, f.count
        self.detail = ExampleDetail()
        self.table.selectionModel().currentRowChanged.connect(self._show_current)
        self.model.modelReset.connect(self._select_first)
        self.examples_section = section("Examples (worst first)", column(self.filters, (self.table, 1)))
        left = stacked(self.classes, self.examples_section, section("Example", self.detail), stretch=(2, 3, 2))
        body = side_by_side(left, section("Try it", self.try_it), stretch=(3, 2))
        set_column(self, self.score_tiles, (body, 1))

    def show_run(self, run: RunData, rows: GenerationRows) -> None:
        report = run.report or {}
        generation = report.get("generation") or {}
        self._show_tiles(generation, rows, report)
        classes = generation.get("classes") or None
        self.classes.setVisible(bool(classes))
        labels: list[str] = []
        if classes:
            labels = [str(x) for x in classes.get("labels") or [r["label"] for r in classes.get("per_class", [])]]
            self.per_class.set_rows(classes.get("per_class", []))
            self.confusion.set_matrix(labels, classes.get("confusion_matrix") or [[0] * len(labels) for _ in labels])
        self.filters.clear_cell()
        self.model.set_rows(rows, labels)
        self._fit_columns(rows.has_base)
        self.table.scrollToTop()
        self.show_model(run, base_model=base_model_dir(run.config), settings=generation.get("settings") or {})

    def _show_tiles(self, generation: dict[str, Any], rows: GenerationRows, report: dict[str, Any]) -> None:
        """One tile per score, the headline first, each with the base model's and the difference."""
        metrics, base = generation.get("metrics") or {}, generation.get("base_metrics") or {}
        headline = generation.get("headline")
        keys = sorted(metrics, key=lambda k: (k != headline, list(METRIC_TITLES).index(k) if k in METRIC_TITLES
                                              else len(METRIC_TITLES)))
        for tile in self.delta_tiles.values():
            self.score_tiles.row.removeWidget(tile)
            tile.deleteLater()
        self.delta_tiles = {}
        for i, key in enumerate(keys):
            title, tip = METRIC_TITLES.get(key, (key.replace("_", " ").capitalize(), ""))
            tile = DeltaTile(title + (" (headline)" if key == headline else ""))
            tile.setToolTip(tip + (". Beneath: the base model's score, and the change fine-tuning made." if tip else ""))
            tile.show_scores(metrics.get(key), base.get(key))
            self.delta_tiles[key] = tile
            self.score_tiles.row.insertWidget(i, tile)
        self.examples_tile.value.setText(f"{generation.get('examples', len(rows)):,}")
        self.examples_tile.title.setText(f"{str(report.get('split') or 'evaluated').capitalize()} examples answered")
        perplexity = (report.get("metrics") or {}).get("perplexity")
        self.perplexity_tile.setVisible(isinstance(perplexity, (int, float)))
        self.perplexity_tile.value.setText(f"{perplexity:.2f}" if isinstance(perplexity, (int, float)) else "-")
        change = rows.change
        known = np.isfinite(change)
        self.better_tile.setVisible(bool(known.any()))
        self.better_tile.value.setText(f"{int((change[known] > 0).sum()):,}")
        self.worse.setText(f"worse: {int((change[known] < 0).sum()):,}, the same: {int((change[known] == 0).sum()):,}")

    def _fit_columns(self, has_base: bool) -> None:
        """Line and the scores as wide as their headers; the texts share the rest of the width
        equally; no base columns for a run whose base model was not scored."""
        m, header = self.model, self.table.horizontalHeader()
        for c in (m.BASE, m.BASE_SCORE, m.CHANGE):
            self.table.setColumnHidden(c, not has_base)
        digits = self.table.fontMetrics().horizontalAdvance("0") * 6 + 16
        for c in (m.LINE, m.SCORE, m.BASE_SCORE, m.CHANGE):
            header.setSectionResizeMode(c, QHeaderView.ResizeMode.Interactive)
            header.resizeSection(c, max(header.sectionSizeHint(c), digits))
        for c in m.TEXT_COLUMNS:
            header.setSectionResizeMode(c, QHeaderView.ResizeMode.Stretch)

    def _select_first(self) -> None:
        """After a new run or filter: the first listed example (the worst) is the one detailed."""
        if self.model.rowCount():
            self.table.setCurrentIndex(self.model.index(0, GenerationModel.PROMPT))
        else:
            self.detail.show_record(None)

    def _show_current(self, current: QModelIndex, _previous: QModelIndex) -> None:
        self.detail.show_record(self.model.row_record(current.row()) if current.isValid() else None)

    def clear(self) -> None:
        super().clear()
        for tile in self.delta_tiles.values():
            self.score_tiles.row.removeWidget(tile)
            tile.deleteLater()
        self.delta_tiles = {}
        self.worse.setText("")
        self.classes.setVisible(False)
        self.per_class.set_rows([])
        self.confusion.set_matrix([], [])
        self.filters.clear_cell()
        self.model.set_rows(GenerationRows())


def _cell_text(gold: str, predicted: str) -> str:
    what = "correct" if gold == predicted else "mistakes"
    return f"Reference <b>{html.escape(gold)}</b>, answered <b>{html.escape(predicted)}</b> ({what})"

