"""Runs that never lose data, round 2: one process per run (a lock), refused resumes that change
nothing, damaged checkpoints, a full disk inside torch.save, and the --help texts."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import sentiment_rows, write_tsv
from test_cli import ROOT
from test_resume import PauseAt, config, status, step_losses

from workbench.cli.main import SUBCOMMANDS, main
from workbench.core.cancel import CancelToken
from workbench.core.errors import Cancelled, InputError, Paused, WriteFailed, write_failure
from workbench.core.events import Callbacks, Warning_
from workbench.core.run.directory import LOCK_NAME, RunDirectory, RunInUse, RunLock, read_metrics
from workbench.core.run.pipeline import prepare_resume, resume_training, run_training
from workbench.core.training.checkpoints import Checkpoints

TORCH_FULL = ("[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing file data/0: "
              "file write failed")


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (the lock file aside) and a hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != LOCK_NAME}


def events(run_dir) -> list[str]:
    return [e["event"] for e in read_metrics(run_dir)]


class Collect(Callbacks):
    def __init__(self) -> None:
        self.events = []

    def on_event(self, event) -> None:
        self.events.append(event)


@pytest.fixture()
def data(tmp_path):
    return write_tsv(tmp_path / "reviews.tsv", sentiment_rows(200))


@pytest.fixture()
def paused(data, tiny_model_dir, tmp_path, runs_home) -> Path:
    """A run paused at step 12: checkpoints step-11 (the first evaluation's, with the best weights)
    and step-12, and metrics.jsonl logged past step-12's checkpoint (the Paused event), so a cut
    would show."""
    run_dir = tmp_path / "paused"
    cancel = CancelToken()
    with pytest.raises(Paused):
        run_training(config(data, tiny_model_dir, run_dir), PauseAt(cancel, 12), cancel)
    assert [p.name for p in Checkpoints(run_dir / "checkpoints").complete()] == ["step-11", "step-12"]
    assert Checkpoints(run_dir / "checkpoints").best() is not None
    latest = Checkpoints(run_dir / "checkpoints").latest()
    assert (run_dir / "metrics.jsonl").stat().st_size > Checkpoints.loop_state(latest).metrics_bytes
    return run_dir


def cut_short(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def env(tmp_path) -> dict[str, str]:
    return {**os.environ, "WORKBENCH_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def workbench(*args) -> list[str]:
    return [sys.executable, "-m", "workbench", *map(str, args)]


# ---- 1. one process per run ------------------------------------------------------------------------

def hold_lock(folder: Path) -> subprocess.Popen:
    """Another process that holds ``folder``'s run lock (as a run writing it does) until killed."""
    code = ("import fcntl, os, sys, time\n"
            f"fd = os.open({str(folder / LOCK_NAME)!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.ftruncate(fd, 0); os.write(fd, str(os.getpid()).encode())\n"
            "print('locked', flush=True)\n"
            "time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_run_locked_by_another_process_is_refused_naming_it_and_left_as_it_was(paused, data, tiny_model_dir,
                                                                               tmp_path, capsys):
    holder = hold_lock(paused)
    try:
        before = snapshot(paused)
        with pytest.raises(RunInUse, match=f"process {holder.pid}"):
            resume_training(paused)
        with pytest.raises(RunInUse, match=f"process {holder.pid}"):
            prepare_resume(paused)
        assert main(["train", "--resume", str(paused), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert f"process {holder.pid}" in err and "Traceback" not in err
        assert snapshot(paused) == before
        # --run-dir of a folder another process is writing: refused, and named
        with pytest.raises(RunInUse, match=f"process {holder.pid}"):
            run_training(config(data, tiny_model_dir, paused))
        empty = tmp_path / "empty"
        empty.mkdir()
        holder2 = hold_lock(empty)  # a run that has only just taken its folder
        try:
            with pytest.raises(RunInUse, match=f"process {holder2.pid}"):
                run_training(config(data, tiny_model_dir, empty))
            assert [p.name for p in empty.iterdir()] == [LOCK_NAME]
        finally:
            holder2.kill()
            holder2.wait()
        assert snapshot(paused) == before
    finally:
        holder.kill()
        holder.wait()
    resume_training(paused)  # the holder is gone: its lock went with it
    assert status(paused)["state"] == "finished"


def test_without_flock_the_run_goes_on_and_status_json_still_guards_it(paused, monkeypatch):
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    lock = RunLock.acquire(paused)
    assert not lock.held
    lock.release()
    resume_training(paused)
    assert status(paused)["state"] == "finished"


@pytest.mark.slow
def test_two_resumes_started_at_once_one_goes_on_the_other_is_refused(paused, tmp_path):
    procs = [subprocess.Popen(workbench("train", "--resume", paused, "--quiet"), env=env(tmp_path),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    winner, loser = (0, 1) if procs[0].returncode == 0 else (1, 0)
    err = outs[loser][1]
    assert f"process {procs[winner].pid}" in err or "finished already" in err, err
    assert all("Traceback" not in e for _, e in outs)
    assert events(paused).count("Resumed") == 1 and events(paused).count("Finished") == 1
    step_losses(paused)  # every step once, in order
    assert status(paused)["state"] == "finished"


@pytest.mark.slow
def test_a_resume_while_another_resume_runs_is_refused_and_changes_nothing(paused, tmp_path):
    first = subprocess.Popen(workbench("train", "--resume", paused, "--quiet"), env=env(tmp_path),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stopped = False
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            s = status(paused)
            if s.get("state") == "resumed" and s.get("pid") == first.pid:
                break
            assert first.poll() is None, first.communicate()
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGSTOP)  # it holds the run; nothing moves while the second tries
        stopped = True
        before = snapshot(paused)
        second = subprocess.run(workbench("train", "--resume", paused), env=env(tmp_path), capture_output=True,
                                text=True, timeout=300)
        assert second.returncode == 2, second.stderr
        assert f"process {first.pid}" in second.stderr and "Traceback" not in second.stderr
        assert snapshot(paused) == before
    finally:
        if stopped:
            os.kill(first.pid, signal.SIGCONT)
        if first.poll() is None and not stopped:
            first.kill()
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert events(paused).count("Resumed") == 1 and events(paused).count("Finished") == 1


@pytest.mark.slow
def test_two_trains_on_one_new_run_dir_at_once(data, tiny_model_dir, tmp_path):
    run_dir = tmp_path / "same"
    args = workbench("train", data, "--model", tiny_model_dir, "--epochs", 1, "--batch-size", 16, "--max-length", 32,
                     "--run-dir", run_dir, "--quiet")
    procs = [subprocess.Popen(args, env=env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert sorted(p.returncode for p in procs) == [0, 2], outs
    loser = 0 if procs[0].returncode == 2 else 1
    err = outs[loser][1]
    assert f"process {procs[1 - loser].pid}" in err or "not empty" in err, err
    assert all("Traceback" not in e for _, e in outs)
    assert events(run_dir).count("RunStarted") == 1 and events(run_dir).count("Finished") == 1


def test_runs_started_in_the_same_second_get_their_own_folders(runs_home):
    a = RunDirectory.create(None, "reviews", "text-classification")
    b = RunDirectory.create(None, "reviews", "text-classification")
    try:
        assert a.path != b.path
    finally:
        a.close()
        b.close()


# ---- 2 and 3. a refused resume changes nothing; damaged checkpoints -------------------------------

@pytest.mark.parametrize("damage", ["data changed", "all checkpoints damaged", "best weights damaged",
                                    "data deleted"])
def test_a_refused_resume_leaves_the_run_byte_for_byte(paused, data, damage, capsys):
    cps = Checkpoints(paused / "checkpoints")
    if damage == "data changed":
        with open(data, "a") as f:
            f.write("one more film\tpos\n")
        match = "data changed"
    elif damage == "data deleted":
        data.unlink()
        match = "not there any more"
    elif damage == "best weights damaged":
        cut_short(cps.best() / "model.safetensors")
        match = "best weights"
    else:
        for cp in cps.complete():
            cut_short(cp / "optimizer.pt")
        match = "checkpoints are damaged"
    before = snapshot(paused)
    metrics, state = (paused / "metrics.jsonl").read_bytes(), (paused / "status.json").read_bytes()
    with pytest.raises(InputError, match=match):
        prepare_resume(paused)
    with pytest.raises(InputError, match=match):
        resume_training(paused)
    assert main(["train", "--resume", str(paused), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err and "internal error" not in err
    assert (paused / "metrics.jsonl").read_bytes() == metrics and (paused / "status.json").read_bytes() == state
    assert snapshot(paused) == before


@pytest.mark.parametrize("part", ["model.safetensors", "optimizer.pt", "state.json"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_newest_intact_one(paused, part, capsys):
    cut_short(paused / "checkpoints" / "step-12" / part)
    plan = prepare_resume(paused)
    assert plan.checkpoint.name == "step-11" and plan.step == 11
    assert "step-12" in plan.warnings[0] and "damaged" in plan.warnings[0] and part in plan.warnings[0]
    assert (paused / "checkpoints" / "damaged-step-12").is_dir()  # set aside, never used
    assert (paused / "metrics.jsonl").stat().st_size == Checkpoints.loop_state(plan.checkpoint).metrics_bytes
    if part != "model.safetensors":
        return
    # The command line: it goes on, says so, and ends well (was: exit 1, "internal error").
    assert main(["train", "--resume", str(paused), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "warning: checkpoint" in err and "step-12" in err and "internal error" not in err
    assert status(paused)["state"] == "finished"
    step_losses(paused)


def test_resuming_from_an_earlier_checkpoint_is_still_bit_exact(paused, data, tiny_model_dir, tmp_path):
    reference = run_training(config(data, tiny_model_dir, tmp_path / "reference"))
    cut_short(paused / "checkpoints" / "step-12" / "model.safetensors")
    seen = Collect()
    result = resume_training(paused, seen)
    warnings = [e.message for e in seen.events if isinstance(e, Warning_)]
    assert any("step-12" in w and "going on from step-11" in w for w in warnings), warnings
    assert step_losses(paused) == step_losses(reference.run_dir)
    assert result.metrics == reference.metrics
    assert [e for e in read_metrics(paused) if e["event"] == "Resumed"][0]["step"] == 11


def test_an_internal_error_while_resuming_names_error_txt(paused, monkeypatch, capsys):
    import workbench.core.run.pipeline as run_module

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(run_module, "_run", boom)
    assert main(["train", "--resume", str(paused), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: boom" in err
    assert f"Details: {paused.resolve() / 'error.txt'}" in err and "No run directory was written" not in err
    assert "boom" in (paused / "error.txt").read_text()


# ---- 4. a full disk inside torch.save ----------------------------------------------------------------

def test_torch_saves_full_disk_error_is_a_write_failure():
    failure = write_failure(RuntimeError(TORCH_FULL), "/tmp/run")
    assert isinstance(failure, WriteFailed) and "disk is full" in str(failure)
    assert write_failure(RuntimeError("some other bug")) is None


def test_a_full_disk_in_the_second_checkpoint_pauses_the_run(data, tiny_model_dir, tmp_path, runs_home,
                                                             monkeypatch, capsys):
    import torch

    real = torch.save
    optimizer_saves = []

    def save(obj, f, *args, **kwargs):
        if Path(str(f)).name == "optimizer.pt":
            optimizer_saves.append(f)
            if len(optimizer_saves) == 2:
                real(obj, f, *args, **kwargs)  # a part of the file is there, as when the disk fills
                raise RuntimeError(TORCH_FULL)
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    run_dir = tmp_path / "full"
    code = main(["train", str(data), "--model", str(tiny_model_dir), "--epochs", "3", "--batch-size", "16",
                 "--lr", "3e-3", "--max-length", "32", "--seed", "3", "--save-steps", "3", "--save-minutes", "0",
                 "--run-dir", str(run_dir), "--quiet"])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "disk is full" in err and "--resume" in err and "Traceback" not in err
    s = status(run_dir)
    assert s["state"] == "paused" and s["step"] == 3 and "disk is full" in s["message"]
    assert [p.name for p in Checkpoints(run_dir / "checkpoints").complete()] == ["step-3"]
    assert not any(p.name.startswith(".step-") for p in (run_dir / "checkpoints").iterdir())
    monkeypatch.setattr(torch, "save", real)
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 0
    assert status(run_dir)["state"] == "finished"
    step_losses(run_dir)


# ---- 5. --help ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [None, *SUBCOMMANDS])
def test_no_help_text_shows_a_doubled_percent_sign(command, capsys):
    with pytest.raises(SystemExit) as e:
        main(([command] if command else []) + ["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage:" in out and "%%" not in out
    if command == "adapt":
        assert "5% to measure" in " ".join(out.split())


# ---- more unlucky resumes ------------------------------------------------------------------------------

def test_resume_of_something_that_is_not_a_run_exits_2_and_writes_nothing(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.txt").write_text("hello")
    assert main(["train", "--resume", str(folder)]) == 2
    assert "not a Workbench run directory" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["a.txt"]
    assert main(["train", "--resume", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["train", "--resume", str(folder / "a.txt")]) == 2
    assert "takes the run's folder" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()


def test_resume_of_a_finished_run_or_one_without_checkpoints(paused, capsys):
    for cp in Checkpoints(paused / "checkpoints").complete():
        shutil.rmtree(cp)
    before = snapshot(paused)
    assert main(["train", "--resume", str(paused)]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert snapshot(paused) == before
    s = status(paused)
    s["state"] = "finished"
    (paused / "status.json").write_text(json.dumps(s))
    assert main(["train", "--resume", str(paused)]) == 2
    assert "finished already" in capsys.readouterr().err


def test_resume_with_metrics_jsonl_gone_or_status_json_garbled_goes_on(paused, capsys):
    (paused / "metrics.jsonl").unlink()
    (paused / "status.json").write_text("[1, 2]")
    assert main(["train", "--resume", str(paused), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "metrics.jsonl is missing" in err
    assert status(paused)["state"] == "finished"
    assert events(paused)[0] == "Resumed"


def test_resume_in_a_folder_that_cannot_be_written_exits_3_and_changes_nothing(paused, monkeypatch, capsys):
    before = snapshot(paused)

    def read_only(folder):
        raise PermissionError(errno.EACCES, "Permission denied", str(Path(folder) / LOCK_NAME))

    monkeypatch.setattr(RunLock, "acquire", staticmethod(read_only))
    assert main(["train", "--resume", str(paused), "--quiet"]) == 3
    err = capsys.readouterr().err
    assert "cannot write" in err and "resume again" in err and "Traceback" not in err
    assert snapshot(paused) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_resume_in_a_read_only_folder_exits_3(paused, capsys):
    before = snapshot(paused)
    modes = {p: p.stat().st_mode for p in [paused, *paused.rglob("*")]}
    try:
        for p in modes:
            p.chmod(0o555 if p.is_dir() else 0o444)
        assert main(["train", "--resume", str(paused), "--quiet"]) == 3
        assert "Traceback" not in capsys.readouterr().err
    finally:
        for p, mode in modes.items():
            p.chmod(mode)
    assert snapshot(paused) == before


def test_ctrl_c_while_a_resume_checks_its_checkpoints_changes_nothing(paused, monkeypatch):
    cancel = CancelToken()
    real = Checkpoints.verify

    def verify(path, *args):
        cancel.cancel()  # Ctrl+C arrives while the checkpoints are read
        return real(path, *args)

    monkeypatch.setattr(Checkpoints, "verify", staticmethod(verify))
    before = snapshot(paused)
    with pytest.raises(Cancelled):
        resume_training(paused, None, cancel)
    assert snapshot(paused) == before
    monkeypatch.setattr(Checkpoints, "verify", staticmethod(real))
    resume_training(paused)
    assert status(paused)["state"] == "finished"


def test_checkpoints_record_sizes_and_hashes_and_older_ones_are_still_checked(paused):
    cps = Checkpoints(paused / "checkpoints")
    latest = cps.latest()
    manifest = json.loads((latest / "manifest.json").read_text())["files"]
    assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng.safetensors", "state.json"} <= set(manifest)
    assert Checkpoints.verify(latest) is None and cps.verify_best() is None
    # One byte changed, same size: the hash tells.
    path = latest / "scheduler.pt"
    raw = bytearray(path.read_bytes())
    raw[-30] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert "SHA-256" in Checkpoints.verify(latest)
    # A checkpoint from before manifests: its files' structure is checked instead.
    older = cps.complete()[0]
    (older / "manifest.json").unlink()
    assert Checkpoints.verify(older) is None
    cut_short(older / "rng.safetensors")
    assert "rng.safetensors" in Checkpoints.verify(older)
