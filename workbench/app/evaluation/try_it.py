"""The "try it" box: type a text, see what the run's model says, without blocking the window.

The model is loaded with ``transformers.pipeline`` on a worker thread the first time it is needed
and kept in the app's model cache, so later predictions take milliseconds. torch and transformers
are imported there too, never at startup.
"""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ..jobs import Jobs, describe
from ..model_cache import MODELS

MAX_BARS = 8  # the best few labels; a 50-class model would otherwise list 50 bars


def load_pipeline(folder: Path, task: str = "text-classification", **options):
    """A transformers pipeline for an exported model, on the CPU; a loader for ``MODELS.get``."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers import pipeline
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()  # "Loading weights" bars belong in a terminal, not the app's stderr
    return pipeline(task, model=str(folder), device="cpu", **options)


def _load_classifier(folder: Path):
    return load_pipeline(folder, top_k=None)


def classification_pipeline(model_dir: str | Path):
    """The cached text-classification pipeline for ``model_dir``; reloaded if the folder was rewritten."""
    return MODELS.get("text-classification", model_dir, _load_classifier)


def predict_scores(model_dir: str | Path, text: str, text_pair: str | None = None) -> list[tuple[str, float]]:
    """Every label with its probability, best first. ``text_pair``: the second text of a pair model."""
    inputs = {"text": text, "text_pair": text_pair} if text_pair is not None else text
    out = classification_pipeline(model_dir)(inputs, truncation=True)
    if out and isinstance(out[0], list):  # some versions nest a single input's result
        out = out[0]
    return sorted(((d["label"], float(d["score"])) for d in out), key=lambda x: -x[1])


def explain_scores(model_dir: str | Path, text: str, text_pair: str | None = None, steps: int = 48):
    """(integrated-gradients attribution, its HTML shading) of the predicted class, with the cached model."""
    from ...core.explain import attribution_html, integrated_gradients

    pipe = classification_pipeline(model_dir)
    att = integrated_gradients(pipe.model, pipe.tokenizer, text, text_pair, steps=steps)
    html = attribution_html(att, text)
    if text_pair is not None:
        html += " ⟶ " + attribution_pair_html(att, text_pair)
    return att, html


def attribution_pair_html(att, text_pair: str) -> str:
    """The second text's shading: its tokens follow the first [SEP] in the attribution."""
    from dataclasses import replace

    from ...core.explain import attribution_html

    seps = [i for i, sp in enumerate(att.special) if sp]
    first_sep = seps[1] if len(seps) > 1 else len(att.tokens)
    keep = [i > first_sep for i in range(len(att.tokens))]
    masked = replace(att, special=[sp or not k for sp, k in zip(att.special, keep)])
    return attribution_html(masked, text_pair)


class TryItBox(QWidget):
    """A text field, a Predict button and one bar per label."""

    predicted = Signal(object)  # [(label, score), ...] best first, after each prediction

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._model_dir: str | None = None
        self._caption = ""  # what the explanation being computed is of (an example of the list)
        # One thread: predictions run in order and the pipeline is never used by two at once.
        self.jobs = Jobs(self)

        self.input = QLineEdit()
        self.input.setPlaceholderText("Type a sentence and press Enter to see what the model says")
        self.input.setClearButtonEnabled(True)
        self.input.returnPressed.connect(self.predict)
        self.input_pair = QLineEdit()  # shown for sentence-pair models only
        self.input_pair.setPlaceholderText("Second text of the pair")
        self.input_pair.setClearButtonEnabled(True)
        self.input_pair.returnPressed.connect(self.predict)
        self.button = QPushButton("Predict")
        self.button.clicked.connect(self.predict)
        self.explain_button = QPushButton("Explain")
        self.explain_button.setToolTip("Shade each word by how much it pushed the model towards its answer "
                                       "(integrated gradients, 48 steps): green for, red against")
        self.explain_button.clicked.connect(self.explain)
        self.explanation = QLabel()
        self.explanation.setWordWrap(True)
        self.explanation.setTextFormat(Qt.TextFormat.RichText)
        self.explanation.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.explanation.hide()
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._bars = QGridLayout()
        self._bars.setColumnStretch(1, 1)
        self._bars.setHorizontalSpacing(8)

        row = QHBoxLayout()
        row.addWidget(self.input, 1)
        row.addWidget(self.button)
        row.addWidget(self.explain_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.input_pair)
        layout.addLayout(self._bars)
        layout.addWidget(self.explanation)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.set_model(None)

    def set_model(self, model_dir: str | Path | None, why_not: str = "", pair: bool = False) -> None:
        self._model_dir = str(model_dir) if model_dir else None
        self._pair = pair
        self.input_pair.setVisible(pair)
        self.input_pair.setEnabled(model_dir is not None)
        self.input.setPlaceholderText(
            "First text of the pair" if pair else "Type a sentence and press Enter to see what the model says"
        )
        self.jobs.cancel()  # answers still on their way belong to the previous model
        self._clear_bars()
        enabled = self._model_dir is not None
        self.input.setEnabled(enabled)
        self.button.setEnabled(enabled)
        self.explain_button.setEnabled(enabled)
        self.explanation.hide()
        self.status.setText("" if enabled else (why_not or "This run has no exported model to try."))

    @Slot()
    def predict(self) -> None:
        text = self.input.text().strip()
        text_pair = self.input_pair.text().strip() if self._pair else None
        if not self._model_dir or not text or (self._pair and not text_pair):
            return
        loaded = MODELS.holds("text-classification", self._model_dir)
        self.status.setText("Predicting..." if loaded else "Loading the model (first time only)...")
        self.button.setEnabled(False)
        self.jobs.submit(predict_scores, self._model_dir, text, text_pair, on_done=self._on_done,
                         on_error=self._on_failed)

    @Slot()
    def explain(self) -> None:
        """Integrated gradients of the predicted class over the tokens, on the worker thread."""
        text = self.input.text().strip()
        text_pair = self.input_pair.text().strip() if self._pair else None
        if not self._model_dir or not text or (self._pair and not text_pair):
            return
        self._caption = ""  # typed by the user: no example of the list
        self._explain(text, text_pair)

    def _explain(self, text: str, text_pair: str | None) -> None:
        self.status.setText("Explaining (integrated gradients)...")
        self.explain_button.setEnabled(False)
        self.jobs.submit(explain_scores, self._model_dir, text, text_pair, on_done=self._on_explained,
                         on_error=self._on_failed)

    def explain_example(self, text: str, text_pair: str | None, caption: str) -> None:
        """An example of the predictions list: into the fields and explained (the explanation names
        the predicted class; Predict shows every class's score)."""
        if not self._model_dir:
            return
        self.input.setText(text)
        if self._pair:
            self.input_pair.setText(text_pair or "")
        self._clear_bars()  # they were another text's
        self._caption = caption
        self._explain(text, text_pair)

    def _on_explained(self, answer) -> None:
        att, html = answer
        self.explain_button.setEnabled(True)
        self.status.setText("")
        caption, self._caption = self._caption, ""
        self.explanation.setText((f"{caption}<br>" if caption else "") + f"Why <b>{att.label}</b>: {html}")
        self.explanation.show()

    def _on_done(self, scores) -> None:
        self.button.setEnabled(True)
        self.status.setText("")
        self._show_bars(scores)
        self.predicted.emit(scores)

    def _on_failed(self, error: Exception) -> None:
        self.button.setEnabled(self._model_dir is not None)
        self.explain_button.setEnabled(self._model_dir is not None)
        self._clear_bars()
        self.status.setText(f"Could not run the model: {describe(error)}")

    def _clear_bars(self) -> None:
        while self._bars.count():
            item = self._bars.takeAt(0)
            if item.widget():
                item.widget().deleteLater()

    def _show_bars(self, scores: list[tuple[str, float]]) -> None:
        self._clear_bars()
        for i, (label, score) in enumerate(scores[:MAX_BARS]):
            name = QLabel(label)
            if i == 0:
                font = name.font()
                font.setBold(True)
                name.setFont(font)
            bar = QProgressBar()
            bar.setRange(0, 1000)
            bar.setValue(round(score * 1000))
            bar.setTextVisible(False)
            bar.setMaximumHeight(14)
            bar.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
            value = QLabel(f"{score:.1%}")
            value.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            value.setMinimumWidth(value.fontMetrics().horizontalAdvance("100.0%") + 4)
            self._bars.addWidget(name, i, 0)
            self._bars.addWidget(bar, i, 1)
            self._bars.addWidget(value, i, 2)
        if len(scores) > MAX_BARS:
            rest = QLabel(f"... and {len(scores) - MAX_BARS} more labels below {scores[MAX_BARS - 1][1]:.1%}")
            rest.setEnabled(False)
            self._bars.addWidget(rest, MAX_BARS, 0, 1, 3)

    def top_label(self) -> str | None:
        """The label of the best bar shown, or None (for tests and accessibility)."""
        item = self._bars.itemAtPosition(0, 0)
        return item.widget().text() if item and item.widget() else None

    def shutdown(self, timeout_ms: int = 5000) -> None:
        self.jobs.shutdown(timeout_ms)
