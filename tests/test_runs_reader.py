"""Reading run directories back (workbench.core.run.history): finished, killed, damaged and foreign folders."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from workbench.core.errors import InputError
from workbench.core.events import EvalMetrics, PhaseChanged, StepMetrics
from workbench.core.run.directory import RunDirectory
from workbench.core.run.history import list_runs, load_run, read_predictions, summarize


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def make_run(home, name, *, state="finished", metrics=None, predictions=None, steps=3):
    """A run folder written through the engine's own RunDirectory, as a real run writes it."""
    rd = RunDirectory.create(str(home / name), name, "text-classification")
    rd.write_json("config.json", {
        "task": "text-classification",
        "data": {"train": f"/data/{name}.tsv"},
        "model": {"name": "/models/tiny-bert"},
        "train": {"metric": "macro_f1"},
        "resolved": {"backbone": {"name": "tiny-bert"}},
    })
    rd.on_event(PhaseChanged("training"))
    for s in range(1, steps + 1):
        rd.on_event(StepMetrics(s, steps, s / steps, 1.0 / s, 1e-3, 10.0, s, steps - s))
    rd.on_event(EvalMetrics(steps, 1.0, "validation", {"accuracy": 0.75, "macro_f1": 0.7}))
    if predictions is not None:
        (rd.path / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in predictions), encoding="utf-8")
    if state == "finished":
        m = metrics or {"accuracy": 0.8, "macro_f1": 0.75, "loss": 0.4}
        rd.write_json("report.json", {"task": "text-classification", "split": "test", "metrics": m,
                                      "labels": ["neg", "pos"], "per_class": [], "confusion_matrix": [[1, 0], [0, 1]], "n": 2})
        rd.write_text("report.txt", "accuracy 0.8\n")
        rd.set_status("finished", metrics=m)
    elif state in ("failed", "cancelled"):
        rd.write_text("error.txt", "Traceback: boom\n")
        rd.set_status(state, message="RuntimeError: boom")
    rd.close()
    return rd.path


PREDS = [
    {"row": 2, "text": "good film", "gold": "pos", "predicted": "pos", "confidence": 0.9, "probabilities": {"neg": 0.1, "pos": 0.9}},
    {"row": 3, "text": "bad film", "gold": "neg", "predicted": "pos", "confidence": 0.6, "probabilities": {"neg": 0.4, "pos": 0.6}},
]


def test_list_runs_newest_first_with_states(tmp_path):
    home = tmp_path / "runs"
    make_run(home, "a-older")
    time.sleep(1.1)  # status.json's "started" has one-second resolution
    make_run(home, "b-failed", state="failed")
    time.sleep(1.1)
    killed = make_run(home, "c-killed", state="running")
    # As kill -9 leaves it: status "running" naming a process that is gone.
    status = json.loads((killed / "status.json").read_text())
    status["pid"] = _dead_pid()
    (killed / "status.json").write_text(json.dumps(status))
    (home / "not-a-run").mkdir()
    (home / "not-a-run" / "notes.txt").write_text("hello")
    (home / "stray-file.txt").write_text("x")

    runs = list_runs(home)
    assert [r.name for r in runs] == ["c-killed", "b-failed", "a-older"]
    by = {r.name: r for r in runs}
    assert by["c-killed"].state == "interrupted"
    assert by["b-failed"].state == "failed" and by["b-failed"].message == "RuntimeError: boom"
    assert by["a-older"].state == "finished"
    assert by["a-older"].key_metrics() == {"accuracy": 0.8, "macro_f1": 0.75, "loss": 0.4}
    assert by["a-older"].dataset == "a-older.tsv" and by["a-older"].backbone == "tiny-bert"
    assert by["a-older"].task == "text-classification" and by["a-older"].main_metric == "macro_f1"
    assert by["a-older"].duration_s is not None and by["a-older"].duration_s >= 0
    assert by["c-killed"].ended is None and by["c-killed"].metrics == {}


def test_a_live_run_is_running(tmp_path):
    path = make_run(tmp_path, "live", state="running")  # written by this very process
    assert summarize(path).state == "running"


def test_default_home_and_missing_home(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "wb"))
    assert list_runs() == []  # no runs folder yet: no runs, no error
    make_run(tmp_path / "wb" / "runs", "r1")
    assert [r.name for r in list_runs()] == ["r1"]


def test_load_run_reads_everything(tmp_path):
    path = make_run(tmp_path, "done", predictions=PREDS)
    run = load_run(path)
    assert run.state == "finished" and run.task == "text-classification"
    assert run.config["data"]["train"] == "/data/done.tsv"
    assert run.report["metrics"]["accuracy"] == 0.8
    assert [e["step"] for e in run.events("StepMetrics")] == [1, 2, 3]
    assert run.events("EvalMetrics")[0]["metrics"]["macro_f1"] == 0.7
    assert run.report_text.startswith("accuracy")
    assert run.model_dir is None  # no model/ folder: nothing to try or export
    table = run.predictions()
    assert table.num_rows == 2
    assert table.column("predicted").to_pylist() == ["pos", "pos"]
    assert run.predictions() is table  # read once


def test_killed_mid_write_run_is_readable(tmp_path):
    path = make_run(tmp_path, "cut", state="running", predictions=PREDS)
    status = json.loads((path / "status.json").read_text())
    status["pid"] = _dead_pid()
    (path / "status.json").write_text(json.dumps(status))
    # A kill in the middle of a line, in both append-only files.
    with open(path / "metrics.jsonl", "a") as f:
        f.write('{"event": "StepMetrics", "step": 4, "lo')
    with open(path / "predictions.jsonl", "a") as f:
        f.write('{"row": 9, "text": "half')
    run = load_run(path)
    assert run.state == "interrupted"
    assert [e["step"] for e in run.events("StepMetrics")] == [1, 2, 3]
    assert run.report is None
    assert run.predictions().num_rows == 2


def test_damaged_status_is_interrupted(tmp_path):
    path = make_run(tmp_path, "damaged")
    (path / "status.json").write_text('{"state": "fini')  # half-written
    assert summarize(path).state == "interrupted"
    assert load_run(path).state == "interrupted"
    (path / "status.json").unlink()
    assert summarize(path).state == "interrupted"  # still a run: config.json and metrics.jsonl remain


def test_not_a_run_is_a_clear_input_error(tmp_path):
    folder = tmp_path / "holiday-photos"
    folder.mkdir()
    (folder / "beach.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(InputError, match="not a Workbench run folder") as e:
        load_run(folder)
    assert str(folder) in str(e.value)
    with pytest.raises(InputError, match="not found"):
        load_run(tmp_path / "missing")
    with pytest.raises(InputError, match="not a folder"):
        load_run(folder / "beach.jpg")


def test_predictions_with_mixed_types_fall_back_and_name_bad_lines(tmp_path):
    mixed = tmp_path / "mixed.jsonl"
    # A label that reads as a number on one line and a string on another.
    mixed.write_text('{"gold": 1, "predicted": "1"}\n{"gold": "x", "predicted": "1"}\n', encoding="utf-8")
    table = read_predictions(mixed)
    assert table.column("gold").to_pylist() == ["1", "x"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"gold": 1}\nnot json\n{"gold": 2}\n', encoding="utf-8")
    with pytest.raises(InputError, match="line 2"):
        read_predictions(bad)
    assert read_predictions(tmp_path / "none.jsonl").num_rows == 0


def test_predictions_line_with_an_overlong_integer_is_named(tmp_path):
    # json.loads raises a plain ValueError (no .msg) for an integer over Python's digit limit;
    # once Arrow has given up on the file (mixed types), that line must still be named, not crash.
    path = tmp_path / "huge.jsonl"
    path.write_text('{"gold": "x"}\n{"gold": ' + "9" * 5000 + "}\n", encoding="utf-8")
    with pytest.raises(InputError, match="line 2.*digits"):
        read_predictions(path)


def test_predictions_100k_rows_read_fast(tmp_path):
    path = tmp_path / "predictions.jsonl"
    line = json.dumps(PREDS[1]) + "\n"
    path.write_text(line * 100_000, encoding="utf-8")
    start = time.perf_counter()
    table = read_predictions(path)
    elapsed = time.perf_counter() - start
    assert table.num_rows == 100_000
    assert elapsed < 3.0, elapsed  # about 0.1 s here; generous for a busy 2-core machine
