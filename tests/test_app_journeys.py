"""The app as a new user walks through it (issue 35 items 6-9, 11): the sample opens clean, the app
names its own controls instead of command-line flags (a Delimiter control, the Diff window, the
import message, the log), runs can be told apart and stay selected, a file that cannot be opened
is said where the user looks, and Predict's progress says what it counts."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from pathlib import Path

import pytest
from app_support import APP_MARKS, aloop, wait_task, window  # noqa: F401 - fixtures
from conftest import sentiment_rows, write_tsv
from pack_samples import finished_run  # noqa: F401 - fixture
from test_compare import make_run

pytestmark = [*APP_MARKS, pytest.mark.timeout(300)]


def _findings(page) -> list[str]:
    return [page.findings.item(i).text() for i in range(page.findings.count())]


def _open(qtbot, window, path, **kw):
    return wait_task(qtbot, window.data_page.open_path(str(path), **kw))


# ---- item 6: the sample opens clean; users' own files still get the warnings ---------------------------
def test_clean_tweets_decodes_what_it_can_and_drops_the_rest():
    from workbench.samples import clean_tweets

    rows = [
        b"sentiment,confidence,text",
        "negative,0.9,caf\u00e9 food was cold".encode("utf-8"),  # UTF-8 in a file that reads as latin-1
        b"negative,0.8,cars_\xd1_.no thank you",  # bytes that are no UTF-8: dropped
        "neutral,1,Google\u0562_s cars".encode("utf-8"),  # valid UTF-8, but garbling left in it: dropped
        b'positive,0.7,"two\r\nlines\ttabbed &amp; fine"',  # a line break inside quotes: one line
        b"positive,0.5,loved it",
        b"negative,0.5,loved it",  # the same text with another label: both dropped
        b"neutral,0.6,just a car",
        b"neutral,0.4,just a car",  # an exact repeat: kept once
        b"angry,0.6,no such class",
    ]
    raw = b"\r\n".join(rows) + b"\r\n"
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")  # what made the whole file read as latin-1
    cleaned = clean_tweets(raw)
    table = list(csv.reader(io.StringIO(cleaned.text), delimiter="\t"))
    assert table == [["sentiment", "text"], ["negative", "caf\u00e9 food was cold"],
                     ["positive", "two lines tabbed & fine"], ["neutral", "just a car"]]
    assert (cleaned.rows, cleaned.broken, cleaned.conflicting, cleaned.repeated) == (3, 3, 2, 1)
    assert clean_tweets(raw).text == cleaned.text  # the same bytes in, the same file out


def test_the_sample_is_cleaned_once_into_the_cache(runs_home):
    from workbench.samples import sample_dataset

    path = sample_dataset()
    assert path.is_relative_to(runs_home.parent) and path.name == "tweets.tsv"
    stamp = path.stat().st_mtime_ns
    assert sample_dataset() == path and path.stat().st_mtime_ns == stamp  # not written again
    path.read_bytes().decode("utf-8")  # UTF-8 throughout


def test_the_sample_opens_without_warnings_and_a_dirty_file_still_has_them(qtbot, window, tmp_path):
    page = window.data_page
    wait_task(qtbot, page.open_sample(), timeout=120000)
    loaded = window.state.data
    assert loaded.path.name == "tweets.tsv" and loaded.table.format.encoding == "utf-8"
    assert loaded.n_rows > 30000 and set(loaded.class_counts) == {"negative", "neutral", "positive"}
    assert not loaded.notes and not loaded.report.findings
    assert _findings(page) == [f"No problems found in {loaded.n_rows:,} rows."]
    texts = [page.preview_model.data(page.preview_model.index(r, 1)) for r in range(40)]
    assert all(t.isascii() and "\n" not in t for t in texts), texts  # no mojibake on the first screen
    assert window.state.config.data.sample == 3000  # still the quick trial

    # A user's file with the sample's old problems: every warning is still there.
    dirty = tmp_path / "mine.csv"
    lines = ["label,text"] + [f"{lab},{txt} {i}" for i, (txt, lab) in enumerate(sentiment_rows(60))]
    lines += ["pos,same words", "neg,same words", 'pos,"a tweet\nover two lines"', "neg,caf\u00e9"]
    dirty.write_bytes("\n".join(lines).encode("utf-8") + b"\nneg,na\xefve\n")
    _open(qtbot, window, dirty)
    info, found = page.file_info.text(), " ".join(_findings(page))
    assert "read as latin-1" in info and "span several lines" in info
    assert "occur with different labels" in found or "occurs with different labels" in found


# ---- item 7: the app's own words ---------------------------------------------------------------------
def test_engine_messages_shown_in_the_app_name_its_controls():
    from workbench.app.wording import in_app_words

    said = {
        "the fields were taken to be separated by comma, pass the delimiter if that is wrong": "Delimiter",
        "(small data; --no-refit turns it off)": "Final model",
        "(30 rows from a.tsv, 101 rows from b.tsv); give both runs the same --test file to compare them": "test file",
        "Fix the file, or pass --skip-bad-rows to train without them.": "Skip malformed rows",
        "lower --batch-size (rows per process) or --max-length": "Batch size",
        "learning rate: 0.0003, the text-classification default for --method lora": "LoRA adapters",
        "is not one: use --method full or frozen": "Full fine-tuning",
        "data not included (pass --with-data to include it)": "Pack Run with Its Data",
        "to repeat the run, give the data as DATA to workbench train --config /r/config.json": "Data page",
    }
    for message, control in said.items():
        shown = in_app_words(message)
        assert control in shown and "--" not in shown and "workbench train" not in shown, shown
        assert "pass the delimiter" not in shown
    assert in_app_words("unknown --tag-scheme x") == "unknown --tag-scheme x"  # no control: left as it is


def test_the_delimiter_control_reads_the_file_again(qtbot, window, tmp_path):
    page = window.data_page
    one = tmp_path / "texts.csv"
    one.write_text("text\n" + "\n".join(t for t, _ in sentiment_rows(30)) + "\n", encoding="utf-8")
    _open(qtbot, window, one)
    assert "Delimiter" in page.columns_note.text() and "pass the delimiter" not in page.columns_note.text()
    assert not any("pass the delimiter" in f for f in _findings(page))

    # Semicolons, with a comma in every text: the sniffer takes commas (wrongly, one class "really").
    euro = tmp_path / "euro.csv"
    euro.write_text("label;text\n" + "".join(f"{lab};{txt}, really\n" for txt, lab in sentiment_rows(60)),
                    encoding="utf-8")
    _open(qtbot, window, euro)
    assert window.state.data.table.format.delimiter == "," and page.delimiter.currentText() == "Auto (comma)"
    semicolon = page.delimiter.findData(";")
    page.delimiter.setCurrentIndex(semicolon)
    page.delimiter.activated.emit(semicolon)  # as a user's choice does
    qtbot.waitUntil(lambda: not page.loading and window.state.data.table.format.delimiter == ";", timeout=30000)
    data = window.state.data
    assert data.table.columns == ["label", "text"] and set(data.class_counts) == {"pos", "neg"}
    assert page.delimiter.currentText() == "Semicolon" and window.state.config.data.delimiter == ";"
    assert window.current_step() == "data"

    page.delimiter.setCurrentIndex(0)
    page.delimiter.activated.emit(0)  # Auto: sniffed again
    qtbot.waitUntil(lambda: not page.loading and window.state.data.table.format.delimiter == ",", timeout=30000)
    assert page.delimiter.currentText() == "Auto (comma)"


def test_the_image_baseline_logs_a_sentence_not_a_dict(tmp_path, runs_home, caplog):
    from image_samples import write_grey_glyphs

    from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from workbench.core.run.pipeline import run_training

    root = tmp_path / "glyphs"
    write_grey_glyphs(root / "train", 8, side=16)
    cfg = RunConfig(data=DataConfig(train=str(root / "train")), model=ModelConfig(name="small-cnn"),
                    train=TrainConfig(batch_size=8, lr=3e-3, warmup_ratio=0.0, seed=0, max_steps=2))
    with caplog.at_level(logging.INFO, logger="workbench"):
        run_training(cfg)
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("baseline")]
    assert "{" not in line and "'" not in line, line
    assert "logistic regression on the untrained (random) small-cnn features" in line
    assert re.search(r"of 1\d training images, \d+\.\d s: accuracy \d\.\d{3}, macro F1 \d\.\d{3} on the test split$", line)


# ---- the Diff window -----------------------------------------------------------------------------
def _diff(qtbot, tmp_path, a_gold, b_gold, b_source="/data/test.tsv"):
    """The Runs page's Diff of a run right on every row of ``a_gold`` and one right on ``b_gold``'s."""
    from workbench.app.pages.runs import RunsPage

    home = tmp_path / "runs"
    make_run(home / "20260101-a", a_gold, a_gold)
    make_run(home / "20260102-b", b_gold, b_gold, source=b_source)
    page = RunsPage(home=home)
    qtbot.addWidget(page)
    page.refresh()
    dialog = page.diff(str(home / "20260101-a"), str(home / "20260102-b"))
    qtbot.waitUntil(lambda: dialog.diff is not None or dialog.message.isEnabled(), timeout=30000)
    return page, dialog


def test_the_diff_window_says_why_there_is_nothing_to_compare_and_closes(qtbot, tmp_path):
    from PySide6.QtCore import Qt

    gold = ["pos", "neg"] * 10
    page, dialog = _diff(qtbot, tmp_path, gold, gold[:10], b_source="/data/small.tsv")  # other test rows
    text = dialog.message.text()
    assert dialog.body.currentWidget() is dialog.message and not dialog.metrics.isVisible()
    assert text.startswith("Nothing to compare.") and "same test file (Data page, Test file)" in text
    assert "--" not in text and "20260102-b" in dialog.head.text()
    assert dialog.close_button.isVisible()
    dialog.close_button.click()
    qtbot.waitUntil(lambda: not dialog.isVisible(), timeout=5000)

    again = page.diff(*[str(tmp_path / "runs" / name) for name in ("20260101-a", "20260102-b")])
    qtbot.waitExposed(again)
    again.metrics.setFocus()
    qtbot.keyClick(again.metrics, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: not again.isVisible(), timeout=5000)


def test_the_diff_window_shows_no_empty_examples_table(qtbot, tmp_path):
    gold = ["pos", "neg"] * 10
    _, same = _diff(qtbot, tmp_path, gold, gold)
    assert same.example_stack.currentWidget() is same.no_examples and not same.examples.isVisible()
    assert "fixed none and broke none of the 20 examples" in same.no_examples.text()
    assert same.metrics.rowCount() > 0
    same.close()


# ---- item 8: runs told apart, selection kept -------------------------------------------------------
def _run(home: Path, name: str, started: str, method="full", imported=None) -> Path:
    run = make_run(home / name, ["pos", "neg"], ["pos", "neg"])
    status = {"state": "finished", "started": started, "ended": started[:-2] + "59"}
    if imported:
        status["imported"] = imported
    (run / "status.json").write_text(json.dumps(status))
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "model": {"method": method}}))
    return run


def _column(page, name: str) -> list[str]:
    col = page.model.COLUMNS.index(name)
    return [page.proxy.index(r, col).data() for r in range(page.proxy.rowCount())]


def test_the_runs_list_names_method_source_and_run_time(qtbot, tmp_path):
    from PySide6.QtCore import Qt

    from workbench.app.pages.runs import RunsPage

    home = tmp_path / "runs"
    _run(home, "r1", "2026-01-01T10:00:00")
    _run(home, "r2", "2026-01-02T10:00:00", method="lora")
    pack = {"pack": "r1", "packed": "2026-01-03T09:00:00"}
    _run(home, "r1-2", "2026-01-01T10:00:00", imported={**pack, "at": "2026-01-04T11:12:13", "via": "unpack"})
    _run(home, "r1-3", "2026-01-01T10:00:00", imported={**pack, "at": "2026-01-05T12:13:14", "via": "import"})
    page = RunsPage(home=home)
    qtbot.addWidget(page)
    page.refresh()
    folders = _column(page, "Folder")
    source = dict(zip(folders, _column(page, "Source")))
    assert source == {"r2": "Trained here", "r1": "Trained here", "r1-2": "Unpacked 01-04 11:12",
                      "r1-3": "Imported 01-05 12:13"}
    method = dict(zip(folders, _column(page, "Method")))
    assert method["r2"] == "LoRA" and method["r1"] == "Full fine-tuning"
    assert "Duration" not in page.model.COLUMNS and _column(page, "Run time")[0] == "59 s"
    tip = page.model.headerData(page.model.COLUMNS.index("Run time"), Qt.Orientation.Horizontal,
                                Qt.ItemDataRole.ToolTipRole)
    assert "reading" in tip and "export" in tip and "trained in" in tip
    row = folders.index("r1-3")
    cell = page.proxy.index(row, page.model.COLUMNS.index("Source")).data(Qt.ItemDataRole.ToolTipRole)
    assert "Imported" in cell and "packed 2026-01-03 09:00:00" in cell


def test_the_selection_stays_on_the_same_runs_after_refresh(qtbot, tmp_path):
    from PySide6.QtCore import QItemSelectionModel

    from workbench.app.pages.runs import PATH_ROLE, RunsPage

    home = tmp_path / "runs"
    for day in (1, 2, 3):
        _run(home, f"r{day}", f"2026-01-0{day}T10:00:00")
    page = RunsPage(home=home)
    qtbot.addWidget(page)
    page.show()
    qtbot.waitExposed(page)
    page.select_paths([home / "r2", home / "r1"])
    page.table.selectionModel().setCurrentIndex(page.proxy.index(2, 0), QItemSelectionModel.SelectionFlag.NoUpdate)
    _run(home, "r4", "2026-01-04T10:00:00")  # newer: every row moves down one
    _run(home, "r0", "2025-12-31T10:00:00")
    page.refresh_button.click()
    assert sorted(Path(p).name for p in page.selected_paths()) == ["r1", "r2"]
    assert Path(page.table.currentIndex().data(PATH_ROLE)).name == "r1"
    (home / "r4").rename(tmp_path / "r4-gone")  # and one goes
    page.refresh()
    assert sorted(Path(p).name for p in page.selected_paths()) == ["r1", "r2"]


def test_an_imported_run_says_so_and_keeps_the_command_behind_copy_command(qtbot, tmp_path, finished_run):  # noqa: F811
    from PySide6.QtGui import QGuiApplication
    from PySide6.QtWidgets import QMessageBox

    from workbench.app.pages.runs import RunsPage
    from workbench.core.export.pack import pack_run, unpack_run

    pack = pack_run(finished_run, tmp_path / "run.wbrun").path
    home = tmp_path / "runs"
    unpack_run(pack, home=home)  # as `workbench unpack` does
    page = RunsPage(home=home)
    qtbot.addWidget(page)
    page.show()
    page.import_run(str(pack))
    qtbot.waitUntil(lambda: page.message is not None, timeout=60000)
    box = page.message
    said = box.text() + box.informativeText()
    assert "workbench train" not in said and "--" not in said
    copy = next(b for b in box.buttons() if b.text() == "Copy Command")
    assert box.buttonRole(copy) == QMessageBox.ButtonRole.ActionRole
    copy.click()
    (imported,) = page.selected_paths()
    assert QGuiApplication.clipboard().text() == f"workbench train --config {Path(imported) / 'config.json'}"
    assert box.isVisible()  # copying leaves the message to read
    box.close()
    assert sorted(_column(page, "Source"))[0].startswith("Imported")
    assert sorted(_column(page, "Source"))[1].startswith("Unpacked")
    assert json.loads((Path(imported) / "status.json").read_text())["imported"]["via"] == "import"


# ---- item 9: feedback where the user looks -----------------------------------------------------------
def test_a_file_opened_from_the_runs_page_goes_to_the_data_page_and_says_what_failed(qtbot, window, tmp_path):
    page = window.data_page
    good = write_tsv(tmp_path / "reviews.tsv", sentiment_rows(40))
    _open(qtbot, window, good)
    window.go_to("runs")
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    task = page.open_path(str(empty))  # what File > Open does, from any page
    assert window.current_step() == "data"
    wait_task(qtbot, task)
    assert page.problem.isVisible()
    assert page.problem.title.text() == "Could not open empty.tsv"
    assert "empty.tsv is empty." in page.problem.detail.text()
    assert "Still loaded: reviews.tsv" in page.problem.detail.text()
    assert window.state.data.path.name == "reviews.tsv" and page.file_title.text() == "reviews.tsv"
    _open(qtbot, window, good)  # a file that opens: the message goes
    assert not page.problem.isVisible()


# ---- item 11: Predict's progress ---------------------------------------------------------------------
def test_predict_progress_says_what_it_counts(qtbot, tmp_path, finished_run):  # noqa: F811
    from workbench.app.pages.predict_panel import PredictPanel

    panel = PredictPanel()
    qtbot.addWidget(panel)
    panel.show()
    panel.set_model(finished_run / "model")
    src = write_tsv(tmp_path / "three.tsv", sentiment_rows(3))
    panel.set_source(src)
    shown = []
    panel.jobs._signals.progress.connect(lambda _job, _value: shown.append(panel.progress.text()))
    with qtbot.waitSignal(panel.finished, timeout=60000) as done:
        panel.start()
    assert done.args[0].rows == 3
    assert shown and shown[-1] == "100% of the file read", shown  # bytes: a share, never "112/112"
    panel._on_progress((3, 12, True))
    assert panel.progress.text() == "3 of 12 images"
