"""The `workbench` command as a user runs it: exit codes, messages, the JSON summary line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import sentiment_rows, write_tsv

ROOT = Path(__file__).resolve().parents[1]


def wb(args, env_home, timeout=300, **kw):
    env = {**os.environ, "WORKBENCH_HOME": str(env_home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "workbench", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, **kw)


@pytest.mark.slow
def test_train_prints_json_summary_last(sentiment_tsv, tiny_model_dir, tmp_path):
    export = tmp_path / "out"
    p = wb(["train", sentiment_tsv, "--model", tiny_model_dir, "--epochs", 3, "--lr", "3e-3", "--batch-size", 16,
            "--max-length", 32, "--export", export], tmp_path / "home")
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["task"] == "text-classification"
    assert {"accuracy", "macro_f1", "weighted_f1"} <= set(summary["metrics"])
    assert summary["samples_per_second"] > 0
    assert Path(summary["run_dir"]).is_dir()
    assert summary["export_dir"] == str(export.resolve())
    assert "precision" in p.stdout and "pos" in p.stdout  # the per-class report
    assert "training" in p.stderr  # the progress bar lives on stderr

    # Repeat from the saved config: a new run directory, same numbers.
    p2 = wb(["train", "--config", Path(summary["run_dir"]) / "config.json"], tmp_path / "home")
    assert p2.returncode == 0, p2.stderr
    again = json.loads(p2.stdout.strip().splitlines()[-1])
    assert again["run_dir"] != summary["run_dir"]
    assert again["metrics"]["accuracy"] == pytest.approx(summary["metrics"]["accuracy"])


BAD_INPUTS = {
    "missing": (None, "not found"),
    "empty": (b"", "empty"),
    "header_only": (b"text\tlabel\n", "no data rows"),
    "binary": (bytes(range(256)) * 40, "binary"),
    "single_class": ("text\tlabel\n" + "".join(f"sentence number {i}\tyes\n" for i in range(30)), "class"),
    "free_text_labels": ("text\tlabel\n" + "".join(f"sentence {i}\tnote {i} unique\n" for i in range(3000)), "free text"),
    "ragged": ("text\tlabel\n" + "a fine film\tpos\n" * 10 + "oops\tpos\textra\n" + "a bad film\tneg\n" * 10, "line 12"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_a_clear_message(case, tmp_path, tiny_model_dir):
    content, expected = BAD_INPUTS[case]
    path = tmp_path / f"{case}.tsv"
    if content is not None:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    home = tmp_path / "home"
    p = wb(["train", path, "--model", tiny_model_dir, "--epochs", 1], home)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert f"{case}.tsv" in p.stderr
    assert expected.lower() in p.stderr.lower(), p.stderr
    assert "Traceback" not in p.stderr
    assert p.stdout.strip() == ""
    runs = home / "runs"
    assert not runs.exists() or list(runs.iterdir()) == []  # nothing half-written


@pytest.mark.slow
def test_missing_named_column(sentiment_tsv, tiny_model_dir, tmp_path):
    p = wb(["train", sentiment_tsv, "--model", tiny_model_dir, "--text-column", "review"], tmp_path / "home")
    assert p.returncode == 2
    assert "review" in p.stderr and "text" in p.stderr and "label" in p.stderr  # names the available columns
    assert "Traceback" not in p.stderr


def test_usage_errors_exit_2(tmp_path):
    assert wb(["train"], tmp_path).returncode == 2
    p = wb(["train", "x.tsv", "--epochs", "many"], tmp_path)
    assert p.returncode == 2 and "--epochs" in p.stderr
    p = wb(["train", "x.tsv", "--lr", "7"], tmp_path)
    assert p.returncode == 2


@pytest.mark.slow
def test_offline_hub_id_names_offline_choices(sentiment_tsv, tmp_path):
    p = wb(["train", sentiment_tsv, "--model", "some-org/not-cached-model"], tmp_path / "home")
    assert p.returncode == 2
    assert "offline" in p.stderr.lower() and "all-MiniLM-L6-v2" in p.stderr
    assert "Traceback" not in p.stderr


def _start_long_run(tmp_path, tiny_model_dir):
    data = write_tsv(tmp_path / "long.tsv", sentiment_rows(2000))
    run_dir = tmp_path / "run"
    env = {**os.environ, "WORKBENCH_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench", "train", str(data), "--model", str(tiny_model_dir), "--epochs", "200",
         "--batch-size", "8", "--run-dir", str(run_dir), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    deadline = time.time() + 120
    metrics = run_dir / "metrics.jsonl"
    while time.time() < deadline:
        if metrics.exists() and metrics.read_text().count('"StepMetrics"') >= 5:
            return proc, run_dir
        if proc.poll() is not None:
            pytest.fail(proc.stderr.read())
        time.sleep(0.2)
    proc.kill()
    pytest.fail("training did not start in time")


@pytest.mark.slow
def test_ctrl_c_exits_130_with_consistent_run_dir(tmp_path, tiny_model_dir):
    proc, run_dir = _start_long_run(tmp_path, tiny_model_dir)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert json.loads((run_dir / "status.json").read_text())["state"] == "cancelled"
    assert not (run_dir / "cache").exists() and not (run_dir / ".reserve").exists()
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["event"] == "Cancelled"


@pytest.mark.slow
def test_kill_9_leaves_readable_metrics(tmp_path, tiny_model_dir):
    from workbench.core.run.directory import read_metrics

    proc, run_dir = _start_long_run(tmp_path, tiny_model_dir)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    json.loads((run_dir / "config.json").read_text())
    assert json.loads((run_dir / "status.json").read_text())["state"] == "running"
    steps = [m for m in read_metrics(run_dir) if m["event"] == "StepMetrics"]
    assert len(steps) >= 5
    assert [s["step"] for s in steps] == list(range(1, len(steps) + 1))


def test_models_lists_the_packaged_default(tmp_path):
    p = wb(["models"], tmp_path)
    assert p.returncode == 0
    assert "all-MiniLM-L6-v2" in p.stdout and "22.7M" in p.stdout


def test_a_broken_backbone_plugin_is_reported_not_dropped_silently(monkeypatch, capsys):
    import importlib.metadata

    from workbench.cli.main import main

    class Broken:
        name, value = "fancy", "fancy_models:entry"

        def load(self):
            raise ImportError("No module named 'fancy_models'")

    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda **kw: [Broken()] if kw.get("group") == "workbench.backbones" else real(**kw))
    assert main(["models"]) == 0
    out, err = capsys.readouterr()
    assert "all-MiniLM-L6-v2" in out  # the catalog still lists what works
    assert "plug-in 'fancy'" in err and "No module named 'fancy_models'" in err


@pytest.mark.precision
def test_verbose_shows_the_engine_log(sentiment_tsv, tiny_model_dir, tmp_path, monkeypatch, capsys):
    from workbench.cli.main import main

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WORKBENCH_CPU_BF16", "0")  # as on a CPU without bf16 units: auto is fp32
    args = ["train", str(sentiment_tsv), "--model", str(tiny_model_dir), "--max-steps", "2", "--quiet"]
    assert main(args) == 0
    assert "resolved to" not in capsys.readouterr().err
    assert main([*args, "--verbose"]) == 0
    err = capsys.readouterr().err
    assert f"backbone {str(tiny_model_dir)!r} resolved to" in err
    assert "precision fp32 (auto: WORKBENCH_CPU_BF16=0)" in err
    monkeypatch.setenv("WORKBENCH_CPU_BF16", "1")  # as on a CPU with bf16 units: bf16 training, fp32 report
    assert main([*args, "--verbose"]) == 0
    err = capsys.readouterr().err
    assert "precision bf16 (auto: WORKBENCH_CPU_BF16=1)" in err and "bf16 check on test" in err


def test_a_reader_that_closes_the_pipe_ends_the_output_quietly(tmp_path):
    # `workbench compare A B | head`: head exits after its lines; the rest of the output has nowhere to go.
    script = ("import importlib, sys\nm = importlib.import_module('workbench.cli.main')\n"
              "def flood():\n    for _ in range(2000):\n        print('x' * 200)\n    return 0\n"
              "m.cmd_models = flood\nsys.exit(m.main(['models']))\n")
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         cwd=Path(__file__).resolve().parents[1])
    assert p.stdout is not None and p.stderr is not None
    p.stdout.read(10)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err, err
