"""Evaluate, Export and Runs pages on a run the engine really trained (tiny BERT, offline, offscreen)."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before Qt is imported

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")
from conftest import sentiment_rows, write_tsv  # noqa: E402
from PySide6.QtCore import QPoint, Qt  # noqa: E402

from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from workbench.core.run.pipeline import run_training  # noqa: E402

# Qt warnings fail a test, except the offscreen platform's note that it has no window manager.
pytestmark = [
    pytest.mark.qt_log_level_fail("WARNING"),
    pytest.mark.qt_log_ignore("propagateSizeHints"),
    pytest.mark.timeout(300),
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_model_dir) -> Path:
    """One real run, shared by the tests here. One label in ten is flipped (as many of each class), so
    the held-out split holds mistakes for the confusion matrix and the errors-only filter to find."""
    folder = tmp_path_factory.mktemp("evaluate")
    flip = {"pos": "neg", "neg": "pos"}
    rows = [(t, flip[l] if i % 20 in (8, 9) else l) for i, (t, l) in enumerate(sentiment_rows(240))]
    data = write_tsv(folder / "reviews.tsv", rows)
    cfg = RunConfig(
        data=DataConfig(train=str(data)),
        model=ModelConfig(name=str(tiny_model_dir)),
        train=TrainConfig(epochs=4, batch_size=16, lr=3e-3, max_length=32, seed=1),
        run_dir=str(folder / "runs" / "run-1"),
    )
    result = run_training(cfg)
    return Path(result.run_dir)


def _predictions(run_dir: Path) -> list[dict]:
    return [json.loads(l) for l in (run_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]


def _shown(model) -> list[dict]:
    return [model.row_record(r) for r in range(model.rowCount())]


@pytest.fixture()
def evaluate_page(qtbot, trained_run):
    from workbench.app.pages.evaluate import EvaluatePage

    page = EvaluatePage()
    qtbot.addWidget(page)
    page.resize(1200, 800)
    page.show()
    with qtbot.waitSignal(page.loaded, timeout=30000):
        page.show_run(str(trained_run))
    yield page
    page.shutdown()


def test_report_table_and_scores(evaluate_page, trained_run):
    report = json.loads((trained_run / "report.json").read_text())
    view = evaluate_page.view
    table = view.per_class.model()
    assert table.rowCount() == len(report["per_class"]) == 2
    got = {table.index(r, 0).data(): [table.index(r, c).data() for c in range(1, 5)] for r in range(table.rowCount())}
    for row in report["per_class"]:
        assert got[row["label"]] == [f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"])]
    assert view.tiles["accuracy"].value.text() == f"{report['metrics']['accuracy']:.3f}"
    assert view.tiles["macro_f1"].value.text() == f"{report['metrics']['macro_f1']:.3f}"
    # Sorting by support, descending, is numeric and reorders the view.
    view.per_class.sortByColumn(4, Qt.SortOrder.DescendingOrder)
    supports = [int(table.index(r, 4).data()) for r in range(table.rowCount())]
    assert supports == sorted(supports, reverse=True)


def test_confusion_cell_click_filters_predictions(qtbot, evaluate_page, trained_run):
    preds = _predictions(trained_run)
    report = json.loads((trained_run / "report.json").read_text())
    view = evaluate_page.view
    model = view.predictions_model
    assert model.rowCount() == len(preds) == report["n"]
    errors = [p for p in preds if p["gold"] != p["predicted"]]
    assert errors, "the flipped labels should leave mistakes in the held-out split"

    counts = Counter((p["gold"], p["predicted"]) for p in preds)
    labels = view.confusion.matrix.labels
    assert labels == report["labels"]
    gold, predicted = errors[0]["gold"], errors[0]["predicted"]
    r, c = labels.index(gold), labels.index(predicted)
    assert report["confusion_matrix"][r][c] == counts[(gold, predicted)]
    cell = view.confusion.matrix.index(r, c)
    assert cell.data() == str(counts[(gold, predicted)])

    # A real mouse click on the cell.
    center = view.confusion.visualRect(cell).center()
    qtbot.mouseClick(view.confusion.viewport(), Qt.MouseButton.LeftButton, pos=center)
    shown = _shown(model)
    assert len(shown) == counts[(gold, predicted)]
    assert {(s["gold"], s["predicted"]) for s in shown} == {(gold, predicted)}
    expected_rows = sorted(p["row"] for p in preds if (p["gold"], p["predicted"]) == (gold, predicted))
    assert sorted(s["row"] for s in shown) == expected_rows
    assert view.show_all.isVisibleTo(view)
    assert view.count.text() == f"{len(shown)} of {len(preds)} examples"

    # The same cell again: everything is back.
    qtbot.mouseClick(view.confusion.viewport(), Qt.MouseButton.LeftButton, pos=center)
    assert model.rowCount() == len(preds)
    assert not view.show_all.isVisibleTo(view)

    # The fullest correct cell, then "Show all".
    best = max(labels, key=lambda l: counts[(l, l)])
    assert counts[(best, best)] > 0
    view.confusion.choose(best, best)
    assert {(s["gold"], s["predicted"]) for s in _shown(model)} == {(best, best)}
    assert model.rowCount() == counts[(best, best)]
    qtbot.mouseClick(view.show_all, Qt.MouseButton.LeftButton)
    assert model.rowCount() == len(preds)


def test_errors_only_and_confidence_sort(qtbot, evaluate_page, trained_run):
    preds = _predictions(trained_run)
    view = evaluate_page.view
    model = view.predictions_model
    view.errors_only.setChecked(True)
    shown = _shown(model)
    assert sorted(s["row"] for s in shown) == sorted(p["row"] for p in preds if p["gold"] != p["predicted"])
    view.errors_only.setChecked(False)
    assert model.rowCount() == len(preds)

    # Clicking the Confidence header sorts by it; a second click reverses. A selected example
    # stays selected wherever the sort moves it.
    view.predictions.selectRow(3)
    chosen = model.row_record(3)
    header = view.predictions.horizontalHeader()
    x = header.sectionViewportPosition(model.CONFIDENCE) + header.sectionSize(model.CONFIDENCE) // 2
    qtbot.mouseClick(header.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(x, header.height() // 2))
    first = [s["confidence"] for s in _shown(model)]
    assert first == sorted(first) or first == sorted(first, reverse=True)
    qtbot.mouseClick(header.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(x, header.height() // 2))
    second = [s["confidence"] for s in _shown(model)]
    assert [model.row_record(i.row()) for i in view.predictions.selectionModel().selectedRows()] == [chosen]
    assert second == first[::-1] or sorted(second) == sorted(first) and second != first
    assert sorted(second) == sorted(p["confidence"] for p in preds)

    # The filters combine: errors only, sorted by confidence.
    view.errors_only.setChecked(True)
    conf = [s["confidence"] for s in _shown(model)]
    assert len(conf) == sum(p["gold"] != p["predicted"] for p in preds)
    assert conf == sorted(conf) or conf == sorted(conf, reverse=True)


def test_try_it_agrees_with_predictions(qtbot, evaluate_page, trained_run):
    example = max(_predictions(trained_run), key=lambda p: p["confidence"])
    box = evaluate_page.view.try_it
    assert box.button.isEnabled()
    box.input.setText(example["text"])
    with qtbot.waitSignal(box.predicted, timeout=60000) as blocker:
        qtbot.mouseClick(box.button, Qt.MouseButton.LeftButton)
        assert not box.button.isEnabled()  # the GUI went on while the model loaded in the background
    scores = blocker.args[0]
    assert box.top_label() == example["predicted"] == scores[0][0]
    assert dict(scores)[example["predicted"]] == pytest.approx(example["confidence"], abs=1e-3)
    assert abs(sum(s for _, s in scores) - 1) < 1e-4


def test_unfinished_and_foreign_folders(qtbot, tmp_path, trained_run):
    from workbench.app.pages.evaluate import EvaluatePage, ReportTextView

    failed = tmp_path / "failed-run"
    failed.mkdir()
    for name in ("config.json", "metrics.jsonl"):
        shutil.copy(trained_run / name, failed / name)
    (failed / "status.json").write_text(json.dumps({"state": "failed", "message": "RuntimeError: out of memory", "pid": 1}))
    (failed / "error.txt").write_text("Traceback (most recent call last):\nRuntimeError: out of memory\n")
    page = EvaluatePage()
    qtbot.addWidget(page)
    with qtbot.waitSignal(page.loaded, timeout=30000):
        page.show_run(str(failed))
    assert isinstance(page.view, ReportTextView)
    assert "failed: RuntimeError: out of memory" in page.view.note.text()
    assert "Traceback" in page.view.text.toPlainText()

    with qtbot.waitSignal(page.load_failed, timeout=30000) as blocker:
        page.show_run(str(tmp_path))  # a folder that is no run
    assert "not a Workbench run folder" in blocker.args[0]
    assert page.view is None and "Could not open this run" in page.message.text()
    page.clear()
    assert page.message.text() == page.EMPTY
    page.shutdown()


def test_export_page_writes_a_bundle_pipeline_loads(qtbot, tmp_path, trained_run):
    from transformers import pipeline

    from workbench.app.pages.export import ExportPage

    page = ExportPage()
    qtbot.addWidget(page)
    assert page.message.text() == page.EMPTY and not page.body.isVisibleTo(page)
    page.show_run(str(trained_run))
    assert page.body.isVisibleTo(page)
    assert "Text classification model" in page.card.toPlainText()

    # A folder with the user's own files in it is never replaced.
    precious = tmp_path / "documents"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    with qtbot.waitSignal(page.export_failed, timeout=5000):
        assert page.export_to(precious) is False
    assert (precious / "thesis.txt").read_text() == "years of work"

    target = tmp_path / "exported" / "sentiment"
    with qtbot.waitSignal(page.exported, timeout=30000) as blocker:
        assert page.export_to(target)
    assert Path(blocker.args[0]) == target.resolve()
    assert page.open_button.isVisibleTo(page) and str(target) in page.status.text()
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in (trained_run / "model").iterdir())

    example = _predictions(trained_run)[0]
    clf = pipeline("text-classification", model=str(target))
    assert clf(example["text"], truncation=True)[0]["label"] == example["predicted"]

    # Writing over an earlier export needs the user's yes.
    with qtbot.waitSignal(page.export_failed, timeout=5000):
        assert page.export_to(target) is False
    with qtbot.waitSignal(page.exported, timeout=30000):
        assert page.export_to(target, replace=True)
    page.shutdown()

    # ... and only when it holds nothing but the export; the run's own folder and the data's never.
    (target / "notes.txt").write_text("mine")
    for refused in (target, trained_run, trained_run / "model", Path(json.loads(
            (trained_run / "config.json").read_text())["data"]["train"]).parent):
        with qtbot.waitSignal(page.export_failed, timeout=5000) as failed:
            assert page.export_to(refused, replace=True) is False
        assert str(refused) in failed.args[0]
    assert (target / "notes.txt").read_text() == "mine"


def test_export_page_without_a_model(qtbot, tmp_path, trained_run):
    from workbench.app.pages.export import ExportPage

    cancelled = tmp_path / "cancelled"
    cancelled.mkdir()
    shutil.copy(trained_run / "config.json", cancelled / "config.json")
    (cancelled / "status.json").write_text(json.dumps({"state": "cancelled", "pid": 1}))
    page = ExportPage()
    qtbot.addWidget(page)
    page.show_run(str(cancelled))
    assert "no model to export" in page.message.text() and "cancelled" in page.message.text()
    assert not page.body.isVisibleTo(page)


def test_runs_page_lists_opens_and_compares(qtbot, tmp_path, trained_run):
    from workbench.app.pages.runs import RunsPage

    home = tmp_path / "runs"
    home.mkdir()
    first = home / "20260101-120000-a"
    second = home / "20260102-120000-b"
    shutil.copytree(trained_run, first)
    shutil.copytree(trained_run, second)
    status = json.loads((second / "status.json").read_text())
    status["started"] = "2099-01-01T00:00:00"  # the newest
    (second / "status.json").write_text(json.dumps(status))

    page = RunsPage(home=home)
    qtbot.addWidget(page)
    page.resize(1000, 700)
    page.show()
    qtbot.waitExposed(page)
    assert page.proxy.rowCount() == 2
    top = page.proxy.index(0, 0)
    assert Path(top.data(Qt.ItemDataRole.UserRole + 1)).name == second.name
    report = json.loads((trained_run / "report.json").read_text())
    score = page.model.COLUMNS.index("Score")  # the metric the run was selected by: macro F1 here
    assert page.proxy.index(0, score).data() == f"{report['metrics']['macro_f1']:.3f}"
    assert page.proxy.index(0, page.model.COLUMNS.index("Best by")).data() == "Macro F1"
    assert page.proxy.index(0, page.model.COLUMNS.index("State")).data() == "finished"

    # Double-click opens.
    rect = page.table.visualRect(page.proxy.index(1, 1))
    with qtbot.waitSignal(page.run_opened, timeout=5000) as blocker:
        # A press first, as a real double-click has: item views ignore a double-click on an item
        # they did not see pressed.
        qtbot.mouseClick(page.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
        qtbot.mouseDClick(page.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert Path(blocker.args[0]).name == first.name

    # Two selected: Compare overlays both runs' loss and validation curves.
    page.table.selectAll()
    assert page.compare_button.isEnabled() and not page.open_button.isEnabled()
    qtbot.mouseClick(page.compare_button, Qt.MouseButton.LeftButton)
    assert sorted(Path(p).name for p in page.curves.shown) == sorted([first.name, second.name])
    _, loss_plot, metric_plot = page.curves._plots
    named = [item for item in loss_plot.listDataItems() if item.name()]
    assert len(named) == 2  # one smoothed curve per run (the raw ones are unnamed)
    steps = [json.loads(l) for l in (trained_run / "metrics.jsonl").read_text().splitlines()]
    n_steps = sum(1 for e in steps if e["event"] == "StepMetrics")
    assert all(len(item.getData()[0]) == n_steps for item in named)
    assert len([i for i in metric_plot.listDataItems() if i.name()]) == 2

    # Delete (the confirmation is the button's; delete_runs is what it calls).
    deleted = page.delete_runs([str(first.resolve())])
    assert deleted and not first.exists() and second.exists()
    assert page.proxy.rowCount() == 1


def test_sentence_pair_predictions_show_both_texts(qtbot):
    import pyarrow as pa

    from workbench.app.evaluation.predictions_model import PAIR_SEPARATOR, PredictionsModel

    model = PredictionsModel()
    model.set_table(pa.table({
        "row": [2, 3], "text": ["a man sleeps", "a dog runs"], "text_pair": ["nobody sleeps", "an animal moves"],
        "gold": ["contradiction", "entailment"], "predicted": ["entailment", "entailment"], "confidence": [0.6, 0.9],
    }))
    assert model._cols.has_pair
    assert model.row_record(0)["text"] == f"a man sleeps{PAIR_SEPARATOR}nobody sleeps"
    model.set_query("animal")  # the second text is searched too
    assert [r["row"] for r in map(model.row_record, range(model.rowCount()))] == [3]


def test_try_it_explains_with_token_shading(qtbot, evaluate_page, trained_run):
    example = max(_predictions(trained_run), key=lambda p: p["confidence"])
    box = evaluate_page.view.try_it
    box.input.setText(example["text"])
    qtbot.mouseClick(box.explain_button, Qt.MouseButton.LeftButton)
    assert not box.explain_button.isEnabled()  # computed off the GUI thread
    qtbot.waitUntil(box.explanation.isVisible, timeout=60000)
    shown = box.explanation.text()
    assert f"<b>{example['predicted']}</b>" in shown and "background-color" in shown
    assert evaluate_page.view.reliability.calibration["ece"] >= 0  # the run recorded its calibration


def test_a_listed_prediction_is_explained_in_try_it(qtbot, evaluate_page, trained_run):
    view = evaluate_page.view
    model = view.predictions_model
    view.errors_only.setChecked(False)
    record = model.row_record(2)
    view.explain_button.click()  # nothing selected yet: says so
    assert "Select an example" in view.try_it.status.text()
    view.predictions.setCurrentIndex(model.index(2, 0))
    view.explain_button.click()
    box = view.try_it
    assert box.input.text() == record["text"]
    qtbot.waitUntil(box.explanation.isVisible, timeout=60000)
    shown = box.explanation.text()
    assert f"Line {record['row']}" in shown and f"predicted <b>{record['predicted']}</b>" in shown
    assert f"Why <b>{record['predicted']}</b>" in shown and "background-color" in shown
    # A sentence typed by hand afterwards is explained without the example's caption.
    box.input.setText("a different sentence")
    box.explain()
    qtbot.waitUntil(lambda: box.explain_button.isEnabled() and "Line" not in box.explanation.text(), timeout=60000)
    assert box.button.isEnabled()  # Predict stays usable after an explanation
