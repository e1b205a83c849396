"""Portable runs: one ``.wbrun`` file (a zip) holding a run's config, metrics, report, predictions
and model, and its unpacking into a run folder another machine lists like a local run.

    workbench-pack.json   the manifest: format, run name, data paths, every member's size and SHA-256
    config.json ...       the run's own files (``RUN_FILES``), as the run wrote them
    model/                the exported model: safetensors weights, JSON, tokenizer text, ONNX graphs
    data/KEY/NAME         with --with-data only: the train/val/test files (or image folders)

Unpacking never runs code from the archive: the model folder may hold only safetensors, ONNX, JSON and
text files (checked by name when packing and unpacking, and safetensors and JSON by content); pickles
(.bin, .pt, .pkl ...) and code (.py, .so ...) are refused anywhere. A member with an absolute path,
``..``, a backslash or a link, a member the manifest does not list, or an archive larger than the cap
is refused before anything is written. Unpacking writes into a hidden folder beside the target and
renames it into place at the end, and never replaces an existing folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import struct
import tempfile
import zipfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from .cancel import NEVER, CancelToken
from .errors import InputError, WriteFailed, write_failure
from .rundir import read_json_or_none, runs_home

FORMAT = 1
SUFFIX = ".wbrun"
MANIFEST = "workbench-pack.json"
RUN_FILES = ("config.json", "status.json", "metrics.jsonl", "validation.json", "report.json", "report.txt",
             "predictions.jsonl", "error.txt")
MODEL_DIR, DATA_DIR = "model", "data"
DATA_KEYS = ("train", "val", "test")  # DataConfig fields that name data files or folders

# The model folder's files: weights as safetensors, graphs as ONNX (and their external data), JSON and
# text (configs, vocabularies, merges, the model card) and sentencepiece .model files (protobuf).
MODEL_SUFFIXES = (".safetensors", ".json", ".onnx", ".onnx.data", ".txt", ".md", ".model")
# Loading these can run code (pickle-based weights) or they are code: refused anywhere in a pack.
FORBIDDEN_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz", ".h5",
                      ".msgpack", ".py", ".pyc", ".pyo", ".pyd", ".pyz", ".so", ".dll", ".dylib", ".exe", ".sh",
                      ".bat", ".cmd", ".ps1")
STORED_SUFFIXES = (".safetensors", ".onnx", ".data", ".png", ".jpg", ".jpeg", ".webp", ".gif")  # no gain deflating
MAX_BYTES = 64 * 2**30  # the whole unpacked run; a zip bomb stops here
MAX_MEMBERS = 500_000
_MANIFEST_LIMIT = 64 * 2**20
_CHUNK = 1 << 20


@dataclass
class PackResult:
    path: Path
    files: int
    bytes: int  # the members' total size, unpacked
    archive_bytes: int
    with_data: bool
    has_model: bool
    data: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> {"original", "stored"}
    skipped: list[str] = field(default_factory=list)  # data files left out (code or pickles)

    def notes(self) -> list[str]:
        out = []
        if not self.has_model:
            out.append("the run has no model folder (it did not finish); the pack holds its records only")
        originals = {k: v["original"] for k, v in self.data.items()}
        if originals and not self.with_data:
            out.append("data not included (pass --with-data to include it); the packed config.json points at "
                       + ", ".join(f"{k}: {p}" for k, p in originals.items()))
        if self.skipped:
            out.append(f"{len(self.skipped)} data file(s) left out as code or pickles, e.g. {self.skipped[0]}")
        return out

    def summary(self) -> dict[str, Any]:
        return {"pack": str(self.path), "files": self.files, "bytes": self.bytes,
                "archive_bytes": self.archive_bytes, "with_data": self.with_data, "has_model": self.has_model}


@dataclass
class UnpackResult:
    path: Path
    manifest: dict[str, Any]
    files: int
    bytes: int
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"run_dir": str(self.path), "files": self.files, "bytes": self.bytes,
                "with_data": bool(self.manifest.get("with_data")), "run": self.manifest.get("run")}


# ---- what may be in a pack ---------------------------------------------------------------------------

def _forbidden(name: str) -> str | None:
    low = name.lower()
    for s in FORBIDDEN_SUFFIXES:
        if low.endswith(s):
            return (f"is a pickle-based or code file ({s}); a .wbrun holds safetensors, ONNX, JSON and text "
                    "only, so loading it never runs code")
    return None


def member_problem(name: str) -> str | None:
    """Why ``name`` (a path inside the archive, '/'-separated) may not be unpacked; None when it may."""
    if not name or "\x00" in name:
        return "has an empty or invalid name"
    if "\\" in name:
        return "has a backslash in its path"
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        return "has an absolute path"
    parts = name.rstrip("/").split("/")
    if ".." in parts:
        return "has '..' in its path (it would be written outside the run folder)"
    if any(p in ("", ".") for p in parts):
        return "has an empty or '.' part in its path"
    if name.endswith("/"):
        return None if parts[0] in (MODEL_DIR, DATA_DIR) else "is a folder a run does not have"
    problem = _forbidden(name)
    if problem:
        return problem
    if len(parts) == 1:
        return None if name in RUN_FILES or name == MANIFEST else "is not one of a run's files"
    if parts[0] == MODEL_DIR:
        if not name.lower().endswith(MODEL_SUFFIXES):
            return "is not a safetensors, ONNX, JSON or text file, the only kinds a packed model may hold"
        return None
    if parts[0] == DATA_DIR and len(parts) >= 3 and parts[1] in DATA_KEYS:
        return None
    return "is not where a run's files go (config.json, model/, data/train|val|test/)"


def _check_safetensors(path: Path) -> str | None:
    """A safetensors file starts with an 8-byte little-endian length and a JSON header of that length."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return "is too short to be a safetensors file"
            (n,) = struct.unpack("<Q", head)
            if n > 100 * 2**20 or n > path.stat().st_size - 8:
                return "is not a safetensors file (bad header length)"
            header = json.loads(f.read(n).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return "is not a safetensors file (its header is not JSON)"
    return None if isinstance(header, dict) else "is not a safetensors file"


def _check_json(path: Path) -> str | None:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError):
        return "is not a JSON file"
    return None


def _check_content(name: str, path: Path) -> str | None:
    if name.endswith(".safetensors"):
        return _check_safetensors(path)
    if name.endswith(".json") and path.stat().st_size < 256 * 2**20:
        return _check_json(path)
    return None


# ---- packing -----------------------------------------------------------------------------------------

def default_pack_name(run_dir: str | Path) -> str:
    return Path(run_dir).resolve().name + SUFFIX


def _data_sources(config: dict[str, Any]) -> dict[str, str]:
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    return {k: data[k] for k in DATA_KEYS if isinstance(data.get(k), str) and data[k]}


def _walk_files(folder: Path):
    """Regular files under ``folder`` (hidden ones aside), sorted, as (path, posix relative path)."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                p = Path(root, name)
                yield p, p.relative_to(folder).as_posix()


def _collect(run: Path, config: dict[str, Any], with_data: bool):
    """(archive name, source path) pairs, the data mapping and the data files left out."""
    members: list[tuple[str, Path]] = [(n, run / n) for n in RUN_FILES if (run / n).is_file()]
    model = run / MODEL_DIR
    if model.is_dir():
        for path, rel in _walk_files(model):
            if path.is_symlink() or not path.is_file():
                raise InputError("is a link or not a regular file; a run's model folder holds plain files", path=path)
            name = f"{MODEL_DIR}/{rel}"
            problem = member_problem(name)
            if problem:
                raise InputError(f"cannot be packed: it {problem}", path=path)
            members.append((name, path))
    data: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    stored_for: dict[str, str] = {}  # a file named by both train and test is stored once
    for key, original in _data_sources(config).items():
        data[key] = {"original": original, "stored": None}
        if not with_data:
            continue
        src = Path(original)
        if not src.exists():
            raise InputError(f"the run's {key} data is not here, so it cannot be packed; pack without --with-data",
                             path=src)
        resolved = str(src.resolve())
        if resolved in stored_for:
            data[key]["stored"] = stored_for[resolved]
            continue
        stored = f"{DATA_DIR}/{key}/{src.name}"
        if src.is_dir():
            for path, rel in _walk_files(src):
                if not path.is_file():
                    continue
                name = f"{stored}/{rel}"
                if member_problem(name):
                    skipped.append(str(path))
                    continue
                members.append((name, path))
        else:
            if member_problem(stored):
                raise InputError(f"cannot be packed: it {member_problem(stored)}", path=src)
            members.append((stored, src))
        data[key]["stored"] = stored_for[resolved] = stored
    return members, data, skipped


def pack_run(run_dir: str | Path, output: str | Path | None = None, *, with_data: bool = False,
             overwrite: bool = False, cancel: CancelToken = NEVER,
             progress: Callable[[int, int], None] | None = None) -> PackResult:
    """Write ``run_dir`` into one ``.wbrun`` file (default: RUN_NAME.wbrun in the current folder).
    ``progress(done_bytes, total_bytes)`` is called as the files are written."""
    from .. import __version__
    from .runs import effective_state, is_run_dir

    run = Path(run_dir).expanduser()
    if not is_run_dir(run):
        raise InputError("not a Workbench run folder (no status.json, config.json or metrics.jsonl)", path=run)
    run = run.resolve()
    config = read_json_or_none(run / "config.json")
    if not isinstance(config, dict):
        raise InputError("has no readable config.json, so the run could not be repeated from a pack", path=run)
    status = read_json_or_none(run / "status.json")
    if effective_state(status if isinstance(status, dict) else None) in ("running", "resumed"):
        raise InputError("the run is still training; pack it once it has ended", path=run)
    out = Path(output).expanduser() if output else Path.cwd() / default_pack_name(run)
    if out.is_dir():
        raise InputError("is a folder; give the name of the .wbrun file to write", path=out)
    if out.exists() and not overwrite:
        raise InputError("exists already; pass --overwrite to replace it", path=out)
    if out.resolve().is_relative_to(run):
        raise InputError("is inside the run folder being packed; write the pack somewhere else", path=out)

    members, data, skipped = _collect(run, config, with_data)
    total = sum(p.stat().st_size for _, p in members)
    manifest: dict[str, Any] = {
        "format": FORMAT, "kind": "workbench-run", "workbench": __version__, "run": run.name,
        "packed": datetime.now().isoformat(timespec="seconds"), "with_data": with_data, "data": data, "files": {},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.writing-{os.getpid()}-", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    done = 0
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, allowZip64=True, compresslevel=6) as zf:
            for name, src in members:
                info = zipfile.ZipInfo.from_file(src, name)
                info.external_attr = (stat.S_IFREG | 0o644) << 16  # a plain file, whatever it was here
                info.compress_type = (zipfile.ZIP_STORED if name.lower().endswith(STORED_SUFFIXES)
                                      else zipfile.ZIP_DEFLATED)
                digest = hashlib.sha256()
                size = 0
                with open(src, "rb") as f, zf.open(info, "w", force_zip64=info.file_size > 2**31) as dst:
                    while chunk := f.read(_CHUNK):
                        cancel.raise_if_cancelled()
                        digest.update(chunk)
                        dst.write(chunk)
                        size += len(chunk)
                        done += len(chunk)
                        if progress:
                            progress(done, total)
                manifest["files"][name] = {"size": size, "sha256": digest.hexdigest()}
            zf.writestr(MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False))
        os.replace(tmp, out)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        failure = write_failure(e, out, permission_too=True)
        if failure is not None:
            raise failure from e
        raise
    return PackResult(path=out.resolve(), files=len(members), bytes=total, archive_bytes=out.stat().st_size,
                      with_data=with_data, has_model=(run / MODEL_DIR).is_dir(), data=data, skipped=skipped)


# ---- unpacking ---------------------------------------------------------------------------------------

def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:100].strip("-._") or "imported-run"


def _is_link(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def read_manifest(archive: str | Path) -> tuple[dict[str, Any], list[zipfile.ZipInfo]]:
    """The manifest and the file members of a pack, every member checked; nothing is written."""
    path = Path(archive).expanduser()
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise InputError("file not found", path=path) from None
    except IsADirectoryError:
        raise InputError("is a folder; give a .wbrun file", path=path) from None
    except (zipfile.BadZipFile, OSError) as e:
        raise InputError(f"not a Workbench run pack (not a readable zip archive: {e})", path=path) from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise InputError(f"refused: {len(infos):,} members, more than a run has ({MAX_MEMBERS:,} at most)",
                             path=path)
        seen: set[str] = set()
        files = []
        for info in infos:
            name = info.filename
            if _is_link(info):
                raise InputError(f"refused: member {name!r} is a symbolic link", path=path)
            problem = member_problem(name)
            if problem:
                raise InputError(f"refused: member {name!r} {problem}", path=path)
            if name in seen:
                raise InputError(f"refused: member {name!r} appears twice", path=path)
            seen.add(name)
            if not info.is_dir() and name != MANIFEST:
                files.append(info)
        if MANIFEST not in seen:
            raise InputError(f"not a Workbench run pack: it has no {MANIFEST}", path=path)
        if zf.getinfo(MANIFEST).file_size > _MANIFEST_LIMIT:
            raise InputError(f"refused: {MANIFEST} is implausibly large", path=path)
        try:
            manifest = json.loads(zf.read(MANIFEST).decode("utf-8"))
        except (UnicodeDecodeError, ValueError, zipfile.BadZipFile) as e:
            raise InputError(f"damaged: {MANIFEST} is not readable JSON ({e})", path=path) from None
    if not isinstance(manifest, dict) or manifest.get("kind") != "workbench-run" or \
            not isinstance(manifest.get("files"), dict):
        raise InputError(f"not a Workbench run pack: {MANIFEST} does not describe a run", path=path)
    if not isinstance(manifest.get("format"), int) or manifest["format"] > FORMAT:
        raise InputError(f"made by a newer Workbench (pack format {manifest.get('format')}); update Workbench "
                         "to unpack it", path=path)
    listed = set(manifest["files"])
    present = {i.filename for i in files}
    if present - listed:
        raise InputError(f"refused: member {sorted(present - listed)[0]!r} is not listed in {MANIFEST}", path=path)
    if listed - present:
        raise InputError(f"damaged: {sorted(listed - present)[0]!r} is listed but missing", path=path)
    if "config.json" not in present:
        raise InputError("not a Workbench run pack: it has no config.json", path=path)
    return manifest, files


def _target_for(manifest: dict[str, Any], target: str | Path | None, home: str | Path | None) -> Path:
    if target is not None:
        out = Path(target).expanduser()
        if out.exists() or out.is_symlink():
            raise InputError("exists already; unpacking never replaces a folder, so choose a new one", path=out)
        return out.absolute()
    parent = Path(home).expanduser() if home is not None else runs_home()
    base = parent / _safe_name(str(manifest.get("run") or ""))
    out, n = base, 1
    while out.exists() or out.is_symlink():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out.absolute()


def _rewrite_paths(folder: Path, target: Path, manifest: dict[str, Any]) -> list[str]:
    """Point config.json at the unpacked data (when packed) and say where the data is otherwise.
    status.json loses the packing machine's process id, so the run never looks alive here."""
    notes = []
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    data = manifest.get("data") if isinstance(manifest.get("data"), dict) else {}
    changed = False
    for key, entry in data.items():
        if key not in DATA_KEYS or not isinstance(entry, dict) or not isinstance(config.get("data"), dict):
            continue
        original, stored = entry.get("original"), entry.get("stored")
        if isinstance(stored, str) and not member_problem(stored) and stored.startswith(f"{DATA_DIR}/"):
            new = str(target.joinpath(*stored.split("/")))
            config["data"][key] = new
            sources = (config.get("resolved") or {}).get("sources")
            if isinstance(sources, dict) and isinstance(original, str):
                for k, v in sources.items():
                    if isinstance(v, str) and v.startswith(original):
                        sources[k] = new + v[len(original):]
            changed = True
        elif isinstance(original, str):
            here = "is here" if Path(original).exists() else "is not on this machine"
            notes.append(f"{key} data was not packed; config.json points at {original}, which {here}")
    if changed:
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    status = read_json_or_none(folder / "status.json")
    if isinstance(status, dict):
        for k in ("pid", "pid_started"):
            status.pop(k, None)
        status["imported"] = {"pack": manifest.get("run"), "packed": manifest.get("packed"),
                              "at": datetime.now().isoformat(timespec="seconds")}
        (folder / "status.json").write_text(json.dumps(status, indent=2, ensure_ascii=False), encoding="utf-8")
    return notes


def unpack_run(archive: str | Path, target: str | Path | None = None, *, home: str | Path | None = None,
               max_bytes: int = MAX_BYTES, cancel: CancelToken = NEVER,
               progress: Callable[[int, int], None] | None = None) -> UnpackResult:
    """Unpack a ``.wbrun`` into ``target`` (a new folder) or a new folder under the runs home named
    after the run. Everything is checked before the first byte is written; the folder appears only
    once complete."""
    from .export import sweep_stale_temporaries

    path = Path(archive).expanduser()
    manifest, files = read_manifest(path)
    total = sum(i.file_size for i in files)
    if total > max_bytes:
        raise InputError(f"refused: unpacked it would take {total / 1e9:,.1f} GB, more than the "
                         f"{max_bytes / 1e9:,.1f} GB cap", path=path)
    out = _target_for(manifest, target, home)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(out.parent).free
    except OSError as e:
        raise (write_failure(e, out.parent, permission_too=True) or e) from None
    if free < total + 16 * 2**20:
        raise WriteFailed(f"the disk is full: unpacking needs {total / 1e6:,.1f} MB and {out.parent} has "
                          f"{free / 1e6:,.1f} MB free", path=out.parent)
    sweep_stale_temporaries(out.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.writing-{os.getpid()}-", dir=out.parent))
    done = 0
    try:
        root = tmp.resolve()
        with zipfile.ZipFile(path) as zf:
            for info in files:
                name = info.filename
                dest = tmp.joinpath(*PurePosixPath(name).parts)
                if not dest.resolve().is_relative_to(root):  # member_problem already excludes this
                    raise InputError(f"refused: member {name!r} would be written outside the run folder", path=path)
                dest.parent.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha256()
                with zf.open(info) as src, open(dest, "xb") as f:
                    while chunk := src.read(_CHUNK):
                        cancel.raise_if_cancelled()
                        digest.update(chunk)
                        f.write(chunk)
                        done += len(chunk)
                        if progress:
                            progress(done, total)
                if digest.hexdigest() != (manifest["files"][name] or {}).get("sha256"):
                    raise InputError(f"damaged: member {name!r} does not match its checksum", path=path)
                problem = _check_content(name, dest)
                if problem:
                    raise InputError(f"refused: member {name!r} {problem}", path=path)
        if not isinstance(read_json_or_none(tmp / "config.json"), dict):
            raise InputError("damaged: its config.json is not a JSON object", path=path)
        notes = _rewrite_paths(tmp, out, manifest)
        if out.exists() or out.is_symlink():  # made meanwhile: never replaced
            raise InputError("appeared while unpacking; unpacking never replaces a folder", path=out)
        os.rename(tmp, out)  # not os.replace: a folder with files in it is never replaced even in a race
    except zipfile.BadZipFile as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InputError(f"damaged: {e}", path=path) from None
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        failure = write_failure(e, out, permission_too=True)
        if failure is not None:
            raise failure from e
        raise
    return UnpackResult(path=out, manifest=manifest, files=len(files), bytes=total, notes=notes)
