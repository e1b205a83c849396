"""The Evaluate page on real tagging, regression and sentence-pair runs (tiny BERT, offline, offscreen)."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before Qt is imported

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")
from conftest import write_tsv  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402
from test_pairs_and_regression import pair_rows  # noqa: E402
from text_tasks_helpers import ner_sentences, tiny_text_model, write_conll  # noqa: E402,F401 (fixture)

from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from workbench.core.run.pipeline import run_training  # noqa: E402

pytestmark = [
    pytest.mark.qt_log_level_fail("WARNING"),
    pytest.mark.qt_log_ignore("propagateSizeHints", "This plugin does not support"),
    pytest.mark.timeout(600),
]


def _run(folder: Path, data: Path, model: Path, name: str, **train) -> Path:
    opts = dict(epochs=3, batch_size=16, lr=3e-3, max_length=48, seed=1)
    opts.update(train)
    cfg = RunConfig(data=DataConfig(train=str(data)), model=ModelConfig(name=str(model)), train=TrainConfig(**opts),
                    run_dir=str(folder / "runs" / name))
    return Path(run_training(cfg).run_dir)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_text_model):
    folder = tmp_path_factory.mktemp("text-task-runs")
    # One sentence in five has its place and company tags swapped: the model learns the rule, so
    # those held-out sentences come out wrong and the rest right, and the view has errors to filter.
    swap = {"B-LOC": "B-ORG", "B-ORG": "B-LOC"}
    sentences = [[(w, swap.get(t, t) if i % 5 == 0 else t) for w, t in s] for i, s in enumerate(ner_sentences(200, seed=5))]
    ner = _run(folder, write_conll(folder / "ner.conll", sentences), tiny_text_model, "ner", epochs=4)
    rows = pair_rows(200, seed=6)
    scores = _run(folder, write_tsv(folder / "scores.tsv", [(a, b, s) for a, b, _, s in rows],
                                    header=("sentence1", "sentence2", "score")), tiny_text_model, "scores")
    pairs = _run(folder, write_tsv(folder / "pairs.tsv", [r[:3] for r in rows],
                                   header=("sentence1", "sentence2", "label")), tiny_text_model, "pairs", max_steps=4)
    return {"ner": ner, "scores": scores, "pairs": pairs}


def _preds(run_dir: Path) -> list[dict]:
    return [json.loads(l) for l in (run_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.fixture()
def page(qtbot):
    from workbench.app.pages.evaluate import EvaluatePage

    p = EvaluatePage()
    qtbot.addWidget(p)
    p.resize(1300, 900)
    p.show()
    yield p
    p.shutdown()


def _open(qtbot, page, run_dir: Path):
    with qtbot.waitSignal(page.loaded, timeout=30000):
        page.show_run(str(run_dir))
    return page.view


def test_tagging_view(qtbot, page, runs):
    from workbench.app.views.tagging import ERROR_COLOUR, TaggingView

    run = runs["ner"]
    report = json.loads((run / "report.json").read_text())
    preds = _preds(run)
    view = _open(qtbot, page, run)
    assert isinstance(view, TaggingView)
    assert view.tiles["f1"].value.text() == f"{report['metrics']['f1']:.3f}"
    assert view.per_class_box.title() == "Per entity type"
    table = view.per_class.model()
    assert [table.index(r, 0).data() for r in range(table.rowCount())] == ["LOC", "ORG", "PER"]
    assert view.confusion.matrix.labels == report["confusion_labels"]

    # Every sentence is listed; "errors only" keeps exactly those with a wrong tag.
    model = view.model
    assert model.rowCount() == len(preds) == report["n"]
    wrong = [p for p in preds if p["gold"] != p["predicted"]]
    assert 0 < len(wrong) < len(preds), "the short run should get some sentences right and some wrong"
    qtbot.mouseClick(view.errors_only, Qt.MouseButton.LeftButton)
    assert model.rowCount() == len(wrong)
    assert view.count.text() == f"{len(wrong)} of {len(preds)} sentences"
    shown = [model.index(r, 1).data() for r in range(model.rowCount())]
    assert shown == [" ".join(p["tokens"]) for p in wrong]

    # The selected sentence's detail: both renderings, the disagreement marked.
    view.table.selectRow(0)
    first = wrong[0]
    detail = view.detail.toHtml()
    for token in first["tokens"]:
        assert token in detail
    assert "Gold" in detail and "Predicted" in detail and ERROR_COLOUR.lower() in detail.lower()
    n_wrong = sum(g != p for g, p in zip(first["gold"], first["predicted"]))
    assert f"{n_wrong} of {len(first['tokens'])} tokens wrong" in view.detail.toPlainText()
    k = next(i for i, (g, p) in enumerate(zip(first["gold"], first["predicted"])) if g != p)

    # A confusion cell lists the sentences holding such a token.
    g, p = first["gold"][k], first["predicted"][k]
    view.confusion.choose(g, p)
    expected = [s for s in wrong if any(a == g and b == p for a, b in zip(s["gold"], s["predicted"]))]
    assert model.rowCount() == len(expected) and view.show_all.isVisibleTo(view)
    qtbot.mouseClick(view.show_all, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(view.errors_only, Qt.MouseButton.LeftButton)
    assert model.rowCount() == len(preds)
    view.search.setText("berlin")
    assert model.rowCount() == sum("berlin" in p["tokens"] for p in preds) > 0

    # Try it: the engine's tagger on typed text, rendered with entity spans.
    from workbench.core.tasks.token_classification import Tagger

    expected_tags = [t["tag"] for t in Tagger(run / "model").tag("mary smith lives in berlin")]
    view.try_it.input.setText("mary smith lives in berlin")
    with qtbot.waitSignal(view.try_it.tagged, timeout=60000) as blocker:
        qtbot.mouseClick(view.try_it.button, Qt.MouseButton.LeftButton)
    assert [t["tag"] for t in blocker.args[0]] == expected_tags
    assert [t["word"] for t in blocker.args[0]] == ["mary", "smith", "lives", "in", "berlin"]
    assert "berlin" in view.try_it.result.toPlainText()


def test_regression_view(qtbot, page, runs):
    from workbench.app.views.regression import RegressionView, predict_value

    run = runs["scores"]
    report = json.loads((run / "report.json").read_text())
    preds = _preds(run)
    view = _open(qtbot, page, run)
    assert isinstance(view, RegressionView)
    assert view.tiles["pearson"].value.text() == f"{report['metrics']['pearson']:.4g}"
    x, y = view.scatter.points()
    assert np.allclose(np.sort(x), np.sort([p["gold"] for p in preds]))
    assert np.allclose(np.sort(y), np.sort([p["predicted"] for p in preds]))
    # The table starts with the largest error; both texts of each pair are shown.
    top = max(preds, key=lambda p: abs(p["predicted"] - p["gold"]))
    assert view.model.index(0, 0).data() == str(top["row"])
    assert top["text"] in view.model.index(0, 1).data() and top["text_pair"] in view.model.index(0, 1).data()
    view.table.sortByColumn(2, Qt.SortOrder.AscendingOrder)
    golds = [float(view.model.index(r, 2).data()) for r in range(view.model.rowCount())]
    assert golds == sorted(golds)

    assert view.try_it.input_pair.isVisibleTo(view)
    view.try_it.input.setText(preds[0]["text"])
    view.try_it.input_pair.setText(preds[0]["text_pair"])
    with qtbot.waitSignal(view.try_it.predicted, timeout=60000) as blocker:
        qtbot.mouseClick(view.try_it.button, Qt.MouseButton.LeftButton)
    assert blocker.args[0] == pytest.approx(preds[0]["predicted"], abs=1e-3)
    assert blocker.args[0] == pytest.approx(predict_value(run / "model", preds[0]["text"], preds[0]["text_pair"]))


def test_pair_run_shows_both_texts(qtbot, page, runs):
    from workbench.app.evaluation.classification import ClassificationView
    from workbench.app.evaluation.predictions_model import PAIR_SEPARATOR

    run = runs["pairs"]
    preds = _preds(run)
    view = _open(qtbot, page, run)
    assert isinstance(view, ClassificationView)
    shown = {p["text"] + PAIR_SEPARATOR + p["text_pair"] for p in preds}
    assert view.predictions_model.row_record(0)["text"] in shown
    assert view.try_it.input_pair.isVisibleTo(view)


def test_sentence_rendering_marks_spans_tags_and_disagreements():
    from workbench.app.views.tagging import ERROR_COLOUR, SPAN_COLOURS, sentence_html, spans_html

    tokens = ["Mary", "Smith", "visited", "Paris"]
    types = ["LOC", "PER"]
    gold = spans_html(tokens, ["B-PER", "I-PER", "O", "B-LOC"], types)
    # One highlighted span per entity, on its type's colour, with the type after it.
    assert gold.count("<sup>") == 2 and f"background-color:{SPAN_COLOURS[1]}" in gold
    assert gold.index("Mary") < gold.index("Smith") < gold.index("PER") < gold.index("visited")
    assert ERROR_COLOUR not in gold
    pred = spans_html(tokens, ["B-PER", "I-PER", "O", "O"], types, wrong=[False, False, False, True])
    assert pred.count("<sup>") == 1 and f'<u style="color:{ERROR_COLOUR};"><b>Paris</b></u>' in pred
    # Plain tags (POS): each token carries its tag, wrong ones in red.
    pos = spans_html(["the", "dog"], ["DET", "VERB"], [], wrong=[False, True])
    assert "the<sub>DET</sub>" in pos and f'<sub style="color:{ERROR_COLOUR};">VERB</sub>' in pos
    detail = sentence_html(tokens, ["B-PER", "I-PER", "O", "B-LOC"], ["B-PER", "I-PER", "O", "O"], [0.9, 0.8, 0.99, 0.4],
                           types, row=7)
    assert "Line 7" in detail and "1 of 4 tokens wrong" in detail and "0.40" in detail
