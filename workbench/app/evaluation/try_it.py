"""The text-classification "Try it" box: type a text (or a pair), see every label's probability,
and why the model chose its answer (integrated gradients), without blocking the window."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import QWidget

from ..model_cache import MODELS
from ..widgets.build import button, text_label
from ..widgets.score_bars import ScoreBars
from .try_it_base import TextTryIt, load_pipeline

KIND = "text-classifier"  # the model cache's name for the pipeline below


def _load_classifier(folder: Path):
    return load_pipeline(folder, top_k=None)


def classification_pipeline(model_dir: str | Path):
    """The cached text-classification pipeline for ``model_dir``; reloaded if the folder was rewritten."""
    return MODELS.get(KIND, model_dir, _load_classifier)


def predict_scores(model_dir: str | Path, text: str, text_pair: str | None = None) -> list[tuple[str, float]]:
    """Every label with its probability, best first. ``text_pair``: the second text of a pair model."""
    inputs = {"text": text, "text_pair": text_pair} if text_pair is not None else text
    out = classification_pipeline(model_dir)(inputs, truncation=True)
    if out and isinstance(out[0], list):  # some versions nest a single input's result
        out = out[0]
    return sorted(((d["label"], float(d["score"])) for d in out), key=lambda x: -x[1])


def explain_scores(model_dir: str | Path, text: str, text_pair: str | None = None, steps: int = 48):
    """(integrated-gradients attribution, its HTML shading) of the predicted class, with the cached model."""
    from ...core.analysis.explain import attribution_html, integrated_gradients

    pipe = classification_pipeline(model_dir)
    att = integrated_gradients(pipe.model, pipe.tokenizer, text, text_pair, steps=steps)
    html = attribution_html(att, text)
    if text_pair is not None:
        html += " ⟶ " + attribution_pair_html(att, text_pair)
    return att, html


def attribution_pair_html(att, text_pair: str) -> str:
    """The second text's shading: its tokens follow the first [SEP] in the attribution."""
    from dataclasses import replace

    from ...core.analysis.explain import attribution_html

    seps = [i for i, sp in enumerate(att.special) if sp]
    first_sep = seps[1] if len(seps) > 1 else len(att.tokens)
    keep = [i > first_sep for i in range(len(att.tokens))]
    masked = replace(att, special=[sp or not k for sp, k in zip(att.special, keep)])
    return attribution_html(masked, text_pair)


class TryItBox(TextTryIt):
    """A text field (two for sentence-pair models), a Predict button and one bar per label; Explain
    shades the words by how much they pushed the model towards its answer."""

    model_kind = KIND
    predict_texts = staticmethod(predict_scores)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent=parent)
        self._caption = ""  # what the explanation being computed is of (an example of the list)
        self.explain_button = button("Explain", self.explain, "Shade each word by how much it pushed the model "
                                     "towards its answer (integrated gradients, 48 steps): green for, red against")
        self.add_button(self.explain_button)
        self.bars = ScoreBars()
        self.explanation = text_label()
        self.explanation.setTextFormat(Qt.TextFormat.RichText)
        self.explanation.hide()
        self.add_result(self.bars)
        self.add_result(self.explanation)
        self.set_model(None)

    @Slot()
    def explain(self) -> None:
        """Integrated gradients of the predicted class over the tokens, on the worker thread."""
        texts = self.texts()
        if texts is not None:
            self._caption = ""  # typed by the user: no example of the list
            self._explain(*texts)

    def _explain(self, text: str, text_pair: str | None) -> None:
        self.run_model(explain_scores, text, text_pair, show=self._show_explanation, button=self.explain_button,
                       busy="Explaining (integrated gradients)...")

    def explain_example(self, text: str, text_pair: str | None, caption: str) -> None:
        """An example of the predictions list: into the fields and explained (the explanation names
        the predicted class; Predict shows every class's score)."""
        if not self._model_dir:
            return
        self.input.setText(text)
        if self._pair:
            self.input_pair.setText(text_pair or "")
        self.bars.clear()  # they were another text's
        self._caption = caption
        self._explain(text, text_pair)

    def _show_explanation(self, answer) -> None:
        att, html = answer
        caption, self._caption = self._caption, ""
        self.explanation.setText((f"{caption}<br>" if caption else "") + f"Why <b>{att.label}</b>: {html}")
        self.explanation.show()

    def show_prediction(self, scores: list[tuple[str, float]]) -> None:
        self.bars.show_scores(scores)

    def clear_result(self) -> None:
        self.bars.clear()
        self.explanation.hide()

    def top_label(self) -> str | None:
        """The label of the best bar shown, or None (for tests and accessibility)."""
        return self.bars.top_label()
