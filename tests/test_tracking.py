"""Experiment tracking: --report-to tensorboard,mlflow live, `workbench track` afterwards, failures
that never fail a run, and `workbench runs --tensorboard`. The trackers' own readers check what was
written: TensorBoard's EventAccumulator and MLflow's client and pyfunc loader."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

pytest.importorskip("tensorboard")
mlflow = pytest.importorskip("mlflow")

from workbench.cli.main import main  # noqa: E402
from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from workbench.core.errors import InputError  # noqa: E402
from workbench.core.run.pipeline import run_training  # noqa: E402
from workbench.core.tracking.live import Tracking  # noqa: E402


@pytest.fixture(autouse=True)
def _local_store(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    previous = mlflow.get_tracking_uri()
    yield
    mlflow.set_tracking_uri(previous)


def tiny(data, model_dir, report_to=(), **train) -> RunConfig:
    opts = dict(epochs=2, batch_size=16, lr=3e-3, max_length=32, seed=1, refit=False)
    opts.update(train)
    return RunConfig(data=DataConfig(train=str(data)), model=ModelConfig(name=str(model_dir)),
                     train=TrainConfig(**opts), report_to=list(report_to))


def records(run_dir: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(run_dir, "metrics.jsonl").read_text().splitlines()]


def expected_scalars(run_dir) -> dict[tuple[str, int], float]:
    """Every metric metrics.jsonl holds, as (tag, step): the steps' loss, learning rate and throughput,
    every evaluation's every metric."""
    out = {}
    for r in records(run_dir):
        if r["event"] == "StepMetrics":
            for name in ("loss", "learning_rate", "samples_per_second"):
                out[(f"train/{name}", r["step"])] = r[name]
        elif r["event"] == "EvalMetrics":
            for name, value in r["metrics"].items():
                out[(f"{r['split']}/{name}", r["step"])] = value
    return out


def tensorboard_scalars(folder: Path):
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(folder), size_guidance={ea.SCALARS: 0, ea.IMAGES: 0, ea.TENSORS: 0})
    acc.Reload()
    found = {(tag, e.step): e.value for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)}
    return acc, found


def check_tensorboard(run_dir: str | Path) -> None:
    acc, found = tensorboard_scalars(Path(run_dir, "tensorboard"))
    want = expected_scalars(run_dir)
    assert {k[0] for k in want} >= {"train/loss", "validation/accuracy", "validation/macro_f1", "test/accuracy"}
    missing = [k for k in want if k not in found]
    assert not missing, missing[:5]
    for key, value in want.items():
        assert found[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert set(acc.Tags()["images"]) >= {"report/confusion_matrix", "report/calibration"}
    assert "_hparams_/experiment" in acc.PluginTagToContent("hparams")
    text = acc.Tensors("report/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "precision" in text and "support" in text


def mlflow_run(runs_home: Path, run_dir: str | Path):
    """The MLflow run of ``run_dir``, found through MLflow's client in the local store under the runs home."""
    uri = f"sqlite:///{runs_home / 'mlflow' / 'mlflow.db'}"
    assert (runs_home / "mlflow" / "mlflow.db").is_file()
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("workbench")
    found = client.search_runs([experiment.experiment_id], f"tags.`workbench.run_dir` = '{Path(run_dir).resolve()}'")
    assert len(found) == 1
    return client, found[0], uri


def check_mlflow(runs_home: Path, run_dir: str | Path, tmp_path: Path) -> None:
    client, run, uri = mlflow_run(runs_home, run_dir)
    assert run.info.status == "FINISHED"
    assert run.data.tags["task"] == "text-classification" and run.data.tags["method"] == "full"
    assert run.data.tags["backbone"].startswith("tiny-bert")
    assert float(run.data.params["train.lr"]) == 3e-3 and run.data.params["train.batch_size"] == "16"
    want = expected_scalars(run_dir)
    for tag in ("validation/macro_f1", "train/loss"):
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, tag)}
        assert history == pytest.approx({step: v for (t, step), v in want.items() if t == tag})
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert {"report/report.json", "report/config.json", "report/confusion_matrix.png"} <= artifacts
    models = client.search_logged_models([run.info.experiment_id])
    model = next(m for m in models if m.source_run_id == run.info.run_id)
    # The logged model predicts what `workbench predict` predicts on the export.
    texts = ["good great film", "awful boring plot", "the story was lovely", "a dismal dreadful ending"]
    src = tmp_path / "new.tsv"
    src.write_text("text\n" + "\n".join(texts) + "\n", encoding="utf-8")
    assert main(["predict", str(Path(run_dir, "model")), str(src), "-q", "-o", str(tmp_path / "out.tsv")]) == 0
    with open(tmp_path / "out.tsv", encoding="utf-8", newline="") as f:
        cli = list(csv.DictReader(f, delimiter="\t"))
    mlflow.set_tracking_uri(uri)
    loaded = mlflow.pyfunc.load_model(f"models:/{model.model_id}")
    assert [c.name for c in loaded.metadata.signature.inputs] == ["text"]
    import pandas as pd

    answers = loaded.predict(pd.DataFrame({"text": texts}))
    assert list(answers["label"]) == [r["label"] for r in cli]
    assert list(answers["score"]) == pytest.approx([float(r["score"]) for r in cli], abs=1e-5)


def test_live_run_logs_to_tensorboard_and_mlflow(sentiment_tsv, tiny_model_dir, runs_home, tmp_path):
    result = run_training(tiny(sentiment_tsv, tiny_model_dir, ["tensorboard", "mlflow"]))
    assert json.loads(Path(result.run_dir, "config.json").read_text())["report_to"] == ["tensorboard", "mlflow"]
    assert not [r for r in records(result.run_dir) if r["event"] == "Warning_"]
    check_tensorboard(result.run_dir)
    check_mlflow(runs_home, result.run_dir, tmp_path)


def test_a_failing_tracker_warns_once_and_the_run_goes_on(sentiment_tsv, tiny_model_dir, runs_home, monkeypatch):
    from workbench.core.tracking import mlflow_log

    calls = []

    def broken(self, record):
        calls.append(record["event"])
        raise ConnectionError("the server went away")

    monkeypatch.setattr(mlflow_log.MlflowTracker, "record", broken)
    result = run_training(tiny(sentiment_tsv, tiny_model_dir, ["mlflow", "tensorboard"]))
    assert json.loads(Path(result.run_dir, "status.json").read_text())["state"] == "finished"
    warnings = [r["message"] for r in records(result.run_dir) if r["event"] == "Warning_"]
    assert len(warnings) == 1 and "mlflow: logging stopped" in warnings[0] and "server went away" in warnings[0]
    assert len(calls) == 1  # dropped at its first failure
    check_tensorboard(result.run_dir)  # the other tracker logged everything


def test_a_tracker_that_cannot_start_is_said_after_the_run_starts(sentiment_tsv, tiny_model_dir, runs_home,
                                                                   monkeypatch):
    import workbench.core.tracking.tensorboard as tb

    def missing(module, purpose):
        raise InputError(f"{purpose} needs the {module} package, which is not installed; install it with: "
                         'pip install "workbench[track]"')

    monkeypatch.setattr(tb, "need", missing)
    result = run_training(tiny(sentiment_tsv, tiny_model_dir, ["tensorboard"], epochs=1))
    events = records(result.run_dir)
    assert events[0]["event"] == "RunStarted"
    warnings = [r["message"] for r in events if r["event"] == "Warning_"]
    assert len(warnings) == 1 and 'pip install "workbench[track]"' in warnings[0]
    assert not Path(result.run_dir, "tensorboard").exists()
    assert events[-1]["event"] == "Finished"


def test_tracking_drops_a_failing_tracker_and_keeps_the_others():
    class Good:
        name = "good"

        def __init__(self):
            self.seen, self.ended = [], []

        def record(self, record):
            self.seen.append(record["event"])

        def finish(self, record):
            self.ended.append(record["event"])

        def close(self):
            self.ended.append("closed")

    class Bad(Good):
        name = "bad"

        def record(self, record):
            raise RuntimeError("boom")

    said = []
    good, bad = Good(), Bad()
    tracking = Tracking([bad, good], said.append)
    for event in ("RunStarted", "StepMetrics", "StepMetrics", "Finished"):
        tracking.record({"event": event})
    assert said == ["bad: logging stopped (RuntimeError: boom); the run goes on without it"]
    assert good.seen == ["RunStarted", "StepMetrics", "StepMetrics"] and good.ended == ["Finished"]
    tracking.close()  # after the ending nothing is open: close() closes nothing twice
    assert good.ended == ["Finished"]


def test_track_logs_a_finished_run_afterwards(sentiment_tsv, tiny_model_dir, runs_home, tmp_path, capsys):
    result = run_training(tiny(sentiment_tsv, tiny_model_dir))
    assert not Path(result.run_dir, "tensorboard").exists()
    assert main(["track", result.run_dir]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["tracked"][0]["logged"] == ["tensorboard", "mlflow"]
    check_tensorboard(result.run_dir)
    check_mlflow(runs_home, result.run_dir, tmp_path)
    # Logged already: skipped, not logged twice; --force logs again.
    assert main(["track", result.run_dir, "--report-to", "mlflow"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1])["tracked"][0]["skipped"]
    assert "skipped" in captured.err
    mlflow_run(runs_home, result.run_dir)  # still one MLflow run
    # A run still going is refused, as is a folder that is no run.
    status = json.loads(Path(result.run_dir, "status.json").read_text())
    import os
    from datetime import datetime

    from workbench.core.processes import process_start
    started = process_start(os.getpid()) or datetime.now()
    Path(result.run_dir, "status.json").write_text(json.dumps({**status, "state": "running", "pid": os.getpid(),
                                                               "pid_started": started.isoformat()}))
    assert main(["track", result.run_dir, "--force"]) == 2
    assert "still going" in capsys.readouterr().err
    assert main(["track", str(tmp_path)]) == 2
    assert "not a Workbench run directory" in capsys.readouterr().err


def test_report_to_is_checked(sentiment_tsv, capsys):
    assert main(["train", str(sentiment_tsv), "--report-to", "wandb"]) == 2
    assert "--report-to" in capsys.readouterr().err
    with pytest.raises(InputError, match="--report-to"):
        RunConfig(data=DataConfig(train="x.tsv"), report_to=["tensorbored"]).validate()
    from workbench.cli.track import report_to

    assert report_to("TensorBoard, mlflow,tensorboard") == ["tensorboard", "mlflow"] and report_to("none") == []


def test_runs_tensorboard_starts_tensorboard_or_says_how(runs_home, monkeypatch, capsys):
    import importlib.util
    import subprocess

    from workbench.cli import track

    started = []
    monkeypatch.setattr(subprocess, "call", lambda command: started.append(command) or 0)
    assert main(["runs", "--tensorboard", "--port", "6123"]) == 0
    assert started and started[0][-4:] == ["--logdir", str(runs_home), "--port", "6123"]
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    assert track.tensorboard_command(runs_home, 6006) is None
    assert main(["runs", "--tensorboard"]) == 2
    err = capsys.readouterr().err
    assert 'pip install "workbench[track]"' in err and f"tensorboard --logdir {runs_home}" in err
