"""Portable runs: one ``.wbrun`` file (a zip) holding a run's config, metrics, report, predictions
and model, and its unpacking into a run folder another machine lists like a local run.

    workbench-pack.json   the manifest: format, run name, data paths, every member's size and SHA-256
    config.json ...       the run's own files (``RUN_FILES``), as the run wrote them
    model/                the exported model: safetensors weights, JSON, tokenizer text, ONNX graphs
    data/KEY/NAME         with --with-data only: the train/val/test files (or image folders)

Unpacking never runs code from the archive: the model folder may hold only safetensors, ONNX, JSON and
text files (checked by name when packing and unpacking, and safetensors and JSON by content); pickles
(.bin, .pt, .pkl ...) and code (.py, .so ...) are refused anywhere. A member with an absolute path,
``..``, a backslash, a link, a name too long for a file system, encryption or a compression method
Workbench does not write, a member the manifest does not list, a member that is also a folder of
another, one whose size differs from the manifest's, one that expands more than ``MAX_RATIO``:1, or an
archive larger than the cap is refused before anything is written; while extracting, no member may
grow past the size the manifest gives it. A text model without tokenizer files is refused (it could
only turn every word into [UNK]). Unpacking writes into a hidden folder beside the target and renames
it into place at the end, and never replaces an existing folder.

Data paths (the security rule). ``--with-data`` follows the paths the run's config.json names, so
they are checked (``data_path_problem``): a path is packed only when it is a regular file, or an image
dataset folder (class folders of images, or train/val/test folders of them) of which only the regular
image files are packed; refused are the root and system folders (/etc, /proc, /sys, /dev, /boot,
/root, /var, /run, /usr, /bin, /sbin, /lib*, /snap; your home folder and the temp folder excepted,
even when they lie in one), credential stores (~/.ssh, ~/.gnupg, ~/.aws, ~/.netrc ...), devices, pipes
and sockets, other folders, and links whose target breaks one of these rules or, inside an image
folder, leaves it. Unpacking points config.json only at data it wrote itself (under the unpacked
``data/``); a path the pack did not carry is kept only when it is here, passes the same rule and is,
by checksum, the very data the run recorded having trained on (``resolved.data_fingerprint``);
otherwise it is dropped from config.json (with a note naming it), so a crafted archive can never
steer a later ``pack --with-data`` to a file of this machine.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import stat
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any, BinaryIO, Callable

from ..atomic import replacing, temp_beside
from ..cancel import NEVER, CancelToken
from ..data.image_sniff import IGNORED, is_image_name, sniff_image_folder
from ..errors import InputError, WorkbenchError, WriteFailed, write_failure
from ..run.directory import read_json_or_none, runs_home
from ..tasks.table import first_task_of
from .target import missing_tokenizer

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
# No file of a real run deflates anywhere near 200:1: weights, ONNX graphs and images are stored (1:1),
# JSON, vocabularies and tokenizer files deflate 3-10:1, metrics and predictions (JSON lines with
# repeated keys) and TSV/CoNLL data 4-20:1; deflate's own limit is about 1032:1, which only long runs
# of one byte reach, i.e. a zip bomb. Small members are let through whatever their ratio (a 1 MiB file
# of zeros harms no one), and pack_run stores (does not deflate) any member that would cross the line,
# so every pack Workbench writes unpacks.
MAX_RATIO = 200
RATIO_FLOOR = 1 << 20
MAX_NAME_CHARS = 1024  # a member's whole path; each part is also held to NAME_MAX (255 bytes)
_NAME_MAX = 255
_MANIFEST_LIMIT = 64 * 2**20
_CHUNK = 1 << 20
_COMPRESSIONS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)  # what pack_run writes; nothing else is read

# Where no dataset of a run lives (the root itself too): the operating system's own folders.
SYSTEM_FOLDERS = ("/etc", "/proc", "/sys", "/dev", "/boot", "/root", "/var", "/run", "/usr", "/bin", "/sbin",
                  "/lib", "/lib32", "/lib64", "/libx32", "/snap", "/lost+found")
# Credential stores in a home folder: never data, whatever the config says.
SECRET_NAMES = frozenset({".ssh", ".gnupg", ".aws", ".azure", ".kube", ".docker", ".password-store", ".netrc",
                          ".pgpass", ".git-credentials", ".pypirc", ".npmrc", ".vault-token", ".gcloud"})


@dataclass
class PackResult:
    path: Path
    files: int
    bytes: int  # the members' total size, unpacked
    archive_bytes: int
    with_data: bool
    has_model: bool
    data: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> {"original", "stored"}
    skipped: list[str] = field(default_factory=list)  # data files left out (code, pickles, not images)

    def notes(self) -> list[str]:
        out = []
        if not self.has_model:
            out.append("the run has no model folder (it did not finish); the pack holds its records only")
        originals = {k: v["original"] for k, v in self.data.items()}
        if originals and not self.with_data:
            out.append("data not included (pass --with-data to include it); the packed config.json points at "
                       + ", ".join(f"{k}: {p}" for k, p in originals.items()))
        if self.skipped:
            out.append(f"{len(self.skipped)} data file(s) left out as code, pickles or not images of an image "
                       f"folder, e.g. {self.skipped[0]}")
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
    if len(name) > MAX_NAME_CHARS or any(len(p.encode("utf-8", "surrogatepass")) > _NAME_MAX for p in parts):
        return f"has a name too long for a file system (over {_NAME_MAX} bytes a part or {MAX_NAME_CHARS} in all)"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "has a control character in its name"
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


def _ratio_problem(info: zipfile.ZipInfo) -> str | None:
    """A member that expands like a zip bomb (see MAX_RATIO), or None."""
    if info.file_size <= RATIO_FLOOR or info.file_size <= MAX_RATIO * max(info.compress_size, 1):
        return None
    return (f"expands {info.file_size / max(info.compress_size, 1):,.0f}:1 ({info.file_size:,} bytes from "
            f"{info.compress_size:,}); no run's file compresses more than {MAX_RATIO}:1, so this is a zip bomb "
            "or a damaged archive")


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
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "is not a JSON file"
    return None


def _check_content(name: str, path: Path) -> str | None:
    if name.endswith(".safetensors"):
        return _check_safetensors(path)
    if name.endswith(".json") and path.stat().st_size < 256 * 2**20:
        return _check_json(path)
    return None


def _read_json(path: Path) -> Any:
    """read_json_or_none, and None too for JSON nested past the recursion limit."""
    try:
        return read_json_or_none(path)
    except RecursionError:
        return None


def _model_task(model: Path, config: Any) -> str | None:
    """The task of the model in ``model``: its workbench.json says, else the run's config."""
    for source in (_read_json(model / "workbench.json"), config):
        task = source.get("task") if isinstance(source, dict) else None
        if isinstance(task, str) and task and task != "auto":
            return task
    return first_task_of("image") if (model / "preprocessor_config.json").is_file() else None


def _model_problem(model: Path, config: Any) -> str | None:
    """Why the complete model folder ``model`` is unusable (a text model without a tokenizer), or None."""
    if not (model / "config.json").is_file():
        return None  # no model, or an unfinished one: the records alone
    return missing_tokenizer(model, _model_task(model, config))


def _shown(text: Any) -> str:
    """``text`` for a message: quoted and escaped when it holds anything a terminal would act on."""
    text = str(text)
    return text if text.isprintable() else repr(text)


# ---- which data paths may be packed --------------------------------------------------------------------

def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _user_folders() -> list[Path]:
    """The home and temp folders: user data even where they lie in a system folder (root's home is
    /root; macOS's temp folder is under /var)."""
    out = []
    for get in (Path.home, lambda: Path(tempfile.gettempdir())):
        try:
            p = get().resolve()
        except (OSError, RuntimeError, KeyError):
            continue
        if len(p.parts) > 1:  # never "/"
            out.append(p)
    return out


def _system_problem(path: Path) -> str | None:
    secret = next((p for p in path.parts if p.lower() in SECRET_NAMES
                   or (p.startswith(".") and p.lower().endswith("_history"))), None)
    if secret:
        return f"is in {secret}, where credentials are kept, not a dataset"
    if any(_within(path, home) for home in _user_folders()):
        return None
    if path == Path(path.anchor):
        return "is the root folder, not a dataset"
    for folder in SYSTEM_FOLDERS:
        if _within(path, Path(folder)):
            return f"is in the system folder {folder}, not a dataset"
    return None


def data_path_problem(path: str | Path) -> str | None:
    """Why ``pack --with-data`` must not store ``path`` as a run's data (see the module docstring for
    the rule); None when it may."""
    given = Path(os.path.abspath(Path(path).expanduser()))  # '..' folded away, links not followed
    try:
        real = given.resolve(strict=True)
        st = real.stat()
    except (OSError, RuntimeError, ValueError):
        return "is not here (or is a broken link)"
    for p in (given, real):
        problem = _system_problem(p)
        if problem:
            return problem + ("" if p == given else f" (it is a link to {real})")
    if stat.S_ISREG(st.st_mode):
        return None
    if stat.S_ISDIR(st.st_mode):
        if sniff_image_folder(real) >= 0.9:
            return None
        return ("is a folder but not an image dataset (class folders of images, or train/val/test folders of "
                "them), the only folders a run's data may be")
    return "is not a regular file (a device, pipe or socket), so it is not a dataset"


def _image_files(folder: Path, skipped: list[str]):
    """The regular image files of the image dataset ``folder``, sorted, as (path, posix relative path);
    other files go to ``skipped``. A link pointing out of the folder is refused."""
    real = folder.resolve()
    for root, dirs, files in os.walk(folder):
        keep = []
        for d in sorted(dirs):
            p = Path(root, d)
            if d.startswith(".") or d.lower() in IGNORED:
                continue
            if p.is_symlink():
                if not _within(p.resolve(), real):
                    raise InputError(f"is a link pointing out of the image folder {folder} (to {p.resolve()}); "
                                     "a packed dataset holds its own files only", path=p)
                continue  # a link to a folder inside: its images are packed where they are
            keep.append(d)
        dirs[:] = keep
        for name in sorted(files):
            p = Path(root, name)
            if name.startswith(".") or name.lower() in IGNORED:
                continue
            if p.is_symlink() and not _within(p.resolve(), real):
                raise InputError(f"is a link pointing out of the image folder {folder} (to {p.resolve()}); "
                                 "a packed dataset holds its own files only", path=p)
            try:
                regular = stat.S_ISREG(p.stat().st_mode)
            except OSError:
                regular = False
            if not regular or not is_image_name(name):
                skipped.append(str(p))
                continue
            yield p, p.relative_to(folder).as_posix()


# ---- packing -----------------------------------------------------------------------------------------

def default_pack_name(run_dir: str | Path) -> str:
    return Path(run_dir).resolve().name + SUFFIX


def _dict_in(mapping: dict[str, Any], key: str) -> dict[str, Any]:
    """``mapping[key]`` when it is a dict (the same object, so edits reach ``mapping``), else a new empty one."""
    value = mapping.get(key)
    return value if isinstance(value, dict) else {}


def _data_sources(config: dict[str, Any]) -> dict[str, str]:
    data = _dict_in(config, "data")
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
    members: list[tuple[str, Path]] = []
    for n in RUN_FILES:
        if (run / n).is_symlink():
            raise InputError("is a link; a run's files are plain files, and a pack never follows a link out of "
                             "the run folder", path=run / n)
        if (run / n).is_file():
            members.append((n, run / n))
    model = run / MODEL_DIR
    if model.is_symlink():
        raise InputError("is a link; a run's model folder is a plain folder, and a pack never follows a link",
                         path=model)
    if model.is_dir():
        for path, rel in _walk_files(model):
            if path.is_symlink() or not path.is_file():
                raise InputError("is a link or not a regular file; a run's model folder holds plain files", path=path)
            name = f"{MODEL_DIR}/{rel}"
            problem = member_problem(name)
            if problem:
                raise InputError(f"cannot be packed: it {problem}", path=path)
            members.append((name, path))
        problem = _model_problem(model, config)
        if problem:
            raise InputError(f"cannot be packed: the run's model folder {problem}", path=model)
    data: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    stored_for: dict[str, str] = {}  # a file named by both train and test is stored once
    for key, original in _data_sources(config).items():
        data[key] = {"original": original, "stored": None}
        if not with_data:
            continue
        src = Path(original).expanduser()
        try:
            here = src.exists()
        except (OSError, ValueError):  # a name too long, or with a NUL byte
            here = False
        if not here:
            raise InputError(f"the run's {key} data is not here, so it cannot be packed; pack without --with-data",
                             path=src)
        problem = data_path_problem(src)
        if problem:
            raise InputError(f"the run's {key} data {problem}; --with-data packs only a run's own data files or "
                             "image folders (see `workbench pack --help`). Pack without --with-data, or correct "
                             "data in config.json", path=src)
        resolved = str(src.resolve())
        if resolved in stored_for:
            data[key]["stored"] = stored_for[resolved]
            continue
        stored = f"{DATA_DIR}/{key}/{src.resolve().name if src.name in ('', '.', '..') else src.name}"
        if src.is_dir():
            for path, rel in _image_files(src, skipped):
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


def _is_pack(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return MANIFEST in zf.namelist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return False


def _check_output(out: Path, run: Path, config: dict[str, Any], overwrite: bool) -> None:
    if out.is_dir():
        raise InputError("is a folder; give the name of the .wbrun file to write", path=out)
    if out.exists() and not overwrite:
        raise InputError("exists already; pass --overwrite to replace it", path=out)
    real = out.resolve()
    if _within(real, run):
        raise InputError("is inside the run folder being packed; write the pack somewhere else", path=out)
    for key, original in _data_sources(config).items():
        try:
            source = Path(original).expanduser().resolve()
        except (OSError, RuntimeError, ValueError):
            continue
        if real == source:
            raise InputError(f"is the run's {key} data; write the pack somewhere else", path=out)
    if out.exists() and not (out.is_file() and _is_pack(out)):
        raise InputError("exists and is not a Workbench run pack; --overwrite replaces only an earlier .wbrun, "
                         "so choose another name", path=out)


def _read(f: BinaryIO, src: Path) -> bytes:
    try:
        return f.read(_CHUNK)
    except OSError as e:
        raise InputError(f"cannot be read ({e.strerror or e}), so it cannot be packed", path=src) from None


def _write_archive(tmp: Path, members: list[tuple[str, Path]], manifest: dict[str, Any], stored: set[str],
                   cancel: CancelToken, progress: Callable[[int, int], None] | None, total: int) -> None:
    done = 0
    manifest["files"] = {}
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, allowZip64=True, compresslevel=6) as zf:
        for name, src in members:
            try:
                info = zipfile.ZipInfo.from_file(src, name)
                f = open(src, "rb")
            except OSError as e:
                raise InputError(f"cannot be read ({e.strerror or e}), so it cannot be packed", path=src) from None
            info.external_attr = (stat.S_IFREG | 0o644) << 16  # a plain file, whatever it was here
            info.compress_type = (zipfile.ZIP_STORED if name in stored or name.lower().endswith(STORED_SUFFIXES)
                                  else zipfile.ZIP_DEFLATED)
            digest = hashlib.sha256()
            size = 0
            with f, zf.open(info, "w", force_zip64=info.file_size > 2**31) as dst:
                while chunk := _read(f, src):
                    cancel.raise_if_cancelled()
                    digest.update(chunk)
                    dst.write(chunk)
                    size += len(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
            manifest["files"][name] = {"size": size, "sha256": digest.hexdigest()}
        zf.writestr(MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False),
                    compress_type=zipfile.ZIP_STORED if MANIFEST in stored else None)


def pack_run(run_dir: str | Path, output: str | Path | None = None, *, with_data: bool = False,
             overwrite: bool = False, cancel: CancelToken = NEVER,
             progress: Callable[[int, int], None] | None = None) -> PackResult:
    """Write ``run_dir`` into one ``.wbrun`` file (default: RUN_NAME.wbrun in the current folder).
    ``progress(done_bytes, total_bytes)`` is called as the files are written."""
    from ... import __version__
    from ..run.history import effective_state, is_run_dir

    run = Path(run_dir).expanduser()
    if not is_run_dir(run):
        raise InputError("not a Workbench run folder (no status.json, config.json or metrics.jsonl)", path=run)
    run = run.resolve()
    config = _read_json(run / "config.json")
    if not isinstance(config, dict):
        raise InputError("has no readable config.json, so the run could not be repeated from a pack", path=run)
    status = _read_json(run / "status.json")
    if effective_state(status if isinstance(status, dict) else None) in ("running", "resumed"):
        raise InputError("the run is still training; pack it once it has ended", path=run)
    out = Path(output).expanduser() if output else Path.cwd() / default_pack_name(run)
    _check_output(out, run, config, overwrite)

    members, data, skipped = _collect(run, config, with_data)
    try:
        total = sum(p.stat().st_size for _, p in members)
    except OSError as e:
        raise InputError(f"cannot be read ({e.strerror or e}), so it cannot be packed", path=e.filename) from None
    manifest: dict[str, Any] = {
        "format": FORMAT, "kind": "workbench-run", "workbench": __version__, "run": run.name,
        "packed": datetime.now().isoformat(timespec="seconds"), "with_data": with_data, "data": data, "files": {},
    }
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_beside(out, prefix=f".{out.name[:120]}.writing-{os.getpid()}-")
    except (FileExistsError, NotADirectoryError):
        raise InputError("cannot be written: a part of its folder is a file, not a folder", path=out) from None
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            raise InputError("has a name too long for the file system", path=out) from None
        raise (write_failure(e, out.parent, permission_too=True) or
               WriteFailed(f"cannot write there: {e.strerror or e}", path=out.parent)) from None
    try:
        with replacing(out, tmp=tmp):
            stored: set[str] = set()
            for _ in range(2):
                _write_archive(tmp, members, manifest, stored, cancel, progress, total)
                with zipfile.ZipFile(tmp) as zf:  # a member that would read as a zip bomb is written as is
                    dense = {i.filename for i in zf.infolist() if _ratio_problem(i)}
                if not dense or dense <= stored:
                    break
                stored |= dense
    except WorkbenchError:
        raise
    except BaseException as e:
        failure = write_failure(e, out, permission_too=True)
        if failure is not None:
            raise failure from e
        raise
    return PackResult(path=out.resolve(), files=len(members), bytes=total, archive_bytes=out.stat().st_size,
                      with_data=with_data, has_model=(run / MODEL_DIR).is_dir(), data=data, skipped=skipped)


# ---- unpacking ---------------------------------------------------------------------------------------

_SHA256 = re.compile(r"[0-9a-f]{64}\Z")


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:100].strip("-._") or "imported-run"


def _is_link(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_members(infos: list[zipfile.ZipInfo], path: Path) -> list[zipfile.ZipInfo]:
    """The file members (the manifest aside) of an archive whose every member may be unpacked."""
    seen: set[str] = set()
    folders: set[str] = set()
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
        if info.flag_bits & 0x1:
            raise InputError(f"refused: member {name!r} is encrypted; Workbench never writes encrypted packs",
                             path=path)
        if info.compress_type not in _COMPRESSIONS:
            raise InputError(f"refused: member {name!r} uses a compression method ({info.compress_type}) "
                             "Workbench does not write", path=path)
        problem = _ratio_problem(info)
        if problem:
            raise InputError(f"refused: member {name!r} {problem}", path=path)
        parts = name.rstrip("/").split("/")
        folders.update("/".join(parts[:i]) for i in range(1, len(parts)))
        if info.is_dir():
            folders.add(name.rstrip("/"))
        elif name != MANIFEST:
            files.append(info)
    clash = sorted(i.filename for i in files if i.filename in folders)
    if clash:
        raise InputError(f"refused: member {clash[0]!r} is both a file and a folder (other members lie inside it)",
                         path=path)
    if MANIFEST not in seen:
        raise InputError(f"not a Workbench run pack: it has no {MANIFEST}", path=path)
    return files


def _check_manifest(manifest: Any, path: Path) -> None:
    if not isinstance(manifest, dict) or manifest.get("kind") != "workbench-run":
        raise InputError(f"not a Workbench run pack: {MANIFEST} does not describe a run", path=path)
    fmt = manifest.get("format")
    if type(fmt) is not int or fmt < 1:
        raise InputError(f"damaged: {MANIFEST} has no valid pack format (format: {_brief(fmt)}, where a whole "
                         "number is expected)", path=path)
    if fmt > FORMAT:
        raise InputError(f"made by a newer Workbench (pack format {fmt}); update Workbench to unpack it", path=path)
    table = manifest.get("files")
    if not isinstance(table, dict):
        raise InputError(f"damaged: {MANIFEST} has no table of files (files: {_brief(table)})", path=path)
    for name, entry in table.items():
        size = entry.get("size") if isinstance(entry, dict) else None
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        if type(size) is not int or size < 0 or not isinstance(digest, str) or not _SHA256.match(digest):
            raise InputError(f"damaged: {MANIFEST}'s entry for {name!r} is not a size and a SHA-256 checksum "
                             f"({_brief(entry)})", path=path)
    data = manifest.get("data")
    if data is not None and not isinstance(data, dict):
        raise InputError(f"damaged: {MANIFEST}'s data is not a table (data: {_brief(data)})", path=path)
    for key, entry in (data or {}).items():
        if not isinstance(entry, dict) or any(entry.get(k) is not None and not isinstance(entry.get(k), str)
                                              for k in ("original", "stored")):
            raise InputError(f"damaged: {MANIFEST}'s data entry {key!r} is not an original and a stored path "
                             f"({_brief(entry)})", path=path)


def read_manifest(archive: str | Path) -> tuple[dict[str, Any], list[zipfile.ZipInfo]]:
    """The manifest and the file members of a pack, every member checked; nothing is written."""
    path = Path(archive).expanduser()
    try:
        if path.exists() and not path.is_dir() and not path.is_file():
            raise InputError("is not a regular file (a device, pipe or socket); give a .wbrun file", path=path)
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise InputError("file not found", path=path) from None
    except IsADirectoryError:
        raise InputError("is a folder; give a .wbrun file", path=path) from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, struct.error,
            NotImplementedError) as e:
        raise InputError(f"not a Workbench run pack (not a readable zip archive: {e})", path=path) from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise InputError(f"refused: {len(infos):,} members, more than a run has ({MAX_MEMBERS:,} at most)",
                             path=path)
        files = _check_members(infos, path)
        if zf.getinfo(MANIFEST).file_size > _MANIFEST_LIMIT:
            raise InputError(f"refused: {MANIFEST} is implausibly large", path=path)
        try:
            manifest = json.loads(zf.read(MANIFEST).decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError, zipfile.BadZipFile, zlib.error, EOFError,
                OSError) as e:
            raise InputError(f"damaged: {MANIFEST} is not readable JSON ({e})", path=path) from None
    _check_manifest(manifest, path)
    table = manifest["files"]
    listed = set(table)
    present = {i.filename for i in files}
    if present - listed:
        raise InputError(f"refused: member {sorted(present - listed)[0]!r} is not listed in {MANIFEST}", path=path)
    if listed - present:
        raise InputError(f"damaged: {sorted(listed - present)[0]!r} is listed but missing", path=path)
    for info in files:
        if info.file_size != table[info.filename]["size"]:
            raise InputError(f"damaged: member {info.filename!r} is {info.file_size:,} bytes in the archive but "
                             f"{table[info.filename]['size']:,} in {MANIFEST}", path=path)
    if "config.json" not in present:
        raise InputError("not a Workbench run pack: it has no config.json", path=path)
    return manifest, files


def _target_for(manifest: dict[str, Any], target: str | Path | None, home: str | Path | None) -> Path:
    if target is not None:
        out = Path(target).expanduser()
        if any(len(part.encode("utf-8", "surrogateescape")) > _NAME_MAX for part in out.parts):
            raise OSError(errno.ENAMETOOLONG, "File name too long", str(out))
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


def _config_problem(config: Any) -> str | None:
    """Why an unpacked config.json could not be listed or repeated, or None."""
    if not isinstance(config, dict):
        return "is not a JSON object"
    for key in ("data", "model", "train", "resolved"):
        if config.get(key) is not None and not isinstance(config[key], dict):
            return f"has a {key!r} that is not a JSON object ({_brief(config[key])})"
    for key in DATA_KEYS:
        value = (config.get("data") or {}).get(key)
        if value is not None and not isinstance(value, str):
            return f"names its {key} data with {_brief(value)}, not a path"
    return None


def _fingerprint_matches(path: Path, recorded: Any, cancel: CancelToken) -> bool:
    """Whether ``path`` is, by content, data the run recorded in ``resolved.data_fingerprint``
    (``data.fingerprints``); a file of another size is not read."""
    from ..data.fingerprints import fingerprint

    entries = [v for v in recorded.values() if isinstance(v, dict)] if isinstance(recorded, dict) else []
    try:
        if path.is_dir():
            if not any(isinstance(v.get("folder"), str) for v in entries):
                return False
        elif not any(v.get("size") == path.stat().st_size for v in entries):
            return False
        return fingerprint(path, cancel) in entries
    except (OSError, UnicodeEncodeError):
        return False


def _unverified(value: str, fingerprints: Any, cancel: CancelToken) -> str | None:
    """Why a data path the pack did not carry must leave config.json; None when it may stay."""
    path = Path(value).expanduser()
    if not path.is_absolute():
        return "a relative path, which says nothing on this machine"
    try:
        here = path.exists()
    except (OSError, ValueError):
        here = False
    if not here:
        return "it is not on this machine"
    problem = data_path_problem(path)
    if problem:
        return f"it {problem}"
    if not _fingerprint_matches(path, fingerprints, cancel):
        return "it is not, by checksum, the data the run recorded having trained on"
    return None


def _rewrite_paths(folder: Path, target: Path, manifest: dict[str, Any], cancel: CancelToken = NEVER,
                   via: str = "unpack") -> list[str]:
    """Point config.json at the unpacked data (when packed); any other data path stays only when it is
    verifiably the run's own data on this machine, and is dropped otherwise (see the module docstring).
    status.json loses the packing machine's process id, so the run never looks alive here."""
    notes = []
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    entries = _dict_in(manifest, "data")
    data = _dict_in(config, "data")
    resolved = _dict_in(config, "resolved")
    sources = _dict_in(resolved, "sources")
    changed = False
    for key in DATA_KEYS:
        value = data.get(key)
        if not value:
            continue
        entry = _dict_in(entries, key)
        original, stored = entry.get("original"), entry.get("stored")
        if (isinstance(stored, str) and not member_problem(stored) and stored.startswith(f"{DATA_DIR}/")
                and folder.joinpath(*stored.split("/")).exists()):  # data this unpack wrote
            new = str(target.joinpath(*stored.split("/")))
            data[key] = new
            old = original if isinstance(original, str) and original else value
            for k, v in sources.items():
                if isinstance(v, str) and v.startswith(old):
                    sources[k] = new + v[len(old):]
            changed = True
            continue
        why = _unverified(value, resolved.get("data_fingerprint"), cancel)
        if why is None:
            notes.append(f"{key} data was not packed; config.json points at {_shown(value)}, which is here (the "
                         "data the run trained on, by checksum)")
            continue
        data[key] = "" if key == "train" else None
        changed = True
        how = "as DATA" if key == "train" else f"with --{key} FILE"
        notes.append(f"{key} data was not packed, and config.json no longer names {_shown(value)} ({why}); to "
                     f"repeat the run, give the data {how} to workbench train --config {target / 'config.json'}")
    if changed:
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    status = read_json_or_none(folder / "status.json")
    if isinstance(status, dict):
        for k in ("pid", "pid_started"):
            status.pop(k, None)
        status["imported"] = {"pack": manifest.get("run"), "packed": manifest.get("packed"),
                              "at": datetime.now().isoformat(timespec="seconds"), "via": via}
        (folder / "status.json").write_text(json.dumps(status, indent=2, ensure_ascii=False), encoding="utf-8")
    return notes


def _copy_member(src: IO[bytes], dst: BinaryIO, limit: int, name: str, archive: Path, cancel: CancelToken,
                 advance: Callable[[int], None]) -> str:
    """Copy one member, counting the bytes: never more than ``limit`` (its size in the manifest) are
    written, whatever the archive's headers claim. Returns the SHA-256 of what was written."""
    digest = hashlib.sha256()
    written = 0
    while chunk := src.read(min(_CHUNK, limit - written + 1)):
        written += len(chunk)
        if written > limit:
            raise InputError(f"refused: member {name!r} is larger than the {limit:,} bytes {MANIFEST} gives it",
                             path=archive)
        cancel.raise_if_cancelled()
        digest.update(chunk)
        dst.write(chunk)
        advance(len(chunk))
    return digest.hexdigest()


def unpack_run(archive: str | Path, target: str | Path | None = None, *, home: str | Path | None = None,
               max_bytes: int = MAX_BYTES, cancel: CancelToken = NEVER,
               progress: Callable[[int, int], None] | None = None, via: str = "unpack") -> UnpackResult:
    """Unpack a ``.wbrun`` into ``target`` (a new folder) or a new folder under the runs home named
    after the run. Every member is checked before the first byte is written; the folder appears only
    once complete. ``via`` (status.json's ``imported.via``): "unpack" (the CLI) or "import" (the app)."""
    from .model import sweep_stale_temporaries

    path = Path(archive).expanduser()
    manifest, files = read_manifest(path)
    sizes = {name: entry["size"] for name, entry in manifest["files"].items()}
    total = sum(sizes.values())
    if total > max_bytes:
        raise InputError(f"refused: unpacked it would take {total / 1e9:,.1f} GB, more than the "
                         f"{max_bytes / 1e9:,.1f} GB cap", path=path)
    try:
        out = _target_for(manifest, target, home)
        out.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(out.parent).free
    except (FileExistsError, NotADirectoryError):
        raise InputError("cannot be created: a part of its path is a file, not a folder",
                         path=target if target is not None else home) from None
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            raise InputError("has a name too long for the file system", path=target) from None
        where = Path(e.filename) if e.filename else Path(target or home or runs_home())
        raise (write_failure(e, where, permission_too=True)
               or WriteFailed(f"cannot write {where}: {e.strerror or e}", path=where)) from None
    if free < total + 16 * 2**20:
        raise WriteFailed(f"the disk is full: unpacking needs {total / 1e6:,.1f} MB and {out.parent} has "
                          f"{free / 1e6:,.1f} MB free", path=out.parent)
    sweep_stale_temporaries(out.parent)
    try:
        tmp = temp_beside(out, folder=True, prefix=f".{out.name[:120]}.writing-{os.getpid()}-")
    except OSError as e:
        raise (write_failure(e, out.parent, permission_too=True)
               or WriteFailed(f"cannot write in {out.parent}: {e.strerror or e}", path=out.parent)) from None
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    try:
        root = tmp.resolve()
        with zipfile.ZipFile(path) as zf:
            for info in files:
                name = info.filename
                dest = tmp.joinpath(*PurePosixPath(name).parts)
                if not dest.resolve().is_relative_to(root):  # member_problem already excludes this
                    raise InputError(f"refused: member {name!r} would be written outside the run folder", path=path)
                try:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    f = open(dest, "xb")
                except (FileExistsError, NotADirectoryError, IsADirectoryError):
                    raise InputError(f"refused: member {name!r} clashes with another member (a file and a folder "
                                     "of one name, or names this file system does not tell apart)", path=path) from None
                except OSError as e:
                    if e.errno not in (errno.ENAMETOOLONG, errno.EINVAL, errno.EILSEQ):
                        raise
                    raise InputError(f"refused: member {name!r} has a name this file system cannot hold "
                                     f"({e.strerror})", path=path) from None
                with f, zf.open(info) as src:
                    digest = _copy_member(src, f, sizes[name], name, path, cancel, advance)
                if digest != manifest["files"][name]["sha256"]:
                    raise InputError(f"damaged: member {name!r} does not match its checksum", path=path)
                problem = _check_content(name, dest)
                if problem:
                    raise InputError(f"refused: member {name!r} {problem}", path=path)
        config = read_json_or_none(tmp / "config.json")
        problem = _config_problem(config)
        if problem:
            raise InputError(f"damaged: its config.json {problem}", path=path)
        problem = _model_problem(tmp / MODEL_DIR, config)
        if problem:
            raise InputError(f"refused: its model folder (model/) {problem}", path=path)
        notes = _rewrite_paths(tmp, out, manifest, cancel, via)
        if out.exists() or out.is_symlink():  # made meanwhile: never replaced
            raise InputError("appeared while unpacking; unpacking never replaces a folder", path=out)
        os.rename(tmp, out)  # not os.replace: a folder with files in it is never replaced even in a race
    except WorkbenchError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InputError(f"damaged: {e}", path=path) from None
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        failure = write_failure(e, out, permission_too=True)
        if failure is not None:
            raise failure from e
        raise
    return UnpackResult(path=out, manifest=manifest, files=len(files), bytes=total, notes=notes)
