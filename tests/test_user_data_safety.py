"""Never destroy or lose the user's data: export targets, full disks, Ctrl+C during export, bad input.

Most cases run the CLI in this process (``workbench.cli.main.main``), which is what a user's command runs,
minus the interpreter start-up; one runs it as a subprocess, exactly as a user would.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import sentiment_rows, write_tsv
from test_cli import wb

from workbench.cli.main import main
from workbench.core.errors import InputError, WriteFailed, write_failure
from workbench.core.export.target import ExportLock, check_export_target, inspect_target

TINY = ["--epochs", "1", "--batch-size", "16", "--max-length", "32", "--quiet"]


@pytest.fixture()
def home(tmp_path, monkeypatch) -> Path:
    h = tmp_path / "wb-home"
    monkeypatch.setenv("WORKBENCH_HOME", str(h))
    return h


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main(["train", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def runs(home: Path) -> list[Path]:
    folder = home / "runs"
    return sorted(folder.iterdir()) if folder.exists() else []


def dead_pid() -> int:
    """The pid of a process that has ended."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def status(run_dir) -> dict:
    return json.loads((Path(run_dir) / "status.json").read_text())


# ---------------------------------------------------------------------------- export targets


@pytest.mark.slow
def test_export_into_a_folder_of_user_files_is_refused_before_training(sentiment_tsv, tiny_model_dir, tmp_path):
    thesis = tmp_path / "thesis"
    (thesis / "figures").mkdir(parents=True)
    (thesis / "notes.txt").write_text("draft")
    home = tmp_path / "home"
    p = wb(["train", sentiment_tsv, "--model", tiny_model_dir, "--export", thesis, *TINY], home)
    assert p.returncode == 2, p.stderr
    assert str(thesis) in p.stderr and "notes.txt" in p.stderr and "Traceback" not in p.stderr
    assert (thesis / "notes.txt").read_text() == "draft" and (thesis / "figures").is_dir()
    assert sorted(x.name for x in thesis.iterdir()) == ["figures", "notes.txt"]
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())  # nothing trained


def test_protected_folders_are_never_export_targets(tmp_path, monkeypatch, home):
    work = tmp_path / "work"
    data_dir = work / "data"
    data_dir.mkdir(parents=True)
    data = write_tsv(data_dir / "d.tsv", sentiment_rows(20))
    images = tmp_path / "images"
    (images / "cats").mkdir(parents=True)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    (tmp_path / "user").mkdir()
    kw = dict(data_paths=[str(data), str(images)], run_dir=str(run_dir))
    refused = {
        work: "current folder", data_dir: "folder of your data", Path("/"): "root folder",
        tmp_path / "user": "home folder", run_dir: "run directory", run_dir / "model": "inside the run directory",
        images: "your data", images / "export": "image folder", tmp_path: "holds", home / "runs": "runs folder",
        home / "runs" / "x": "inside Workbench's runs folder",
    }
    for target, why in refused.items():
        with pytest.raises(InputError) as e:
            check_export_target(target, **kw)
        assert why in str(e.value), (target, str(e.value))
    # A new folder beside the data, or inside the current folder, is fine.
    assert check_export_target(data_dir / "model", **kw) == data_dir / "model"
    assert check_export_target("exported", **kw) == work / "exported"


def test_an_earlier_export_is_replaced_only_with_overwrite_and_only_if_it_is_all_export(
        sentiment_tsv, tiny_model_dir, tmp_path, home, capsys):
    target = tmp_path / "model-out"
    code, out, err = cli(capsys, sentiment_tsv, "--model", tiny_model_dir, "--export", target, *TINY)
    assert code == 0, err
    first = json.loads((target / "workbench.json").read_text())
    assert "model.safetensors" in first["files"] and "README.md" in first["files"]
    assert oct(stat.S_IMODE(target.stat().st_mode)) == oct(0o777 & ~0o022)  # not mkdtemp's 0700
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o644 for f in target.iterdir())

    code, out, err = cli(capsys, sentiment_tsv, "--model", tiny_model_dir, "--export", target, *TINY)
    assert code == 2 and "--overwrite" in err and str(target) in err
    assert len(runs(home)) == 1  # refused before a second run started

    code, out, err = cli(capsys, sentiment_tsv, "--model", tiny_model_dir, "--export", target, "--overwrite", *TINY)
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["export_dir"] == str(target)

    (target / "my-notes.txt").write_text("mine")
    code, out, err = cli(capsys, sentiment_tsv, "--model", tiny_model_dir, "--export", target, "--overwrite", *TINY)
    assert code == 2 and "my-notes.txt" in err
    assert (target / "my-notes.txt").read_text() == "mine"


def test_two_processes_cannot_export_to_one_folder(sentiment_tsv, tiny_model_dir, tmp_path, home, capsys):
    target = tmp_path / "shared-export"
    held = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock_file = tmp_path / ".shared-export.workbench-lock"
        lock_file.write_text(str(held.pid))  # another live process holds the folder
        code, out, err = cli(capsys, sentiment_tsv, "--model", tiny_model_dir, "--export", target, *TINY)
        assert code == 2 and f"pid {held.pid}" in err and not runs(home)
    finally:
        held.kill()
        held.wait()
    lock_file.write_text(str(dead_pid()))  # left by a process that is gone: taken over
    code, out, err = cli(capsys, sentiment_tsv, "--model", tiny_model_dir, "--export", target, *TINY)
    assert code == 0, err
    assert (target / "model.safetensors").is_file() and not lock_file.exists()

    with ExportLock(tmp_path / "other"):  # held here, live: another process is refused
        code = f"from workbench.core.export.target import ExportLock; ExportLock({str(tmp_path / 'other')!r}).acquire()"
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        assert p.returncode != 0 and f"pid {os.getpid()}" in p.stderr
    assert not (tmp_path / ".other.workbench-lock").exists()


def test_an_empty_run_dir_the_user_made_survives_bad_input(sentiment_tsv, tiny_model_dir, tmp_path, home, capsys):
    mine = tmp_path / "my-run"
    mine.mkdir()
    code, out, err = cli(capsys, sentiment_tsv, "--model", tiny_model_dir, "--run-dir", mine, "--text-column", "nope",
                         *TINY)
    assert code == 2 and "nope" in err
    assert mine.is_dir() and list(mine.iterdir()) == []


# ---------------------------------------------------------------------------- disk full and write errors


def test_write_failure_understands_wrapped_errors(tmp_path):
    class SafetensorError(Exception):
        pass

    e = SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left '
                        'on device" })')
    f = write_failure(e, tmp_path / "model")
    assert isinstance(f, WriteFailed) and "disk is full" in str(f) and str(tmp_path / "model") in str(f)
    assert "SafetensorError" not in str(f) and "MB free" in str(f)
    copy = shutil.Error([("a", str(tmp_path / "b"), "[Errno 28] No space left on device")])
    assert "disk is full" in str(write_failure(copy))
    assert write_failure(ValueError("a bug")) is None
    assert write_failure(PermissionError(errno.EACCES, "Permission denied", "/x")) is None
    assert "Permission denied" in str(write_failure(PermissionError(errno.EACCES, "Permission denied", "/x"),
                                                    permission_too=True))


def test_disk_full_while_exporting_is_a_clear_message_and_leaves_nothing(sentiment_tsv, tiny_model_dir, home, capsys,
                                                                          monkeypatch):
    from workbench.core.tasks.base import Task

    def full_disk(self, model, preprocessor, folder, max_length):
        (folder / "model.safetensors").write_bytes(b"partial")
        raise type("SafetensorError", (Exception,), {})(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })')

    monkeypatch.setattr(Task, "save_model", full_disk)
    code, out, err = cli(capsys, sentiment_tsv, "--model", tiny_model_dir, *TINY)
    assert code == 3, err
    assert "disk is full" in err and "internal error" not in err and "SafetensorError" not in err
    (run_dir,) = runs(home)
    s = status(run_dir)
    assert s["state"] == "failed" and "disk is full" in s["message"]
    assert not (run_dir / "cache").exists() and not (run_dir / ".reserve").exists()
    assert not [p for p in run_dir.iterdir() if ".writing-" in p.name] and not (run_dir / "model").exists()


def test_a_failed_copy_to_export_keeps_the_finished_run(sentiment_tsv, tiny_model_dir, tmp_path, home, capsys,
                                                       monkeypatch):
    def copy_fails(src, dst, **kw):  # what shutil.copytree raises when the disk fills mid-copy
        raise shutil.Error([(str(src) + "/model.safetensors", str(dst) + "/model.safetensors",
                             "[Errno 28] No space left on device")])

    monkeypatch.setattr(shutil, "copytree", copy_fails)
    code, out, err = cli(capsys, sentiment_tsv, "--model", tiny_model_dir, "--export", tmp_path / "out", *TINY)
    assert code == 3 and "disk is full" in err and "training finished" in err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["export_dir"] is None and "disk is full" in summary["export_error"]
    s = status(summary["run_dir"])
    assert s["state"] == "finished" and "disk is full" in s["export_error"]
    assert (Path(summary["run_dir"]) / "model" / "model.safetensors").is_file()


@pytest.fixture()
def small_disk(tmp_path):
    """A tmpfs of a given size (needs root, as CI and the dev machine have); skipped elsewhere."""
    mounted = []

    def make(size: str) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], capture_output=True)
        if p.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({p.stderr.decode().strip()}); the injected ENOSPC tests cover it")
        mounted.append(point)
        return point

    yield make
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def test_export_to_a_full_disk(sentiment_tsv, tiny_model_dir, home, capsys, small_disk):
    disk = small_disk("48k")
    code, out, err = cli(capsys, sentiment_tsv, "--model", tiny_model_dir, "--export", disk / "model", *TINY)
    assert code == 3, err
    assert "disk is full" in err and str(disk) in err and "Traceback" not in err
    assert list(disk.iterdir()) == []  # no half-written folder, no lock left behind
    summary = json.loads(out.strip().splitlines()[-1])
    assert status(summary["run_dir"])["state"] == "finished"


def test_run_directory_on_a_disk_that_fills_up(sentiment_tsv, tiny_model_dir, home, capsys, small_disk):
    disk = small_disk("320k")
    run_dir = disk / "run"
    code, out, err = cli(capsys, sentiment_tsv, "--model", tiny_model_dir, "--run-dir", run_dir, *TINY)
    assert code == 3, err
    assert "disk is full" in err and "Traceback" not in err
    s = status(run_dir)  # written thanks to the reserve
    assert s["state"] == "failed" and "disk is full" in s["message"]
    assert not (run_dir / "cache").exists() and not [p for p in run_dir.iterdir() if ".writing-" in p.name]


def test_leftovers_of_a_killed_run_are_swept_at_the_next_start(sentiment_tsv, tiny_model_dir, tmp_path, home, capsys):
    pid = dead_pid()
    killed = home / "runs" / "20260101-000000-killed"
    (killed / "cache" / "train").mkdir(parents=True)
    (killed / f".model.writing-{pid}-abc").mkdir()
    (killed / "status.json").write_text(json.dumps({"state": "running", "pid": pid, "started": "2026-01-01T00:00:00"}))
    export_parent = tmp_path / "exports"
    (export_parent / f".m.writing-{pid}-xyz").mkdir(parents=True)
    (export_parent / f".kept.old-{pid}-xyz" / "x").mkdir(parents=True)
    (export_parent / f".kept.old-{pid}-xyz" / "x" / "workbench.json").write_text("{}")
    code, out, err = cli(capsys, sentiment_tsv, "--model", tiny_model_dir, "--export", export_parent / "m", *TINY)
    assert code == 0, err
    assert not (killed / "cache").exists() and not list(killed.glob(".*writing*"))
    assert status(killed)["state"] == "interrupted"
    names = sorted(p.name for p in export_parent.iterdir())
    assert names == ["kept", "m"]  # the export being replaced when its process died is put back


# ---------------------------------------------------------------------------- Ctrl+C during export


def test_ctrl_c_during_export_exits_130_and_writes_nothing(sentiment_tsv, tiny_model_dir, tmp_path, home, capsys,
                                                           monkeypatch):
    from workbench.core.tasks.base import Task

    real = Task.save_model

    def interrupted(self, *args):
        real(self, *args)
        os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl+C while the files are written

    monkeypatch.setattr(Task, "save_model", interrupted)
    target = tmp_path / "out"
    code, out, err = cli(capsys, sentiment_tsv, "--model", tiny_model_dir, "--export", target, *TINY)
    assert code == 130, err
    assert "Cancelling" in err and "cancelled" in err and out.strip() == ""
    assert not target.exists() and not list(tmp_path.glob(".out.*"))
    (run_dir,) = runs(home)
    assert status(run_dir)["state"] == "cancelled" and not list(run_dir.glob(".model.writing-*"))


# ---------------------------------------------------------------------------- bad input: exit 2


def _regression_overflow(tmp: Path) -> tuple:
    rows = "".join(f"a good film number {i}\t{i * 0.37:.2f}\n" for i in range(60))
    path = tmp / "scores.tsv"
    path.write_text("text\tscore\n" + rows + "the worst film\t1e999\n")
    return [path, "--task", "text-regression"], ["scores.tsv", "line 62", "1e999"]


def _model_without_weights(tmp: Path, tiny: Path, data: Path) -> tuple:
    folder = tmp / "no-weights"
    shutil.copytree(tiny, folder)
    for f in folder.glob("*.safetensors"):
        f.unlink()
    return [data, "--model", folder], ["no-weights", "no weights"]


def _pickle_model(tmp: Path, tiny: Path, data: Path) -> tuple:
    import torch
    from safetensors.torch import load_file

    folder = tmp / "pickled"
    shutil.copytree(tiny, folder)
    weights = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save({**weights, "extra": _Unsafe()}, folder / "pytorch_model.bin")
    return [data, "--model", folder], ["pickled", "pickle"]


class _Unsafe:
    def __reduce__(self):
        return (print, ("this must never run",))


def _custom_code_model(tmp: Path, tiny: Path, data: Path) -> tuple:
    folder = tmp / "custom-code"
    shutil.copytree(tiny, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(model_type="fancybert", architectures=["FancyModel"],
               auto_map={"AutoConfig": "configuration_fancy.FancyConfig", "AutoModel": "modeling_fancy.FancyModel"})
    (folder / "config.json").write_text(json.dumps(cfg))
    return [data, "--model", folder], ["custom-code", "auto_map"]


def _fifo(tmp: Path) -> tuple:
    path = tmp / "pipe.tsv"
    os.mkfifo(path)
    return [path], ["pipe.tsv", "named pipe"]


def _write(tmp: Path, name: str, content: bytes) -> Path:
    path = tmp / name
    path.write_bytes(content)
    return path


def _late_nul(tmp: Path) -> tuple:
    body = "".join(f"{t}\t{l}\n" for t, l in sentiment_rows(400)) + "a bad \x00 film\tneg\n"
    return [_write(tmp, "late-nul.tsv", ("text\tlabel\n" + body).encode())], ["late-nul.tsv", "line 402", "NUL"]


def _parquet(tmp: Path) -> tuple:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["a"] * 20, "label": ["x"] * 20}), tmp / "table.tsv")
    return [tmp / "table.tsv"], ["table.tsv", "Parquet"]


BAD_INPUTS = {
    "epochs_nan": lambda tmp, tiny, data: ([data, "--epochs", "nan"], ["--epochs", "nan"]),
    "epochs_inf": lambda tmp, tiny, data: ([data, "--epochs", "inf"], ["--epochs", "inf"]),
    "max_steps_0": lambda tmp, tiny, data: ([data, "--max-steps", "0"], ["--max-steps"]),
    "max_steps_negative": lambda tmp, tiny, data: ([data, "--max-steps", "-5"], ["--max-steps"]),
    "regression_overflow": lambda tmp, tiny, data: _regression_overflow(tmp),
    "model_without_weights": _model_without_weights,
    "pickle_only_model": _pickle_model,
    "custom_code_model": _custom_code_model,
    "run_dir_is_a_file": lambda tmp, tiny, data: ([data, "--run-dir", _write(tmp, "a-file", b"x")], ["a-file", "is a file"]),
    "fifo": lambda tmp, tiny, data: _fifo(tmp),
    "all_texts_blank": lambda tmp, tiny, data: ([_write(tmp, "blank.tsv", ("text\tlabel\n" + "".join(
        f"  \t{'pos' if i % 2 else 'neg'}\n" for i in range(40))).encode())], ["blank.tsv", "empty"]),
    "nul_after_8kb": lambda tmp, tiny, data: _late_nul(tmp),
    "json_named_tsv": lambda tmp, tiny, data: ([_write(tmp, "rows.tsv", json.dumps(
        [{"text": "a good film", "label": "pos"}] * 30).encode())], ["rows.tsv", "JSON"]),
    "json_lines_named_tsv": lambda tmp, tiny, data: ([_write(tmp, "rows.tsv", b"".join(
        b'{"text": "a good film", "label": "pos"}\n' for _ in range(30)))], ["rows.tsv", "JSON Lines"]),
    "excel_named_tsv": lambda tmp, tiny, data: ([_write(tmp, "sheet.tsv", b"PK\x03\x04" + b"\x00" * 200)],
                                                ["sheet.tsv", "Excel"]),
    "parquet_named_tsv": lambda tmp, tiny, data: _parquet(tmp),
    "gzip_named_tsv": lambda tmp, tiny, data: ([_write(tmp, "packed.tsv", gzip.compress(data.read_bytes()))],
                                               ["packed.tsv", "gzip"]),
    "one_line_10mb": lambda tmp, tiny, data: ([_write(tmp, "huge.tsv", b"word " * 2_000_000)],
                                              ["huge.tsv", "line 1", "no tab"]),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_exit_2_naming_the_culprit(case, sentiment_tsv, tiny_model_dir, tmp_path, home, capsys):
    args, expected = BAD_INPUTS[case](tmp_path, tiny_model_dir, sentiment_tsv)
    if "--model" not in args:
        args = [*args, "--model", tiny_model_dir]
    code, out, err = cli(capsys, *TINY, *args)  # the case's options last: they win
    assert code == 2, (case, err)
    for word in expected:
        assert word.lower() in err.lower(), (case, word, err)
    assert "Traceback" not in err and out.strip() == ""
    assert "http" not in err  # no made-up hub URL for a local folder
    assert "weights_only=False" not in err and "quote" not in err
    assert not runs(home)  # nothing half-written


def test_a_looping_symlink_in_an_image_folder_is_skipped_and_listed(tmp_path, home, capsys):
    from image_samples import write_class_folder

    folder = write_class_folder(tmp_path / "pictures", n_per_class=6)
    loop = folder / sorted(p.name for p in folder.iterdir())[0] / "loop.jpg"
    os.symlink(loop.name, loop)  # points at itself
    code, out, err = cli(capsys, folder, "--model", "small-cnn", "--image-size", "32", "--max-steps", "1",
                         "--epochs", "1", "--quiet")
    assert code == 0, err
    assert "loop.jpg" not in err or "symbolic link" in err
    summary = json.loads(out.strip().splitlines()[-1])
    found = json.loads((Path(summary["run_dir"]) / "validation.json").read_text())["findings"]
    broken = [f for f in found if f["code"] == "broken_links"]
    assert broken and str(loop) in broken[0]["items"][0]


def test_max_length_above_the_model_limit_is_capped_with_a_warning(tiny_model_dir, tmp_path, home, capsys):
    long = " ".join(["good"] * 300)
    data = write_tsv(tmp_path / "long.tsv", [(f"{long} film", "pos"), (f"bad {long}", "neg")] * 30)
    code, out, err = cli(capsys, data, "--model", tiny_model_dir, "--epochs", "1", "--max-length", "4000", "--quiet")
    assert code == 0, err
    assert "--max-length 4000" in err and "128" in err
    summary = json.loads(out.strip().splitlines()[-1])
    assert json.loads((Path(summary["run_dir"]) / "config.json").read_text())["train"]["max_length"] == 128


def test_pairs_whose_second_text_is_mostly_empty_get_a_finding(tiny_model_dir, tmp_path, home, capsys):
    rows = [(f"a good film {i}" if i % 2 else f"a bad film {i}", "" if i % 5 else "the plot", "pos" if i % 2 else "neg")
            for i in range(80)]
    data = write_tsv(tmp_path / "pairs.tsv", rows, header=("sentence1", "sentence2", "label"))
    code, out, err = cli(capsys, data, "--model", tiny_model_dir, *TINY)
    assert code == 0, err
    assert "sentence2" in err and "empty" in err
    summary = json.loads(out.strip().splitlines()[-1])
    codes = [f["code"] for f in json.loads((Path(summary["run_dir"]) / "validation.json").read_text())["findings"]]
    assert "mostly_empty_text" in codes


# ---------------------------------------------------------------------------- messages and exports


def test_an_internal_error_names_the_real_error_txt(sentiment_tsv, tiny_model_dir, home, capsys, monkeypatch):
    from workbench.core.tasks.text_classification import TextClassification

    def bug(self, logits, labels):
        raise RuntimeError("a bug in the loss")

    monkeypatch.setattr(TextClassification, "loss", bug)
    code, out, err = cli(capsys, sentiment_tsv, "--model", tiny_model_dir, *TINY)
    assert code == 1
    (run_dir,) = runs(home)
    assert f"Details: {run_dir / 'error.txt'}" in err and "a bug in the loss" in err
    assert "a bug in the loss" in (run_dir / "error.txt").read_text()
    assert status(run_dir)["state"] == "failed"


def test_exports_drop_auto_map_and_escape_label_names(tiny_model_dir, tmp_path, home, capsys):
    backbone = tmp_path / "with-auto-map"
    shutil.copytree(tiny_model_dir, backbone)
    cfg = json.loads((backbone / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_custom.CustomBert"}  # a known model type: loads without the code
    (backbone / "config.json").write_text(json.dumps(cfg))
    labels = ["a|b `c`", "<b>bold</b>\nnext"]
    rows = [(t, labels[0] if l == "pos" else labels[1]) for t, l in sentiment_rows(120)]
    data = tmp_path / "odd.tsv"
    with open(data, "w", newline="") as f:
        f.write("text\tlabel\n")
        for t, l in rows:
            f.write(f"{t}\t\"{l}\"\n")
    code, out, err = cli(capsys, data, "--model", backbone, "--export", tmp_path / "out", *TINY)
    assert code == 0, err
    out_dir = tmp_path / "out"
    assert "auto_map" not in json.loads((out_dir / "config.json").read_text())
    card = (out_dir / "README.md").read_text()
    assert "`` a|b `c` ``" in card and "`<b>bold</b>\\nnext`" in card
    assert "<b>bold</b>\n" not in card  # no raw line break from a label
    report = (Path(json.loads(out.strip().splitlines()[-1])["run_dir"]) / "report.txt").read_text()
    assert "<b>bold</b>\\nnext" in report  # one line per class in the text table
    from transformers import pipeline

    clf = pipeline("text-classification", model=str(out_dir))
    assert clf("good great film")[0]["label"] in labels


def test_inspect_target_kinds(tmp_path, home):
    assert inspect_target(tmp_path / "new").kind == "new"
    (tmp_path / "empty").mkdir()
    assert inspect_target(tmp_path / "empty").ok
    (tmp_path / "file").write_text("x")
    assert "not a folder" in inspect_target(tmp_path / "file").problem


# ---------------------------------------------------------------------------- outputs of predict and label-issues
# One check (workbench.core.paths.check_output_path) for `predict -o`, `label-issues -o` and `--corrected`:
# never the data read, never inside a folder read (the data, the model), made before any work.


def _never_computed(*args, **kwargs):
    raise AssertionError("the outputs must be refused before any work")


def _image_data(tmp: Path) -> Path:
    from image_samples import write_class_folder

    return write_class_folder(tmp / "photos", n_per_class=2)


def _model_folder(tmp: Path) -> Path:
    model = tmp / "backbone"
    model.mkdir()
    (model / "config.json").write_text("{}")
    return model


LABEL_ISSUES_OUTPUTS = {  # case -> (arguments after DATA, or DATA too via "{data}"), exit status, parts of stderr
    "o_is_the_data": (lambda tmp, data: [data, "-o", data, "--overwrite"], 2, ["data.tsv: is the data itself"]),
    "corrected_is_the_data": (lambda tmp, data: [data, "--corrected", data, "--overwrite"], 2,
                              ["data.tsv: is the data itself"]),
    "o_links_to_the_data": (lambda tmp, data: [data, "-o", _link(tmp, data), "--overwrite"], 2,
                            ["is the data itself"]),
    "o_in_a_missing_folder": (lambda tmp, data: [data, "-o", tmp / "missing-folder" / "x.tsv"], 2,
                              ["x.tsv", "missing-folder) does not exist"]),
    "o_exists": (lambda tmp, data: [data, "-o", _write(tmp, "old.tsv", b"mine")], 2,
                 ["old.tsv: exists already; pass --overwrite"]),
    "o_is_a_folder": (lambda tmp, data: [data, "-o", tmp], 2, ["is a folder"]),
    "o_and_corrected_alike": (lambda tmp, data: [data, "-o", tmp / "same.tsv", "--corrected", tmp / "same.tsv"], 2,
                              ["same.tsv: is named by both -o and --corrected"]),
    "o_inside_the_image_folder": (lambda tmp, data: [_image_data(tmp), "-o", tmp / "photos" / "issues.tsv"], 2,
                                  ["issues.tsv: is inside the data"]),
    "corrected_inside_the_image_folder": (lambda tmp, data: [_image_data(tmp), "--corrected", tmp / "photos" / "fixed"],
                                          2, ["fixed: is inside the data"]),
    "corrected_holds_the_image_folder": (lambda tmp, data: [_image_data(tmp), "--corrected", tmp, "--overwrite"], 2,
                                         ["holds the data"]),
    "o_inside_the_model_folder": (lambda tmp, data: [data, "--model", _model_folder(tmp), "-o",
                                                     tmp / "backbone" / "issues.tsv"], 2,
                                  ["issues.tsv: is inside the --model folder"]),
    "data_missing": (lambda tmp, data: [tmp / "nope.tsv", "-o", tmp / "x.tsv"], 2, ["nope.tsv: file not found"]),
}


def _link(tmp: Path, target: Path) -> Path:
    link = tmp / "link.tsv"
    link.symlink_to(target)
    return link


@pytest.mark.parametrize("case", sorted(LABEL_ISSUES_OUTPUTS))
def test_label_issues_outputs_are_refused_before_any_work(case, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("workbench.core.analysis.label_issues.find_label_issues", _never_computed)
    data = write_tsv(tmp_path / "data.tsv", sentiment_rows(40))
    before = data.read_bytes()
    make, status, parts = LABEL_ISSUES_OUTPUTS[case]
    args = make(tmp_path, data)
    listing = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code = main(["label-issues", *map(str, args), "-q"])
    err = capsys.readouterr().err
    assert code == status and "Traceback" not in err, err
    for part in parts:
        assert part in err, (part, err)
    assert data.read_bytes() == before
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == listing  # nothing written


def test_label_issues_into_a_folder_it_cannot_write_is_exit_3_before_any_work(tmp_path, capsys, monkeypatch):
    import workbench.core.paths as paths

    monkeypatch.setattr("workbench.core.analysis.label_issues.find_label_issues", _never_computed)
    data = write_tsv(tmp_path / "data.tsv", sentiment_rows(40))
    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(paths.os, "access", lambda p, mode, *a, **k: Path(p) != locked and real(p, mode, *a, **k))
    code = main(["label-issues", str(data), "-o", str(locked / "x.tsv"), "-q"])
    err = capsys.readouterr().err
    assert code == 3 and "may not write in" in err and str(locked) in err


def test_every_output_check_is_the_same_one(text_export, tmp_path, capsys, monkeypatch):
    """The issue's two data losses: `label-issues data.tsv -o data.tsv --overwrite` replaced the training data
    with the issues table, `predict E INPUT -o E/config.json --overwrite` the export's config. predict, -o and
    --corrected now share one check, and it refuses both."""
    from workbench.core import paths
    from workbench.core.analysis.label_issues import LabelIssue, LabelIssues
    from workbench.core.corrections import write_corrected_copy

    calls: list[str] = []
    real = paths.check_output_path

    def counted(output, *args, **kwargs):
        calls.append(kwargs.get("what", ""))
        return real(output, *args, **kwargs)

    monkeypatch.setattr(paths, "check_output_path", counted)
    for module in ("workbench.core.predict.batch", "workbench.core.corrections"):
        monkeypatch.setattr(f"{module}.check_output_path", counted)
    monkeypatch.setattr("workbench.core.analysis.label_issues.find_label_issues", _never_computed)
    data = write_tsv(tmp_path / "data.tsv", sentiment_rows(40))
    before = data.read_bytes()
    assert main(["label-issues", str(data), "-o", str(data), "--overwrite", "-q"]) == 2
    assert "is the data itself" in capsys.readouterr().err and data.read_bytes() == before
    model = Path(shutil.copytree(text_export, tmp_path / "model"))
    config = (model / "config.json").read_bytes()
    assert main(["predict", str(model), str(data), "-o", str(model / "config.json"), "--overwrite", "-q"]) == 2
    assert "is inside the model folder" in capsys.readouterr().err and (model / "config.json").read_bytes() == config
    issues = LabelIssues(str(data), "text-classification", ["neg", "pos"],
                         [LabelIssue(2, "pos", "neg", 0.1, 0.9, True, "x")], "self_confidence", 5)
    with pytest.raises(InputError, match="is the original itself"):
        write_corrected_copy(issues, {2: None}, data, overwrite=True)
    assert data.read_bytes() == before
    assert calls == ["the issues table", "the predictions", "the corrected copy"]
