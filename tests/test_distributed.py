"""Training on several processes (torch.distributed, gloo on the CPU) and the command line that
repeats a run: 2-process runs against 1-process runs with the same effective batch, a rank killed
mid-run, a cancel that reaches one rank, and --resume of a distributed run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import sentiment_rows, write_tsv

from workbench.core.command import command_line
from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from workbench.core.run.directory import read_metrics

ROOT = Path(__file__).resolve().parents[1]


# ---- helpers --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def still_model(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny BERT without dropout: a 2-process run then computes what a 1-process run does."""
    import shutil

    folder = tmp_path_factory.mktemp("tiny-still")
    shutil.copytree(tiny_model_dir, folder, dirs_exist_ok=True)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_tsv(tmp_path_factory.mktemp("dist-data") / "reviews.tsv", sentiment_rows(200))


def _env(**extra) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               WORKBENCH_DIST_TIMEOUT="30", TOKENIZERS_PARALLELISM="false")
    env.pop("WORLD_SIZE", None)
    env.update(extra)
    return env


def _train(args: list[str], timeout: float = 240, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench", "train", *args], env=_env(**env), capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def _args(data: Path, model: Path, run_dir: Path, batch: int, *extra: str) -> list[str]:
    return [str(data), "--model", str(model), "--device", "cpu", "--epochs", "2", "--batch-size", str(batch),
            "--max-length", "32", "--no-refit", "--run-dir", str(run_dir), "--quiet", *extra]


def _step_losses(run_dir: Path) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in read_metrics(run_dir) if e["event"] == "StepMetrics"}


def _status(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


# ---- fast: no processes ---------------------------------------------------------------------------
def test_command_line_repeats_the_settings():
    from workbench.cli.main import build_parser, config_from_args

    cfg = RunConfig(
        task="text-classification",
        data=DataConfig(train="/data/my reviews.tsv", text_column="review", label_column="stars", delimiter="\t",
                        has_header=True, sample=500, val_fraction=0.2),
        model=ModelConfig(name="/models/mini", method="lora", lora_rank=4, lora_targets=["query", "value"]),
        train=TrainConfig(epochs=2.5, batch_size=16, lr=3e-4, max_length=64, seed=7, grad_accum=2, eval_steps=50,
                          num_processes=4, compile=True, group_by_length=False, refit=False, precision="bf16",
                          device="cuda"),
        export_dir="/out/model", quantize="int8",
    )
    line = command_line(cfg)
    assert line.startswith("workbench train '/data/my reviews.tsv' --task text-classification")
    assert "--num-processes 4" in line and "--compile" in line and "--delimiter tab" in line
    import shlex

    again = config_from_args(build_parser().parse_args(shlex.split(line)[1:]))
    assert again.to_dict() == cfg.to_dict()
    # Defaults are left out, but the batch size and learning rate are always said (the epochs too
    # when set; automatic epochs stay automatic).
    plain = command_line(RunConfig(data=DataConfig(train="x.tsv")))
    assert plain == "workbench train x.tsv --batch-size 32 --lr 5e-05"
    assert command_line(RunConfig(data=DataConfig(train="x.tsv"), train=TrainConfig(epochs=3.0))).startswith(
        "workbench train x.tsv --epochs 3 ")


def test_launch_command_and_failure_messages():
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    from workbench.launcher import check_devices, describe_failure, launch_command

    cmd = launch_command(2, ["train", "data.tsv", "--num-processes", "2"])
    assert "-m torch.distributed.run --standalone --nproc-per-node 2 --max-restarts 0" in cmd
    assert cmd.endswith("-m workbench train data.tsv --num-processes 2")
    assert check_devices(4, "cpu") is None
    assert "names one GPU" in check_devices(2, "cuda:1")
    import torch

    if not torch.cuda.is_available():
        assert "no CUDA GPU" in check_devices(2, "cuda")

    def failure(code):
        return ProcessFailure(local_rank=0, pid=4242, exitcode=code, error_file="/nonexistent")

    code, message = describe_failure({1: failure(-9)})
    assert code == 1 and "rank 1 (pid 4242) was killed by SIGKILL" in message
    # The rank the launcher stopped (SIGTERM) in the same poll is not the cause.
    code, message = describe_failure({0: failure(-15), 1: failure(-9)})
    assert "rank 1 (pid 4242) was killed by SIGKILL" in message
    assert describe_failure({0: failure(-15), 1: failure(130)}) == (130, "")
    assert describe_failure({0: failure(130), 1: failure(130)}) == (130, "")
    assert describe_failure({0: failure(2)}) == (2, "")
    assert describe_failure({0: failure(4)}) == (4, "")  # paused: rank 0 said where to resume
    code, message = describe_failure({1: failure(1)})
    assert code == 1 and "rank 1" in message and "exit status 1" in message


def test_global_batches_are_sharded_evenly():
    from workbench.core.distributed import shard
    from workbench.core.training.batching import bucket_widths

    rows = np.arange(7)
    parts = [shard(rows, r, 2) for r in range(2)]
    assert sorted(np.concatenate(parts).tolist()) == rows.tolist() and [len(p) for p in parts] == [4, 3]
    assert len(shard(np.arange(1), 1, 2)) == 0  # a tail batch can leave a rank without rows
    batch = {"input_ids": np.ones((2, 5), np.int64), "attention_mask": np.ones((2, 5), np.int64),
             "labels": np.array([0, 1])}
    padded = bucket_widths(batch, pad_id=0, max_length=128)
    assert padded["input_ids"].shape == (2, 32) and padded["attention_mask"][:, 5:].sum() == 0
    assert padded["labels"].tolist() == [0, 1]
    assert bucket_widths(batch, 0, max_length=5)["input_ids"].shape == (2, 5)  # never past --max-length


# ---- slow: real process groups --------------------------------------------------------------------
@pytest.mark.slow
def test_two_processes_match_one_with_the_same_effective_batch(data, still_model, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    single = _train(_args(data, still_model, one, 16))
    assert single.returncode == 0, single.stderr
    started = time.monotonic()
    double = _train(_args(data, still_model, two, 8, "--num-processes", "2"))
    assert double.returncode == 0, double.stderr
    print(f"2-process run: {time.monotonic() - started:.1f} s")
    # The CLI says how it launched the ranks.
    assert "workbench: starting 2 processes:" in double.stderr
    assert "-m torch.distributed.run --standalone --nproc-per-node 2" in double.stderr
    # One consistent run directory, written by rank 0 alone.
    assert _status(two)["state"] == "finished"
    events = read_metrics(two)
    assert [e["event"] for e in events].count("RunStarted") == 1
    steps = [e["step"] for e in events if e["event"] == "StepMetrics"]
    assert steps == list(range(1, len(steps) + 1))
    config = json.loads((two / "config.json").read_text())
    assert config["train"]["num_processes"] == 2
    assert config["resolved"]["distributed"] == {"processes": 2, "backend": "gloo", "effective_batch": 16}
    assert any("effective batch 16 = 8 rows x 2 processes" in (e.get("detail") or "") for e in events)
    assert (two / "model" / "workbench.json").is_file() and (two / "report.json").is_file()
    assert not (two / "cache").exists() and not (two / ".reserve").exists()
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2  # no folder per rank
    # Batch 8 on each of 2 processes is the batch of 16 on one: the same steps, the same losses.
    a, b = _step_losses(one), _step_losses(two)
    assert a.keys() == b.keys()
    assert max(abs(a[k] - b[k]) for k in a) < 1e-4
    ra, rb = (json.loads((d / "report.json").read_text())["metrics"] for d in (one, two))
    assert abs(ra["loss"] - rb["loss"]) < 1e-4 and ra["accuracy"] == rb["accuracy"]
    # The summary line is rank 0's, printed once.
    assert double.stdout.count('"run_dir"') == 1


@pytest.mark.slow
def test_a_killed_rank_ends_the_run_with_a_message(data, still_model, tmp_path):
    run_dir = tmp_path / "killed"
    started = time.monotonic()
    proc = _train(_args(data, still_model, run_dir, 4, "--num-processes", "2"), timeout=180,
                  WORKBENCH_FAULT_KILL_RANK="1:3")
    took = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr
    assert "rank 1" in proc.stderr and "killed by SIGKILL" in proc.stderr
    assert took < 150
    status = _status(run_dir)
    assert status["state"] == "failed", status  # rank 0 recorded it (or the launcher did for it)
    assert "Traceback" not in proc.stderr.split("killed by SIGKILL")[-1]


@pytest.mark.slow
def test_a_cancel_on_rank_zero_stops_every_rank_and_the_run_resumes(data, still_model, tmp_path):
    run_dir = tmp_path / "cancelled"
    args = _args(data, still_model, run_dir, 4, "--num-processes", "2", "--save-steps", "2")
    proc = _train(args, WORKBENCH_FAULT_CANCEL="5")
    assert proc.returncode == 130, proc.stderr
    assert _status(run_dir)["state"] == "cancelled"
    assert (run_dir / "checkpoints" / "step-4").is_dir()
    before = _step_losses(run_dir)
    assert max(before) == 4  # both ranks stopped at step 5's first batch: the cancel was agreed on

    again = subprocess.run([sys.executable, "-m", "workbench", "train", "--resume", str(run_dir), "--quiet"],
                           env=_env(), capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert again.returncode == 0, again.stderr
    assert "starting 2 processes" in again.stderr and f"--resume {run_dir}" in again.stderr
    assert _status(run_dir)["state"] == "finished"
    after = _step_losses(run_dir)
    assert all(abs(after[k] - v) < 1e-6 for k, v in before.items()) and max(after) > 4


def _wait_for_step(run_dir: Path, proc: subprocess.Popen, step: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if (run_dir / "metrics.jsonl").is_file() and max(_step_losses(run_dir), default=0) >= step:
            return
        time.sleep(0.05)
    raise AssertionError(f"no step {step} in {run_dir} (exit {proc.poll()})")


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_sigusr1_pauses_a_run_at_a_checkpoint_and_resume_finishes_it(data, still_model, tmp_path, processes):
    """`kill -USR1` (the app's Pause for a process group): to the launcher, which passes it on to
    rank 0, or to a one-process run itself; the run writes a checkpoint, stops as paused (exit 4)."""
    import signal

    run_dir = tmp_path / f"paused-{processes}"
    args = _args(data, still_model, run_dir, 2 // processes, "--num-processes", str(processes))
    args[args.index("--epochs") + 1] = "3"
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "train", *args], env=_env(), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_step(run_dir, proc, 3)
        os.kill(proc.pid, signal.SIGUSR1)
        out, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 4, err
    status = _status(run_dir)
    assert status["state"] == "paused", status
    assert f"Go on with: workbench train --resume {run_dir}" in err and "Traceback" not in err
    before = _step_losses(run_dir)
    paused_at = max(before)
    assert (run_dir / "checkpoints" / f"step-{paused_at}").is_dir() and paused_at < 100

    again = subprocess.run([sys.executable, "-m", "workbench", "train", "--resume", str(run_dir), "--quiet"],
                           env=_env(), capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert again.returncode == 0, again.stderr
    assert _status(run_dir)["state"] == "finished"
    after = _step_losses(run_dir)
    last = [e for e in read_metrics(run_dir) if e["event"] == "StepMetrics"][-1]
    assert max(after) == last["step"] == last["total_steps"] > paused_at
    assert all(abs(after[k] - v) < 1e-6 for k, v in before.items())


def _average_worker(rank: int, port: int, out: str) -> None:
    import torch
    import torch.distributed as td

    from workbench.core.distributed import Dist

    td.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4), torch.nn.BatchNorm1d(2, affine=False))
    model[1].running_mean.fill_(rank + 1.0)
    model[1].running_var.fill_(2.0 * (rank + 1))
    model[2].running_mean.fill_(-rank)
    model.register_buffer("other", torch.full((3,), float(rank)))  # not a norm's: left alone
    n = Dist(rank, 2, rank, "gloo").average_norm_statistics(model)
    torch.save({"n": n, "state": model.state_dict()}, f"{out}/rank{rank}.pt")
    td.destroy_process_group()


def test_batch_norm_statistics_are_averaged_over_the_ranks(tmp_path):
    """Each rank's batch norms follow its own shards (no buffer sync in DDP here): before an
    evaluation and at the end of training the ranks average them, so one model is evaluated and
    rank 0 keeps the statistics of every batch."""
    import socket

    import torch
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_average_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    states = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert [s["n"] for s in states] == [2, 2]
    for s in states:
        state = s["state"]
        assert torch.equal(state["1.running_mean"], torch.full((4,), 1.5))
        assert torch.equal(state["1.running_var"], torch.full((4,), 3.0))
        assert torch.equal(state["2.running_mean"], torch.full((2,), -0.5))
    assert [s["state"]["other"][0].item() for s in states] == [0.0, 1.0]


@pytest.mark.slow
def test_an_image_run_on_two_processes(tmp_path):
    """Images on 2 gloo processes: sharded batches through the small CNN's batch norms, averaged
    statistics, a gathered evaluation and one run directory."""
    from image_samples import write_class_folder

    root = tmp_path / "photos"
    write_class_folder(root / "train", 16)
    write_class_folder(root / "val", 4, seed=1)
    write_class_folder(root / "test", 6, seed=2)
    run_dir = tmp_path / "run"
    proc = _train([str(root), "--model", "small-cnn", "--device", "cpu", "--epochs", "4", "--batch-size", "4",
                   "--image-size", "32", "--lr", "3e-3", "--no-refit", "--run-dir", str(run_dir), "--quiet",
                   "--num-processes", "2"])
    assert proc.returncode == 0, proc.stderr
    assert _status(run_dir)["state"] == "finished"
    evaluations = [e for e in read_metrics(run_dir) if e["event"] == "EvalMetrics" and e["split"] == "validation"]
    assert len(evaluations) == 4
    report = json.loads((run_dir / "report.json").read_text())
    assert report["n"] == 12 and report["metrics"]["accuracy"] >= 0.9, report["metrics"]
