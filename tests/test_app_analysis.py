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
