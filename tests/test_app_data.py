"""Desktop app: launch, data page (drop, preview, column roles, checks, splits), model page, CLI routing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from app_support import APP_MARKS, aloop, drop_files, load, wait_task, window  # noqa: F401 - fixtures
from conftest import sentiment_rows, write_tsv

pytestmark = [*APP_MARKS, pytest.mark.timeout(180)]
ROOT = Path(__file__).resolve().parents[1]


def test_startup_paints_without_torch_or_datasets(tmp_path):
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "WORKBENCH_STARTUP_PROBE": "1",
           "WORKBENCH_HOME": str(tmp_path)}
    p = subprocess.run([sys.executable, "-m", "workbench"], capture_output=True, text=True, cwd=ROOT, env=env,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    probe = json.loads([line for line in p.stdout.splitlines() if line.startswith("{")][-1])
    loaded = set(probe["heavy_modules_loaded"])
    assert not loaded & {"torch", "transformers", "datasets", "pyqtgraph"}, loaded


def test_cli_opens_the_app_for_no_command_or_a_path(monkeypatch):
    import workbench.app
    from workbench import cli

    calls = []
    monkeypatch.setattr(workbench.app, "run_app", lambda path=None: calls.append(path) or 0)
    assert cli.main([]) == 0
    assert cli.main(["data.tsv"]) == 0
    assert calls == [None, "data.tsv"]
    assert cli.main(["a.tsv", "b.tsv"]) == 2  # one path only; options belong to `workbench train`


@pytest.mark.slow  # waits for the whole warm-up of imports
def test_a_path_given_at_launch_is_loaded(qtbot, aloop, runs_home, sentiment_tsv):
    from workbench.app.window import MainWindow

    w = MainWindow(str(sentiment_tsv))  # what `workbench PATH` does
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.state.data is not None, timeout=30000)
    assert w.state.data.n_rows == 240 and w.data_page.stack.currentIndex() == 2
    from workbench.app import aio

    qtbot.waitUntil(lambda: w.train_page is not None and not aio._tasks, timeout=30000)
    w.close()


def test_drop_anywhere_loads_a_tsv_into_the_preview(qtbot, window, sentiment_tsv):
    window.go_to("train")  # dropping works whatever page is showing
    data = load(qtbot, window, sentiment_tsv, target=window.sidebar)
    assert window.current_step() == "data"
    assert data is not None and data.usable
    page = window.data_page
    model = page.preview_model
    assert model.rowCount() == 240 and model.columns == ["text", "label"]
    from PySide6.QtCore import Qt

    # Row headers are file line numbers: the header is line 1, so the first row is line 2.
    assert model.headerData(0, Qt.Orientation.Vertical) == "2"
    assert (page.text_combo.currentText(), page.label_combo.currentText()) == ("text", "label")
    assert dict(page.chart.counts()) == {"pos": 120, "neg": 120}
    c = window.state.config.data
    assert c.train == str(Path(sentiment_tsv).resolve()) and (c.text_column, c.label_column) == ("text", "label")
    assert window.step_reason("train") == ""
    assert str(Path(sentiment_tsv).resolve()) == window.recent_files()[0]


def test_drop_on_a_text_field_still_opens_the_file(qtbot, window, sentiment_tsv, tmp_path):
    other = write_tsv(tmp_path / "other.tsv", sentiment_rows(60, seed=3))
    load(qtbot, window, sentiment_tsv)
    # A line edit takes text drops; a dropped file must still open as data, not be pasted in.
    edit = window.model_page.hub_edit
    drop_files(edit, other)
    wait_task(qtbot, window.data_page._task)
    assert window.state.data.path.name == "other.tsv" and edit.text() == ""


def test_clicking_a_finding_jumps_to_its_row(qtbot, window, tmp_path):
    rows = sentiment_rows(200)
    rows[57] = ("", "pos")  # file line 59: an empty text
    rows[120] = rows[10]  # line 122 repeats line 12
    path = write_tsv(tmp_path / "dirty.tsv", rows)
    load(qtbot, window, path)
    page = window.data_page
    found = page.findings
    items = {found.item(i).text(): found.item(i) for i in range(found.count())}
    empty = next(item for text, item in items.items() if "empty text" in text)
    found.itemClicked.emit(empty)  # a finding jumps to its first line and lists the others as links
    assert page.preview_model.line_of_row(page.preview.currentIndex().row()) == 59
    assert 'href="59"' in page.finding_lines.text()
    dup = next(item for text, item in items.items() if "repeat" in text)
    found.itemClicked.emit(dup)
    assert page.preview_model.line_of_row(page.preview.currentIndex().row()) == 122
    page.finding_lines.linkActivated.emit("12")
    assert page.preview_model.line_of_row(page.preview.currentIndex().row()) == 12


def test_column_picker_rechecks_with_the_new_columns(qtbot, window, tmp_path):
    # No header, and two short columns: which one is the label is a guess.
    rows = [(f"item {i % 7}", "yes" if i % 3 else "no", f"grp{i % 4}") for i in range(120)]
    path = tmp_path / "ambiguous.csv"
    path.write_text("\n".join(",".join(r) for r in rows) + "\n", encoding="utf-8")
    data = load(qtbot, window, path)
    assert data.choice is not None and data.choice.ambiguous
    page = window.data_page
    assert "guessed" in page.columns_note.text()
    page.text_combo.setCurrentText("column_1")
    page.label_combo.setCurrentText("column_3")
    qtbot.waitUntil(lambda: window.state.data.choice.label == "column_3", timeout=20000)
    assert window.state.config.data.label_column == "column_3"
    assert dict(page.chart.counts()) == {"grp0": 30, "grp1": 30, "grp2": 30, "grp3": 30}


def test_hundred_thousand_rows_are_converted_only_where_seen(qtbot, window, tmp_path):
    path = tmp_path / "big.tsv"
    with open(path, "w", encoding="utf-8") as f:
        f.write("text\tlabel\n")
        for i in range(100_000):
            f.write(f"review number {i} was {'good' if i % 2 else 'bad'}\t{'pos' if i % 2 else 'neg'}\n")
    load(qtbot, window, path)
    page = window.data_page
    model = page.preview_model
    assert model.rowCount() == 100_000
    view = page.preview
    view.verticalScrollBar().setValue(view.verticalScrollBar().maximum())
    qtbot.wait(50)
    assert page.jump_to_line(77_777) == 77_775
    qtbot.wait(50)
    assert model.blocks_converted <= 8  # the blocks painted, not 100,000 rows
    assert model.data(model.index(77_775, 0)) == "review number 77775 was good"


def test_cancelling_a_load_leaves_the_page_usable(qtbot, window, sentiment_tsv, tmp_path):
    big = tmp_path / "cancel-me.tsv"
    big.write_text("text\tlabel\n" + "".join(f"text {i}\t{i % 2}\n" for i in range(200_000)), encoding="utf-8")
    page = window.data_page
    task = page.open_path(str(big))
    page.loading_cancel.click()  # before the worker even starts reading: deterministic
    wait_task(qtbot, task)
    assert window.state.data is None
    assert "cancelled" in page.drop_zone.message.text().lower()
    load(qtbot, window, sentiment_tsv)
    assert window.state.data.usable


def test_a_bad_file_says_why_on_the_page(qtbot, window, tmp_path):
    bad = tmp_path / "sheet.tsv"
    bad.write_bytes(b"PK\x03\x04 not really a table")
    load(qtbot, window, bad)
    assert window.state.data is None
    assert "ZIP" in window.data_page.drop_zone.message.text()
    assert "Data page" in window.step_reason("train")


def test_folder_with_train_and_dev_files(qtbot, window, tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    write_tsv(folder / "train.tsv", sentiment_rows(120))
    write_tsv(folder / "dev.tsv", sentiment_rows(40, seed=5))
    data = load(qtbot, window, folder)
    assert data.path.name == "train.tsv" and Path(data.val_path).name == "dev.tsv"
    page = window.data_page
    assert not page.val_fraction.isEnabled() and not page.test_fraction.isEnabled()
    assert window.state.config.data.val == str(folder / "dev.tsv")


def test_split_controls_write_the_config(qtbot, window, sentiment_tsv):
    load(qtbot, window, sentiment_tsv)
    page = window.data_page
    page.val_fraction.setValue(20)
    page.test_fraction.setValue(0)
    page.sample_rows.setValue(100)
    d = window.state.config.data
    assert (d.val_fraction, d.test_fraction, d.sample) == (0.2, 0.0, 100)
    assert "80 rows to train on" in page.split_summary.text()


def test_steps_that_cannot_work_say_why(qtbot, window):
    for key, words in (("train", "Data page"), ("evaluate", "train a model"), ("export", "train a model")):
        assert words in window.step_reason(key)
        row = [k for k, *_ in __import__("workbench.app.window", fromlist=["STEPS"]).STEPS].index(key)
        assert words in window.sidebar.item(row).toolTip()
    window.go_to("evaluate")
    host = window.hosts["evaluate"]
    assert host.currentWidget() is host.placeholder and "train a model" in host.placeholder.reason.text()
    window.go_to("train")
    assert not window.train_page.start_button.isEnabled()
    assert "Data page" in window.train_page.reason.text()


def test_model_page_lists_offline_backbones_and_writes_settings(qtbot, window, tiny_model_dir):
    page = window.model_page
    qtbot.waitUntil(lambda: page.catalog_loaded and page.devices_loaded, timeout=60000)
    first = page.backbones.topLevelItem(0)
    assert first.text(0) == "all-MiniLM-L6-v2" and first.text(1) == "22.7M"
    assert "parameters" in page.backbone_note.text()
    assert page.device.findData("cpu") >= 0
    wait_task(qtbot, page.use_backbone(str(tiny_model_dir)))
    assert window.state.config.model.name == str(Path(tiny_model_dir).resolve())
    assert page.selected_backbone.source == "local"
    page.epochs.setValue(2)
    page.lr.setValue(3e-5)
    page.patience.setValue(2)
    t = window.state.config.train
    assert (t.epochs, t.lr, t.early_stopping_patience) == (2.0, 3e-5, 2)
    assert page.lr.text() == "3e-5"
    wait_task(qtbot, page.use_backbone(str(tiny_model_dir / "missing")))
    assert "does not exist" in page.backbone_note.text()


def test_a_conll_file_previews_sentences_tags_and_scheme_breaks(qtbot, window, tmp_path):
    """The Data page reads a CoNLL file with the engine's reader and tagging checks: one row per
    sentence with its tags, the tag counts, and an I- tag after O reported with its line."""
    path = tmp_path / "ner.conll"
    block = ("John B-PER\nSmith I-PER\nlives O\nin O\nParis B-LOC\n\n"
             "The O\nUN B-ORG\nmet O\n\n")
    path.write_text("-DOCSTART- O\n\n" + block + "He O\nsaw O\nBerlin I-LOC\n\n" + block * 4, encoding="utf-8")
    data = load(qtbot, window, path)
    page = window.data_page
    assert data.task == "token-classification" and data.usable and data.n_rows == 11
    model = page.preview_model
    assert model.rowCount() == 11
    assert model.data(model.index(0, 0)) == "John Smith lives in Paris"
    assert model.data(model.index(0, 1)) == "B-PER I-PER O O B-LOC"
    assert page.classes_box.isVisibleTo(page) and page.classes_box.title() == "Tags"
    assert data.class_counts["O"] == 22 and data.class_counts["B-PER"] == 5
    texts = [page.findings.item(i).text() for i in range(page.findings.count())]
    assert any("11 sentences, 43 tokens" in t and "PER" in t for t in texts), texts
    assert any("line 15" in t and "I-LOC" in t for t in texts), texts  # Berlin's stray I- tag


def test_a_pair_file_previews_both_texts(qtbot, window, tmp_path):
    path = tmp_path / "pairs.tsv"
    rows = [("A man plays a guitar.", "Someone plays music.", "entailment"),
            ("A dog runs.", "A cat sleeps.", "contradiction")] * 6
    path.write_text("premise\thypothesis\tlabel\n" + "".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    from PySide6.QtCore import Qt

    data = load(qtbot, window, path)
    assert data.task == "text-pair-classification" and data.usable
    model = window.data_page.preview_model
    headers = [model.headerData(i, Qt.Orientation.Horizontal) for i in range(model.columnCount())]
    assert headers[:3] == ["premise", "hypothesis", "label"]
    assert model.data(model.index(1, 1)) == "A cat sleeps."
