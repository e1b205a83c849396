"""What every "Try it" box of the Evaluate page shares: an input row with its run button, a result
area, a status line, and the model run on a worker thread so the window never waits for it.

A task's box subclasses :class:`TryIt` (or :class:`TextTryIt` for typed text) with only its input
widget and the drawing of its answer:

    class ScoreTryIt(TextTryIt):
        model_kind = "text-scorer"  # the app model cache's name for what it loads
        predict_texts = staticmethod(predict_value)  # (model_dir, text, text_pair) -> answer, off the GUI thread

        def show_prediction(self, value): ...  # draw the answer; ``predicted`` is emitted after it

Models are loaded on the worker thread the first time they are needed and kept in the app's model
cache, so later predictions take milliseconds; torch and transformers are imported there, never at
startup.
"""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path
from typing import Any, Callable, ClassVar

from PySide6.QtCore import QSize, Qt, Signal, Slot
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QHBoxLayout, QPlainTextEdit, QPushButton, QWidget

from ...core.tasks.table import DEFAULT_TASK, TASKS, first_task_of, spec_or_none
from ..jobs import Jobs, describe
from ..model_cache import MODELS
from ..widgets.build import set_column, text_label

NO_MODEL = "This run has no exported model to try."
UNFINISHED = "This run has no exported model (it did not finish), so there is nothing to try."
LOADING = "Loading the model (first time only)..."


def pipeline_task(folder: Path, modality: str = "text") -> str:
    """transformers.pipeline's task for an exported model: its Workbench task's (the export's
    workbench.json names it), else the first task of ``modality``'s."""
    from ...core.export.target import MARKER

    try:
        task = json.loads((folder / MARKER).read_text(encoding="utf-8")).get("task")
    except (OSError, ValueError, AttributeError):  # no marker, or a damaged one: the modality decides
        task = None
    spec = spec_or_none(task) or TASKS[first_task_of(modality) or DEFAULT_TASK]
    return spec.pipeline_tag


def load_pipeline(folder: Path, modality: str = "text", **options):
    """A transformers pipeline for an exported model, on the CPU; the loaders for ``MODELS.get`` use it."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers import pipeline
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()  # "Loading weights" bars belong in a terminal, not the app's stderr
    return pipeline(pipeline_task(folder, modality), model=str(folder), device="cpu", **options)


class TryIt(QWidget):
    """An input row ending in the run button, the result area below it, then a status line.

    Subclasses add their input with :meth:`add_input`, their answer's widgets with :meth:`add_result`,
    read the input in :meth:`predict`, and draw the answer in :meth:`show_prediction`."""

    predicted = Signal(object)  # the answer after each prediction: [(label, score), ...], tags, a number
    model_kind: ClassVar[str] = ""  # the model cache's name for what the box loads ("Loading..." until held)
    busy_text: ClassVar[str] = "Predicting..."

    def __init__(self, button_text: str = "Predict", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._model_dir: str | None = None
        self._controls: list[QWidget] = []  # enabled while a model is set and nothing greyed them
        # One thread: predictions run in order and a model is never used by two at once.
        self.jobs = Jobs(self)
        self.button = QPushButton(button_text)
        self.button.clicked.connect(self.predict)
        self.status = text_label()
        self.input_row = QHBoxLayout()
        self.add_button(self.button)
        self.column = set_column(self, self.input_row, self.status)
        self.column.addStretch(1)

    # ---- building (subclasses) -------------------------------------------------------------------
    def add_input(self, widget: QWidget, stretch: int = 1) -> None:
        """An input, in the row before the run button; usable only while a model is set."""
        self.input_row.insertWidget(self.input_row.indexOf(self.button), widget, stretch)
        self._controls.append(widget)

    def add_button(self, button: QPushButton, needs_model: bool = True) -> None:
        """A button at the end of the row."""
        self.input_row.addWidget(button)
        if needs_model:
            self._controls.append(button)

    def add_result(self, widget: QWidget, stretch: int = 0) -> None:
        """A widget below the row, above the status line; one with ``stretch`` takes the spare height."""
        self.column.insertWidget(self.column.indexOf(self.status), widget, stretch)
        if stretch:
            self.column.setStretch(self.column.count() - 1, 0)  # the trailing spacer gives it the room

    # ---- the model -------------------------------------------------------------------------------
    def set_model(self, model_dir: str | Path | None, why_not: str = "", **options: Any) -> None:
        """Try ``model_dir`` from now on (None: nothing to try, for the reason ``why_not``). ``options``
        are what the run says about its inputs (``pair=True``, the entity ``types``, ...)."""
        self._model_dir = str(model_dir) if model_dir else None
        self.jobs.cancel()  # answers still on their way belong to the previous model
        self.configure(**options)
        self.clear_result()
        self._enable_controls()
        self.status.setText("" if self._model_dir else (why_not or NO_MODEL))

    def configure(self, **options: Any) -> None:
        """Adapt the input to the run (a second text for pairs, ...); options a box does not use are ignored."""

    def run_model(self, fn: Callable[..., Any], *args: Any, show: Callable[[Any], None],
                  button: QPushButton | None = None, busy: str = "", **submit: Any) -> None:
        """``fn(model_dir, *args)`` on the worker thread (``fn(job_state, model_dir, *args)`` with
        ``state=True``), then ``show(answer)`` on the GUI thread. ``button`` (the run button unless
        named) stays greyed until the answer; the status line says ``busy`` meanwhile."""
        loaded = MODELS.holds(self.model_kind, self._model_dir) if self._model_dir else False
        self._enable_controls()  # a newer job replaces one still running: its button comes back
        (button or self.button).setEnabled(False)
        self.status.setText(busy or (self.busy_text if loaded else LOADING))
        self.jobs.submit(fn, self._model_dir, *args, on_done=partial(self._answered, show),
                         on_error=self._on_failed, **submit)

    def run_prediction(self, fn: Callable[..., Any], *args: Any, **submit: Any) -> None:
        """:meth:`run_model` whose answer is drawn by :meth:`show_prediction` and emitted as ``predicted``."""
        self.run_model(fn, *args, show=self._show_prediction, **submit)

    # ---- subclasses ------------------------------------------------------------------------------
    @Slot()
    def predict(self) -> None:
        """Run the model on what the input holds (the run button and Enter call this)."""
        raise NotImplementedError

    def show_prediction(self, answer: Any) -> None:
        """Draw the model's answer in the result area."""
        raise NotImplementedError

    def clear_result(self) -> None:
        """Empty the result area (another model, or the last answer failed)."""

    def show_failure(self, error: Exception) -> None:
        self.status.setText(f"Could not run the model: {describe(error)}")

    def shutdown(self, timeout_ms: int = 5000) -> None:
        self.jobs.shutdown(timeout_ms)

    # ---- answers ---------------------------------------------------------------------------------
    def _enable_controls(self) -> None:
        for widget in self._controls:
            widget.setEnabled(self._model_dir is not None)

    def _answered(self, show: Callable[[Any], None], answer: Any) -> None:
        self._enable_controls()
        self.status.setText("")
        show(answer)

    def _show_prediction(self, answer: Any) -> None:
        self.show_prediction(answer)
        self.predicted.emit(answer)

    def _on_failed(self, error: Exception) -> None:
        self._enable_controls()
        self.clear_result()
        self.show_failure(error)


class TextInput(QPlainTextEdit):
    """A text field a few lines tall, for texts longer than a line: Enter runs the model
    (``returnPressed``, as a line edit's), Shift+Enter starts a new line. ``text()``/``setText()``
    as a QLineEdit's."""

    returnPressed = Signal()  # noqa: N815 - QLineEdit's name for it
    LINES = 3  # the height it asks for, in lines of text

    def __init__(self, placeholder: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setPlaceholderText(placeholder)
        self.setTabChangesFocus(True)  # Tab moves on to the next field or button, as in a form
        self.setMinimumHeight(self._height(2))

    def _height(self, lines: int) -> int:
        margins = self.contentsMargins()
        return (lines * self.fontMetrics().lineSpacing() + 2 * round(self.document().documentMargin())
                + margins.top() + margins.bottom() + 2)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(super().sizeHint().width(), self._height(self.LINES))

    def text(self) -> str:
        return self.toPlainText()

    def setText(self, text: str) -> None:  # noqa: N802 - QLineEdit's name
        self.setPlainText(text)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt API
        enter = event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
        if enter and not event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            self.returnPressed.emit()
            return
        super().keyPressEvent(event)


class TextTryIt(TryIt):
    """A text field a few lines tall over the buttons, and a second one for the second text of
    sentence-pair models; Enter runs ``predict_texts(model_dir, text[, text_pair])`` on them."""

    placeholder: ClassVar[str] = "Type a sentence and press Enter to see what the model says (Shift+Enter: new line)"
    predict_texts: Callable[..., Any]  # a staticmethod: the prediction, run on the worker thread

    def __init__(self, button_text: str = "Predict", parent: QWidget | None = None) -> None:
        super().__init__(button_text, parent)
        self._pair = False
        self.input = TextInput(self.placeholder)
        self.input.returnPressed.connect(self.predict)
        self.input_pair = TextInput("Second text of the pair")  # shown for sentence-pair models only
        self.input_pair.returnPressed.connect(self.predict)
        self.input_pair.hide()
        # The texts above the row of buttons, the full width of the box: room for a few lines.
        self.column.insertWidget(0, self.input)
        self.column.insertWidget(1, self.input_pair)
        self._controls += [self.input, self.input_pair]
        self.input_row.insertStretch(0, 1)  # the buttons at the right, under the texts

    def configure(self, pair: bool = False, **_: Any) -> None:
        self._pair = pair
        self.input_pair.setVisible(pair)
        self.input.setPlaceholderText("First text of the pair" if pair else self.placeholder)

    @Slot()
    def predict(self) -> None:
        texts = self.texts()
        if texts is not None:
            self.run_prediction(self.predict_texts, *texts[:2 if self._pair else 1])

    def texts(self) -> tuple[str, str | None] | None:
        """(text, second text or None), or None while there is no model or a text is missing."""
        text = self.input.text().strip()
        text_pair = self.input_pair.text().strip() if self._pair else None
        if not self._model_dir or not text or (self._pair and not text_pair):
            return None
        return text, text_pair
