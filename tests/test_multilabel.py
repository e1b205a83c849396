"""Multi-label text classification (text-multilabel): label lists and 0/1 columns read right, the task
chosen from the data, thresholds tuned on validation and carried into the export, metrics equal to
scikit-learn's, end to end through the engine and the CLI."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import NEUTRAL, POSITIVE, sentiment_rows, write_tsv

from workbench.core.cancel import CancelToken
from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from workbench.core.errors import InputError, Paused
from workbench.core.events import Callbacks, StepMetrics
from workbench.core.run.pipeline import resume_training, run_training
from workbench.core.tasks import detect_task, get_task
from workbench.core.tasks.multilabel.scoring import multilabel_result
from workbench.core.tasks.multilabel.text import TextMultiLabel
from workbench.core.tasks.multilabel.thresholds import Thresholds, best_f1_threshold, decide, tune

TASK = "text-multilabel"
FILLER = [w for w in NEUTRAL if w != "music"]


def labelled_rows(n: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    """Texts with two independent labels, each with its own words, and about a third with neither."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words, labels = rng.sample(FILLER, rng.randint(2, 6)), []
        if rng.random() < 0.45:
            words += rng.sample(POSITIVE, 2)
            labels.append("praise")
        if rng.random() < 0.4:
            words += ["music", "music"]
            labels.append("music")
        rng.shuffle(words)
        rows.append((" ".join(words), labels))
    return rows


def write_lists(path: Path, rows, separator: str = "|", delimiter: str = "\t", header=("text", "labels")) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter=delimiter, lineterminator="\n")
        w.writerow(header)
        for text, labels in rows:
            w.writerow([text, separator.join(labels)])
    return path


def write_one_hot(path: Path, rows, names=("music", "praise")) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["review", *names])
        for text, labels in rows:
            w.writerow([text, *(int(n in labels) for n in names)])
    return path


@pytest.fixture(scope="module")
def tiny64(tmp_path_factory) -> Path:
    """A 2-layer, 64-wide BERT (the 32-wide one of conftest collapses onto one label under BCE: its
    pooled output learns one direction at these learning rates)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert-64")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(POSITIVE + NEUTRAL + ["bad", "awful"]))
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(dict.fromkeys(vocab))}, do_lower_case=True)
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=64)
    BertForSequenceClassification(config).bert.save_pretrained(folder)
    return folder


def prepared(path: Path, tmp_path: Path, **data):
    """The task's prepared data of ``path`` with every row kept for training (nothing held out)."""
    task = TextMultiLabel()
    cfg = DataConfig(train=str(path), val_fraction=0, test_fraction=0, **data)
    return task, task.prepare_data(cfg, 0, tmp_path / "cache", Callbacks())


def sets_by_line(ds) -> dict[int, list[str]]:
    return {r["row"]: r["labels"] for r in ds.to_list()}


# ---- reading ------------------------------------------------------------------------------------

READ_ROWS = [("a fine plot", ["praise", "music"]), ("the ending", []), ("great music", ["music"]),
             ("dull actor", ["acting", "praise"]), ("lovely scene", ["praise"]), ("some film", ["acting", "music"]),
             ("story it", ["praise", "acting", "music"]), ("plot", ["music"])]


@pytest.mark.parametrize("separator,delimiter,suffix", [("|", "\t", ".tsv"), (",", ",", ".csv"), (";", "\t", ".tsv")])
def test_each_separator_is_detected_and_read(separator, delimiter, suffix, tmp_path):
    path = write_lists(tmp_path / f"lists{suffix}", READ_ROWS * 3, separator, delimiter)
    task, data = prepared(path, tmp_path)
    assert data.resolved["label_separator"] == separator and data.resolved["label_column"] == "labels"
    assert data.resolved["labels"] == ["acting", "music", "praise"]
    got = sets_by_line(data.splits["train"])
    assert [got[line] for line in range(2, 2 + len(READ_ROWS))] == [labels for _, labels in READ_ROWS]
    assert task.export_meta()["label_separator"] == separator


def test_cells_are_stripped_deduplicated_and_the_separator_can_be_forced(tmp_path):
    path = tmp_path / "messy.tsv"
    path.write_text("text\tlabels\n" + "".join(f"t{i} film\t praise | music |praise|\n" for i in range(4))
                    + "plain film\t\nother film\tarts, crafts|music\n", encoding="utf-8")
    _, data = prepared(path, tmp_path)
    got = sets_by_line(data.splits["train"])
    assert got[2] == ["praise", "music"] and got[6] == [] and got[7] == ["arts, crafts", "music"]
    _, forced = prepared(path, tmp_path, label_separator=",")
    assert sets_by_line(forced.splits["train"])[7] == ["arts", "crafts|music"]


def test_one_hot_columns_are_read_by_name_position_or_case(tmp_path):
    rows = labelled_rows(40)
    path = write_one_hot(tmp_path / "onehot.csv", rows)
    for columns in (["music", "praise"], ["1", "2"], ["MUSIC", "Praise"]):
        task, data = prepared(path, tmp_path, label_columns=columns)
        assert data.resolved["label_columns"] == ["music", "praise"] and data.resolved["text_column"] == "review"
        assert data.resolved["label_separator"] == "|"  # how predict writes the sets back out
        got = sets_by_line(data.splits["train"])
        assert [sorted(got[i + 2]) for i in range(len(rows))] == [sorted(labels) for _, labels in rows]
    assert TextMultiLabel.sniff_settings(DataConfig(label_columns=["music"])) == 1.0
    assert detect_task(path).name == "text-classification"  # 0/1 columns alone do not say multi-label ...
    assert detect_task(path, DataConfig(label_columns=["music", "praise"])).name == TASK  # ... the option does


# ---- bad input ----------------------------------------------------------------------------------


def test_bad_label_options_and_cells_are_clear_input_errors(tmp_path):
    cfg = RunConfig(data=DataConfig(train="x.tsv", label_separator=":"))
    with pytest.raises(InputError, match="--label-separator must be one of"):
        cfg.validate()
    cfg = RunConfig(data=DataConfig(train="x.tsv", label_columns=["a"], label_separator="|"))
    with pytest.raises(InputError, match="--label-separator applies to one column"):
        cfg.validate()
    path = write_one_hot(tmp_path / "onehot.csv", labelled_rows(30))
    with pytest.raises(InputError, match="has no column named 'drama'.*available columns: 0: review") as e:
        prepared(path, tmp_path, label_columns=["music", "drama"])
    assert e.value.path == str(path)
    with pytest.raises(InputError, match="the text column 'music' is also one of --label-columns"):
        prepared(path, tmp_path, label_columns=["music", "praise"], text_column="music")
    lines = path.read_text().splitlines()
    lines[7] = lines[7].rsplit(",", 1)[0] + ",maybe"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"'praise' .* holds 'maybe'.* must hold 0 or 1") as e:
        prepared(path, tmp_path, label_columns=["music", "praise"])
    assert e.value.path == str(path) and e.value.line == 8 and f"{path}, line 8" in str(e.value)


def test_free_text_split_on_commas_is_not_a_label_set(tmp_path):
    path = tmp_path / "prose.tsv"
    path.write_text("text\tlabels\n" + "".join(f"row {i}\tword{i}, thing{i}, other{i}\n" for i in range(200)))
    with pytest.raises(InputError, match="looks like free text, not label lists"):
        prepared(path, tmp_path, label_separator=",")


def test_cli_refuses_an_unknown_separator_and_a_bad_cell(tmp_path, capsys, monkeypatch):
    from workbench.cli.main import main

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    path = write_lists(tmp_path / "lists.tsv", labelled_rows(30))
    assert main(["train", str(path), "--label-separator", ":", "--quiet"]) == 2
    assert "--label-separator must be one of" in capsys.readouterr().err
    onehot = write_one_hot(tmp_path / "onehot.csv", labelled_rows(30))
    onehot.write_text(onehot.read_text().replace(",0\n", ",2\n", 1))
    assert main(["train", str(onehot), "--label-columns", "music,praise", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{onehot}, line" in err and "must hold 0 or 1" in err and "Traceback" not in err
    assert not (tmp_path / "home" / "runs").exists() or not list((tmp_path / "home" / "runs").iterdir())


# ---- choosing the task --------------------------------------------------------------------------


def test_task_auto_picks_multilabel_only_for_label_lists(tmp_path):
    assert detect_task(write_lists(tmp_path / "lists.tsv", labelled_rows(60))).name == TASK
    assert detect_task(write_lists(tmp_path / "lists.csv", labelled_rows(60), ",", ",")).name == TASK
    assert detect_task(write_tsv(tmp_path / "plain.tsv", sentiment_rows(60))).name == "text-classification"
    # Sentences with commas beside single labels: the text is not a label list.
    prose = [(f"the film, {w}, was {v}, and the {x} ending", lab) for w, v, x, lab in
             zip(random.Random(1).choices(NEUTRAL, k=80), random.Random(2).choices(POSITIVE, k=80),
                 random.Random(3).choices(NEUTRAL, k=80), ["pos", "neg"] * 40)]
    assert detect_task(write_tsv(tmp_path / "prose.tsv", prose)).name == "text-classification"
    # Class names that hold a comma do not combine: still one label per row.
    named = [(f"text number {i}", ["arts, crafts", "food, drink", "sport"][i % 3]) for i in range(90)]
    assert detect_task(write_tsv(tmp_path / "named.tsv", named)).name == "text-classification"
    assert get_task("multi-label").name == TASK


# ---- validation findings ------------------------------------------------------------------------


def test_findings_count_labels_and_name_lines(tmp_path):
    train = write_lists(tmp_path / "train.tsv", READ_ROWS * 3 + [("rare one", ["opera"])])
    test = write_lists(tmp_path / "test.tsv", [("new film", ["horror"]), ("the plot", [])] + READ_ROWS[:4])
    task = TextMultiLabel()
    data = task.prepare_data(DataConfig(train=str(train), test=str(test), val_fraction=0), 0, tmp_path / "c",
                             Callbacks())
    report = data.report
    by_code = {(f.code, f.split): f for f in report.findings}
    assert report.class_counts["train"] == {"acting": 9, "music": 15, "opera": 1, "praise": 12}
    assert by_code[("no_labels", "train")].count == 3 and by_code[("no_labels", "train")].lines == [3, 11, 19]
    assert by_code[("no_labels", "test")].lines == [3, 5] and by_code[("no_labels", "test")].severity == "info"
    unseen = by_code[("unseen_test_labels", "test")]
    assert unseen.severity == "warning" and "'horror'" in unseen.message and unseen.lines == [2]
    rare = by_code[("rare_label", "train")]
    assert "'opera'" in rare.message and rare.lines == [26]
    pairs = by_code[("label_pairs", "train")]
    assert pairs.severity == "info" and "'music' + 'praise'" in pairs.message and pairs.count == 12
    assert not any(f.code in ("single_class", "empty_label", "imbalance") for f in report.findings)
    assert data.resolved["labels"] == ["acting", "music", "opera", "praise"]  # 'horror' is not learnt


def test_training_rows_without_any_label_are_refused(tmp_path):
    path = write_lists(tmp_path / "empty.tsv", [(f"film {i}", []) for i in range(20)])
    with pytest.raises(InputError, match="no row has a label"):
        prepared(path, tmp_path)


# ---- thresholds and metrics ---------------------------------------------------------------------


def test_best_f1_threshold_and_the_fallback():
    scores = np.array([0.9, 0.8, 0.7, 0.4, 0.3, 0.1])
    gold = np.array([1, 1, 0, 1, 0, 0], bool)
    t = best_f1_threshold(scores, gold)
    assert t == pytest.approx(0.35)  # half way between 0.4 (the last positive kept) and 0.3
    decided = scores >= t
    assert decided.tolist() == [True, True, True, True, False, False]
    rng = np.random.default_rng(0)
    s = rng.random((50, 3))
    g = np.zeros((50, 3))
    g[:10, 0] = 1  # label 0: ten positives, tuned
    g[:4, 1] = 1  # label 1: four, keeps 0.5
    tuned = tune(s, g)
    assert tuned.tuned.tolist() == [True, False, False] and tuned.values[1] == tuned.values[2] == 0.5

    def f1(th):
        return 2 * ((s[:, 0] >= th) & (g[:, 0] > 0)).sum() / ((s[:, 0] >= th).sum() + g[:, 0].sum())

    assert f1(tuned.values[0]) == max(f1(x) for x in np.append(s[:, 0], 0.5))


def test_metrics_equal_scikit_learns():
    from sklearn.metrics import (
        accuracy_score,
        f1_score,
        hamming_loss,
        label_ranking_average_precision_score,
        precision_recall_fscore_support,
    )

    rng = np.random.default_rng(3)
    gold = (rng.random((80, 4)) < 0.3).astype(np.float32)
    gold[:5] = 0  # rows with no label
    gold[:, 3] = 0  # a label with no support
    scores = np.clip(gold * 0.5 + rng.random((80, 4)) * 0.6, 0, 1)
    thresholds = Thresholds(np.array([0.5, 0.4, 0.7, 0.5]), np.array([True, True, True, False]))
    result = multilabel_result(gold, scores, ["a", "b", "c", "d"], thresholds, loss=0.25)
    pred = decide(scores, thresholds.values).astype(int)
    m = result.metrics
    assert m["micro_f1"] == pytest.approx(f1_score(gold, pred, average="micro", zero_division=0))
    assert m["macro_f1"] == pytest.approx(f1_score(gold, pred, average="macro", zero_division=0))
    assert m["subset_accuracy"] == pytest.approx(accuracy_score(gold, pred))
    assert m["hamming_loss"] == pytest.approx(hamming_loss(gold, pred))
    assert m["lrap"] == pytest.approx(label_ranking_average_precision_score(gold, scores))
    p, r, f, s = precision_recall_fscore_support(gold, pred, average=None, zero_division=0)
    rows = result.report["per_label"]
    assert [x["f1"] for x in rows] == pytest.approx(f.tolist()) and [x["support"] for x in rows] == s.tolist()
    assert [x["tp"] + x["fn"] for x in rows] == s.tolist()
    assert sum(x["tp"] + x["fp"] + x["fn"] + x["tn"] for x in rows) == gold.size
    half = (scores >= 0.5).astype(int)
    assert result.report["at_0_5"]["micro_f1"] == pytest.approx(f1_score(gold, half, average="micro", zero_division=0))
    assert result.report["thresholds_fallback"] == ["d"]


# ---- end to end ---------------------------------------------------------------------------------


def engine_config(data: Path, model: Path, **train) -> RunConfig:
    # Length-grouped batches (not the multi-label default): the tiny model learns these keyword rows in 8
    # epochs with them; the tests check thresholds, export and metrics, not the batching.
    opts = dict(epochs=8, batch_size=16, lr=3e-3, max_length=32, seed=1, group_by_length=True)
    opts.update(train)
    return RunConfig(task="auto", data=DataConfig(train=str(data)), model=ModelConfig(name=str(model)),
                     train=TrainConfig(**opts))


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def check_against_sklearn(report: dict, preds: list[dict]) -> None:
    """The report's metrics, recomputed by scikit-learn from predictions.jsonl's rows."""
    from sklearn.metrics import accuracy_score, f1_score, hamming_loss, label_ranking_average_precision_score

    names = report["labels"]
    y = np.array([[n in p["labels"] for n in names] for p in preds], int)
    d = np.array([[n in p["predicted"] for n in names] for p in preds], int)
    s = np.array([[p["scores"][n] for n in names] for p in preds])
    m = report["metrics"]
    assert m["micro_f1"] == pytest.approx(f1_score(y, d, average="micro", zero_division=0))
    assert m["macro_f1"] == pytest.approx(f1_score(y, d, average="macro", zero_division=0))
    assert m["subset_accuracy"] == pytest.approx(accuracy_score(y, d))
    assert m["hamming_loss"] == pytest.approx(hamming_loss(y, d))
    assert m["lrap"] == pytest.approx(label_ranking_average_precision_score(y, s), abs=1e-3)  # scores are rounded
    assert [p["correct"] for p in preds] == [bool((a == b).all()) for a, b in zip(y, d)]


def test_engine_run_tunes_thresholds_exports_them_and_predicts_empty_sets(tmp_path, tiny64, runs_home):
    rows = labelled_rows(300)
    train = write_lists(tmp_path / "train.tsv", rows[:200])
    val = write_lists(tmp_path / "val.tsv", rows[200:250])
    test = write_lists(tmp_path / "test.tsv", rows[250:])
    cfg = engine_config(train, tiny64)
    cfg.data.val, cfg.data.test = str(val), str(test)
    result = run_training(cfg)
    run = Path(result.run_dir)
    assert json.loads((run / "config.json").read_text())["task"] == TASK
    report = json.loads((run / "report.json").read_text())
    preds = read_lines(run / "predictions.jsonl")
    meta = json.loads((run / "model" / "workbench.json").read_text())

    # Every label has 5+ validation positives: all tuned, and the same numbers everywhere.
    assert meta["thresholds_fallback"] == [] and set(meta["thresholds"]) == {"music", "praise"}
    assert meta["thresholds"] == report["thresholds"] == {r["label"]: r["threshold"] for r in report["per_label"]}
    assert meta["label_separator"] == "|" and meta["labels"] == ["music", "praise"]
    assert all(r["tuned"] for r in report["per_label"]) and "at_tuned" in report and "at_0_5" in report
    # The test report decided each label at its tuned threshold.
    for p in preds:
        assert sorted(p["predicted"]) == sorted(n for n, s in p["scores"].items() if s >= meta["thresholds"][n])
    check_against_sklearn(report, preds)
    assert result.metrics == report["metrics"] and report["metrics"]["micro_f1"] > 0.85, report["metrics"]

    # Rows with no label trained the model; it predicts the empty set for such rows.
    assert any(p["labels"] == [] and p["predicted"] == [] for p in preds)
    text = (run / "report.txt").read_text()
    assert "micro F1" in text and "Hamming loss" in text and "Thresholds tuned on the validation split for 2 of 2" in text
    card = (run / "model" / "README.md").read_text()
    assert "## Decision thresholds" in card and "tuned on validation" in card
    # The card's transformers.pipeline snippet decides what the report decided.
    snippet = card.split("## Use\n```python\n", 1)[1].split("\n```", 1)[0]
    first = preds[0]
    code = (snippet.replace("path/to/this/folder", str(run / "model"))
            .replace('["Type your text here"]', repr([first["text"]]))
            .replace("print(", "decided = ("))
    scope: dict = {}
    exec(code, scope)
    assert sorted(scope["decided"]) == sorted(first["predicted"])
    validation = json.loads((run / "validation.json").read_text())
    assert any(f["code"] == "no_labels" and f["split"] == "train" for f in validation["findings"])


@pytest.mark.slow
def test_refit_and_resume_keep_tuned_thresholds(tmp_path, tiny64, runs_home):
    """A held-out validation part with a refit (the first pass's logits tune), then the same run paused
    and resumed: the same thresholds and metrics."""
    path = write_lists(tmp_path / "all.tsv", labelled_rows(260))
    cfg = engine_config(path, tiny64, epochs=4, save_steps=3, save_minutes=0, refit=True)
    cfg.run_dir = str(tmp_path / "reference")
    reference = run_training(cfg)
    ref_meta = json.loads((Path(reference.run_dir) / "model" / "workbench.json").read_text())
    ref_report = json.loads((Path(reference.run_dir) / "report.json").read_text())
    assert ref_report["trained_on"]["refit"] and not ref_meta["thresholds_fallback"]
    check_against_sklearn(ref_report, read_lines(Path(reference.run_dir) / "predictions.jsonl"))

    class PauseAt(Callbacks):
        def __init__(self, cancel):
            self.cancel = cancel

        def on_event(self, event):
            if isinstance(event, StepMetrics) and event.step == 7:
                self.cancel.pause()

    cancel = CancelToken()
    cfg.run_dir = str(tmp_path / "paused")
    with pytest.raises(Paused):
        run_training(cfg, PauseAt(cancel), cancel)
    resumed = resume_training(tmp_path / "paused")
    meta = json.loads((Path(resumed.run_dir) / "model" / "workbench.json").read_text())
    assert meta["thresholds"] == ref_meta["thresholds"] and resumed.metrics == reference.metrics


@pytest.mark.parametrize("method", ["full", "lora"])
def test_cli_trains_and_exports_with_full_and_lora(method, tmp_path, tiny64, capsys, monkeypatch):
    from workbench.cli.main import main

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    path = write_one_hot(tmp_path / "onehot.csv", labelled_rows(160))
    export = tmp_path / "export"
    code = main(["train", str(path), "--task", TASK, "--label-columns", "music,praise", "--model", str(tiny64),
                 "--method", method, "--epochs", "3", "--lr", "3e-3" if method == "full" else "1e-2",
                 "--max-length", "32", "--batch-size", "16", "--export", str(export), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["task"] == TASK and summary["method"] == method
    assert set(summary["metrics"]) == {"micro_f1", "macro_f1", "subset_accuracy", "hamming_loss", "lrap", "loss"}
    run = Path(summary["run_dir"])
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["label_columns"] == ["music", "praise"]
    assert config["resolved"]["label_columns"] == ["music", "praise"]
    meta = json.loads((export / "workbench.json").read_text())
    assert set(meta["thresholds"]) == {"music", "praise"} and meta["label_separator"] == "|"
    from transformers import AutoConfig

    model_config = AutoConfig.from_pretrained(export)
    assert model_config.problem_type == "multi_label_classification"
    assert model_config.id2label == {0: "music", 1: "praise"}
    report = json.loads((run / "report.json").read_text())
    check_against_sklearn(report, read_lines(run / "predictions.jsonl"))
    if method == "lora":
        assert report["method"]["method"] == "lora"


def test_compile_padding_leaves_multi_hot_targets_alone():
    from workbench.core.training.batching import bucket_widths

    # As wide as the token batch by chance: still one target per label, not per token.
    batch = {"input_ids": np.ones((2, 3), np.int64), "attention_mask": np.ones((2, 3), np.int64),
             "labels": np.array([[1, 0, 1], [0, 0, 0]], np.float32)}
    padded = bucket_widths(batch, pad_id=0, max_length=64)
    assert padded["input_ids"].shape == (2, 32) and padded["labels"].tolist() == batch["labels"].tolist()


def test_multilabel_trains_random_batches_by_default():
    # Label sets follow text length (benchmarks/bench_multilabel.py): grouped batches cost micro-F1.
    from workbench.core.tasks.multilabel.text import TextMultiLabel

    assert not TextMultiLabel.groups_by_length("full") and not TextMultiLabel.groups_by_length("lora")
