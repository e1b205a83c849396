"""Desktop app, issue 35 items 3 and 11: the refit (the final model trained again on every row) is a
phase of its own on the Train page, with its own bar, curves over a labelled band and a log line when
it ends; live plots of one point get a sensible x-range, and bounded scores an axis of 0..1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from app_support import APP_MARKS, aloop, load, use_tiny_model, window  # noqa: F401 - fixtures

pytestmark = [*APP_MARKS, pytest.mark.timeout(300)]


def _view(plot):
    """The ranges a plot shows once painted (pyqtgraph updates an auto range just before a paint)."""
    view = plot.getPlotItem().getViewBox()
    view.prepareForPaint()
    return view.viewRange()


def _xs(curve) -> list[float]:
    x = curve.getData()[0]
    return [] if x is None else [float(v) for v in x]


def _refit_steps(run_dir: str) -> list[dict]:
    events = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [e for e in events if e["event"] == "StepMetrics" and e.get("refit_step") is not None]


def _the_refit_is_shown_apart(page, refit: list[dict]) -> None:
    """Curves, band and bar of a run whose last ``refit`` steps trained the final model on all rows."""
    from workbench.app.pages.train import REFIT_LABEL

    s, n = page.series, len(refit)
    first_last = refit[0]["step"] - 1  # the first pass's last step: the band starts there
    assert s.refit_from == first_last and s.step[-1] == first_last + n
    # The first pass's curves stop where the refit's start; the learning rate too.
    assert _xs(page.raw_curve)[-1] == _xs(page.ema_curve)[-1] == _xs(page.lr_curve)[-1] == first_last
    for curve in (page.refit_raw_curve, page.refit_ema_curve, page.refit_lr_curve):
        assert _xs(curve) == [float(first_last + k) for k in range(1, n + 1)]
    assert [round(v, 6) for v in page.refit_raw_curve.getData()[1]] == [round(e["loss"], 6) for e in refit]
    # Its smoothed curve starts afresh from its own first loss, not from the first pass's average.
    assert page.refit_ema_curve.getData()[1][0] == pytest.approx(refit[0]["loss"], rel=1e-6)
    legend = [label.text for _, label in page.loss_plot.getPlotItem().legend.items]
    assert legend.count(REFIT_LABEL) == 1
    for band, label in zip(page.refit_bands, page.refit_labels):
        assert band.isVisible() and band.getRegion() == (first_last, first_last + n)
        assert label.textItem.toPlainText() == REFIT_LABEL
    # Its own bar: the refit's steps, not the run's.
    assert (page.progress.maximum(), page.progress.value()) == (n, n)
    assert page.progress.format() == f"final model: step {n} of {n} (%p%)"


def test_a_refitting_run_shows_the_refit_as_its_own_phase(qtbot, window, sentiment_tsv, tiny_model_dir):
    load(qtbot, window, sentiment_tsv)
    use_tiny_model(qtbot, window, tiny_model_dir, epochs=2.0)
    window.go_to("train")
    page = window.train_page
    seen = {}

    def watch(batch):  # connected after the page: it sees the page as each batch left it
        if "refit" not in seen and any(e.get("refit_step") for e in batch if e["event"] == "StepMetrics"):
            seen["refit"] = (page.phase.text(), page.progress.format(), page.progress.maximum(), page.rate.text())
        if "first" not in seen and any(e["event"] == "StepMetrics" and e.get("refit_step") is None for e in batch):
            seen["first"] = (page.phase.text(), page.progress.format(), page.progress.maximum())

    window.controller.events.connect(watch)
    with qtbot.waitSignal(window.controller.started, timeout=5000) as started:
        page.start_button.click()
    run_dir = started.args[0]
    with qtbot.waitSignal(window.controller.finished, timeout=180000):
        pass
    refit = _refit_steps(run_dir)
    report = json.loads((Path(run_dir) / "report.json").read_text())
    n, first_steps, rows = len(refit), report["training"]["steps"], report["trained_on"]["rows"]
    assert n == refit[0]["refit_steps"] and report["trained_on"]["refit"] and first_steps > 0
    # While it ran: the first pass's bar counted the first pass; the refit's its own steps, named so.
    assert seen["first"][0].startswith("Training") and "all rows" not in seen["first"][0]
    assert seen["first"][2] == first_steps
    assert seen["first"][1].startswith("step ") and f" of {first_steps:,} " in seen["first"][1]
    phase, bar, maximum, rate = seen["refit"]
    assert phase == "Training on all rows…" and maximum == n
    assert bar.startswith("final model: step ") and f" of {n:,} (%p%)" in bar
    assert rate.startswith("epoch 0.")  # the refit's own epochs, not the run's
    _the_refit_is_shown_apart(page, refit)
    log = page.log.toPlainText()
    start = log.index(f"Training on all rows: the final model trains again from the backbone on all {rows} rows")
    end = log.index(f"The final model trained on all {rows} rows for {n} steps (")
    assert start < end < log.index("Testing") and "was trained on all" not in log[:end]
    # The model card lists the rows the final model saw, and says why.
    card = (Path(run_dir) / "model" / "README.md").read_text()
    assert f"refit on all rows ({report['trained_on']['train_rows']} training + " in card
    assert f"` ({rows} rows)" in card and "- validation:" not in card

    # Reopened from its folder, the run looks the same (the replay goes through the live code).
    page._reset()
    assert not page.refit_bands[0].isVisible() and not _xs(page.refit_ema_curve)
    window.open_run(run_dir)
    _the_refit_is_shown_apart(page, refit)


def _steps(n: int, refit_from: int | None = None) -> list[dict]:
    events = []
    for step in range(1, n + 1):
        e = {"event": "StepMetrics", "step": step, "total_steps": n, "loss": 0.7, "learning_rate": 1e-4,
             "epoch": step / n, "samples_per_second": 5.0, "eta_s": 1.0}
        if refit_from is not None and step > refit_from:
            e.update(refit_step=step - refit_from, refit_steps=n - refit_from, refit_epoch=(step - refit_from) / 4)
        events.append(e)
    return events


@pytest.mark.parametrize("steps", [1, 2, 20])
def test_a_one_point_chart_spans_the_run_and_scores_stay_within_0_and_1(qtbot, window, steps):
    window.go_to("train")
    page = window.train_page
    page.on_events([{"event": "TaskReady", "task": "image-classification", "title": "Images",
                     "metrics": [{"name": "accuracy", "title": "Accuracy", "plot": True},
                                 {"name": "macro_f1", "title": "Macro F1", "plot": True}]}]
                   + _steps(steps)
                   + [{"event": "EvalMetrics", "step": steps, "split": "validation",
                       "metrics": {"accuracy": 1.0, "macro_f1": 1.0, "loss": 0.1}}])
    page._redraw_stale()
    for plot in (page.loss_plot, page.metric_plot, page.lr_plot):
        (x0, x1), _ = _view(plot)
        # From step 0 to the last step (at least 1), a hair of padding: one x-axis for the three plots.
        end = max(steps, 1)
        assert -0.05 * end <= x0 <= 0 and end <= x1 <= end * 1.05, (x0, x1)
    _, (y0, y1) = _view(page.metric_plot)
    assert -0.05 <= y0 <= 0 and 1 <= y1 <= 1.05, (y0, y1)  # a score of 1.0 on an axis to 1.0, not 1.1


def test_a_zoomed_plot_keeps_its_range_and_scores_unbounded_follow_the_data(qtbot, window):
    window.go_to("train")
    page = window.train_page
    page.on_events(_steps(10))
    page._redraw_stale()
    view = page.loss_plot.getPlotItem().getViewBox()
    view.setXRange(3, 6, padding=0)
    view.sigRangeChangedManually.emit(view.state["mouseEnabled"])  # as a wheel or a drag does
    page.on_events([dict(e, step=e["step"] + 10, total_steps=20) for e in _steps(10)])
    page._redraw_stale()
    assert _view(page.loss_plot)[0] == pytest.approx([3, 6])  # the user's zoom stands
    assert _view(page.lr_plot)[0][1] >= 20  # the others follow the run
    page._clear_run()  # the next run follows the data again
    page.on_events(_steps(4))
    page._redraw_stale()
    assert 4 <= _view(page.loss_plot)[0][1] < 5


def test_refit_steps_fed_live_draw_apart_and_the_phases_have_titles(qtbot, window):
    from workbench.app.pages.train import PHASES

    window.go_to("train")
    page = window.train_page
    page.on_events(_steps(6)[:4] + [{"event": "PhaseChanged", "phase": "refitting", "detail": "all rows"}])
    assert page.phase.text() == "Training on all rows…" and page.progress.maximum() == 0  # busy until its steps
    page.on_events([{"event": "PhaseChanged", "phase": "training", "detail": "2 steps"}] + _steps(6, refit_from=4)[4:])
    page._redraw_stale()
    assert page.phase.text() == "Training on all rows…" and "Training on all rows: 2 steps" in page.log.toPlainText()
    assert _xs(page.refit_ema_curve) == [5.0, 6.0] and _xs(page.ema_curve) == [1.0, 2.0, 3.0, 4.0]
    assert page.progress.format() == "final model: step 2 of 2 (%p%)" and page.rate.text().startswith("epoch 0.50")
    page.on_events([{"event": "Refitted", "rows": 40, "steps": 2, "epochs": 0.5,
                    "message": "the final model trained on all 40 rows for 2 steps (0.5 epochs)"},
                    {"event": "PhaseChanged", "phase": "tuning", "detail": "thresholds"}])
    assert "The final model trained on all 40 rows for 2 steps" in page.log.toPlainText()
    assert page.phase.text() == "Tuning thresholds…"
    page.on_events([{"event": "PhaseChanged", "phase": "calibrating", "detail": ""}])
    assert page.phase.text() == "Calibrating…"
    assert PHASES["tuning"] == "Tuning thresholds" and PHASES["calibrating"] == "Calibrating"
