"""Sentence pairs and regression: column choice, --task auto, end-to-end runs, exports through pipeline."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import sentiment_rows, write_tsv
from text_tasks_helpers import tiny_text_model  # noqa: F401 (fixture)

from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from workbench.core.errors import InputError
from workbench.core.run.pipeline import run_training
from workbench.core.tasks import detect_task

WORDS = "the city company big small dog cat".split()


def pair_rows(n: int, seed: int = 0):
    """(first, second, label, score): the label and the score depend on the second text's good/bad words."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a = " ".join(rng.choices(WORDS, k=rng.randint(3, 7)))
        good, bad = rng.randint(0, 3), rng.randint(0, 3)
        b = rng.choices(WORDS, k=rng.randint(2, 5)) + ["good"] * good + ["bad"] * bad
        rng.shuffle(b)
        score = good - 0.5 * bad + 0.2 * rng.random()
        rows.append((a, " ".join(b), "yes" if good > bad else "no", f"{score:.3f}"))
    return rows


def config(train, model, **kw):
    data = {k: kw.pop(k) for k in list(kw) if k in DataConfig.__dataclass_fields__}
    opts = dict(epochs=6, batch_size=16, lr=3e-3, max_length=48, seed=1)
    opts.update(kw)
    return RunConfig(data=DataConfig(train=str(train), **data), model=ModelConfig(name=str(model)),
                     train=TrainConfig(**opts))


@pytest.fixture()
def pairs_tsv(tmp_path):
    return write_tsv(tmp_path / "pairs.tsv", [r[:3] for r in pair_rows(400)], header=("sentence1", "sentence2", "label"))


@pytest.fixture()
def scores_tsv(tmp_path):
    return write_tsv(tmp_path / "scores.tsv", [(a, b, s) for a, b, _, s in pair_rows(400)],
                     header=("sentence1", "sentence2", "score"))


def test_auto_task_picks_by_columns(tmp_path, pairs_tsv, scores_tsv):
    assert detect_task(pairs_tsv).name == "text-pair-classification"
    assert detect_task(scores_tsv).name == "text-regression"
    plain = write_tsv(tmp_path / "plain.tsv", sentiment_rows(100))
    assert detect_task(plain).name == "text-classification"
    # Ratings 1-5 are classes; a single text with a continuous score is a regression.
    stars = write_tsv(tmp_path / "stars.tsv", [(t, str(i % 5 + 1)) for i, (t, _) in enumerate(sentiment_rows(100))])
    assert detect_task(stars).name == "text-classification"
    single = write_tsv(tmp_path / "single.csv", [(t, f"{i * 0.37:.2f}") for i, (t, _) in enumerate(sentiment_rows(100))])
    assert detect_task(single).name == "text-regression"
    nli = write_tsv(tmp_path / "nli.tsv", [("a man sleeps on the sofa", "someone rests", "entailment")] * 20,
                    header=("premise", "hypothesis", "label"))
    assert detect_task(nli).name == "text-pair-classification"
    # Headerless: two free-text columns and a label.
    headerless = write_tsv(tmp_path / "mrpc.tsv", [r[:3] for r in pair_rows(60)], header=None)
    assert detect_task(headerless).name == "text-pair-classification"


def test_pair_classification_end_to_end(pairs_tsv, tiny_text_model, tmp_path, runs_home):
    from transformers import pipeline

    cfg = config(pairs_tsv, tiny_text_model)
    cfg.export_dir = str(tmp_path / "export")
    result = run_training(cfg)
    assert result.task == "text-pair-classification"
    assert result.metrics["accuracy"] > 0.9, result.report_text
    rd = Path(result.run_dir)
    saved = json.loads((rd / "config.json").read_text())["data"]
    assert (saved["text_column"], saved["text_pair_column"], saved["label_column"]) == ("sentence1", "sentence2", "label")
    preds = [json.loads(l) for l in (rd / "predictions.jsonl").read_text().splitlines()]
    assert {"text", "text_pair", "gold", "predicted"} <= set(preds[0])
    clf = pipeline("text-classification", model=cfg.export_dir, device="cpu")
    out = clf([{"text": p["text"], "text_pair": p["text_pair"]} for p in preds])
    assert [o["label"] for o in out] == [p["predicted"] for p in preds]


def test_pairs_are_encoded_jointly(pairs_tsv, tiny_text_model, tmp_path):

    from workbench.core.events import Callbacks
    from workbench.core.tasks.text_pair import TextPairClassification

    task = TextPairClassification()
    data = task.prepare_data(DataConfig(train=str(pairs_tsv)), 0, tmp_path / "c", Callbacks())
    tok = task.load_preprocessor(str(tiny_text_model))
    split = task.encode("test", data.splits["test"], tok, 48, tmp_path / "c", Callbacks())
    row = data.splits["test"][0]
    ids = split.inputs["input_ids"].pad(np.array([0]), 0, int(split.lengths[0]))[0]
    types = split.inputs["token_type_ids"].pad(np.array([0]), 0, int(split.lengths[0]))[0]
    tokens = tok.convert_ids_to_tokens(ids.tolist())
    first = tok.tokenize(row["text"])
    assert tokens == ["[CLS]", *first, "[SEP]", *tok.tokenize(row["text_pair"]), "[SEP]"]
    assert types.tolist() == [0] * (len(first) + 2) + [1] * (len(tokens) - len(first) - 2)


def test_pair_columns_can_be_named_and_must_exist(tmp_path, tiny_text_model, runs_home):
    rows = [(str(i), a, b, l) for i, (a, b, l, _) in enumerate(pair_rows(200))]
    p = write_tsv(tmp_path / "q.tsv", rows, header=("id", "left", "right", "verdict"))
    result = run_training(_with_task(config(p, tiny_text_model, text_column="left", text_pair_column="right",
                                            label_column="verdict", max_steps=2), "text-pair-classification"))
    saved = json.loads(Path(result.run_dir, "config.json").read_text())["data"]
    assert (saved["text_column"], saved["text_pair_column"]) == ("left", "right")
    with pytest.raises(InputError, match="no second text column named 'nope'.*left"):
        run_training(_with_task(config(p, tiny_text_model, text_pair_column="nope"), "text-pair-classification"))


def _with_task(cfg, task):
    cfg.task = task
    return cfg


@pytest.mark.precision
def test_regression_end_to_end_and_export_in_user_units(scores_tsv, tiny_text_model, tmp_path, runs_home):
    from transformers import pipeline

    cfg = config(scores_tsv, tiny_text_model)
    cfg.export_dir = str(tmp_path / "export")
    result = run_training(cfg)
    assert result.task == "text-regression"
    m = result.metrics
    assert m["pearson"] > 0.85 and m["spearman"] > 0.85 and m["rmse"] == pytest.approx(np.sqrt(m["mse"])), m
    rd = Path(result.run_dir)
    preds = [json.loads(l) for l in (rd / "predictions.jsonl").read_text().splitlines()]
    assert {"text", "text_pair", "gold", "predicted", "error"} <= set(preds[0])
    gold = np.array([p["gold"] for p in preds])
    pred = np.array([p["predicted"] for p in preds])
    assert np.mean((gold - pred) ** 2) == pytest.approx(m["mse"], rel=1e-4)
    assert np.corrcoef(gold, pred)[0, 1] == pytest.approx(m["pearson"], abs=1e-4)

    config_json = json.loads(Path(cfg.export_dir, "config.json").read_text())
    assert config_json["problem_type"] == "regression" and config_json["id2label"] == {"0": "score"}
    reg = pipeline("text-classification", model=cfg.export_dir, device="cpu", function_to_apply="none")
    out = reg([{"text": p["text"], "text_pair": p["text_pair"]} for p in preds])
    # The export outputs the user's units (the training-time standardisation is folded into the head).
    assert np.allclose([o["score"] for o in out], pred, atol=1e-3)
    assert out[0]["label"] == "score"


def test_regression_labels_must_be_numbers(tmp_path, tiny_text_model, runs_home):
    rows = [(t, f"{i / 7:.3f}") for i, (t, _) in enumerate(sentiment_rows(120))]
    rows[10] = (rows[10][0], "n/a")
    p = write_tsv(tmp_path / "scores.tsv", rows, header=("text", "score"))
    with pytest.raises(InputError) as e:
        run_training(_with_task(config(p, tiny_text_model, label_column="score"), "text-regression"))
    assert e.value.line == 12 and "'n/a' is not a number" in str(e.value) and "scores.tsv" in str(e.value)
    assert not runs_home.exists() or list(runs_home.iterdir()) == []
    result = run_training(_with_task(config(p, tiny_text_model, skip_bad_rows=True, max_steps=2), "text-regression"))
    findings = json.loads(Path(result.run_dir, "validation.json").read_text())["findings"]
    assert any(f["code"] == "bad_labels" and f["lines"] == [12] for f in findings)
    assert sum(json.loads(Path(result.run_dir, "config.json").read_text())["resolved"]["rows"].values()) == 119


def test_regression_rejects_a_constant_target_and_text_labels(tmp_path, tiny_text_model, runs_home):
    const = write_tsv(tmp_path / "const.tsv", [(t, "3.5") for t, _ in sentiment_rows(40)], header=("text", "score"))
    with pytest.raises(InputError, match="same score"):
        run_training(_with_task(config(const, tiny_text_model), "text-regression"))
    words = write_tsv(tmp_path / "words.tsv", sentiment_rows(40))
    with pytest.raises(InputError, match="no numeric column"):
        run_training(_with_task(config(words, tiny_text_model), "text-regression"))


@pytest.mark.slow
def test_regression_metric_choice_via_cli(scores_tsv, tiny_text_model, tmp_path):
    from test_cli import wb

    p = wb(["train", scores_tsv, "--model", tiny_text_model, "--max-steps", 3, "--metric", "pearson",
            "--max-length", 48], tmp_path / "home")
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["task"] == "text-regression" and {"mse", "mae", "pearson", "spearman"} <= set(summary["metrics"])
    bad = wb(["train", scores_tsv, "--model", tiny_text_model, "--metric", "macro_f1"], tmp_path / "home")
    assert bad.returncode == 2 and "mse" in bad.stderr
