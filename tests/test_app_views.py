"""The Evaluate page's views come from the task table, each satisfies the EvaluateView protocol, every
"Try it" box is a TryIt, and the shared TryIt base runs the model off the GUI thread (busy state,
answer, error) whatever the task. No model is trained here: the boxes run stand-in functions."""

from __future__ import annotations

import dataclasses
import os
import time
from types import SimpleNamespace

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before Qt is imported

import pytest  # noqa: E402

pytest.importorskip("pytestqt")

from app_support import APP_MARKS, aloop, wait_task  # noqa: E402, F401 - fixtures

pytestmark = [*APP_MARKS, pytest.mark.timeout(120)]


def _views_in_table():
    from workbench.app.evaluation.view import view_classes
    from workbench.core.tasks.table import TASKS

    return {name: view_classes(name) for name, spec in TASKS.items() if spec.evaluate_view is not None}


def test_every_task_view_satisfies_the_protocol_and_takes_its_try_it(qtbot):
    from workbench.app.evaluation.try_it_base import TryIt
    from workbench.app.evaluation.view import EvaluateView

    views = _views_in_table()
    assert {"text-classification", "image-classification", "token-classification", "text-regression"} <= set(views)
    for name, (view_class, try_it_class) in views.items():
        assert try_it_class is not None and issubclass(try_it_class, TryIt), name
        try_it = try_it_class()
        view = view_class(try_it=try_it)
        qtbot.addWidget(view)
        assert isinstance(view, EvaluateView), name
        assert callable(view_class.prepare)
        assert view.try_it is try_it  # the box the table names, not one of the view's own
        view.clear()
        view.shutdown()


def test_every_try_it_box_subclasses_the_base():
    from workbench.app.evaluation.try_it import TryItBox
    from workbench.app.evaluation.try_it_base import TextTryIt, TryIt
    from workbench.app.views.images import ImageTryIt
    from workbench.app.views.regression import ScoreTryIt
    from workbench.app.views.tagging import TagTryIt

    for box in (TryItBox, ScoreTryIt, TagTryIt):
        assert issubclass(box, TextTryIt)
    assert issubclass(ImageTryIt, TryIt)


def test_the_page_picks_the_view_the_table_names(qtbot, monkeypatch):
    from workbench.app.pages.evaluate import EvaluatePage, ReportTextView, view_for
    from workbench.app.views.regression import RegressionView, ScoreTryIt
    from workbench.core.tasks import table

    spec = table.TASKS["text-classification"]
    monkeypatch.setitem(table.TASKS, spec.name, dataclasses.replace(
        spec, evaluate_view="workbench.app.views.regression:RegressionView",
        try_it_view="workbench.app.views.regression:ScoreTryIt"))
    run = SimpleNamespace(task=spec.name, report={"metrics": {}})
    assert view_for(run) == (RegressionView, ScoreTryIt)
    assert view_for(SimpleNamespace(task=spec.name, report=None)) == (ReportTextView, None)  # not evaluated
    assert view_for(SimpleNamespace(task="a-task-of-a-later-version", report={})) == (ReportTextView, None)
    monkeypatch.setitem(table.TASKS, spec.name, dataclasses.replace(spec, evaluate_view=None))
    assert view_for(run) == (ReportTextView, None)  # a task without a view: the plain report

    page = EvaluatePage()
    qtbot.addWidget(page)
    view = page._view((RegressionView, ScoreTryIt))
    assert isinstance(view, RegressionView) and type(view.try_it) is ScoreTryIt
    assert page._view((RegressionView, ScoreTryIt)) is view  # built once
    page.shutdown()


# ---------------------------------------------------------------------------- the TryIt base


def _shout(model_dir: str, text: str, text_pair: str | None = None) -> str:
    time.sleep(0.05)  # long enough for the test to see the busy state
    if text == "fail":
        raise ValueError("no such word")
    return f"{text.upper()} {text_pair.upper()}" if text_pair else text.upper()


@pytest.fixture()
def shout_box(qtbot, tmp_path):
    from PySide6.QtWidgets import QLabel

    from workbench.app.evaluation.try_it_base import TextTryIt

    class ShoutTryIt(TextTryIt):
        model_kind = "test-shout"
        predict_texts = staticmethod(_shout)

        def __init__(self) -> None:
            super().__init__()
            self.answer = QLabel()
            self.add_result(self.answer)
            self.set_model(None)

        def show_prediction(self, answer: str) -> None:
            self.answer.setText(answer)

        def clear_result(self) -> None:
            self.answer.setText("")

    box = ShoutTryIt()
    qtbot.addWidget(box)
    box.model_folder = tmp_path
    yield box
    box.shutdown()


def test_try_it_base_runs_the_model_off_the_gui_thread(qtbot, shout_box):
    box = shout_box
    assert not box.button.isEnabled() and not box.input.isEnabled()
    assert box.status.text() == "This run has no exported model to try."
    box.set_model(box.model_folder)
    assert box.button.isEnabled() and box.input.isEnabled() and box.status.text() == ""

    box.input.setText("hello")
    with qtbot.waitSignal(box.predicted, timeout=10000) as got:
        box.button.click()
        assert not box.button.isEnabled() and "Loading the model" in box.status.text()  # busy
    assert got.args == ["HELLO"] and box.answer.text() == "HELLO"
    assert box.button.isEnabled() and box.status.text() == ""

    box.input.setText("fail")  # an error is shown, and the box stays usable
    box.predict()
    qtbot.waitUntil(lambda: "Could not run the model" in box.status.text(), timeout=10000)
    assert "ValueError: no such word" in box.status.text() and box.answer.text() == ""
    assert box.button.isEnabled()


def test_try_it_base_pairs_and_a_newer_request(qtbot, shout_box):
    box = shout_box
    box.set_model(box.model_folder, pair=True)
    assert box.input_pair.isVisibleTo(box) and box.input.placeholderText() == "First text of the pair"
    box.input.setText("a")
    box.predict()
    assert box.answer.text() == ""  # nothing yet: the second text is missing, so nothing ran
    box.input_pair.setText("b")
    box.input.setText("first")
    box.predict()
    box.input.setText("second")
    with qtbot.waitSignal(box.predicted, timeout=10000) as got:
        box.predict()  # replaces the first request: only its answer arrives
    assert got.args == ["SECOND B"]
    qtbot.wait(200)
    assert box.answer.text() == "SECOND B" and box.button.isEnabled()

    box.set_model(None, "Nothing to try here.")
    assert box.status.text() == "Nothing to try here." and not box.input_pair.isEnabled()
    assert box.answer.text() == ""


def test_score_bars_show_the_best_labels_first(qtbot):
    from workbench.app.widgets.score_bars import ScoreBars

    bars = ScoreBars(max_bars=2)
    qtbot.addWidget(bars)
    assert bars.top_label() is None
    bars.show_scores([("pos", 0.7), ("neu", 0.2), ("neg", 0.1)])
    assert bars.top_label() == "pos" and bars.grid.itemAtPosition(0, 0).widget().font().bold()
    assert bars.grid.itemAtPosition(1, 2).widget().text() == "20.0%"
    assert "1 more labels" in bars.grid.itemAtPosition(2, 0).widget().text()
    bars.clear()
    assert bars.top_label() is None


# ---------------------------------------------------------------------------- the learning rate


def test_model_page_keeps_the_task_default_learning_rate_unless_one_is_typed(qtbot, aloop):
    from workbench.app.pages.model import METHOD_CHOICES, ModelPage
    from workbench.app.state import AppState
    from workbench.core.tasks.table import METHODS

    assert [value for _, value in METHOD_CHOICES] == list(METHODS)  # the picker lists the table's methods
    state = AppState()
    page = ModelPage(state)
    qtbot.addWidget(page)
    try:
        cfg = state.config.train
        assert cfg.lr is None and page.lr.value() == state.default_lr == 5e-5  # shown, left to the task
        page.epochs.setValue(2)  # editing another setting does not pin the rate
        assert cfg.epochs == 2 and cfg.lr is None
        page.lr.setValue(3e-5)
        assert cfg.lr == 3e-5
        page.method.setCurrentIndex(page.method.findData("lora"))  # a typed rate survives a new default
        wait_task(qtbot, page.refresh_suggestions())
        assert state.default_lr == 5e-4 and cfg.lr == 3e-5 and page.lr.value() == 3e-5
        page.restore_defaults()
        wait_task(qtbot, page.refresh_suggestions())
        assert state.config.train.lr is None and page.lr.value() == state.default_lr == 5e-5
    finally:
        from workbench.app import aio

        qtbot.waitUntil(lambda: not aio._tasks, timeout=30000)
        page.shutdown()
