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

from workbench.cli.main import main
from workbench.core.errors import InputError
from workbench.core.export.pack import MANIFEST, pack_run, read_manifest, unpack_run
from workbench.core.run.history import list_runs, summarize


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


# ---- hostile and unlucky archives and runs ("never lose data", round 2) -------------------------------

def _entry(data: bytes) -> dict:
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _build(out: Path, members: dict[str, bytes], *, config: dict | None = None, data: dict | None = None,
           manifest: dict | None = None, compress: int = zipfile.ZIP_DEFLATED) -> Path:
    """A pack written from scratch: a finished run's records (no model) plus ``members``, every one
    listed in the manifest with its true size and checksum; ``manifest`` overrides manifest keys."""
    config = {"task": "text-classification", "data": {"train": "/nowhere/reviews.tsv"}} if config is None else config
    files = {"config.json": json.dumps(config).encode(),
             "status.json": json.dumps({"state": "finished", "pid": 1}).encode(), **members}
    man = {"format": 1, "kind": "workbench-run", "run": "crafted", "with_data": bool(data), "data": data or {},
           "files": {n: _entry(b) for n, b in files.items()}, **(manifest or {})}
    with zipfile.ZipFile(out, "w", compress) as z:
        for name, body in files.items():
            z.writestr(name, body)
        z.writestr(MANIFEST, json.dumps(man))
    return out


def _fake_run(folder: Path, config: dict, model: dict[str, bytes] | None = None) -> Path:
    """A finished run folder written by hand (no training): config.json, status.json, metrics.jsonl."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "status.json").write_text(json.dumps({"state": "finished"}))
    (folder / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n')
    for name, body in (model or {}).items():
        (folder / "model" / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / "model" / name).write_bytes(body)
    return folder


def _exit(argv: list[str], capsys) -> tuple[int, str]:
    """The exit status of ``workbench ARGV`` and its stderr; never a traceback (exit 1 is a bug)."""
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def _patch_central(path: Path, name: str, offset: int, value: bytes) -> None:
    """Overwrite bytes of ``name``'s central-directory record (offset 8: flags, 10: compression method)."""
    raw = bytearray(path.read_bytes())
    at = raw.find(b"PK\x01\x02")
    while at >= 0:
        n = int.from_bytes(raw[at + 28:at + 30], "little")
        if raw[at + 46:at + 46 + n].decode() == name:
            raw[at + offset:at + offset + len(value)] = value
            path.write_bytes(bytes(raw))
            return
        at = raw.find(b"PK\x01\x02", at + 4)
    raise AssertionError(f"{name} not in {path}")


# Case 1: data paths are a way out of the run folder.

def test_a_crafted_config_naming_system_files_is_dropped_on_unpack_and_never_repacked(tmp_path, capsys):
    config = {"task": "text-classification",
              "data": {"train": "/etc", "val": "/etc/shadow", "test": "\x1b[2J/proc/self/environ"},
              "resolved": {"sources": {"train": "/etc"}, "data_fingerprint": {"/etc/shadow": {"size": 1}}}}
    bad = _build(tmp_path / "etc.wbrun", {}, config=config, data={"train": {"original": "/etc", "stored": None}})
    target = tmp_path / "unpacked"
    code, err = _exit(["unpack", str(bad), "-o", str(target), "-q"], capsys)
    assert code == 0
    unpacked = json.loads((target / "config.json").read_text())["data"]
    assert unpacked["train"] == "" and unpacked["val"] is None and unpacked["test"] is None
    assert "no longer names /etc (it is in the system folder /etc" in err
    assert "\x1b" not in err and "'\\x1b[2J/proc/self/environ'" in err  # shown escaped, never sent to the terminal

    # Re-packing it with --with-data has no data path left to follow.
    repacked = tmp_path / "again.wbrun"
    code, err = _exit(["pack", str(target), "-o", str(repacked), "--with-data", "-q"], capsys)
    assert code == 0
    names = zipfile.ZipFile(repacked).namelist()
    assert not any(n.startswith("data/") for n in names) and not any("shadow" in n for n in names)


def test_a_crafted_pack_with_data_is_confined_to_the_unpacked_data_folder(tmp_path):
    config = {"task": "text-classification", "data": {"train": "/etc/passwd"}}
    body = b"text\tlabel\ngood\tpos\n"
    bad = _build(tmp_path / "b.wbrun", {"data/train/passwd": body}, config=config,
                 data={"train": {"original": "/etc/passwd", "stored": "data/train/passwd"}})
    result = unpack_run(bad, tmp_path / "run")
    train = json.loads((result.path / "config.json").read_text())["data"]["train"]
    assert train == str(result.path / "data" / "train" / "passwd")
    assert Path(train).read_bytes() == body


@pytest.mark.parametrize("path, why", [
    ("/etc", "system folder /etc"),
    ("/etc/passwd", "system folder /etc"),
    ("/proc/self/status", "system folder /proc"),
    ("/dev/zero", "system folder /dev"),
    ("/sys/kernel", "system folder /sys"),
    ("/", "root folder"),
])
def test_pack_with_data_refuses_system_paths(tmp_path, capsys, path, why):
    if not Path(path).exists():
        pytest.skip(f"{path} is not on this machine")
    run = _fake_run(tmp_path / "run", {"task": "text-classification", "data": {"train": path}})
    code, err = _exit(["pack", str(run), "-o", str(tmp_path / "x.wbrun"), "--with-data", "-q"], capsys)
    assert code == 2 and why in err and "train data" in err
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # nothing written, not even a temporary
    assert _exit(["pack", str(run), "-o", str(tmp_path / "x.wbrun"), "-q"], capsys)[0] == 0  # without data: fine


def test_pack_with_data_refuses_links_out_secrets_devices_and_plain_folders(tmp_path, capsys):
    import os

    runs = iter(range(100))

    def refused(train: str, why: str) -> None:
        run = tmp_path / "runs" / str(next(runs))
        _fake_run(run, {"task": "text-classification", "data": {"train": train}})
        code, err = _exit(["pack", str(run), "-o", str(tmp_path / "x.wbrun"), "--with-data", "-q"], capsys)
        assert code == 2 and why in err, err
        assert not (tmp_path / "x.wbrun").exists()

    (tmp_path / "link.tsv").symlink_to("/etc/passwd")
    refused(str(tmp_path / "link.tsv"), "it is a link to /etc/passwd")
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_rsa.tsv").write_text("secret\tkey\n")
    refused(str(tmp_path / ".ssh" / "id_rsa.tsv"), "where credentials are kept")
    os.mkfifo(tmp_path / "pipe.tsv")  # reading it would hang the pack for ever
    refused(str(tmp_path / "pipe.tsv"), "not a regular file")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("hello")
    refused(str(tmp_path / "docs"), "not an image dataset")
    refused(str(tmp_path / "docs" / ".." / "docs"), "not an image dataset")

    # An image dataset folder: its image files are packed, anything else left out, a link out refused.
    images = tmp_path / "pets"
    for cls in ("cat", "dog"):
        (images / cls).mkdir(parents=True)
        (images / cls / f"{cls}1.png").write_bytes(b"\x89PNG fake")
    (images / "README.txt").write_text("about the pets")
    (images / "dog" / "run.sh").write_text("rm -rf /")
    run = _fake_run(tmp_path / "image-run", {"task": "image-classification", "data": {"train": str(images)}})
    result = pack_run(run, tmp_path / "pets.wbrun", with_data=True)
    names = sorted(n for n in zipfile.ZipFile(result.path).namelist() if n.startswith("data/"))
    assert names == ["data/train/pets/cat/cat1.png", "data/train/pets/dog/dog1.png"]
    assert len(result.skipped) == 2 and any("left out" in n for n in result.notes())
    (images / "cat" / "shadow.png").symlink_to("/etc/shadow")
    with pytest.raises(InputError, match="link pointing out of the image folder"):
        pack_run(run, tmp_path / "pets2.wbrun", with_data=True)
    (images / "cat" / "shadow.png").unlink()
    (images / "cat" / "more").symlink_to("/etc", target_is_directory=True)
    with pytest.raises(InputError, match="link pointing out of the image folder"):
        pack_run(run, tmp_path / "pets2.wbrun", with_data=True)
    assert not (tmp_path / "pets2.wbrun").exists()


def test_a_data_path_the_pack_did_not_carry_stays_only_if_it_is_the_runs_data(finished_run, tmp_path):
    run = _copy_run(finished_run, tmp_path)
    pack = pack_run(run, tmp_path / "nodata.wbrun").path
    data = run.parent / "reviews.tsv"
    kept = unpack_run(pack, tmp_path / "a")
    assert json.loads((kept.path / "config.json").read_text())["data"]["train"] == str(data)

    data.write_text(data.read_text() + "another\tpos\n")  # no longer what the run trained on
    dropped = unpack_run(pack, tmp_path / "b")
    assert json.loads((dropped.path / "config.json").read_text())["data"]["train"] == ""
    assert any("not, by checksum, the data the run" in n and "as DATA" in n for n in dropped.notes)
    data.unlink()
    gone = unpack_run(pack, tmp_path / "c")
    assert any("it is not on this machine" in n for n in gone.notes)


def test_the_fingerprint_check_matches_the_runs_own_fingerprints(tmp_path):
    from workbench.core.cancel import NEVER
    from workbench.core.export.pack import _fingerprint_matches
    from workbench.core.run.pipeline import data_fingerprints

    (tmp_path / "a.tsv").write_text("x\ty\n")
    (tmp_path / "imgs" / "cat").mkdir(parents=True)
    (tmp_path / "imgs" / "cat" / "1.png").write_bytes(b"png")
    for p in (tmp_path / "a.tsv", tmp_path / "imgs"):
        assert _fingerprint_matches(p, data_fingerprints([str(p)]), NEVER)
    assert not _fingerprint_matches(tmp_path / "a.tsv", data_fingerprints([str(tmp_path / "imgs")]), NEVER)


# Case 2: zip bombs.

def test_a_zip_bomb_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    zeros = bytes(4 * 2**20)  # deflates about 1000:1 to some 4 KB; no real run's file does
    bomb = _build(tmp_path / "bomb.wbrun", {"predictions.jsonl": zeros})
    assert bomb.stat().st_size < 64 * 1024
    home = tmp_path / "home"
    code, err = _exit(["unpack", str(bomb), "-o", str(home / "x"), "-q"], capsys)
    assert code == 2 and "'predictions.jsonl' expands" in err and "zip bomb" in err
    assert not home.exists() or not any(home.iterdir())

    # The same content stored (not deflated) is an honest big file; under a lower ratio floor, small bombs too.
    assert unpack_run(_build(tmp_path / "stored.wbrun", {"predictions.jsonl": zeros}, compress=zipfile.ZIP_STORED),
                      home / "ok").files == 3
    monkeypatch.setattr("workbench.core.export.pack.RATIO_FLOOR", 1000)
    with pytest.raises(InputError, match="zip bomb"):
        unpack_run(_build(tmp_path / "small.wbrun", {"predictions.jsonl": bytes(50_000)}), home / "small")


def test_members_are_held_to_the_manifests_sizes(tmp_path, capsys):
    import io

    from workbench.core.cancel import NEVER
    from workbench.core.export.pack import _copy_member

    body = b'{"step": 1}\n' * 100
    lying = _build(tmp_path / "lying.wbrun", {"metrics.jsonl": body})
    man = json.loads(zipfile.ZipFile(lying).read(MANIFEST))
    man["files"]["metrics.jsonl"]["size"] = 10
    _rewrite_manifest(lying, man)
    code, err = _exit(["unpack", str(lying), "-o", str(tmp_path / "x"), "-q"], capsys)
    assert code == 2 and "'metrics.jsonl' is 1,200 bytes in the archive but 10 in workbench-pack.json" in err

    # While extracting, bytes are counted: a member never grows past its manifest size, whatever its headers say.
    out = io.BytesIO()
    with pytest.raises(InputError, match="larger than the 10 bytes"):
        _copy_member(io.BytesIO(body), out, 10, "metrics.jsonl", tmp_path / "p.wbrun", NEVER, lambda n: None)
    assert len(out.getvalue()) <= 10
    assert _copy_member(io.BytesIO(body), io.BytesIO(), len(body), "m", tmp_path, NEVER, lambda n: None) == \
        hashlib.sha256(body).hexdigest()

    # The total is the manifest's: an archive claiming more than the cap is refused before writing.
    with pytest.raises(InputError, match="cap"):
        unpack_run(_build(tmp_path / "big.wbrun", {"metrics.jsonl": body}), tmp_path / "y", max_bytes=1000)


def test_pack_stores_members_that_would_look_like_a_bomb_so_its_packs_unpack(tmp_path, monkeypatch):
    monkeypatch.setattr("workbench.core.export.pack.RATIO_FLOOR", 10_000)
    run = _fake_run(tmp_path / "run", {"task": "text-classification", "data": {}})
    (run / "predictions.jsonl").write_text('{"label": "pos"}\n' * 20_000)  # 340 KB, deflates ~500:1
    pack = pack_run(run, tmp_path / "dense.wbrun").path
    assert zipfile.ZipFile(pack).getinfo("predictions.jsonl").compress_type == zipfile.ZIP_STORED
    assert zipfile.ZipFile(pack).getinfo("config.json").compress_type == zipfile.ZIP_DEFLATED
    result = unpack_run(pack, tmp_path / "back")
    assert (result.path / "predictions.jsonl").read_bytes() == (run / "predictions.jsonl").read_bytes()


# Case 3: a damaged manifest or config is exit 2 with a message, never a traceback.

def _rewrite_manifest(pack: Path, manifest: dict) -> None:
    with zipfile.ZipFile(pack) as src:
        members = [(i, src.read(i)) for i in src.infolist() if i.filename != MANIFEST]
    with zipfile.ZipFile(pack, "w") as dst:
        for info, body in members:
            dst.writestr(info, body)
        dst.writestr(MANIFEST, json.dumps(manifest))


@pytest.mark.parametrize("change, why", [
    (lambda m: m["files"].__setitem__("status.json", "abc"), "entry for 'status.json' is not a size and a SHA-256"),
    (lambda m: m["files"]["status.json"].__setitem__("size", -5), "entry for 'status.json' is not a size"),
    (lambda m: m["files"]["status.json"].__setitem__("size", True), "entry for 'status.json' is not a size"),
    (lambda m: m["files"]["status.json"].__setitem__("sha256", "x" * 64), "not a size and a SHA-256"),
    (lambda m: m.__setitem__("files", ["config.json"]), "has no table of files"),
    (lambda m: m.__setitem__("format", "1"), "has no valid pack format (format: '1'"),
    (lambda m: m.__setitem__("format", 1.0), "has no valid pack format"),
    (lambda m: m.__setitem__("format", True), "has no valid pack format"),
    (lambda m: m.pop("format"), "has no valid pack format"),
    (lambda m: m.__setitem__("data", "train"), "data is not a table"),
    (lambda m: m.__setitem__("data", {"train": {"original": 5}}), "data entry 'train' is not an original"),
])
def test_a_damaged_manifest_is_reported_as_damaged(tmp_path, capsys, change, why):
    pack = _build(tmp_path / "p.wbrun", {})
    manifest = json.loads(zipfile.ZipFile(pack).read(MANIFEST))
    change(manifest)
    _rewrite_manifest(pack, manifest)
    code, err = _exit(["unpack", str(pack), "-o", str(tmp_path / "x"), "-q"], capsys)
    assert code == 2 and "damaged" in err and why in err and "newer" not in err
    assert not (tmp_path / "x").exists()


def test_a_newer_format_still_says_newer(tmp_path, capsys):
    pack = _build(tmp_path / "p.wbrun", {}, manifest={"format": 2})
    code, err = _exit(["unpack", str(pack), "-o", str(tmp_path / "x"), "-q"], capsys)
    assert code == 2 and "made by a newer Workbench (pack format 2)" in err


@pytest.mark.parametrize("config, why", [
    ({"data": {"train": "/x.tsv"}, "resolved": "oops"}, "has a 'resolved' that is not a JSON object"),
    ({"data": ["/x.tsv"]}, "has a 'data' that is not a JSON object"),
    ({"data": {"train": 5}}, "names its train data with 5"),
    ([1, 2], "is not a JSON object"),
])
def test_a_damaged_config_is_reported(tmp_path, capsys, config, why):
    pack = _build(tmp_path / "p.wbrun", {}, config=config)
    code, err = _exit(["unpack", str(pack), "-o", str(tmp_path / "x"), "-q"], capsys)
    assert code == 2 and "damaged: its config.json" in err and why in err
    assert [p.name for p in tmp_path.iterdir()] == ["p.wbrun"]


def test_a_member_that_is_also_a_folder_is_refused(tmp_path, capsys):
    pack = _build(tmp_path / "p.wbrun", {"model/a.json": b"{}", "model/a.json/b.json": b"{}"})
    code, err = _exit(["unpack", str(pack), "-o", str(tmp_path / "x"), "-q"], capsys)
    assert code == 2 and "member 'model/a.json' is both a file and a folder" in err
    assert [p.name for p in tmp_path.iterdir()] == ["p.wbrun"]


# Case 4: a text model without its tokenizer could only read [UNK].

def test_a_text_model_without_tokenizer_files_is_refused(finished_run, plain_pack, tmp_path, capsys):
    from workbench.core.export.target import TOKENIZER_FILES

    names = zipfile.ZipFile(plain_pack).namelist()
    tokenizer = tuple(n for n in names if n.startswith("model/") and n.split("/", 1)[1] in TOKENIZER_FILES)
    assert tokenizer
    bad = _recrafted(plain_pack, tmp_path / "untokenized.wbrun", drop=tokenizer)
    code, err = _exit(["unpack", str(bad), "-o", str(tmp_path / "x"), "-q"], capsys)
    assert code == 2 and "refused: its model folder (model/) has no tokenizer files" in err
    assert not (tmp_path / "x").exists() and not any(p.name.startswith(".x") for p in tmp_path.iterdir())

    # ... and pack refuses to write such a pack in the first place.
    run = _copy_run(finished_run, tmp_path)
    for name in tokenizer:
        (run / name).unlink()
    code, err = _exit(["pack", str(run), "-o", str(tmp_path / "y.wbrun"), "-q"], capsys)
    assert code == 2 and "model folder has no tokenizer files" in err and not (tmp_path / "y.wbrun").exists()

    # An image model needs none.
    image = _build(tmp_path / "image.wbrun", {"model/config.json": b"{}", "model/preprocessor_config.json": b"{}"},
                   config={"task": "image-classification", "data": {}})
    assert unpack_run(image, tmp_path / "img").files == 4


# More hostile or unlucky cases.

def test_broken_archives_are_bad_input(plain_pack, tmp_path, capsys):
    import os
    import warnings

    raw = plain_pack.read_bytes()
    cases = {}
    (tmp_path / "truncated.wbrun").write_bytes(raw[: len(raw) // 2])
    cases["truncated.wbrun"] = "not a readable zip archive"
    (tmp_path / "empty-file.wbrun").write_bytes(b"")
    cases["empty-file.wbrun"] = "not a readable zip archive"
    zipfile.ZipFile(tmp_path / "empty.wbrun", "w").close()
    cases["empty.wbrun"] = "it has no workbench-pack.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate, and writes it
        shutil.copy(plain_pack, tmp_path / "twice.wbrun")
        with zipfile.ZipFile(tmp_path / "twice.wbrun", "a") as z:
            z.writestr("status.json", "{}")
    cases["twice.wbrun"] = "member 'status.json' appears twice"
    # Bytes of a deflated member flipped: the central directory is intact, the stream is not.
    with zipfile.ZipFile(plain_pack) as z:
        info = z.getinfo("metrics.jsonl")
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    flipped = bytearray(raw)
    flipped[start:start + 8] = bytes(b ^ 0xFF for b in flipped[start:start + 8])
    (tmp_path / "corrupt.wbrun").write_bytes(bytes(flipped))
    cases["corrupt.wbrun"] = "damaged"
    shutil.copy(plain_pack, tmp_path / "encrypted.wbrun")
    _patch_central(tmp_path / "encrypted.wbrun", "metrics.jsonl", 8, b"\x01\x00")
    cases["encrypted.wbrun"] = "'metrics.jsonl' is encrypted"
    shutil.copy(plain_pack, tmp_path / "method.wbrun")
    _patch_central(tmp_path / "method.wbrun", "metrics.jsonl", 10, (99).to_bytes(2, "little"))
    cases["method.wbrun"] = "uses a compression method (99)"
    os.mkfifo(tmp_path / "pipe.wbrun")  # opening it would wait for a writer for ever
    cases["pipe.wbrun"] = "not a regular file"
    for name, why in cases.items():
        code, err = _exit(["unpack", str(tmp_path / name), "-o", str(tmp_path / "out"), "-q"], capsys)
        assert code == 2 and why in err, (name, err)
        assert not (tmp_path / "out").exists()
        assert not [p for p in tmp_path.iterdir() if ".writing-" in p.name]


def test_names_too_long_and_unusable_targets(plain_pack, tmp_path, capsys):
    long = _recrafted(plain_pack, tmp_path / "long.wbrun", {"data/train/" + "n" * 300 + ".tsv": b"a\tb\n"})
    code, err = _exit(["unpack", str(long), "-o", str(tmp_path / "x"), "-q"], capsys)
    assert code == 2 and "too long" in err

    (tmp_path / "a-file").write_text("mine")
    code, err = _exit(["unpack", str(plain_pack), "-o", str(tmp_path / "a-file"), "-q"], capsys)
    assert code == 2 and "exists already" in err and (tmp_path / "a-file").read_text() == "mine"
    code, err = _exit(["unpack", str(plain_pack), "-o", str(tmp_path / "a-file" / "run"), "-q"], capsys)
    assert code == 2 and "a part of its path is a file" in err
    code, err = _exit(["unpack", str(plain_pack), "-o", str(tmp_path / ("n" * 300)), "-q"], capsys)
    assert code == 2 and "too long" in err


def test_pack_never_replaces_data_or_other_files_and_never_follows_run_file_links(finished_run, tmp_path, capsys):
    run = _copy_run(finished_run, tmp_path)
    data = run.parent / "reviews.tsv"
    before = data.read_bytes()
    code, err = _exit(["pack", str(run), "-o", str(data), "--with-data", "--overwrite", "-q"], capsys)
    assert code == 2 and "is the run's train data" in err and data.read_bytes() == before

    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    code, err = _exit(["pack", str(run), "-o", str(notes), "--overwrite", "-q"], capsys)
    assert code == 2 and "not a Workbench run pack" in err and notes.read_text() == "my notes"
    pack = tmp_path / "r.wbrun"
    assert _exit(["pack", str(run), "-o", str(pack), "-q"], capsys)[0] == 0
    assert _exit(["pack", str(run), "-o", str(pack), "--overwrite", "-q"], capsys)[0] == 0  # an earlier pack: fine

    code, err = _exit(["pack", str(run), "-o", str(notes / "x.wbrun"), "-q"], capsys)
    assert code == 2 and "is a file, not a folder" in err
    code, err = _exit(["pack", str(run), "-o", str(run / "model" / "x.wbrun"), "-q"], capsys)
    assert code == 2 and "inside the run folder" in err

    (run / "report.txt").unlink()
    (run / "report.txt").symlink_to("/etc/passwd")
    code, err = _exit(["pack", str(run), "-o", str(tmp_path / "l.wbrun"), "-q"], capsys)
    assert code == 2 and "report.txt" in err and "is a link" in err and not (tmp_path / "l.wbrun").exists()


def test_json_nested_beyond_the_recursion_limit_is_bad_input(tmp_path, capsys):
    deep = b"[" * 100_000 + b"]" * 100_000
    for name, members in {"config": {"config.json": deep, MANIFEST: None},
                          "manifest": {"config.json": b"{}", MANIFEST: deep}}.items():
        path = tmp_path / f"{name}.wbrun"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            for member, body in members.items():
                if body is None:
                    body = json.dumps({"format": 1, "kind": "workbench-run", "run": "deep", "files": {
                        m: _entry(b) for m, b in members.items() if m != MANIFEST}}).encode()
                z.writestr(member, body)
        code, err = _exit(["unpack", str(path), "-o", str(tmp_path / "x"), "-q"], capsys)
        assert code == 2 and ("'config.json' is not a JSON file" in err or "is not readable JSON" in err), err
    run = _fake_run(tmp_path / "run", {})
    (run / "config.json").write_bytes(deep)
    code, err = _exit(["pack", str(run), "-o", str(tmp_path / "y.wbrun"), "-q"], capsys)
    assert code == 2 and "no readable config.json" in err
