"""What walking issue 35's journeys as a new user still tripped over: the Data page's split
explanation reads at 1280x800 without scrolling the right column (the Checks list is as tall as its
findings, up to a cap), and the Export page's failure messages name its own controls, not the command
line's --overwrite. Offscreen, on files and a run the engine really trained (tiny BERT)."""

from __future__ import annotations

from pathlib import Path

import pytest
from app_support import APP_MARKS, aloop, load, window  # noqa: F401 - fixtures
from conftest import sentiment_rows, write_tsv
from PySide6.QtCore import QPointF

pytestmark = [*APP_MARKS, pytest.mark.timeout(300)]


def _right_column(page):
    scroll = page.split_summary.parentWidget()
    while scroll is not None and not hasattr(scroll, "verticalScrollBar"):
        scroll = scroll.parentWidget()
    return scroll


def _shown_at_1280(qtbot, window, path: Path):
    window.resize(1280, 800)
    load(qtbot, window, path)
    page = window.data_page
    qtbot.waitUntil(lambda: page.split_summary.text() != "", timeout=10000)
    qtbot.wait(200)  # the layout pass after the findings arrive
    return page


def test_the_split_explanation_reads_at_1280x800_without_scrolling(qtbot, window, tmp_path):
    # Two findings (a duplicate text, a text with two labels): they must not take a tall box.
    rows = sentiment_rows(240) + [("same words twice", "pos"), ("same words twice", "pos"),
                                  ("another text", "pos"), ("another text", "neg")]
    page = _shown_at_1280(qtbot, window, write_tsv(tmp_path / "reviews.tsv", rows))
    assert 1 <= page.findings.count() <= 4
    scroll = _right_column(page)
    assert scroll.verticalScrollBar().value() == 0
    viewport = scroll.viewport()
    summary = page.split_summary
    bottom = summary.mapTo(viewport, summary.rect().bottomLeft()).y()
    assert "validation" in summary.text().lower()
    assert bottom <= viewport.height(), f"the split explanation ends at y={bottom}, below the {viewport.height()} px shown"
    # The list shows every finding, with no scroll bar and no empty room much taller than they need.
    findings = page.findings
    assert findings.verticalScrollBar().maximum() == 0
    last = findings.visualItemRect(findings.item(findings.count() - 1))
    assert findings.viewport().height() - last.bottom() < 40


def test_many_findings_scroll_inside_a_capped_list(qtbot, window, tmp_path):
    page = _shown_at_1280(qtbot, window, write_tsv(tmp_path / "reviews.tsv", sentiment_rows(240)))
    for i in range(30):  # far more findings than fit: the list stops growing and scrolls
        page.findings.addItem(f"Finding {i}: a long sentence that wraps over more than one line in the narrow column")
    qtbot.wait(200)
    assert page.findings.max_height - 30 <= page.findings.height() <= page.findings.max_height
    assert page.findings.verticalScrollBar().maximum() > 0


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, tiny_model_dir) -> Path:
    from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from workbench.core.run.pipeline import run_training

    folder = tmp_path_factory.mktemp("walk-export")
    cfg = RunConfig(
        data=DataConfig(train=str(write_tsv(folder / "reviews.tsv", sentiment_rows(120)))),
        model=ModelConfig(name=str(tiny_model_dir)),
        train=TrainConfig(epochs=1, batch_size=16, lr=3e-3, max_length=32, seed=1),
        run_dir=str(folder / "runs" / "run-1"),
    )
    return Path(run_training(cfg).run_dir)


def test_an_export_refused_by_the_engine_is_told_in_the_pages_words(qtbot, window, text_run, tmp_path):
    from workbench.app.pages.export import _copy_failure
    from workbench.core.errors import InputError
    from workbench.core.export.model import copy_export
    from workbench.core.run.history import load_run

    run = load_run(text_run)
    target = tmp_path / "exported"
    copy_export(run.model_dir, target)
    # Another export landed there between the page's check and the copy: the engine refuses it.
    with pytest.raises(InputError) as refused:
        copy_export(run.model_dir, target)
    assert "--overwrite" in str(refused.value)
    message = _copy_failure(refused.value, target)
    assert "--" not in message and "answer Yes" in message, message

    window.ensure_run_pages()
    page = window.export_page
    page.show_run(str(text_run))
    failures = []
    page.export_failed.connect(failures.append)
    page._on_failed(target, refused.value)
    assert failures and "--overwrite" not in failures[0], failures
    assert "press Export again and answer Yes to replace it" in failures[0]
    assert page.export_button.isEnabled()


def test_the_validation_legend_leaves_the_latest_scores_in_view(qtbot, window):
    """A short run ends with low scores at the right: the legend must not sit on them (it did,
    bottom right, hiding the last macro F1 point of the sample's first run)."""
    window.resize(1280, 800)
    window.ensure_train_page()
    window.go_to("train")
    page = window.train_page
    events = [{"event": "TaskReady", "task": "classification", "title": "Classification", "main_metric": "macro_f1"}]
    for step in range(1, 9):
        events.append({"event": "StepMetrics", "step": step, "total_steps": 8, "loss": 1.1 - step / 100,
                       "learning_rate": 4e-5, "epoch": step / 160, "samples_per_second": 60.0, "eta_s": 1.0})
        if step % 4 == 0:  # scores of a first short run: low, at the right-hand end
            events.append({"event": "EvalMetrics", "step": step, "split": "validation",
                           "metrics": {"accuracy": 0.44 + step / 1000, "macro_f1": 0.22 + step / 1000, "loss": 1.08}})
    page.on_events(events)
    qtbot.wait(300)
    item = page.metric_plot.getPlotItem()
    item.getViewBox().prepareForPaint()
    legend = item.legend.sceneBoundingRect()
    for curve in page.metric_curves.values():
        xs, ys = curve.getData()
        assert xs is not None and len(xs) == 2
        for x, y in zip(xs, ys):
            point = item.getViewBox().mapViewToScene(QPointF(x, y))
            assert not legend.contains(point), f"the legend covers {curve.name()} at step {x}"
