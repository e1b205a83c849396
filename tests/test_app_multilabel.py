"""The app on multi-label data (issue 31): the Data page reads label lists and 0/1 columns, a tiny run
trains through the window, the Evaluate page shows each label's threshold and lists the examples
behind a count, and Try it decides as the export's Predictor does (tiny BERT, offline, offscreen)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from app_support import APP_MARKS, aloop, load, use_tiny_model, window  # noqa: F401 - fixtures
from PySide6.QtCore import Qt
from test_multilabel import labelled_rows, tiny64, write_lists, write_one_hot  # noqa: F401 - fixture

pytestmark = [*APP_MARKS, pytest.mark.timeout(600)]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_app_trains_a_multilabel_run_evaluates_and_tries_it(qtbot, window, tiny64, tmp_path, runs_home):
    rows = labelled_rows(300)
    data = load(qtbot, window, write_lists(tmp_path / "train.tsv", rows, separator=","))
    assert data.task == "text-multilabel" and data.usable and data.resolved["label_separator"] == ","
    page = window.data_page
    # The preview shows each row's labels as read; the chart counts rows per label and labels per row.
    model = page.preview_model
    labels_col = model.columns.index("labels")
    first = model.index(0, labels_col).data()
    assert first == (" \u00b7 ".join(rows[0][1]) or "(no label)")
    per_label, per_row = page.label_spread.counts()
    assert dict(per_label) == {"music": sum("music" in r[1] for r in rows), "praise": sum("praise" in r[1] for r in rows)}
    assert dict(per_row)["no label"] == sum(not r[1] for r in rows)
    assert dict(per_row)["2 labels"] == sum(len(r[1]) == 2 for r in rows)
    assert page.label_source.isVisibleTo(page) and page.label_source.several.isChecked()

    use_tiny_model(qtbot, window, tiny64, epochs=4.0, lr=3e-3, max_length=32, refit=False)
    window.go_to("train")
    with qtbot.waitSignal(window.controller.started, timeout=5000) as started:
        window.train_page.start_button.click()
    run = Path(started.args[0])
    with qtbot.waitSignal(window.controller.finished, timeout=400000):
        pass
    # The live validation plot draws the task's two F1s.
    curves = {c.name() for c in window.train_page.metric_curves.values()}
    assert curves == {"Micro F1", "Macro F1"}

    report = json.loads((run / "report.json").read_text())
    preds = _lines(run / "predictions.jsonl")
    meta = json.loads((run / "model" / "workbench.json").read_text())
    window.go_to("evaluate")
    evaluate = window.evaluate_page
    qtbot.waitUntil(lambda: evaluate.view is not None and evaluate.run is not None, timeout=60000)
    from workbench.app.views.multilabel import MultiLabelView

    view = evaluate.view
    assert isinstance(view, MultiLabelView)
    assert view.tiles["micro_f1"].value.text() == f"{report['metrics']['micro_f1']:.3f}"
    assert view.extra_tiles["hamming_loss"].value.text() == f"{report['metrics']['hamming_loss']:.3f}"

    # The per-label table: every label with its threshold and where it came from.
    table = view.per_label.model()
    shown = {table.index(r, 0).data(): (table.index(r, 5).data(), table.index(r, 6).data())
             for r in range(table.rowCount())}
    assert shown == {r["label"]: (f"{r['threshold']:.3f}", "tuned" if r["tuned"] else "0.5 (default)")
                     for r in report["per_label"]}
    assert set(shown) == set(meta["thresholds"])

    # Worst first; a click on a label's "missed" count lists exactly those examples.
    listing = view.model
    assert listing.rowCount() == len(preds) == report["n"]
    wrong = [p for p in preds if not p["correct"]]
    assert bool(wrong) == (listing.index(0, listing.EXACT).data() == "no")
    label, kind = next(((r["label"], k) for k in ("fn", "fp", "tp") for r in report["per_label"] if r[k]))
    view.counts.choose(label, kind)
    expected = sorted(p["row"] for p in preds if {"fn": label in p["labels"] and label not in p["predicted"],
                                                   "fp": label not in p["labels"] and label in p["predicted"],
                                                   "tp": label in p["labels"] and label in p["predicted"]}[kind])
    assert sorted(int(listing.index(r, 0).data()) for r in range(listing.rowCount())) == expected
    assert view.count.text() == f"{len(expected)} of {len(preds)} examples" and view.show_all.isVisibleTo(view)
    qtbot.mouseClick(view.show_all, Qt.MouseButton.LeftButton)
    assert listing.rowCount() == len(preds)
    qtbot.mouseClick(view.errors_only, Qt.MouseButton.LeftButton)
    assert listing.rowCount() == len(wrong)

    # Try it: every label's score against its threshold; the decided labels are the Predictor's.
    from workbench.core.predict.predictor import Predictor

    text = "music music great superb"
    expected_answer = Predictor(run / "model").predict([text])[0]
    view.try_it.input.setText(text)
    with qtbot.waitSignal(view.try_it.predicted, timeout=60000) as blocker:
        qtbot.mouseClick(view.try_it.button, Qt.MouseButton.LeftButton)
    answer = blocker.args[0]
    assert answer["labels"] == expected_answer["labels"]
    assert answer["scores"] == pytest.approx(expected_answer["scores"], abs=1e-5)
    bars = view.try_it.bars
    assert {name: threshold for name, _, threshold, _ in bars.rows} == pytest.approx(meta["thresholds"])
    assert sorted(bars.decided_labels()) == sorted(expected_answer["labels"])
    assert [s for _, s, _, _ in bars.rows] == sorted((s for _, s, _, _ in bars.rows), reverse=True)
    assert ("no label" in bars.decided.text()) == (not expected_answer["labels"])


def test_one_hot_columns_are_chosen_on_the_data_page(qtbot, window, tmp_path):
    """A file of 0/1 columns reads as one label per row until the columns are ticked; then the
    preview gains the labels they add up to and the run's settings carry them."""
    rows = labelled_rows(60, seed=3)
    path = write_one_hot(tmp_path / "flags.csv", rows)
    data = load(qtbot, window, path)
    assert data.task == "text-classification"
    box = window.data_page.label_source
    assert box.isVisibleTo(window.data_page) and not box.several.isChecked() and not box.apply.isVisibleTo(box)
    box.several.setChecked(True)
    box.kind.setCurrentIndex(box.kind.findData("one-hot"))
    box.text.setCurrentText("review")
    for i in range(box.one_hot.count()):
        item = box.one_hot.item(i)
        item.setCheckState(Qt.CheckState.Checked if item.text() in ("music", "praise") else Qt.CheckState.Unchecked)
    qtbot.mouseClick(box.apply, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.data_page._task is not None and window.data_page._task.done(), timeout=30000)
    data = window.state.data
    assert data.task == "text-multilabel" and data.usable, data.problem
    assert data.resolved["label_columns"] == ["music", "praise"]
    d = window.state.config.data
    assert d.label_columns == ["music", "praise"] and d.text_column == "review" and d.label_column is None
    model = window.data_page.preview_model
    read = model.columns.index("labels as read")
    assert read == model.columns.index("review") + 1
    assert [model.index(r, read).data() for r in range(3)] == [" \u00b7 ".join(x[1]) or "(no label)" for x in rows[:3]]
    assert box.several.isChecked() and box.kind.currentData() == "one-hot"
    # A form that cannot be right says why instead of re-reading.
    box.text.setCurrentText("music")
    qtbot.mouseClick(box.apply, Qt.MouseButton.LeftButton)
    assert "cannot also be" in box.note.text()


def test_predictions_list_sorts_filters_and_searches():
    from workbench.app.views.multilabel import LabelPredictionsModel, LabelRows

    table = pa.Table.from_pylist([
        {"row": 2, "text": "all right", "labels": ["a"], "predicted": ["a"], "scores": {"a": .9, "b": .1}, "correct": True},
        {"row": 3, "text": "one missed", "labels": ["a", "b"], "predicted": ["a"], "scores": {"a": .8, "b": .4},
         "correct": False},
        {"row": 4, "text": "both wrong", "labels": ["b"], "predicted": ["a"], "scores": {"a": .7, "b": .2},
         "correct": False},
        {"row": 5, "text": "empty set", "labels": [], "predicted": [], "scores": {"a": .1, "b": .3}, "correct": True},
    ])
    rows = LabelRows.from_table(table, ["a", "b"])
    assert rows.scores.tolist() == [[.9, .1], [.8, .4], [.7, .2], [.1, .3]]
    model = LabelPredictionsModel()
    model.set_rows(rows)
    lines = lambda: [int(model.index(r, 0).data()) for r in range(model.rowCount())]  # noqa: E731
    assert lines() == [4, 3, 5, 2]  # two wrong decisions, then one, then by distance from the truth
    assert [model.index(0, c).data() for c in range(7)] == ["4", "both wrong", "b", "a", "b", "a", "no"]
    assert model.index(2, model.GOLD).data() == "\u2014"  # line 5: no label
    model.set_cell("b", "fn")
    assert lines() == [4, 3]
    model.set_cell(None)
    model.set_errors_only(True)
    assert lines() == [4, 3]
    model.set_errors_only(False)
    model.set_query("EMPTY")
    assert lines() == [5]
    model.set_query("")
    model.sort(model.LINE, Qt.SortOrder.AscendingOrder)
    assert lines() == [2, 3, 4, 5]
    model.sort(model.MISSED, Qt.SortOrder.DescendingOrder)
    assert lines()[:2] in ([3, 4], [4, 3])
    assert np.array_equal(rows.exact, [True, False, False, True])
