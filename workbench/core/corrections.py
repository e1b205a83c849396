"""A corrected copy of a training file: rows left out or relabelled, the original never touched.

Delimited files: the copy is the original byte for byte except the excluded rows (dropped with all
their physical lines) and the relabelled ones (re-written with the file's own delimiter and line
ending, only the label cell changed). Image folders: the copy is a folder that mirrors the original
with symbolic links (copies where links cannot be made), an excluded image left out and a
relabelled one linked under its new class folder; the images themselves are never copied or moved.
A table of image paths and label sets (image-multilabel) is a delimited file like any other; its
relative paths are read from the table's folder, so a copy written in another folder has them
re-written to point at the same images from there (beside the original, they stay as they are).

Beside the copy, ``<copy>.corrections.json`` (inside the folder for images) records the original,
its fingerprint and every decision; a run on the copy records that in its config.json
(``resolved.corrected_from``), so a model trained on a corrected copy says where its data came from.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .atomic import replacing, write_json_atomic
from .errors import InputError, write_failure
from .paths import check_output_path
from .tasks.table import modality_of

SIDECAR_SUFFIX = ".corrections.json"
FOLDER_SIDECAR = ".workbench-corrections.json"  # hidden: the image scan skips it


def sidecar_of(copy: str | Path) -> Path:
    p = Path(copy)
    return p / FOLDER_SIDECAR if p.is_dir() else p.with_name(p.name + SIDECAR_SUFFIX)


def read_corrections(train: str | Path) -> dict[str, Any] | None:
    """What a corrected copy records about its original, or None for any other data."""
    try:
        data = json.loads(sidecar_of(train).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "original" in data else None


def default_copy_path(original: str | Path) -> Path:
    """``reviews.tsv`` -> ``reviews-corrected.tsv`` (then -corrected-2, ...), beside the original."""
    p = Path(original)
    stem, suffix = (p.name, "") if p.is_dir() else (p.stem, p.suffix)
    for i in range(1, 1000):
        candidate = p.with_name(f"{stem}-corrected{'' if i == 1 else f'-{i}'}{suffix}")
        if not candidate.exists():
            return candidate
    raise InputError("too many corrected copies beside it already", path=p)


def write_corrected_copy(issues, decisions: dict[int, str | None], target: str | Path | None = None,
                         overwrite: bool = False) -> Path:
    """Write the copy of ``issues.path`` (a ``label_issues.LabelIssues``) with ``decisions``: line ->
    a new label, or None to leave the row out. Returns the copy's path."""
    from .data.fingerprints import data_fingerprints

    source = Path(issues.path)
    # The one check of every output a command writes beside what it reads (paths.check_output_path):
    # never the original or inside it, an existing copy only with ``overwrite``, a folder that exists.
    target = check_output_path(target or default_copy_path(source), [("the original", source)],
                               what="the corrected copy", overwrite=overwrite, folder_ok=source.is_dir(),
                               exists_hint="choose another name (or allow overwriting)")
    # A multi-label row's new label is a set joined by the file's separator ("billing|bug"; "" for none).
    separator = getattr(issues, "separator", None)
    unknown = [part for label in decisions.values() if label is not None
               for part in (_label_set(label, separator) if separator else [label]) if part not in issues.labels]
    if unknown:
        raise InputError(f"unknown label {unknown[0]!r}; the labels are {', '.join(issues.labels)}")
    by_line = {r.line: r for r in issues.rows}
    missing = [line for line in decisions if line not in by_line]
    if missing:
        raise InputError(f"line {missing[0]} is not a training row of this file", path=source, line=missing[0])
    changes = {line: label for line, label in decisions.items() if label is None or label != by_line[line].given}
    record = {
        "original": str(source),
        "original_fingerprint": data_fingerprints([str(source)])[str(source)],
        "excluded": sorted(line for line, label in changes.items() if label is None),
        "relabeled": {str(line): {"from": by_line[line].given, "to": label}
                      for line, label in sorted(changes.items()) if label is not None},
        "task": issues.task,
    }
    try:
        if modality_of(issues.task) == "image" and not separator:  # class folders; a table of sets is a file
            _image_copy(source, target, {Path(by_line[k].text): v for k, v in changes.items()}, record, overwrite)
        else:
            paths = issues.resolved.get("text_column") if modality_of(issues.task) == "image" else None
            _text_copy(source, target, changes, issues.resolved, record, paths)
    except OSError as e:
        raise (write_failure(e, target, permission_too=True) or e) from e
    return target


def _text_copy(source: Path, target: Path, changes: dict[int, str | None], resolved: dict, record: dict,
               path_column: str | None = None) -> None:
    """The delimited copy; ``path_column``: the column of image paths relative to the table's folder,
    re-written in every row when the copy goes in another folder."""
    from .data import read_table

    delimiter, has_header = resolved.get("delimiter"), resolved.get("has_header")
    encoding = resolved.get("encoding") or "utf-8"
    with tempfile.TemporaryDirectory(prefix="workbench-correct-") as cache_dir:
        table = read_table(source, delimiter=delimiter, has_header=has_header, encoding=encoding, cache_dir=cache_dir)
        from .data.tabular import LINE_COLUMN, arrow_table

        starts = arrow_table(table.dataset, [LINE_COLUMN]).column(LINE_COLUMN).to_pylist()
        # One label column (a class, or a separated label set), or 0/1 columns, one per label.
        label_index = table.columns.index(str(resolved["label_column"])) if resolved.get("label_column") else -1
        one_hot = {table.columns.index(c): c for c in resolved.get("label_columns") or []}
        path_index = table.columns.index(path_column) if path_column in table.columns else -1
    rebase = _rebaser(source.parent, target.parent) if path_index >= 0 else None
    if rebase is not None:  # every row's path is re-written; its label only where a decision changes it
        changes = {**{line: _SAME for line in starts}, **changes}
    codec = "latin-1" if encoding == "latin-1" else ("utf-8" if encoding == "utf-8" else encoding)
    lines = source.read_bytes().splitlines(keepends=True)  # bytes split on \n, \r\n, \r: csv's physical lines
    # Each row spans from its start line to the line before the next row (or unparsed line) starts.
    boundaries = sorted(set(starts) | {p.line for p in table.malformed} | {len(lines) + 1})
    next_start = {s: boundaries[i + 1] for i, s in enumerate(boundaries[:-1])}
    drop: set[int] = set()
    replace: dict[int, bytes] = {}
    for line, label in changes.items():
        end = next_start[line]
        span = range(line, end)
        if label is None:
            drop.update(span)
            continue
        raw = b"".join(lines[i - 1] for i in span)
        body = raw.rstrip(b"\r\n")
        ending = raw[len(body):]
        bom = b"\xef\xbb\xbf" if line == 1 and body.startswith(b"\xef\xbb\xbf") else b""
        fields = next(csv.reader(io.StringIO(body[len(bom):].decode(codec), newline=""), delimiter=table.format.delimiter))
        if rebase is not None and path_index < len(fields):
            fields[path_index] = rebase(fields[path_index])
        if label is _SAME:
            pass
        elif one_hot:
            chosen = set(_label_set(label, str(resolved.get("label_separator") or "|")))
            for j, column in one_hot.items():
                fields[j] = "1" if column in chosen else "0"
        else:
            fields[label_index] = label
        out = io.StringIO()
        csv.writer(out, delimiter=table.format.delimiter, lineterminator="").writerow(fields)
        replace[line] = bom + out.getvalue().encode(codec) + (ending or b"")
        drop.update(span[1:])
    with replacing(target) as tmp, open(tmp, "wb") as f:
        for i, raw in enumerate(lines, 1):
            if i in replace:
                f.write(replace[i])
            elif i not in drop:
                f.write(raw)
    write_json_atomic(sidecar_of(target), {**record, "copy": str(target)}, fsync=False)


_SAME = "\0same"  # a row re-written for its path only: its labels as they are


def _rebaser(old: Path, new: Path):
    """A function mapping a path cell read from folder ``old`` to one that names the same file from
    folder ``new``; None when the folders are the same (the cells stay as they are)."""
    old, new = old.resolve(), new.resolve()
    if old == new:
        return None

    def rebase(cell: str) -> str:
        stripped = cell.strip()
        if not stripped or Path(stripped).expanduser().is_absolute():
            return cell
        where = old / Path(stripped).expanduser()
        try:
            return Path(os.path.relpath(where, new)).as_posix()
        except ValueError:  # another drive (Windows): no relative path leads there
            return str(where)

    return rebase


def _label_set(label: str, separator: str) -> list[str]:
    return [p.strip() for p in label.split(separator) if p.strip()]


def _link(src: Path, dst: Path) -> None:
    try:
        os.symlink(src, dst)
    except OSError:  # no symlinks here (Windows without the privilege, some file systems): a copy
        shutil.copy2(src, dst)


def _image_copy(source: Path, target: Path, changes: dict[Path, str | None], record: dict, overwrite: bool) -> None:
    from .data.image_sniff import is_image_name

    changes = {p.resolve(): v for p, v in changes.items()}
    with replacing(target, folder=True) as staging:
        for path in sorted(source.rglob("*")):
            if not path.is_file() or any(part.startswith(".") for part in path.relative_to(source).parts):
                continue
            rel = path.relative_to(source)
            resolved = path.resolve()
            if resolved in changes:
                label = changes[resolved]
                if label is None:
                    continue
                rel = rel.parent.parent / label / rel.name  # the class folder is the image's parent
                if (staging / rel).exists():
                    rel = rel.with_name(f"{rel.stem}-{len(rel.parts)}{abs(hash(str(path))) % 10**6}{rel.suffix}")
            elif not is_image_name(path.name):
                continue
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            _link(path.resolve(), staging / rel)
        (staging / FOLDER_SIDECAR).write_text(json.dumps({**record, "copy": str(target)}, indent=2), encoding="utf-8")
        if target.exists() and not overwrite:  # made meanwhile (check_output_path refused it before)
            raise InputError("exists; choose another name", path=target)
        if target.exists() and read_corrections(target) is None:
            raise InputError("exists and is not a corrected copy made by Workbench; choose another name", path=target)
        # The old copy (overwrite) is swapped out as the new one goes in: never a moment without one.
