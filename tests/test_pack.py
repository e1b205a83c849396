"""Portable runs: `workbench pack` / `unpack` round-trip a finished run, and a crafted archive (paths
outside the target, links, pickles, a tampered checksum, a zip bomb) is refused before anything is written."""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
import zipfile
from pathlib import Path

import pytest
from pack_samples import finished_run  # noqa: F401 - fixture

from workbench.cli import main
from workbench.core.errors import InputError
from workbench.core.pack import MANIFEST, pack_run, read_manifest, unpack_run
from workbench.core.runs import list_runs, summarize


def _copy_run(run: Path, tmp: Path) -> Path:
    """A private copy of the run and its data, so a test may delete the data."""
    folder = tmp / "src"
    shutil.copytree(run, folder / "run")
    shutil.copy(run.parent / "reviews.tsv", folder / "reviews.tsv")
    config = json.loads((folder / "run" / "config.json").read_text())
    config["data"]["train"] = str(folder / "reviews.tsv")
    (folder / "run" / "config.json").write_text(json.dumps(config))
    return folder / "run"


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_pack_with_data_unpack_lists_the_run_and_repeats_it(finished_run, tmp_path, runs_home, capsys):
    run = _copy_run(finished_run, tmp_path)
    pack = tmp_path / "shared" / "run.wbrun"
    assert main(["pack", str(run), "-o", str(pack), "--with-data", "-q"]) == 0
    summary = _last_json(capsys.readouterr().out)
    assert summary["with_data"] and summary["has_model"] and Path(summary["pack"]) == pack.resolve()
    names = set(zipfile.ZipFile(pack).namelist())
    assert {"config.json", "metrics.jsonl", "report.json", "predictions.jsonl", "model/model.safetensors",
            "data/train/reviews.tsv", MANIFEST} <= names
    assert not any(n.startswith(("checkpoints/", "cache/")) for n in names)

    (run.parent / "reviews.tsv").unlink()  # the other machine does not have the data
    assert main(["unpack", str(pack), "-q"]) == 0
    out = _last_json(capsys.readouterr().out)
    unpacked = Path(out["run_dir"])
    assert unpacked.parent == runs_home and unpacked.name == "run"

    # The Runs page's reader lists it like the local run, with the same metrics and state.
    (listed,) = list_runs(runs_home)
    original = summarize(run)
    assert listed.path == unpacked and listed.state == "finished" == original.state
    assert listed.metrics == original.metrics and listed.metrics
    assert listed.task == original.task and listed.dataset == "reviews.tsv"
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert digest(unpacked / "model" / "model.safetensors") == digest(run / "model" / "model.safetensors")

    # The config points at the unpacked data, and `train --config` repeats the run from it.
    config = json.loads((unpacked / "config.json").read_text())
    assert config["data"]["train"] == str(unpacked / "data" / "train" / "reviews.tsv")
    assert "pid" not in json.loads((unpacked / "status.json").read_text())
    again = tmp_path / "again"
    assert main(["train", "--config", str(unpacked / "config.json"), "--max-steps", "1", "--run-dir", str(again),
                 "-q"]) == 0
    assert json.loads((again / "status.json").read_text())["state"] == "finished"
    assert json.loads((again / "config.json").read_text())["data"]["train"] == config["data"]["train"]

    # A second unpack gets its own folder; an explicit existing target is refused, never replaced.
    second = unpack_run(pack, home=runs_home)
    assert second.path.name == "run-2"
    assert main(["unpack", str(pack), "-o", str(unpacked)]) == 2
    assert "exists already" in capsys.readouterr().err


def test_pack_without_data_keeps_the_original_paths_and_says_so(finished_run, tmp_path, capsys):
    run = _copy_run(finished_run, tmp_path)
    pack = tmp_path / "run.wbrun"
    assert main(["pack", str(run), "-o", str(pack), "-q"]) == 0
    captured = capsys.readouterr()
    assert "data not included" in captured.err and not _last_json(captured.out)["with_data"]
    assert not any(n.startswith("data/") for n in zipfile.ZipFile(pack).namelist())
    assert main(["pack", str(run), "-o", str(pack), "-q"]) == 2  # exists: --overwrite needed
    assert "--overwrite" in capsys.readouterr().err

    result = unpack_run(pack, tmp_path / "here")
    config = json.loads((result.path / "config.json").read_text())
    assert config["data"]["train"] == str(run.parent / "reviews.tsv")
    assert any("was not packed" in n and "is here" in n for n in result.notes)


def _recrafted(pack: Path, out: Path, extra: dict[str, bytes] = {}, *, link: str | None = None,
               drop: tuple[str, ...] = ()) -> Path:
    """``pack`` rewritten with extra members, listed in the manifest with their true checksums, so
    that the only thing wrong with the archive is what the test put there."""
    src = zipfile.ZipFile(pack)
    manifest = json.loads(src.read(MANIFEST))
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            if info.filename != MANIFEST and info.filename not in drop:
                dst.writestr(info, src.read(info))
        for name, data in extra.items():
            info = zipfile.ZipInfo(name)
            if name == link:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            dst.writestr(info, data)
            manifest["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for name in drop:
            manifest["files"].pop(name, None)
        dst.writestr(MANIFEST, json.dumps(manifest))
    return out


@pytest.fixture()
def plain_pack(finished_run, tmp_path) -> Path:
    return pack_run(finished_run, tmp_path / "good.wbrun").path


@pytest.mark.parametrize("name, why", [
    ("../evil.txt", "'..'"),
    ("model/../../evil.json", "'..'"),
    ("data/train/../../../evil.tsv", "'..'"),
    ("/tmp/evil.json", "absolute path"),
    ("C:/evil.json", "absolute path"),
    ("model\\..\\evil.json", "backslash"),
    ("model/pytorch_model.bin", "pickle-based or code file (.bin)"),
    ("model/extra.pkl", "pickle"),
    ("model/modeling_evil.py", "code file (.py)"),
    ("data/train/hook.py", "code file (.py)"),
    ("model/weights.npz", "pickle-based"),
    ("model/odd.xyz", "not a safetensors, ONNX, JSON or text file"),
    ("evil.sh", "code file"),
    ("notes.txt", "not one of a run's files"),
])
def test_crafted_members_are_refused_and_nothing_is_written(plain_pack, tmp_path, name, why, capsys):
    bad = _recrafted(plain_pack, tmp_path / "bad.wbrun", {name: b"import os\n"})
    home = tmp_path / "home"
    with pytest.raises(InputError, match="refused") as info:
        unpack_run(bad, home=home)
    assert why in str(info.value)
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil.json").exists()
    assert not home.exists() or not any(home.iterdir())  # no folder, not even a hidden temporary one
    assert main(["unpack", str(bad), "-o", str(tmp_path / "target")]) == 2
    assert "refused" in capsys.readouterr().err and not (tmp_path / "target").exists()


def test_links_tampering_bombs_and_disguised_pickles_are_refused(plain_pack, tmp_path):
    home = tmp_path / "home"
    link = _recrafted(plain_pack, tmp_path / "link.wbrun", {"model/vocab.txt": b"/etc/passwd"}, link="model/vocab.txt")
    with pytest.raises(InputError, match="symbolic link"):
        unpack_run(link, home=home)

    # A pickle renamed to .safetensors: refused by content (after its checksum matched).
    import pickle

    disguised = _recrafted(plain_pack, tmp_path / "disguised.wbrun", {"model/extra.safetensors": pickle.dumps({"a": 1})})
    with pytest.raises(InputError, match="not a safetensors file"):
        unpack_run(disguised, home=home)

    # A member that does not match its checksum, one the manifest does not list, a zip bomb.
    tampered = tmp_path / "tampered.wbrun"
    with zipfile.ZipFile(plain_pack) as src, zipfile.ZipFile(tampered, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, data.replace(b'"finished"', b'"FINISHED"') if info.filename == "status.json" else data)
    with pytest.raises(InputError, match="does not match its checksum"):
        unpack_run(tampered, home=home)
    unlisted = tmp_path / "unlisted.wbrun"
    shutil.copy(plain_pack, unlisted)
    with zipfile.ZipFile(unlisted, "a") as z:
        z.writestr("model/extra.json", "{}")
    with pytest.raises(InputError, match="not listed"):
        unpack_run(unlisted, home=home)
    with pytest.raises(InputError, match="cap"):
        unpack_run(plain_pack, home=home, max_bytes=1000)
    not_zip = tmp_path / "notes.wbrun"
    not_zip.write_text("hello")
    with pytest.raises(InputError, match="not a Workbench run pack"):
        unpack_run(not_zip, home=home)
    assert not home.exists() or not any(home.iterdir())
    assert read_manifest(plain_pack)[0]["run"] == "run"  # the good one still reads


def test_pack_refuses_a_model_with_pickles_and_a_running_run(finished_run, tmp_path, capsys):
    run = _copy_run(finished_run, tmp_path)
    (run / "model" / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
    assert main(["pack", str(run), "-o", str(tmp_path / "x.wbrun")]) == 2
    assert "pytorch_model.bin" in capsys.readouterr().err and not (tmp_path / "x.wbrun").exists()
    (run / "model" / "pytorch_model.bin").unlink()

    import os

    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "state": "running", "pid": os.getpid(),
                                                 "pid_started": None}))
    with pytest.raises(InputError, match="still training"):
        pack_run(run, tmp_path / "x.wbrun")
    assert main(["pack", str(tmp_path), "-o", str(tmp_path / "x.wbrun")]) == 2  # not a run
    assert [p for p in tmp_path.iterdir() if "wbrun" in p.name] == []  # not even a hidden half-written one
