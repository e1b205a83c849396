"""Runs that survive: checkpoints, exact resume, pause, out-of-memory back-off, a full disk."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import sentiment_rows, write_tsv
from test_cli import ROOT

from workbench.core.cancel import CancelToken
from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from workbench.core.errors import InputError, OutOfMemory, Paused, WriteFailed
from workbench.core.events import Callbacks, StepMetrics
from workbench.core.run.directory import read_metrics
from workbench.core.run.pipeline import prepare_resume, resume_training, run_training
from workbench.core.training.checkpoints import Checkpoints


def config(data, model_dir, run_dir, **train) -> RunConfig:
    opts = dict(epochs=3, batch_size=16, lr=3e-3, max_length=32, seed=3, save_steps=3, save_minutes=0)
    opts.update(train)
    return RunConfig(data=DataConfig(train=str(data)), model=ModelConfig(name=str(model_dir)),
                     train=TrainConfig(**opts), run_dir=str(run_dir))


class PauseAt(Callbacks):
    """Presses Pause when the run reports step ``step`` (as the app's button does, from outside)."""

    def __init__(self, cancel: CancelToken, step: int) -> None:
        self.cancel, self.step = cancel, step

    def on_event(self, event) -> None:
        if isinstance(event, StepMetrics) and event.step == self.step:
            self.cancel.pause()


def step_losses(run_dir) -> dict[int, float]:
    steps = [e for e in read_metrics(run_dir) if e["event"] == "StepMetrics"]
    numbers = [e["step"] for e in steps]
    assert numbers == list(range(1, len(numbers) + 1)), "metrics.jsonl must have every step once, in order"
    return {e["step"]: e["loss"] for e in steps}


def status(run_dir) -> dict:
    return json.loads((Path(run_dir) / "status.json").read_text())


@pytest.fixture()
def data(tmp_path):
    return write_tsv(tmp_path / "reviews.tsv", sentiment_rows(200))


@pytest.fixture()
def reference(data, tiny_model_dir, tmp_path, runs_home):
    """The same run, never interrupted."""
    result = run_training(config(data, tiny_model_dir, tmp_path / "reference"))
    return result, step_losses(result.run_dir)


def test_pause_then_resume_is_bit_exact(data, tiny_model_dir, tmp_path, reference, runs_home):
    ref_result, ref_losses = reference
    run_dir = tmp_path / "paused"
    cancel = CancelToken()
    with pytest.raises(Paused):
        run_training(config(data, tiny_model_dir, run_dir), PauseAt(cancel, 7), cancel)
    s = status(run_dir)
    assert s["state"] == "paused" and s["step"] == 7
    assert Checkpoints(run_dir / "checkpoints").latest().name == "step-7"
    assert not (run_dir / "cache").exists()
    assert [e["event"] for e in read_metrics(run_dir)][-1] == "Paused"

    result = resume_training(run_dir)
    assert status(run_dir)["state"] == "finished"
    assert step_losses(run_dir) == ref_losses  # bit-exact: float equality, every step
    assert result.metrics == ref_result.metrics
    events = [e["event"] for e in read_metrics(run_dir)]
    # Everything logged after the checkpoint (the Paused event here) is cut when the run goes on.
    assert events.count("Resumed") == 1 and events.count("Paused") == 0 and events[-1] == "Finished"
    assert not (run_dir / "checkpoints").exists()  # removed once the run finished and exported
    with pytest.raises(InputError, match="finished already"):
        resume_training(run_dir)


def test_pause_while_refitting_then_resume_is_bit_exact(data, tiny_model_dir, tmp_path, reference, runs_home):
    """A pause in the refit (which keeps no checkpoints of its own) goes on from the first pass's
    last checkpoint and ends as the uninterrupted run did."""
    ref_result, ref_losses = reference
    first_pass = max(e["step"] for e in read_metrics(ref_result.run_dir) if e["event"] == "EvalMetrics"
                     and e["split"] == "validation")
    assert len(ref_losses) > first_pass + 3  # the reference refitted
    run_dir = tmp_path / "paused-refit"
    cancel = CancelToken()
    with pytest.raises(Paused, match="while training on all rows"):
        run_training(config(data, tiny_model_dir, run_dir), PauseAt(cancel, first_pass + 2), cancel)
    s = status(run_dir)
    latest = Checkpoints(run_dir / "checkpoints").latest()
    assert s["state"] == "paused" and s["step"] == Checkpoints.loop_state(latest).step < first_pass
    result = resume_training(run_dir)
    assert step_losses(run_dir) == ref_losses and result.metrics == ref_result.metrics


def test_resume_after_a_kill_while_a_checkpoint_was_being_written(data, tiny_model_dir, tmp_path, reference,
                                                                 runs_home):
    _, ref_losses = reference
    run_dir = tmp_path / "killed"
    cancel = CancelToken()
    with pytest.raises(Paused):
        run_training(config(data, tiny_model_dir, run_dir), PauseAt(cancel, 6), cancel)
    # What a kill -9 at step 9 leaves: steps logged past the checkpoint, a half line, a checkpoint
    # folder still being written by a process that no longer exists, status.json saying running.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with open(run_dir / "metrics.jsonl", "a") as f:
        for step in (7, 8, 9):
            f.write(json.dumps({"event": "StepMetrics", "step": step, "loss": 123.0}) + "\n")
        f.write('{"event": "StepMe')
    partial = run_dir / "checkpoints" / f".step-9.writing-{gone.pid}-abcd"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half")
    s = status(run_dir)
    s.update(state="running", pid=gone.pid)
    (run_dir / "status.json").write_text(json.dumps(s))

    plan = prepare_resume(run_dir)
    assert plan.step == 6 and not partial.exists()
    resume_training(run_dir)
    assert step_losses(run_dir) == ref_losses


def test_resume_refuses_changed_data_and_running_or_checkpointless_runs(data, tiny_model_dir, tmp_path, runs_home):
    run_dir = tmp_path / "run"
    cancel = CancelToken()
    with pytest.raises(Paused):
        run_training(config(data, tiny_model_dir, run_dir), PauseAt(cancel, 2), cancel)
    with open(data, "a") as f:
        f.write("one more film\tpos\n")
    with pytest.raises(InputError, match="data changed"):
        resume_training(run_dir)

    early = tmp_path / "early"  # cancelled before its first checkpoint
    cancel = CancelToken()
    cancel.cancel()
    with pytest.raises(Exception):
        run_training(config(data, tiny_model_dir, early), None, cancel)
    with pytest.raises(InputError, match="no checkpoint"):
        resume_training(early)


def test_out_of_memory_halves_the_micro_batch_and_keeps_the_batch(data, tiny_model_dir, tmp_path, reference,
                                                                 runs_home, monkeypatch):
    ref_result, ref_losses = reference
    monkeypatch.setenv("WORKBENCH_FAULT_OOM", "4")
    result = run_training(config(data, tiny_model_dir, tmp_path / "oom"))
    warnings = [e["message"] for e in read_metrics(result.run_dir) if e["event"] == "Warning_"]
    assert any("out of memory at step 4 with 16 rows per call; going on with 8" in w for w in warnings), warnings
    losses = step_losses(result.run_dir)
    # The same steps over the same rows: the batch is not smaller, only split into more calls (whose
    # dropout masks differ, so the losses are close, not equal).
    assert list(losses) == list(ref_losses)
    assert losses[3] == ref_losses[3] and losses == pytest.approx(ref_losses, abs=0.05)
    steps = [e for e in read_metrics(result.run_dir) if e["event"] == "StepMetrics"]
    assert steps[-1]["samples_per_second"] > 0 and result.metrics["accuracy"] == pytest.approx(
        ref_result.metrics["accuracy"], abs=0.1)

    monkeypatch.setenv("WORKBENCH_FAULT_OOM", "2:always")
    with pytest.raises(OutOfMemory, match="one row per call"):
        run_training(config(data, tiny_model_dir, tmp_path / "oom-always"))


def test_a_full_disk_while_checkpointing_pauses_the_run_resumably(data, tiny_model_dir, tmp_path, reference,
                                                                 runs_home, monkeypatch):
    _, ref_losses = reference
    real = Checkpoints.save
    calls = []

    def save(self, state, *args):
        calls.append(state.step)
        if len(calls) == 2:
            part = self.folder / f".step-{state.step}.writing-{os.getpid()}-x"
            part.mkdir(parents=True)
            (part / "model.safetensors").write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device", str(part / "optimizer.pt"))
        return real(self, state, *args)

    monkeypatch.setattr(Checkpoints, "save", save)
    run_dir = tmp_path / "full"
    with pytest.raises(WriteFailed, match="disk is full") as e:
        run_training(config(data, tiny_model_dir, run_dir))
    assert "--resume" in str(e.value)
    s = status(run_dir)
    assert s["state"] == "paused" and "disk is full" in s["message"]
    assert [p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("step-")] == ["step-3"]
    monkeypatch.setattr(Checkpoints, "save", real)
    resume_training(run_dir)
    assert step_losses(run_dir) == ref_losses


@pytest.mark.slow
def test_cli_resume_after_kill_9(tmp_path, tiny_model_dir):
    data = write_tsv(tmp_path / "reviews.tsv", sentiment_rows(400))
    env = {**os.environ, "WORKBENCH_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "workbench", "train", str(data), "--model", str(tiny_model_dir), "--max-steps", "60",
            "--batch-size", "8", "--save-steps", "5", "--quiet"]
    reference = subprocess.run([*args, "--run-dir", str(tmp_path / "ref")], env=env, capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([*args, "--run-dir", str(run_dir)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not (run_dir / "checkpoints" / "step-10").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    again = subprocess.run([sys.executable, "-m", "workbench", "train", "--resume", str(run_dir), "--quiet"],
                           env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert step_losses(run_dir) == step_losses(tmp_path / "ref")
    assert json.loads(again.stdout.strip().splitlines()[-1])["run_dir"] == str(run_dir.resolve())
    bad = subprocess.run([sys.executable, "-m", "workbench", "train", "--resume", str(run_dir), "--epochs", "2"],
                         env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "--epochs" in bad.stderr
