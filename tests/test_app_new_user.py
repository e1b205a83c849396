"""Desktop app as a new user meets it (issue 35): the Train page starts afresh on new data, menu
texts read as written, the Help menu's guide, shortcuts and problem report, View > Appearance, and
counts with their nouns ("1 epoch")."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from app_support import APP_MARKS, aloop, load, window  # noqa: F401 - fixtures
from conftest import sentiment_rows, write_tsv

pytestmark = [*APP_MARKS, pytest.mark.timeout(120)]


def _menu_actions(menu, path=""):
    """(menu path, action) for every action under ``menu``, submenus included."""
    for action in menu.actions():
        if action.menu() is not None:
            yield from _menu_actions(action.menu(), f"{path}/{action.text()}")
        elif not action.isSeparator():
            yield path, action


def _menu(window, title):
    return next(a.menu() for a in window.menuBar().actions() if a.text() == title)


def _bare_window(qtbot):
    from workbench.app.window import MainWindow

    w = MainWindow()  # not shown: the menus are all these tests need
    qtbot.addWidget(w)
    return w


def _x_range(plot) -> list[float]:
    """The x-range a plot shows once painted (pyqtgraph updates an auto range just before a paint)."""
    view = plot.getPlotItem().getViewBox()
    view.prepareForPaint()
    return view.viewRange()[0]


def _a_finished_run(page, steps: int = 400) -> None:
    """Feed the page a finished run's events, as the controller would: curves, test results, Finished."""
    events = [{"event": "TaskReady", "task": "classification", "title": "Classification", "main_metric": "macro_f1"}]
    for step in range(1, steps + 1):
        events.append({"event": "StepMetrics", "step": step, "total_steps": steps, "loss": 1.0 / step,
                       "learning_rate": 1e-3, "epoch": step / 100, "samples_per_second": 50.0, "eta_s": 1.0})
        if step % 100 == 0:
            events.append({"event": "EvalMetrics", "step": step, "split": "validation",
                           "metrics": {"accuracy": 0.8, "macro_f1": 0.7, "loss": 0.5}})
    test = {"accuracy": 0.75, "macro_f1": 0.7, "loss": 0.61}
    events.append({"event": "EvalMetrics", "step": steps, "split": "test", "metrics": test})
    events.append({"event": "Finished", "metrics": test})
    page.on_events(events)
    page._on_finished(SimpleNamespace(eval_split="test", metrics=test, samples_per_second=50.0, train_seconds=8.0,
                                      run_dir="/tmp/old-run"))
    page._shown_run = "/tmp/old-run"


def test_the_train_page_starts_afresh_when_new_data_is_loaded(qtbot, window, sentiment_tsv, tmp_path):
    load(qtbot, window, sentiment_tsv)
    window.go_to("train")
    page = window.train_page
    _a_finished_run(page)
    assert page.phase.text() == "Finished" and page.evaluate_button.isEnabled()
    # The test split's results say so: its loss is not the validation loss.
    assert "test loss 0.6100" in page.result.text() and "validation loss" not in page.result.text()
    assert "Test (400 steps): accuracy 0.7500, macro F1 0.7000, test loss 0.6100" in page.log.toPlainText()
    assert _x_range(page.metric_plot)[1] >= 400 and _x_range(page.loss_plot)[1] >= 400

    other = write_tsv(tmp_path / "other.tsv", sentiment_rows(60, seed=3))
    load(qtbot, window, other)
    assert page.phase.text() == "Not started" and page.result.text() == ""
    assert not page.evaluate_button.isEnabled() and not page.open_folder.isEnabled()
    assert page.shown_run == "" and not page.series.step and not page.series.eval_step
    assert page.raw_curve.getData()[0] is None or len(page.raw_curve.getData()[0]) == 0
    assert page.val_loss_curve.getData()[0] is None or len(page.val_loss_curve.getData()[0]) == 0
    assert page.progress.value() <= 0 and page.rate.text() == ""
    assert page.start_button.isEnabled(), page.reason.text()
    assert "other.tsv" in page.summary.text()
    for plot in (page.loss_plot, page.lr_plot):  # empty plots keep no y-range of the old run's values
        view = plot.getPlotItem().getViewBox()
        view.prepareForPaint()
        assert view.viewRange()[1] == [0, 1], (plot.getPlotItem().titleLabel.text, view.viewRange()[1])
    # The next run's curves set the x-range afresh. A single validation point (one epoch) has no width
    # of its own: pyqtgraph keeps the width shown before, which was the old run's 400 steps.
    page.on_events([{"event": "StepMetrics", "step": s, "total_steps": 20, "loss": 1.0, "learning_rate": 1e-3,
                     "epoch": s / 10, "samples_per_second": 5.0, "eta_s": 1.0} for s in range(1, 21)]
                   + [{"event": "EvalMetrics", "step": 20, "split": "validation",
                       "metrics": {"accuracy": 0.6, "macro_f1": 0.5, "loss": 0.7}}])
    page._redraw_stale()
    for plot in (page.loss_plot, page.metric_plot, page.lr_plot):
        low, high = _x_range(plot)
        assert high < 40, (plot.getPlotItem().titleLabel.text, low, high)


def test_reopening_a_past_run_after_new_data_still_shows_it(qtbot, window, sentiment_tsv, tmp_path):
    import json

    run = tmp_path / "run"
    run.mkdir()
    events = [{"event": "StepMetrics", "step": s, "total_steps": 5, "loss": 1.0, "learning_rate": 1e-3, "epoch": 1.0,
               "samples_per_second": 5.0, "eta_s": 0.0} for s in range(1, 6)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    (run / "status.json").write_text(json.dumps({"state": "cancelled"}), encoding="utf-8")
    load(qtbot, window, sentiment_tsv)
    window.open_run(str(run))
    page = window.train_page
    assert page.phase.text() == "Cancelled" and page.series.step == [1, 2, 3, 4, 5]
    load(qtbot, window, write_tsv(tmp_path / "other.tsv", sentiment_rows(60, seed=4)))
    assert page.phase.text() == "Not started" and not page.series.step
    window.open_run(str(run))
    assert page.phase.text() == "Cancelled" and page.series.step == [1, 2, 3, 4, 5] and page.shown_run == str(run)


def test_menu_texts_show_no_stray_ampersand(qtbot, runs_home):
    window = _bare_window(qtbot)
    texts = {}
    for path, action in _menu_actions(window.menuBar()):
        text = action.text()
        # After the escaped "&&", at most one "&", and it marks a letter or digit (the mnemonic).
        bare = text.replace("&&", "")
        assert bare.count("&") <= 1 and not re.search(r"&[^A-Za-z0-9]|&$", bare), (path, text)
        texts[text] = action
    assert "Model && task" in texts  # shown as "Model & task", not "Model _task"


def test_help_menu_has_the_guide_shortcuts_and_a_problem_report(qtbot, runs_home, monkeypatch):
    from PySide6.QtGui import QGuiApplication

    from workbench.app import window as window_module
    from workbench.app.about import ShortcutsDialog, shortcut_rows

    window = _bare_window(qtbot)
    items = {a.text(): a for a in _menu(window, "&Help").actions() if not a.isSeparator()}
    assert list(items) == ["&User Guide", "&Keyboard Shortcuts", "&Report a Problem…", "&About Workbench"]

    opened = []
    monkeypatch.setattr(window_module, "QDesktopServices", SimpleNamespace(openUrl=lambda url: opened.append(url)))
    items["&User Guide"].trigger()
    assert window_module.GUIDE.is_file() and [u.toLocalFile() for u in opened] == [str(window_module.GUIDE)]

    rows = dict(shortcut_rows(window))
    assert rows["Run › Start Training"] and rows["File › Open File…"]
    assert "Go › Model & task" in rows and rows["Go › Train"]
    items["&Keyboard Shortcuts"].trigger()
    dialog = window.findChild(ShortcutsDialog)
    assert dialog is not None and dialog.table.rowCount() == len(rows)
    dialog.close()

    QGuiApplication.clipboard().clear()
    items["&Report a Problem…"].trigger()
    qtbot.waitUntil(lambda: window.report_box is not None, timeout=60000)
    text = QGuiApplication.clipboard().text()
    assert "torch: " in text and "workbench: " in text
    assert "clipboard" in window.report_box.text()
    window.report_box.close()
    window.close()


def test_view_appearance_switches_the_palette_and_is_remembered(qtbot, runs_home, monkeypatch):
    from PySide6.QtWidgets import QApplication

    from workbench.app.look import apply_style, is_dark, saved_appearance, set_appearance

    monkeypatch.delenv("WORKBENCH_COLOR_SCHEME", raising=False)

    app = QApplication.instance()
    window = _bare_window(qtbot)
    actions = window.appearance_actions
    assert list(actions) == ["light", "dark", "system"] and actions["system"].isChecked()
    try:
        actions["dark"].trigger()
        assert is_dark(app) and saved_appearance() == "dark" and actions["dark"].isChecked()
        qtbot.waitUntil(lambda: is_dark(window))  # the widgets follow the application's palette
        assert _bare_window(qtbot).appearance_actions["dark"].isChecked()  # remembered for the next window
        actions["light"].trigger()
        assert not is_dark(app) and saved_appearance() == "light"
        set_appearance("dark")
        app.setPalette(app.style().standardPalette())  # as a fresh start would find it
        apply_style(app)  # the next start applies the saved choice
        assert is_dark(app)
    finally:
        set_appearance("system")
    assert saved_appearance() == "system" and not is_dark(app)


def test_counts_read_with_their_nouns(qtbot, window):
    from workbench.app.pages.train import counted

    assert [counted(1, "epoch"), counted(1.0, "epoch"), counted(2, "epoch"), counted(0.5, "epoch")] == \
        ["1 epoch", "1 epoch", "2 epochs", "0.5 epochs"]
    assert counted(1_234_567, "row") == "1,234,567 rows"
    window.state.config.train.epochs, window.state.config.train.max_steps = 1.0, 1
    window.state.touch_config()
    summary = window.ensure_train_page().summary.text()
    assert "1 epoch," in summary and "1 epochs" not in summary and "at most 1 step ·" in summary


def test_cli_help_mentions_the_sample():
    from workbench.cli.main import build_parser

    assert "workbench --sample" in " ".join(build_parser().format_help().split())
