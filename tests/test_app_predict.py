"""The Export page's Predict section and int8 box, in the real window (offscreen, tiny model)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from app_support import APP_MARKS, aloop, drop_files, window  # noqa: F401 - fixtures
from conftest import sentiment_rows, write_tsv
from export_samples import WORDS, train
from text_tasks_helpers import build_tiny_bert

pytestmark = [*APP_MARKS, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A run trained without int8 (the page adds it)."""
    tmp = tmp_path_factory.mktemp("app-predict")
    bert = build_tiny_bert(tmp / "bert", WORDS)
    data = write_tsv(tmp / "reviews.tsv", sentiment_rows(200))
    return train(tmp, data, str(bert), max_steps=16, lr=5e-3).parent


def _rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _export_page(qtbot, window, run: Path):
    window.open_run(str(run))
    window.go_to("export")
    page = window.export_page
    qtbot.waitUntil(lambda: page.run is not None and page.body.isVisible(), timeout=20000)
    return page


def test_drop_a_file_predict_preview_and_save(qtbot, window, finished_run, tmp_path):
    page = _export_page(qtbot, window, finished_run)
    panel = page.predict_panel
    src = tmp_path / "new.tsv"
    src.write_text("text\ngood great film\nbroken\tline\textra\nawful dismal plot\n", encoding="utf-8")
    (tmp_path / "new.predictions.tsv").write_text("the user's file")  # taken: the panel picks a free name
    drop_files(panel.drop_zone, src)
    assert window.current_step() == "export"  # the drop went to the panel, not to the Data page
    assert panel.source == src and panel.output.text() == str(tmp_path / "new.predictions-2.tsv")
    with qtbot.waitSignal(panel.finished, timeout=60000) as done:
        panel.run_button.click()
    summary = done.args[0]
    assert summary.rows == 3 and Path(summary.output) == tmp_path / "new.predictions-2.tsv"
    assert (tmp_path / "new.predictions.tsv").read_text() == "the user's file"
    assert panel.table.isVisible() and panel.table.rowCount() == 3
    header = [panel.table.horizontalHeaderItem(j).text() for j in range(panel.table.columnCount())]
    assert header == ["line", "text", "label", "score", "p_neg", "p_pos"]
    assert panel.table.item(0, 1).text() == "good great film"
    assert [r["label"] for r in _rows(Path(summary.output))] == [panel.table.item(i, 2).text() for i in range(3)]
    assert "3 predictions saved" in panel.status.text() and panel.open_button.isVisible()


def test_cancel_stops_and_leaves_nothing(qtbot, window, finished_run, tmp_path):
    page = _export_page(qtbot, window, finished_run)
    panel = page.predict_panel
    src = tmp_path / "big.tsv"
    src.write_text("text\n" + "".join(f"good film {i} and the plot\n" for i in range(60_000)), encoding="utf-8")
    panel.set_source(src)
    progressed = []
    panel.progress.valueChanged.connect(progressed.append)
    assert panel.start()
    assert panel.cancel_button.isVisible() and not panel.run_button.isVisible()
    qtbot.waitUntil(lambda: any(v > 0 for v in progressed), timeout=60000)
    panel.cancel_button.click()
    assert "Cancelled" in panel.status.text() and panel.run_button.isVisible()
    qtbot.waitUntil(lambda: not panel.jobs.busy, timeout=60000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.tsv"]


def test_int8_box_adds_the_int8_model_and_shows_its_figures(qtbot, window, finished_run, tmp_path):
    page = _export_page(qtbot, window, finished_run)
    assert "No int8 model" in page.onnx_info.text() and "agrees with PyTorch on 100.0%" in page.onnx_info.text()
    assert not page.int8.isChecked()
    page.int8.setChecked(True)
    target = tmp_path / "exported"
    with qtbot.waitSignal(page.exported, timeout=120000):
        assert page.export_to(target)
    assert (target / "model.int8.onnx").is_file() and (finished_run / "model" / "model.int8.onnx").is_file()
    q = json.loads((target / "onnx_check.json").read_text())["int8"]
    assert q["written"] and q["metric"] == "macro_f1"
    assert "int8" in page.onnx_info.text() and f"{q['int8']:.4f}" in page.onnx_info.text()
    assert "model.int8.onnx" in json.loads((target / "workbench.json").read_text())["files"]
