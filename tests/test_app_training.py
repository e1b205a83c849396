"""Desktop app: training through the controller (finish, cancel, failure, close during a run, replay)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from app_support import APP_MARKS, aloop, load, use_tiny_model, window  # noqa: F401 - fixtures
from conftest import write_tsv
from PySide6.QtCore import Qt
from test_pairs_and_regression import pair_rows
from text_tasks_helpers import ner_sentences, tiny_text_model, write_conll  # noqa: F401 - fixture

pytestmark = [*APP_MARKS, pytest.mark.timeout(300)]


def _status(run_dir) -> dict:
    return json.loads((Path(run_dir) / "status.json").read_text(encoding="utf-8"))


def _start(qtbot, window):
    window.go_to("train")
    page = window.train_page
    assert page.start_button.isEnabled(), page.reason.text()
    with qtbot.waitSignal(window.controller.started, timeout=5000) as started:
        page.start_button.click()
    return started.args[0]


def test_train_a_tiny_model_to_the_finished_signal(qtbot, window, sentiment_tsv, tiny_model_dir, runs_home):
    load(qtbot, window, sentiment_tsv)
    use_tiny_model(qtbot, window, tiny_model_dir, epochs=2.0)
    assert "trains again on all" in window.data_page.split_summary.text()  # 240 rows: refit
    batches = []
    window.controller.events.connect(lambda b: batches.append((time.monotonic(), len(b))))
    t0 = time.monotonic()
    run_dir = _start(qtbot, window)
    assert Path(run_dir).parent == runs_home
    with qtbot.waitSignal(window.controller.finished, timeout=180000) as done:
        pass
    elapsed = time.monotonic() - t0
    result = done.args[0]
    assert result.run_dir == run_dir and _status(run_dir)["state"] == "finished"
    page = window.train_page
    s = page.series
    steps = [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    n_steps = sum(1 for e in steps if e["event"] == "StepMetrics")
    # The bar ends on the refit's own steps (tests/test_app_refit_phase.py): the final model on all rows.
    assert len(s.step) == n_steps > 10 and s.step[-1] == s.refit_from + page.progress.maximum()
    assert page.progress.maximum() == page.progress.value()
    assert len(s.eval_step) == 2 and all(0 <= a <= 1 for a in s.metrics["accuracy"])  # one validation per epoch
    assert len(s.ema) == len(s.loss) and page.raw_curve.getData()[0] is not None
    # Batched: at most ~10 GUI updates a second, however many events the run made.
    assert len(batches) <= elapsed * 10 + 3 and sum(n for _, n in batches) >= n_steps
    assert page.phase.text() == "Finished" and "accuracy" in page.result.text()
    assert page.evaluate_button.isEnabled() and not page.cancel_button.isEnabled()
    assert window.step_reason("evaluate") == "" and window.step_reason("export") == ""
    assert window.state.run_dir == run_dir
    assert window.hosts["evaluate"].currentWidget() is window.evaluate_page
    page.evaluate_button.click()
    assert window.current_step() == "evaluate"
    log = page.log.toPlainText()
    assert "Training" in log and "Validation at step" in log and "Finished" in log
    assert "Training on all rows" in log
    qtbot.waitUntil(lambda: "trained on all" in window.evaluate_page.subtitle.text(), timeout=60000)


def test_the_model_page_turns_refit_off(qtbot, window, sentiment_tsv):
    load(qtbot, window, sentiment_tsv)
    combo = window.model_page.refit
    combo.setCurrentIndex(combo.findData(False))
    assert window.state.config.train.refit is False
    assert "which it never trains on" in window.data_page.split_summary.text()
    combo.setCurrentIndex(combo.findData(None))
    assert window.state.config.train.refit is None and "trains again" in window.data_page.split_summary.text()


def test_cancel_mid_run_then_a_second_run_works(qtbot, window, sentiment_tsv, tiny_model_dir):
    load(qtbot, window, sentiment_tsv)
    use_tiny_model(qtbot, window, tiny_model_dir, epochs=500.0, batch_size=4)
    first = _start(qtbot, window)
    page = window.train_page
    qtbot.waitUntil(lambda: len(page.series.step) >= 3, timeout=120000)
    with qtbot.waitSignal(window.controller.cancelled, timeout=10000):
        page.cancel_button.click()
        assert page.cancel_button.text() == "Cancelling…" and page.phase.text() == "Cancelling…"
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 2.0
    assert _status(first)["state"] == "cancelled" and page.phase.text() == "Cancelled"
    assert page.start_button.isEnabled() and window.step_reason("evaluate") != ""

    use_tiny_model(qtbot, window, tiny_model_dir, max_steps=5)
    second = _start(qtbot, window)
    assert second != first
    with qtbot.waitSignal(window.controller.finished, timeout=120000):
        pass
    assert _status(second)["state"] == "finished" and page.series.step[-1] == 5


def test_a_failing_run_shows_the_error_and_the_next_run_works(qtbot, window, sentiment_tsv, tiny_model_dir, tmp_path,
                                                              monkeypatch):
    from workbench.core.tasks.text_classification import TextClassification

    load(qtbot, window, sentiment_tsv)
    use_tiny_model(qtbot, window, tiny_model_dir, max_steps=3)
    # A bug inside the engine once training has started: the run fails with its traceback kept.
    def broken_loss(self, logits, labels):
        raise RuntimeError("a bug in the loss")

    monkeypatch.setattr(TextClassification, "loss", broken_loss)
    run_dir = _start(qtbot, window)
    with qtbot.waitSignal(window.controller.failed, timeout=120000) as failed:
        pass
    message, details = failed.args
    page = window.train_page
    box = page.error_dialog
    assert box is not None and box.isVisible() and box.text() == message
    assert "Traceback" in box.detailedText() and details == box.detailedText()
    assert (Path(run_dir) / "error.txt").exists() and _status(run_dir)["state"] == "failed"
    assert page.phase.text() == "Failed" and page.start_button.isEnabled()
    assert "a bug in the loss" in message
    box.accept()

    monkeypatch.undo()
    _start(qtbot, window)
    with qtbot.waitSignal(window.controller.finished, timeout=120000):
        pass


def test_bad_input_fails_with_its_message_only(qtbot, window, sentiment_tsv, tiny_model_dir, tmp_path):
    load(qtbot, window, sentiment_tsv)
    use_tiny_model(qtbot, window, tiny_model_dir, max_steps=3)
    window.state.config.model.name = str(tmp_path / "no-such-model")
    _start(qtbot, window)
    with qtbot.waitSignal(window.controller.failed, timeout=120000) as failed:
        pass
    message, _ = failed.args
    assert "does not exist" in message
    box = window.train_page.error_dialog
    assert box.isVisible() and not box.detailedText()  # a user error needs no traceback
    box.accept()


def test_closing_the_window_during_a_run_cancels_and_waits(qtbot, window, sentiment_tsv, tiny_model_dir):
    load(qtbot, window, sentiment_tsv)
    use_tiny_model(qtbot, window, tiny_model_dir, epochs=500.0, batch_size=4)
    run_dir = _start(qtbot, window)
    qtbot.waitUntil(lambda: len(window.train_page.series.step) >= 2, timeout=120000)
    thread = window.controller._thread
    assert window.close()  # cancels, then waits for the run (within one step here)
    assert not window.isVisible() and not window.controller.running and thread.isFinished()
    assert _status(run_dir)["state"] == "cancelled"


def test_close_waits_for_a_run_that_stops_slowly(qtbot, window, sentiment_tsv, tiny_model_dir, monkeypatch):
    import workbench.app.window as window_module

    monkeypatch.setattr(window_module, "CLOSE_WAIT_S", 0.0)  # as if the run were inside a long library call
    load(qtbot, window, sentiment_tsv)
    use_tiny_model(qtbot, window, tiny_model_dir, epochs=500.0, batch_size=4)
    _start(qtbot, window)
    qtbot.waitUntil(lambda: len(window.train_page.series.step) >= 2, timeout=120000)
    assert not window.close()  # refused for now: the thread is still running
    assert window.isVisible() and window.controller.is_cancelling
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=20000)  # closes itself once the run stopped
    assert not window.controller.running


def test_reopening_a_past_run_replays_its_curves(qtbot, window, sentiment_tsv, tiny_model_dir):
    load(qtbot, window, sentiment_tsv)
    use_tiny_model(qtbot, window, tiny_model_dir, max_steps=8)
    run_dir = _start(qtbot, window)
    with qtbot.waitSignal(window.controller.finished, timeout=120000):
        pass
    live = list(window.train_page.series.loss)
    window.train_page._reset()
    window.open_run(run_dir)
    assert window.current_step() == "evaluate"
    assert window.train_page.series.loss == live and window.train_page.phase.text() == "Finished"
    assert window.state.run_dir == run_dir


def test_a_conll_file_trains_as_token_classification(qtbot, window, tiny_model_dir, tmp_path):
    from conftest import NEUTRAL, POSITIVE

    lines = []
    for i in range(80):
        words = NEUTRAL[i % 5: i % 5 + 4] + [POSITIVE[i % len(POSITIVE)]]
        lines += [f"{w} {'B-POS' if w in POSITIVE else 'O'}" for w in words] + [""]
    path = tmp_path / "tags.conll"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = load(qtbot, window, path)
    assert data.task == "token-classification" and data.usable and not data.checked_here
    page = window.data_page
    assert not page.columns_box.isVisibleTo(page) and page.preview_model.rowCount() == 80  # one row a sentence
    assert window.state.config.data.delimiter is None and window.step_reason("train") == ""
    use_tiny_model(qtbot, window, tiny_model_dir, max_steps=3)
    run_dir = _start(qtbot, window)
    with qtbot.waitSignal(window.controller.finished, timeout=120000) as done:
        pass
    assert done.args[0].task == "token-classification" and _status(run_dir)["state"] == "finished"


def _curves(page) -> dict[str, list[float]]:
    """Validation curve title -> the y values it draws."""
    return {curve.name(): list(curve.getData()[1]) for curve in page.metric_curves.values()}


@pytest.mark.parametrize("kind", ["regression", "tagging"])
def test_the_live_plot_shows_the_tasks_own_metrics(qtbot, window, tiny_text_model, tmp_path, runs_home, kind):
    if kind == "regression":
        data = write_tsv(tmp_path / "scores.tsv", [(a, b, s) for a, b, _, s in pair_rows(120, seed=6)],
                         header=("sentence1", "sentence2", "score"))
        expected = {"MSE": "mse", "Pearson": "pearson"}
    else:
        data = write_conll(tmp_path / "ner.conll", ner_sentences(120, seed=5))
        expected = {"Entity F1": "f1", "Token accuracy": "accuracy"}
    load(qtbot, window, data)
    use_tiny_model(qtbot, window, tiny_text_model, epochs=2.0, max_length=48, lr=3e-3)
    run_dir = _start(qtbot, window)
    with qtbot.waitSignal(window.controller.finished, timeout=180000):
        pass
    evals = [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    evals = [e["metrics"] for e in evals if e["event"] == "EvalMetrics" and e["split"] == "validation"]
    page = window.train_page
    curves = _curves(page)
    assert set(curves) == set(expected) and len(evals) == 2
    for title, name in expected.items():
        assert curves[title] == pytest.approx([m[name] for m in evals])
    assert "Validation: " + ", ".join(expected) == page.metric_plot.getPlotItem().titleLabel.text
    if kind == "regression":
        assert "MSE" in page.result.text() and "accuracy" not in page.result.text()

    window.go_to("runs")  # replayed from the run folder: the same curves
    page.show_run(run_dir)
    assert _curves(page) == curves


def test_the_engines_log_reaches_the_train_page(qtbot, window):
    import logging

    logging.getLogger("workbench.core.backbones").warning("backbone plug-in 'fancy' was skipped: ImportError")
    page = window.ensure_train_page()
    qtbot.waitUntil(lambda: "plug-in 'fancy' was skipped" in page.log.toPlainText(), timeout=5000)
    logging.getLogger("workbench.core.run.pipeline").info("run /x: task text-classification")
    qtbot.waitUntil(lambda: "run /x: task" in page.log.toPlainText(), timeout=5000)


def test_pause_then_resume_from_the_runs_page_goes_on_with_the_curve(qtbot, window, tiny_model_dir, tmp_path,
                                                                     runs_home):
    from conftest import sentiment_rows

    data = write_tsv(tmp_path / "reviews.tsv", sentiment_rows(600))
    load(qtbot, window, data)
    use_tiny_model(qtbot, window, tiny_model_dir, epochs=2.0, batch_size=8)
    page = window.train_page
    run_dir = _start(qtbot, window)
    qtbot.waitUntil(lambda: len(page.series.step) >= 5, timeout=60000)
    assert page.pause_button.isEnabled()
    with qtbot.waitSignal(window.controller.paused, timeout=60000) as paused:
        page.pause_button.click()
    state = _status(run_dir)
    assert state["state"] == "paused" and f"step {state['step']}" in paused.args[0]
    assert page.phase.text() == "Paused" and page.resume_button.isVisible()
    assert (Path(run_dir) / "checkpoints" / f"step-{state['step']}").is_dir()
    before = list(page.series.step)

    window.go_to("runs")
    runs = window.runs_page
    runs.refresh()
    row = next(r for r in range(runs.proxy.rowCount()) if runs.proxy.index(r, 0).data(Qt.ItemDataRole.UserRole + 1)
               == run_dir)
    runs.table.selectRow(row)
    assert runs.proxy.index(row, runs.model.COLUMNS.index("State")).data() == "paused"
    assert runs.resume_button.isEnabled()
    with qtbot.waitSignal(window.controller.started, timeout=10000):
        runs.resume_button.click()
    assert window.current_step() == "train"
    assert page.series.step[:len(before)] == before[:state["step"]]  # the curve so far, replayed
    with qtbot.waitSignal(window.controller.finished, timeout=180000):
        pass
    steps = page.series.step
    assert steps == list(range(1, len(steps) + 1)) and _status(run_dir)["state"] == "finished"
