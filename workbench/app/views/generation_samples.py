"""The Train page's live samples of a text-generation run: a few fixed validation prompts, each with
its reference answer, the model's latest answer and, greyed below it, the answer before, so the user
watches the answers change while it trains. The engine sends a ``GenerationSamples`` event at each
evaluation (step 0: the base model, before training); :meth:`LiveSamplesPanel.add` takes it as the
dataclass or as the dict metrics.jsonl holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QScrollArea, QWidget

from ..widgets.build import set_column, text_label

SHOWN_CHARS = 600  # longer texts are cut in the card, whole in its tooltip


def _cut(text: str) -> str:
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS].rstrip() + " \u2026"


def step_name(step: int) -> str:
    return "base model" if step == 0 else f"step {step:,}"


def _fields(event: Any) -> tuple[int, float, list[dict[str, Any]]]:
    """(step, epoch, samples) of a GenerationSamples event or its dict."""
    if isinstance(event, dict):
        return int(event.get("step") or 0), float(event.get("epoch") or 0.0), list(event.get("samples") or [])
    return int(event.step), float(event.epoch), list(event.samples)


@dataclass
class SampleHistory:
    """One fixed prompt's answers so far, oldest first: (step, output)."""

    prompt: str
    reference: str
    answers: list[tuple[int, str]] = field(default_factory=list)


class SampleCard(QFrame):
    """One prompt: the prompt (bold), its reference, the latest answer and the previous one (greyed)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.prompt = text_label()
        font = self.prompt.font()
        font.setBold(True)
        self.prompt.setFont(font)
        self.reference = text_label()
        self.latest = text_label()
        self.previous = text_label(dimmed=True)  # the palette's disabled text: greyed in both schemes
        for label in (self.prompt, self.reference, self.latest, self.previous):
            label.setTextFormat(Qt.TextFormat.PlainText)
        layout = set_column(self, self.prompt, self.reference, self.latest, self.previous, margins=8)
        layout.setSpacing(3)

    def show_history(self, history: SampleHistory) -> None:
        self.prompt.setText(_cut(history.prompt))
        self.prompt.setToolTip(history.prompt[:4000])
        self.reference.setText(f"Reference: {_cut(history.reference)}")
        self.reference.setToolTip(history.reference[:4000])
        step, output = history.answers[-1]
        self.latest.setText(f"{step_name(step).capitalize()}: {_cut(output) if output else '(empty answer)'}")
        self.latest.setToolTip(output[:4000])
        if len(history.answers) < 2:
            self.previous.setVisible(False)
            return
        before, old = history.answers[-2]
        same = old == output
        self.previous.setText(f"{step_name(before).capitalize()}: " + ("(the same)" if same else
                                                                       (_cut(old) if old else "(empty answer)")))
        self.previous.setToolTip(old[:4000])
        self.previous.setVisible(True)


class LiveSamplesPanel(QWidget):
    """The fixed prompts' latest answers; ``add(event)`` after each evaluation, ``clear()`` for a new run."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.histories: list[SampleHistory] = []
        self.cards: list[SampleCard] = []
        self.step: int | None = None  # of the latest samples shown
        self.title = text_label(selectable=False)
        self.list = QWidget()
        self.list_layout = set_column(self.list)
        self.list_layout.setSpacing(6)
        self.list_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(self.list)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.setAutoFillBackground(False)  # setWidget turned it on: the page's background shows
        scroll.viewport().setAutoFillBackground(False)
        self.scroll = scroll
        set_column(self, self.title, (scroll, 1))
        self.clear()

    def add(self, event: Any) -> None:
        """Show the answers of a ``GenerationSamples`` event (or its dict): each prompt's new answer,
        the one before greyed under it. A prompt other than the one shown at its place starts afresh."""
        step, epoch, samples = _fields(event)
        for i, sample in enumerate(samples):
            prompt, reference = str(sample.get("prompt") or ""), str(sample.get("reference") or "")
            output = str(sample.get("output") or "")
            if i >= len(self.histories) or self.histories[i].prompt != prompt:
                history = SampleHistory(prompt, reference)
                if i < len(self.histories):
                    self.histories[i] = history
                else:
                    self.histories.append(history)
            answers = self.histories[i].answers
            answers.append((step, output))
            del answers[:-2]  # the card shows the latest two
        del self.histories[len(samples):]
        self._sync_cards()
        self.step = step
        when = "the base model, before training" if step == 0 else f"step {step:,} (epoch {epoch:.2f})"
        self.title.setText(f"Sample answers of {when}; the answer before is greyed below each.")

    def clear(self) -> None:
        self.histories = []
        self.step = None
        self._sync_cards()
        self.title.setText("Sample answers appear here at each evaluation: a few validation prompts, answered by "
                           "the model as it trains.")

    def _sync_cards(self) -> None:
        while len(self.cards) > len(self.histories):
            card = self.cards.pop()
            self.list_layout.removeWidget(card)
            card.deleteLater()
        while len(self.cards) < len(self.histories):
            card = SampleCard()
            self.list_layout.insertWidget(len(self.cards), card)
            self.cards.append(card)
        for card, history in zip(self.cards, self.histories):
            card.show_history(history)

    def latest_outputs(self) -> list[str]:
        """Each prompt's latest answer, in order (tests)."""
        return [h.answers[-1][1] for h in self.histories]

    def previous_outputs(self) -> list[str | None]:
        """Each prompt's answer before the latest, None where there is none yet (tests)."""
        return [h.answers[-2][1] if len(h.answers) > 1 else None for h in self.histories]
