"""End-to-end engine runs on a tiny BERT: run directory, report, predictions, export, cancel."""

from __future__ import annotations

import json

import numpy as np
import pytest

from workbench.core.cancel import CancelToken
from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from workbench.core.errors import Cancelled, InputError
from workbench.core.events import Callbacks, EvalMetrics, Finished, StepMetrics
from workbench.core.run.directory import read_metrics
from workbench.core.run.pipeline import run_training


class Recorder(Callbacks):
    def __init__(self):
        self.events = []

    def on_event(self, event):
        self.events.append(event)


def tiny_config(data, model_dir, run_dir=None, **train):
    opts = dict(epochs=4, batch_size=16, lr=3e-3, max_length=32, seed=1)
    opts.update(train)
    return RunConfig(
        data=DataConfig(train=str(data)),
        model=ModelConfig(name=str(model_dir)),
        train=TrainConfig(**opts),
        run_dir=str(run_dir) if run_dir else None,
    )


def test_tiny_run_end_to_end(sentiment_tsv, tiny_model_dir, tmp_path, runs_home):
    rec = Recorder()
    cfg = tiny_config(sentiment_tsv, tiny_model_dir, early_stopping_patience=3)
    cfg.export_dir = str(tmp_path / "export")
    result = run_training(cfg, rec)

    run = tmp_path / "wb-home" / "runs"
    assert result.run_dir.startswith(str(run))
    rd = __import__("pathlib").Path(result.run_dir)
    for name in ("config.json", "status.json", "metrics.jsonl", "validation.json", "report.json", "report.txt", "predictions.jsonl"):
        assert (rd / name).is_file(), name
    assert json.loads((rd / "status.json").read_text())["state"] == "finished"

    # The synthetic task is separable: a working loop learns it.
    assert result.metrics["accuracy"] > 0.9, result.metrics
    report = json.loads((rd / "report.json").read_text())
    assert [r["label"] for r in report["per_class"]] == ["neg", "pos"]
    cm = np.array(report["confusion_matrix"])
    assert cm.sum() == report["n"] == 24  # 10% of 240 held out, stratified

    preds = [json.loads(l) for l in (rd / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 24
    assert set(preds[0]) >= {"row", "text", "gold", "predicted", "confidence", "probabilities"}
    assert abs(sum(preds[0]["probabilities"].values()) - 1) < 1e-4
    acc = np.mean([p["gold"] == p["predicted"] for p in preds])
    assert acc == pytest.approx(result.metrics["accuracy"])

    steps = [e for e in rec.events if isinstance(e, StepMetrics)]
    evals = [e for e in rec.events if isinstance(e, EvalMetrics) and e.split == "validation"]
    assert steps and steps[-1].step == steps[-1].total_steps or evals
    assert len(evals) >= 1
    assert isinstance(rec.events[-1], Finished)
    logged = read_metrics(rd)
    assert sum(1 for m in logged if m["event"] == "StepMetrics") == len(steps)

    cfg_saved = json.loads((rd / "config.json").read_text())
    assert cfg_saved["data"]["text_column"] == "text" and cfg_saved["data"]["label_column"] == "label"
    assert cfg_saved["task"] == "text-classification"


@pytest.mark.precision
def test_export_round_trip_through_pipeline(sentiment_tsv, tiny_model_dir, tmp_path, runs_home):
    from transformers import pipeline

    cfg = tiny_config(sentiment_tsv, tiny_model_dir)
    cfg.export_dir = str(tmp_path / "exported")
    result = run_training(cfg)
    export = tmp_path / "exported"
    assert (export / "model.safetensors").is_file()
    assert (export / "README.md").read_text().count("neg") >= 1
    config = json.loads((export / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"}

    preds = [json.loads(l) for l in open(f"{result.run_dir}/predictions.jsonl")]
    clf = pipeline("text-classification", model=str(export), device="cpu")
    out = clf([p["text"] for p in preds], truncation=True, batch_size=8)
    assert [o["label"] for o in out] == [p["predicted"] for p in preds]
    for o, p in zip(out, preds):
        assert o["score"] == pytest.approx(p["confidence"], abs=1e-4)
    # No temporary folder is left beside the export.
    assert [p.name for p in export.parent.iterdir() if p.name.startswith(".exported")] == []


def test_cancel_during_training_leaves_consistent_run(sentiment_tsv, tiny_model_dir, runs_home):
    token = CancelToken()

    class CancelAfter(Callbacks):
        def on_event(self, event):
            if isinstance(event, StepMetrics) and event.step == 3:
                token.cancel()

    cfg = tiny_config(sentiment_tsv, tiny_model_dir, epochs=50)
    with pytest.raises(Cancelled):
        run_training(cfg, CancelAfter(), token)
    (rd,) = list(runs_home.iterdir())
    assert json.loads((rd / "status.json").read_text())["state"] == "cancelled"
    events = [m["event"] for m in read_metrics(rd)]
    assert events.count("StepMetrics") == 3 and events[-1] == "Cancelled"


def test_cancel_during_tokenization(sentiment_tsv, tiny_model_dir, runs_home):
    from workbench.core.events import PhaseChanged

    token = CancelToken()

    class CancelAtTokenize(Callbacks):
        def on_event(self, event):
            if isinstance(event, PhaseChanged) and event.phase == "tokenizing":
                token.cancel()

    with pytest.raises(Cancelled):
        run_training(tiny_config(sentiment_tsv, tiny_model_dir), CancelAtTokenize(), token)
    (rd,) = list(runs_home.iterdir())
    events = [m["event"] for m in read_metrics(rd)]
    assert "StepMetrics" not in events


def test_early_stopping_restores_best(sentiment_tsv, tiny_model_dir, runs_home):
    rec = Recorder()
    cfg = tiny_config(sentiment_tsv, tiny_model_dir, epochs=30, eval_steps=2, early_stopping_patience=2, lr=1e-2)
    run_training(cfg, rec)
    evals = [e for e in rec.events if isinstance(e, EvalMetrics) and e.split == "validation"]
    steps = [e for e in rec.events if isinstance(e, StepMetrics)]
    first_pass = [e for e in steps if e.total_steps == steps[0].total_steps]
    assert first_pass[-1].step < first_pass[-1].total_steps, "training should stop early"
    best = [e for e in evals if e.is_best][-1]
    assert all(not e.is_best for e in evals[evals.index(best) + 1 :])
    # The refit on every row trains for the chosen length, not the 30 epochs asked for.
    assert steps[-1].step - first_pass[-1].step < first_pass[-1].total_steps / 10


def test_rerun_from_config_repeats_run(sentiment_tsv, tiny_model_dir, runs_home):
    first = run_training(tiny_config(sentiment_tsv, tiny_model_dir, epochs=2))
    again = run_training(RunConfig.load(f"{first.run_dir}/config.json"))
    assert again.run_dir != first.run_dir
    assert again.metrics["accuracy"] == pytest.approx(first.metrics["accuracy"])
    assert again.metrics["loss"] == pytest.approx(first.metrics["loss"], rel=1e-4)


def test_explicit_validation_and_test_files(tmp_path, tiny_model_dir, runs_home):
    from conftest import sentiment_rows, write_tsv

    train = write_tsv(tmp_path / "train.tsv", sentiment_rows(200, seed=1))
    val = write_tsv(tmp_path / "val.tsv", sentiment_rows(30, seed=2))
    test = write_tsv(tmp_path / "test.tsv", sentiment_rows(40, seed=3), header=None)  # no header: by position
    cfg = tiny_config(train, tiny_model_dir, epochs=3)
    cfg.data.val, cfg.data.test = str(val), str(test)
    result = run_training(cfg)
    assert result.eval_split == "test"
    report = json.loads(open(f"{result.run_dir}/report.json").read())
    assert report["n"] == 40


def test_bad_input_leaves_no_run_directory(tmp_path, tiny_model_dir, runs_home):
    bad = tmp_path / "one-class.tsv"
    bad.write_text("text\tlabel\n" + "".join(f"row {i}\tyes\n" for i in range(20)))
    with pytest.raises(InputError) as err:
        run_training(tiny_config(bad, tiny_model_dir))
    assert "one-class.tsv" in str(err.value)
    assert not runs_home.exists() or list(runs_home.iterdir()) == []
