"""Where an exported model may be written, and one writer per folder at a time.

An export replaces its target folder as a whole, so the target is checked before any work starts:

* a folder that does not exist, or an empty one, is written;
* an earlier Workbench export is replaced only when the user says so (``--overwrite``, or the
  app's confirmation), and only if it holds nothing but the export's own files;
* a folder holding anything else is refused, and so are the root, the home folder, the current
  folder, the data's folder (or any folder above the data), the run directory and Workbench's runs
  folder, whatever they hold.

``ExportLock`` keeps two runs (or the app and a CLI run) from writing one folder at the same time:
a lock file beside the target names the process that holds it; a lock whose process is gone is
taken over.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..errors import InputError
from ..processes import pid_alive
from ..tasks.table import modality_of

MARKER = "workbench.json"  # every export has it; it lists the export's files under "files"
# What exports written before the file list existed may hold (save_pretrained's names and ours).
_LEGACY_EXPORT_FILES = re.compile(
    r"(README\.md|workbench\.json|config\.json|generation_config\.json|model(-\d+-of-\d+)?\.safetensors"
    r"|model\.safetensors\.index\.json|pytorch_model\.bin|tokenizer(_config)?\.json|special_tokens_map\.json"
    r"|vocab\.(txt|json)|merges\.txt|spiece\.model|sentencepiece\.bpe\.model|added_tokens\.json"
    r"|preprocessor_config\.json|labels\.json|model(\.int8)?\.onnx(\.data)?|onnx_check\.json|chat_template\.jinja)\Z"
)


@dataclass(frozen=True)
class TargetCheck:
    path: Path  # absolute
    kind: str  # "new" (nothing there), "empty" (an empty folder), "export" (an earlier export), "other"
    problem: str | None  # why it must not be written; None when it may

    @property
    def ok(self) -> bool:
        return self.problem is None


def _abs(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def export_files(folder: Path) -> list[str] | None:
    """The files of the Workbench export in ``folder``, or None when it is not one."""
    try:
        meta = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or not (folder / "config.json").is_file():
        return None
    files = meta.get("files")
    if isinstance(files, list) and all(isinstance(f, str) for f in files):
        return files
    return [p.name for p in folder.iterdir() if _LEGACY_EXPORT_FILES.match(p.name)]


def is_export(folder: Path) -> bool:
    return export_files(folder) is not None


# A tokenizer's vocabulary: one of these is in every text model folder that can encode text.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model", "spm.model")


def missing_tokenizer(folder: Path, task: str | None) -> str | None:
    """Why the text model in ``folder`` cannot encode its inputs (no tokenizer files), or None.
    Without them transformers builds an empty tokenizer and every word becomes [UNK]: refuse instead."""
    if modality_of(task) != "text":
        return None
    if any((folder / name).is_file() for name in TOKENIZER_FILES):
        return None
    return (f"has no tokenizer files (none of {', '.join(TOKENIZER_FILES[:3])}, ...): the model cannot read text "
            "without them; export it again, or copy its tokenizer files into the folder")


def _foreign_entries(folder: Path) -> list[str]:
    """Entries of ``folder`` that are not part of the export it holds (all of them if it is none)."""
    own = set(export_files(folder) or [])
    return sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir() if p.name not in own)


def _shown(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def protected_folders(data_paths: Iterable[str | Path | None] = (), run_dir: str | Path | None = None) -> list[tuple[Path, str]]:
    """Folders an export must never replace, with what each is, for the message."""
    from ..home import runs_home

    out = [(Path("/"), "the root folder"), (_abs(Path.home()), "your home folder"), (_abs(Path.cwd()), "the current folder")]
    for d in data_paths:
        if d:
            p = _abs(d)
            out.append((p, "your data") if p.is_dir() else (p.parent, f"the folder of your data ({p.name})"))
    if run_dir:
        out.append((_abs(run_dir), "the run directory"))
    out.append((_abs(runs_home()), "Workbench's runs folder"))
    return out


def inspect_target(target: str | Path, *, overwrite: bool = False, data_paths: Iterable[str | Path | None] = (),
                   run_dir: str | Path | None = None) -> TargetCheck:
    """Whether an export may be written to ``target`` (see the module docstring for the rules)."""
    path = _abs(target)
    for folder, what in protected_folders(data_paths, run_dir):
        if path == folder:
            example = {"the current folder": folder / "exported-model", "your home folder": folder / "workbench-models"
                       / "my-model"}.get(what) or (folder / "exported-model" if what.startswith("the folder of") else None)
            hint = f", e.g. {example}" if example else " outside it"
            return TargetCheck(path, "other", f"is {what}; an export replaces its folder as a whole, so give it a "
                                              f"folder of its own{hint}")
        if path in folder.parents:
            return TargetCheck(path, "other", f"holds {what}; an export replaces its folder as a whole, so give it a "
                                              "new folder of its own")
        if what in ("the run directory", "Workbench's runs folder") and folder in path.parents:
            return TargetCheck(path, "other", f"is inside {what} ({folder}); the run keeps its own copy of the "
                                              "model in RUN/model, so export to a folder outside it")
        if what == "your data" and folder in path.parents:
            return TargetCheck(path, "other", f"is inside the image folder {folder}, where it would become a class; "
                                              "export to a folder outside it")
    if not path.exists():
        if path.is_symlink():
            return TargetCheck(path, "other", "is a broken symbolic link; choose another folder")
        return TargetCheck(path, "new", None)
    if not path.is_dir():
        return TargetCheck(path, "other", "exists and is not a folder; choose a folder")
    try:
        entries = list(path.iterdir())
    except OSError as e:
        return TargetCheck(path, "other", f"cannot be read ({e.strerror or e}); choose another folder")
    if not entries:
        return TargetCheck(path, "empty", None)
    if not is_export(path):
        return TargetCheck(path, "other", f"already holds other files ({_shown(_foreign_entries(path))}); choose an "
                                          "empty folder or a new name, nothing there is replaced")
    foreign = _foreign_entries(path)
    if foreign:
        return TargetCheck(path, "other", f"holds an earlier Workbench export and also other files "
                                          f"({_shown(foreign)}); move those away or choose another folder")
    if not overwrite:
        return TargetCheck(path, "export", "holds an earlier Workbench export; pass --overwrite to replace it, or "
                                           "choose another folder")
    return TargetCheck(path, "export", None)


def check_export_target(target: str | Path, **kwargs) -> Path:
    """The absolute target, or an InputError naming it and saying why it is refused."""
    check = inspect_target(target, **kwargs)
    if check.problem:
        raise InputError(f"export target {check.problem}", path=check.path)
    return check.path


class ExportLock:
    """A lock file beside an export target: ``.NAME.workbench-lock`` holding the owner's pid.

    Created with O_EXCL, so of two processes only one gets it; one left by a killed process is
    taken over. Released (and the parent folders it had to create removed, if still empty) by
    ``release``; usable as a context manager.
    """

    def __init__(self, target: str | Path) -> None:
        self.target = _abs(target)
        self.file = self.target.parent / f".{self.target.name}.workbench-lock"
        self._created: list[Path] = []
        self.held = False

    def acquire(self) -> "ExportLock":
        parent = self.target.parent
        missing = [p for p in [parent, *parent.parents] if not p.exists()]
        parent.mkdir(parents=True, exist_ok=True)
        self._created = missing  # deepest first: removed in this order if the export never happens
        for attempt in range(2):
            try:
                fd = os.open(self.file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if attempt == 0 and (owner is None or not pid_alive(owner)):
                    self.file.unlink(missing_ok=True)  # left by a process that is gone
                    continue
                self._remove_created()
                raise InputError(f"another Workbench process (pid {owner}) is exporting to this folder right now; "
                                 "wait for it to finish or choose another folder", path=self.target) from None
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            self.held = True
            return self
        raise AssertionError("unreachable")

    def _owner(self) -> int | None:
        try:
            return int(self.file.read_text().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def _remove_created(self) -> None:
        for p in self._created:
            try:
                p.rmdir()
            except OSError:
                break

    def release(self) -> None:
        if self.held:
            self.file.unlink(missing_ok=True)
            self.held = False
            if not self.target.exists():
                self._remove_created()

    def __enter__(self) -> "ExportLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
