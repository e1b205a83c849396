"""Desktop app: the Data page's suspicious labels, the Runs page's diff, the Evaluate page's calibration."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
from app_support import APP_MARKS, aloop, load, use_tiny_model, wait_task, window  # noqa: F401 - fixtures
from conftest import sentiment_rows, write_tsv

pytestmark = [*APP_MARKS, pytest.mark.timeout(240)]


def noisy_tsv(path: Path, n=200, flips=10) -> Path:
    rows = sentiment_rows(n)
    chosen = set(random.Random(3).sample(range(n), flips))
    rows = [(t, ("neg" if lab == "pos" else "pos") if i in chosen else lab) for i, (t, lab) in enumerate(rows)]
    return write_tsv(path, rows)


def test_suspicious_labels_view_saves_a_corrected_copy(qtbot, window, tmp_path, tiny_model_dir):
    data = noisy_tsv(tmp_path / "reviews.tsv")
    before = hashlib.sha256(data.read_bytes()).hexdigest()
    load(qtbot, window, data)
    use_tiny_model(qtbot, window, tiny_model_dir)
    page = window.data_page
    view = page.label_issues
    page.tabs.setCurrentWidget(view)
    view.find_button.click()
    qtbot.waitUntil(lambda: view.result is not None, timeout=120000)
    assert view.table.rowCount() > 0 and view.result.n_flagged == view.table.rowCount()
    scores = [float(view.table.item(i, 4).text()) for i in range(view.table.rowCount())]
    assert scores == sorted(scores)
    # Double-click jumps to the row in the file
    first_line = int(view.table.item(0, 0).text())
    view.go_to(0)
    assert page.tabs.currentWidget() is page.preview
    assert page.preview_model.line_of_row(page.preview.currentIndex().row()) == first_line
    view.set_action(0, "Exclude")
    if view.table.rowCount() > 1:
        view.set_action(1, view.shown_rows()[1].suggested)
    decisions = view.decisions()
    assert decisions[first_line] is None
    copy = tmp_path / "reviews-fixed.tsv"
    with qtbot.waitSignal(view.corrected, timeout=30000):
        view.save_copy(str(copy))
    wait_task(qtbot, page._task)
    assert hashlib.sha256(data.read_bytes()).hexdigest() == before  # the original is never touched
    assert window.state.config.data.train == str(copy.resolve())
    assert len(copy.read_text().splitlines()) == 201 - 1  # one row left out, one relabelled


def test_runs_page_diff_view_lists_fixed_and_broken(qtbot, tmp_path):
    from test_compare import make_run

    from workbench.app.pages.runs import RunsPage

    home = tmp_path / "runs"
    gold = ["pos", "neg"] * 30
    a, b = list(gold), list(gold)
    for i in (1, 2, 7):
        a[i] = "neg" if gold[i] == "pos" else "pos"
    b[10] = "neg"
    make_run(home / "20260101-a", a, gold)
    make_run(home / "20260102-b", b, gold)
    page = RunsPage(home=home)
    qtbot.addWidget(page)
    page.show()
    page.select_paths([home / "20260101-a", home / "20260102-b"])
    assert page.diff_button.isEnabled()
    dialog = page.diff(str(home / "20260101-a"), str(home / "20260102-b"))
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: dialog.diff is not None, timeout=30000)
    assert dialog.examples.rowCount() == 4
    assert "fixed 3" in dialog.head.text() and "broke 1" in dialog.head.text()
    dialog.kind.setCurrentIndex(2)  # broken only
    assert [e["row"] for e in dialog.shown_examples()] == [12]
    dialog.kind.setCurrentIndex(0)
    cells = [dialog.cell.itemData(i) for i in range(1, dialog.cell.count())]
    dialog.cell.setCurrentIndex(1 + cells.index(("neg", "pos", "neg")))  # gold neg, A said pos, B right
    assert {e["row"] for e in dialog.shown_examples()} == {3, 9}
    assert dialog.examples.rowCount() == 2
    metrics = {dialog.metrics.item(r, 0).text(): dialog.metrics.item(r, 4).text()
               for r in range(dialog.metrics.rowCount())}
    assert metrics["Accuracy"]  # a p-value is shown
    dialog.close()


def test_reliability_view_shows_ece_and_temperature(qtbot):
    import numpy as np

    from workbench.app.evaluation.calibration import ReliabilityView
    from workbench.core.analysis.calibration import calibration_report

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    logits = rng.normal(size=(400, 2)) * 4
    logits[np.arange(400), labels] += 2
    cal = calibration_report(logits, labels, logits[:200], labels[:200])
    view = ReliabilityView()
    qtbot.addWidget(view)
    view.set_calibration(cal)
    assert f"{cal['ece']:.3f}" in view.note.text() and "T = " in view.note.text()
    assert "workbench.json" in view.note.toolTip()
    assert view.plot is not None and view.plot.isVisibleTo(view)
    view.set_calibration(None)
    assert "No calibration" in view.note.text()
