"""Multi-label image analyses (image-multilabel): label issues rank the planted wrong label sets of a table
of image paths by file line, their corrected copy keeps the table's separator and paths (re-written when the
copy goes elsewhere), a saliency map per decided label (or the one asked for) with its score and threshold,
`workbench label-issues` and `workbench explain` on them, and the app's Try it and Suspicious labels."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from app_support import APP_MARKS, aloop, window  # noqa: F401 - fixtures
from test_multilabel_images import SIDE, _config, _prepare, write_set

from workbench.cli.main import main
from workbench.core.analysis.explain import explain_image, image_saliencies, image_saliency
from workbench.core.analysis.label_issues import find_label_issues
from workbench.core.config import DataConfig
from workbench.core.corrections import read_corrections, write_corrected_copy
from workbench.core.errors import InputError
from workbench.core.tasks.table import CALIBRATION, EXPLANATIONS, LABEL_ISSUES, RUN_DIFF, TASKS

TASK = "image-multilabel"


def app_test(test):
    """The desktop-app tests' marks (Qt warnings fail the test)."""
    for mark in APP_MARKS:
        test = mark(test)
    return test


FLIPPED = (5, 12, 20, 33)  # file lines (the header is line 1) whose label set is replaced by its complement


def test_the_table_offers_the_analyses():
    assert {LABEL_ISSUES, CALIBRATION, EXPLANATIONS, RUN_DIFF} <= TASKS[TASK].analyses


def noisy_set(folder: Path, n: int = 48, separator: str = ";") -> tuple[Path, dict[int, list[str]]]:
    """A generated table (``write_set``) with its lists joined by ``separator`` and the label sets of
    ``FLIPPED`` complemented; the true sets of those lines."""
    table = write_set(folder, n, seed=4)
    lines = table.read_text().splitlines()
    truth = {}
    for line in FLIPPED:
        path, labels = lines[line - 1].split("\t")
        given = set(labels.split("|")) - {""}
        truth[line] = sorted(given)
        lines[line - 1] = path + "\t" + "|".join(x for x in ("red", "blue") if x not in given)
    table.write_text("\n".join(line.replace("|", separator) for line in lines) + "\n")
    return table, truth


@pytest.fixture(scope="module")
def ranked(tmp_path_factory):
    """find_label_issues on a noisy table of 48 generated images (small CNN features), shared below."""
    table, truth = noisy_set(tmp_path_factory.mktemp("issues") / "set")
    return find_label_issues(table, model="small-cnn", task=TASK, folds=4), table, truth


# ---- label issues -------------------------------------------------------------------------------


def test_find_label_issues_ranks_the_planted_image_label_sets_first(ranked):
    result, table, truth = ranked
    assert result.task == TASK and result.multilabel and result.separator == ";"
    assert result.labels == ["blue", "red"] and len(result.rows) == 48 and result.folds == 4
    top = result.ranked()[:len(FLIPPED)]
    assert sum(r.line in truth for r in top) >= 3  # chance: 4 x 4/48
    lines = table.read_text().splitlines()
    by_line = {r.line: r for r in result.rows}
    for line in truth:
        r = by_line[line]
        path, given = lines[line - 1].split("\t")
        assert r.text == str(table.parent / path)  # the row's own image, by its file line
        assert r.given_labels == sorted(set(given.split(";")) - {""}) and r.given == ";".join(r.given_labels)
        assert r.suggested == ";".join(r.suggested_labels or []) and 0 <= r.suggested_probability <= 1
    assert sum(by_line[line].suggested_labels == true_set for line, true_set in truth.items()) >= 3
    assert result.cv_accuracy > 0.8 and result.summary()["label_separator"] == ";"


def test_cli_label_issues_writes_a_corrected_table_with_its_separator_and_paths(ranked, tmp_path, capsys):
    _, original, truth = ranked
    folder = tmp_path / "set"
    folder.mkdir()
    os.symlink(original.parent / "img", folder / "img")  # the same images, a table of our own beside them
    table = folder / "labels.tsv"
    table.write_bytes(original.read_bytes())
    out, copy = tmp_path / "issues.tsv", folder / "labels-fixed.tsv"
    code = main(["label-issues", str(table), "--task", TASK, "--model", "small-cnn", "--folds", "4", "-o", str(out),
                 "--corrected", str(copy), "--fix", "relabel"])
    assert code == 0
    printed = capsys.readouterr().out.splitlines()
    summary = json.loads(printed[-1])
    assert summary["task"] == TASK and summary["label_separator"] == ";" and summary["corrected"] == str(copy)
    assert any(line.split()[:2] == ["line", "given"] for line in printed)  # file lines, not image numbers
    with open(out, encoding="utf-8") as f:
        flagged = {int(r["line"]): r for r in csv.DictReader(f, delimiter="\t")}
    assert set(truth) <= set(flagged) and all(flagged[line]["text"].endswith(".png") for line in flagged)
    before, after = table.read_text().splitlines(), copy.read_text().splitlines()
    assert len(before) == len(after)
    for i, (old, new) in enumerate(zip(before, after), 1):
        if i in flagged and flagged[i]["suggested"] != flagged[i]["given"]:
            # Relabelled as suggested: the path cell as it was, the set joined by the table's ";".
            assert new == old.split("\t")[0] + "\t" + flagged[i]["suggested"]
        else:
            assert new == old
    assert sum(after[line - 1].split("\t")[1] == ";".join(true_set) for line, true_set in truth.items()) >= 3
    assert read_corrections(copy)["task"] == TASK and read_corrections(copy)["original"] == str(table.resolve())
    # The copy trains as the original does: the same images, the corrected sets.
    _, data = _prepare(DataConfig(train=str(copy), val_fraction=0, test_fraction=0), tmp_path / "read")
    rows = data.splits["train"].to_dict()
    sets = dict(zip(rows["row"], rows["labels"]))
    assert all(sorted(sets[line]) == truth[line] for line in truth)
    assert rows["path"][0] == str(folder / "img" / "4_0.png") and data.resolved["label_separator"] == ";"


def test_a_corrected_copy_elsewhere_points_at_the_same_images(ranked, tmp_path):
    result, table, truth = ranked
    line = next(iter(truth))
    (tmp_path / "elsewhere" / "deeper").mkdir(parents=True)
    copy = write_corrected_copy(result, {line: "red", FLIPPED[1]: None}, tmp_path / "elsewhere" / "deeper" / "c.tsv")
    text = copy.read_text()
    assert "\t" in text and ";" not in text.splitlines()[line - 1]
    cells = [row.split("\t")[0] for row in text.splitlines()[1:]]
    assert all(not Path(c).is_absolute() and c.startswith("../") for c in cells)  # relative, from the copy's folder
    _, data = _prepare(DataConfig(train=str(copy), val_fraction=0, test_fraction=0), tmp_path / "read")
    got = data.splits["train"].to_dict()
    by_path = {Path(p).resolve(): labels for p, labels in zip(got["path"], got["labels"])}
    originals = {r.line: Path(r.text).resolve() for r in result.rows}
    assert len(by_path) == 47 and originals[FLIPPED[1]] not in by_path  # one left out
    assert by_path[originals[line]] == ["red"]
    assert set(by_path) == set(originals.values()) - {originals[FLIPPED[1]]}


# ---- explanations ---------------------------------------------------------------------------------


def hand_made_export(folder: Path, task: str = TASK, thresholds: dict | None = None) -> tuple[Path, list[str]]:
    """A Workbench small-CNN export with a random head (three labels), its workbench.json naming ``task``."""
    import torch

    from workbench.core.tasks.image.models import ImageClassifier, save_image_classifier

    torch.manual_seed(0)
    names = ["a", "b", "c"]
    model = ImageClassifier("small-cnn", len(names))
    with torch.no_grad():  # a random head is near zero: a sharper one spreads the scores
        model.head[1].weight.normal_(0, 2.0)
    folder.mkdir(parents=True)
    save_image_classifier(model, folder, names, {"image_size": SIDE, "resize_to": 27, "mean": [0.5] * 3,
                                                 "std": [0.5] * 3})
    meta = {"task": task, "labels": names, **({"thresholds": thresholds} if thresholds is not None else {})}
    (folder / "workbench.json").write_text(json.dumps(meta))
    return folder, names


def _scores(folder: Path, image: Path) -> tuple[np.ndarray, np.ndarray, object]:
    import torch

    from workbench.core.tasks.image.models import load_image_classifier, preprocess_images

    model, config = load_image_classifier(folder)
    pixels = preprocess_images([str(image)], config["preprocessing"])
    with torch.no_grad():
        logits = model(torch.as_tensor(pixels))[0].numpy()
    return logits, pixels, model


def test_a_saliency_per_decided_label_with_its_score_and_threshold(tmp_path):
    image = write_set(tmp_path / "set", 3).parent / "img" / "0_1.png"
    folder, names = hand_made_export(tmp_path / "probe")
    logits, pixels, model = _scores(folder, image)
    scores = 1 / (1 + np.exp(-logits.astype(np.float64)))
    # Thresholds that decide exactly "a" and "c", whatever the random model scores.
    thresholds = {"a": max(0.0, scores[0] - 0.01), "b": min(1.0, scores[1] + 0.01), "c": max(0.0, scores[2] - 0.01)}
    folder, _ = hand_made_export(tmp_path / "export", thresholds=thresholds)
    out = image_saliencies(str(folder), str(image))
    decided = sorted(["a", "c"], key=lambda n: -scores[names.index(n)])  # most confident first
    assert [x.label for x in out] == decided and all(x.decided for x in out)
    for x in out:
        j = names.index(x.label)
        assert x.target == j and x.score == pytest.approx(scores[j], abs=1e-5)
        assert x.threshold == pytest.approx(thresholds[x.label])
        direct, _ = image_saliency(model, pixels, j)  # the saliency of that label's own logit
        assert x.saliency.shape == (SIDE, SIDE) and np.allclose(x.saliency, direct, atol=1e-5)
        assert x.image.shape == (SIDE, SIDE, 3) and x.image.dtype == np.uint8
    assert not np.allclose(out[0].saliency, out[1].saliency)  # each label's own map

    asked = image_saliencies(str(folder), str(image), ["b"])
    assert [(x.label, x.decided) for x in asked] == [("b", False)]
    seen, saliency, label = explain_image(str(folder), str(image))
    assert label == decided[0] and np.allclose(saliency, out[0].saliency)
    assert explain_image(str(folder), str(image), "b")[2] == "b"
    with pytest.raises(InputError, match="unknown label 'green'"):
        image_saliencies(str(folder), str(image), ["green"])
    # None decided: the top label, not decided.
    high, _ = hand_made_export(tmp_path / "high", thresholds={n: 1.0 for n in names})
    assert [(x.label, x.decided) for x in image_saliencies(str(high), str(image))] == \
        [(names[int(np.argmax(logits))], False)]
    bad, _ = hand_made_export(tmp_path / "bad", thresholds={"a": "high"})
    with pytest.raises(InputError, match="threshold for 'a'"):
        image_saliencies(str(bad), str(image))


def test_a_single_label_image_export_explains_its_class_or_the_one_asked(tmp_path, capsys):
    image = write_set(tmp_path / "set", 3).parent / "img" / "0_2.png"
    folder, names = hand_made_export(tmp_path / "export", task="image-classification")
    logits, _, _ = _scores(folder, image)
    (x,) = image_saliencies(str(folder), str(image))
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert x.label == names[int(np.argmax(logits))] and x.score == pytest.approx(probs.max(), abs=1e-5)
    assert x.threshold is None and x.decided is None
    assert explain_image(str(folder), str(image))[2] == x.label
    assert [y.label for y in image_saliencies(str(folder), str(image), ["c", "a"])] == ["c", "a"]
    assert main(["explain", str(folder), str(image)]) == 0  # the CLI explains single-label images too
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith(f"{x.label}: probability") and "saliency peaks at row" in printed[0]
    assert json.loads(printed[-1])["explained"][0]["label"] == x.label


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small CNN trained on 64 generated images (red and/or blue patches), its export and predictions."""
    from workbench.core.run.pipeline import run_training

    root = tmp_path_factory.mktemp("ml-images-explain")
    table = write_set(root / "set", 64)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_HOME", str(root / "home"))
        result = run_training(_config(table, epochs=8))
    run = Path(result.run_dir)
    preds = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    return run / "model", preds


def _patch(image: np.ndarray, label: str) -> np.ndarray:
    """Where the model's view of a generated image holds the ``label`` colour's patch."""
    r, g, b = (image[..., k].astype(int) for k in range(3))
    return (r > 180) & (g < 90) & (b < 90) if label == "red" else (b > 180) & (r < 90) & (g < 90)


def test_a_trained_models_saliency_of_a_label_looks_at_its_patch(trained):
    export, preds = trained
    ratios = []
    for p in preds:
        for x in image_saliencies(str(export), p["path"], p["labels"] or None):
            if x.label in p["labels"] and _patch(x.image, x.label).sum() >= 9:
                mask = _patch(x.image, x.label)
                ratios.append(x.saliency[mask].mean() / max(1e-9, x.saliency[~mask].mean()))
    assert len(ratios) >= 5 and np.median(ratios) > 2  # the map is brighter on the label's own patch


def test_cli_explain_an_image_prints_and_saves_each_label(trained, tmp_path, capsys):
    from PIL import Image

    export, preds = trained
    p = next(x for x in preds if x["predicted"])
    out = tmp_path / "maps"
    out.mkdir()
    assert main(["explain", str(export), p["path"], "-o", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    last = json.loads(printed[-1])
    assert [e["label"] for e in last["explained"]] == sorted(p["predicted"], key=lambda n: -p["scores"][n])
    meta = json.loads((export / "workbench.json").read_text())
    for e, line in zip(last["explained"], printed):
        assert e["decided"] is True and e["threshold"] == pytest.approx(meta["thresholds"][e["label"]])
        assert e["score"] == pytest.approx(p["scores"][e["label"]], abs=1e-3)
        assert line.startswith(f"{e['label']}: score") and "decided" in line
        saved = Path(e["saved"])
        assert saved.parent == out and saved.name == f"{Path(p['path']).stem}.{e['label']}.png"
        assert Image.open(saved).size == (SIDE, SIDE)
    other = next(n for n in ("blue", "red") if n not in p["predicted"]) if len(p["predicted"]) == 1 else "red"
    assert main(["explain", str(export), p["path"], "--label", other]) == 0
    asked = json.loads(capsys.readouterr().out.splitlines()[-1])["explained"]
    assert [e["label"] for e in asked] == [other] and "saved" not in asked[0]
    assert main(["explain", str(export), p["path"], "-o", str(out)]) == 2  # the maps exist: --overwrite
    assert "exists already" in capsys.readouterr().err
    assert main(["explain", str(export), p["path"], "--label", "green"]) == 2
    assert "unknown label 'green'" in capsys.readouterr().err
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    assert main(["explain", str(export), str(broken)]) == 2
    err = capsys.readouterr().err
    assert "is not an image the model can read" in err and "Traceback" not in err


# ---- the app --------------------------------------------------------------------------------------


@app_test
def test_try_it_shows_the_saliency_of_a_picked_label(qtbot, trained):
    from workbench.app.views.multilabel import MultiLabelImageTryIt

    export, preds = trained
    p = next(x for x in preds if x["predicted"])
    box = MultiLabelImageTryIt()
    qtbot.addWidget(box)
    box.set_model(export)
    with qtbot.waitSignal(box.predicted, timeout=60000):
        box.predict_file(p["path"])
    choices = [box.saliency_label.itemData(i) for i in range(box.saliency_label.count())]
    top = max(p["predicted"], key=lambda n: p["scores"][n])
    assert sorted(choices) == ["blue", "red"] and box.saliency_label.currentData() == top  # the top decided label
    assert box.saliency.isEnabled() and box.saliency.isVisibleTo(box)
    before = box.picture.pixmap().toImage()
    box.saliency.click()
    qtbot.waitUntil(lambda: "Where the model looked" in box.status.text(), timeout=60000)
    assert f"“{top}”" in box.status.text() and "threshold" in box.status.text()
    assert box.picture.pixmap().toImage() != before
    other = next(n for n in choices if n != top)
    box.pick_saliency_label(other)
    box.saliency.click()
    qtbot.waitUntil(lambda: f"“{other}”" in box.status.text(), timeout=60000)
    box.shutdown()


@app_test
@pytest.mark.timeout(300)
def test_suspicious_labels_of_an_image_table_in_the_app(qtbot, window, ranked, tmp_path):
    from app_support import load, wait_task

    _, original, truth = ranked
    folder = tmp_path / "set"
    folder.mkdir()
    os.symlink(original.parent / "img", folder / "img")
    table = folder / "labels.tsv"
    table.write_bytes(original.read_bytes())
    load(qtbot, window, table)
    page = window.data_page
    assert window.state.config.task in (TASK, "auto")
    window.state.config.model.name = "small-cnn"
    view = page.label_issues
    page.tabs.setCurrentWidget(view)
    assert page.tabs.isTabVisible(page.tabs.indexOf(view))
    view.find_button.click()
    qtbot.waitUntil(lambda: view.result is not None, timeout=120000)
    assert view.result.task == TASK and view.table.horizontalHeaderItem(0).text() == "Line"
    shown = {int(view.table.item(i, 0).text()): i for i in range(view.table.rowCount())}
    assert set(truth) <= set(shown)
    line = next(iter(truth))
    row = shown[line]
    assert view.table.item(row, 1).text() == Path(table.read_text().splitlines()[line - 1].split("\t")[0]).name
    view.go_to(row)  # a double-click: the table's row in the Rows tab
    assert page.tabs.currentWidget() is page.preview
    assert page.preview_model.line_of_row(page.preview.currentIndex().row()) == line
    view.set_action(row, view.result.rows[[r.line for r in view.result.rows].index(line)].suggested)
    with qtbot.waitSignal(view.corrected, timeout=30000) as saved:
        view.save_copy(str(folder / "fixed.tsv"))
    wait_task(qtbot, page._task)  # the copy opens as the training data
    copy = Path(saved.args[0])
    assert window.state.config.data.train == str(copy.resolve())
    assert copy.read_text().splitlines()[line - 1] == \
        table.read_text().splitlines()[line - 1].split("\t")[0] + "\t" + ";".join(truth[line])
