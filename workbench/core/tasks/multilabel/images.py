"""Multi-label image classification: a table (TSV/CSV) of image paths and their label lists.

    path            labels
    img/001.jpg     red|blue
    img/002.png     blue
    img/003.png                       <- no label applies: a valid, empty list

Paths are relative to the table's folder (absolute ones are allowed). The labels are lists (| , or ;
detected, or --label-separator) or one 0/1 column per label (--label-columns). The path column is the
one named path, image, file ... whose cells name image files, else the first whose cells do, unless
--text-column names it. --val/--test take tables of the same form. Everything else is the image task's
(backbones, image size and augmentation, one decoded-image cache, full and frozen training, the export
and its ONNX file) with the multi-label outputs of ``MultiLabelOutputs`` (sigmoid, binary
cross-entropy, a threshold per label tuned on validation)."""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ...cancel import NEVER
from ...config import DataConfig
from ...data import choose_columns, read_table
from ...data.image_sniff import IMAGE_EXTENSIONS, is_image_name
from ...data.images import PROBLEM_TEXT, ImageItem, check_images, decode_to_cache
from ...data.prepare import eval_split_of, hold_out, matching_column, sample_train
from ...data.sniffing import norm_name, sample_table
from ...data.tabular import Table, arrow_table
from ...data.validation import MAX_LINES, Finding, ValidationReport
from ...errors import InputError
from ...events import PhaseChanged, Progress
from ...labels import LabelMap
from ..base import PreparedData, table_format, table_preview
from ..image.classification import ImageClassification
from ..table import TASKS
from .data import (
    LabelSource,
    build_label_sets,
    list_source,
    matching_source,
    one_hot_source,
    refuse_malformed,
    train_label_map,
    with_label_sets,
)
from .labels import SEPARATOR_NAMES, multi_hot
from .outputs import MultiLabelOutputs

# Header names of a column of image paths (it must also hold image file names).
PATH_NAMES = frozenset({"path", "paths", "image", "images", "img", "file", "files", "filename", "file_name",
                        "filepath", "file_path", "image_path", "image_file", "picture", "photo"})
SNIFF_SCORE = 1.0  # files that exist, named in a column of a table: unmistakable (and ties go to this task)
SNIFF_PATHS = 20  # cells of the path column whose files are looked for when sniffing
IMAGE_SHARE = 0.8  # of a column's filled cells that must name image files (and exist, when sniffing)
SAMPLE_CELLS = 200  # cells per column looked at to find the path column
NO_LABELS = "(no labels)"  # how an empty set is named in the duplicate checks' examples
SPLITS = ("train", "validation", "test")


def image_path(cell: str, base: Path) -> Path:
    """Where a table's cell points: an absolute path as it is, a relative one from the table's folder."""
    p = Path(cell).expanduser()
    return p if p.is_absolute() else base / p


def _names_images(cells: list[str]) -> bool:
    filled = [c for c in cells if c]
    return bool(filled) and sum(is_image_name(c) for c in filled) >= IMAGE_SHARE * len(filled)


def image_path_column(names: list[str] | None, columns: list[list[str]]) -> int | None:
    """Which column holds image paths: one named so (``PATH_NAMES``) whose cells name image files,
    else the first whose cells do; None when none does."""
    fits = [j for j, cells in enumerate(columns) if _names_images(cells)]
    named = [j for j in fits if names and norm_name(names[j]) in PATH_NAMES]
    found = named or fits
    return found[0] if found else None


def _not_there(cell: str, base: Path) -> str | None:
    """Why the image a cell names cannot be read (None: a regular file is there)."""
    if not cell:
        return "has no image path"
    p = image_path(cell, base)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        return f"names the image {cell!r}, which does not exist ({p})"
    except OSError as e:
        return f"names the image {cell!r}, which cannot be read ({e.strerror or e})"
    if stat.S_ISDIR(mode):
        return f"names {cell!r}, a folder, not an image file"
    if not stat.S_ISREG(mode):  # a named pipe would block the decoder
        return f"names {cell!r}, which is not a regular file (a pipe, socket or device)"
    return None


def locate_images(sets, table_path: Path):
    """The rows of ``sets`` (``build_label_sets``' dataset with input ``path``) whose image is there,
    with absolute paths, and the others as (line, why) pairs."""
    import datasets
    import pyarrow as pa
    from datasets.table import InMemoryTable

    t = arrow_table(sets, ["row", "path", "labels", "label"])
    base = Path(table_path).parent
    keep: list[int] = []
    paths: list[str] = []
    missing: list[tuple[int, str]] = []
    for i, (line, cell) in enumerate(zip(t.column("row").to_pylist(), t.column("path").to_pylist())):
        cell = (cell or "").strip()
        why = _not_there(cell, base)
        if why is None:
            keep.append(i)
            paths.append(str(image_path(cell, base)))
        else:
            missing.append((int(line), why))
    kept = t.take(pa.array(keep, pa.int64()))
    kept = kept.set_column(kept.schema.get_field_index("path"), "path", pa.array(paths, pa.string()))
    return datasets.Dataset(InMemoryTable(kept)), missing


@dataclass
class ImageTable:
    """One file read: its table, the path column, where its labels are, the rows whose image is there
    (row = file line, path, labels, label) and the lines whose image is not, with why."""

    table: Table
    column: str
    source: LabelSource
    rows: Any  # datasets.Dataset
    missing: list[tuple[int, str]]


def _column(ds, name: str) -> np.ndarray:
    return arrow_table(ds, [name]).column(name).to_numpy(zero_copy_only=False)


class ImageMultiLabel(MultiLabelOutputs, ImageClassification):
    spec = TASKS["image-multilabel"]

    @classmethod
    def sniff(cls, path: Path) -> float:
        """A table with a column of image file names, most of which exist (relative to the table)."""
        sample = sample_table(path)
        if sample is None or sample.width < 2:
            return 0.0
        j = image_path_column(sample.header, [sample.column(k) for k in range(sample.width)])
        if j is None:
            return 0.0
        cells = [c for c in sample.column(j) if c][:SNIFF_PATHS]
        found = sum(image_path(c, path.parent).is_file() for c in cells)
        return SNIFF_SCORE if cells and found >= IMAGE_SHARE * len(cells) else 0.0

    @classmethod
    def sniff_settings(cls, data: DataConfig) -> float:
        return 0.0  # --label-columns and --label-separator say multi-label, not images (sniff does)

    # ---- data -----------------------------------------------------------------------------------
    def _read(self, path: str, cfg: DataConfig, cache_dir: Path, callbacks, cancel, like: ImageTable | None = None
              ) -> ImageTable:
        """One table, its label sets and its images located; ``like``: the training file's, which a
        validation or test file follows (the same columns, by name or position)."""
        callbacks.on_event(PhaseChanged("reading", str(path)))
        table = read_table(path, delimiter=cfg.delimiter, has_header=cfg.has_header, cache_dir=cache_dir,
                           progress=lambda done, total: callbacks.on_event(Progress("reading", done, total)),
                           cancel=cancel)
        if like is None:
            self._preview = table_preview(table)  # before any check can refuse the file
            self._preview.counts_title = "Labels"
            column, source = self._columns(table, cfg)
        else:
            column = matching_column(table, like.table, like.column)
            source = matching_source(table, like.table, like.source)
        sets = build_label_sets(table, column, source, input_name="path", cancel=cancel)
        rows, missing = locate_images(sets, table.path)
        return ImageTable(table, column, source, rows, missing)

    def _columns(self, table: Table, cfg: DataConfig) -> tuple[str, LabelSource]:
        """The path column and where the labels are: --label-columns, else one column of lists."""
        if len(table.columns) < 2:
            raise InputError(f"has only one column ({table.columns[0]!r}) but needs a column of image paths and "
                             f"one of labels; the fields were taken to be separated by {table.format.delimiter_name}, "
                             "pass the delimiter if that is wrong", path=table.path)
        if cfg.label_columns:
            source = one_hot_source(table, list(cfg.label_columns))
            column = self._path_column(table, cfg.text_column, source.columns)
            if column in source.columns:
                raise InputError(f"the image path column '{column}' is also one of --label-columns; name the path "
                                 "column with --text-column", path=table.path)
            return column, source
        column = self._path_column(table, cfg.text_column, ())
        choice = choose_columns(table, column, cfg.label_column)
        return choice.text, list_source(table, choice.label, cfg.label_separator)

    @staticmethod
    def _path_column(table: Table, given: str | None, labels: tuple[str, ...]) -> str:
        """--text-column's column, else the one that holds image paths."""
        if given is not None:
            other = next((c for c in labels if c != given), None)
            return choose_columns(table, given, other).text
        candidates = [c for c in table.columns if c not in labels]
        sample = arrow_table(table.dataset, candidates, limit=SAMPLE_CELLS)
        cells = [[(v or "").strip() for v in sample.column(c).to_pylist()] for c in candidates]
        j = image_path_column(candidates, cells)
        if j is None:
            raise InputError(f"no column holds image paths (file names ending in {', '.join(sorted(IMAGE_EXTENSIONS))})"
                             f"; columns: {', '.join(table.columns[:12])}. Name the column of image paths with "
                             "--text-column", path=table.path)
        return candidates[j]

    def prepare_data(self, cfg, seed, cache_dir, callbacks, cancel=NEVER) -> PreparedData:
        self.callbacks = callbacks
        if self.backbone is None:  # used without configure(): the default backbone
            self.resolve_backbone(None)
        cache_dir = Path(cache_dir)
        files = {"train": self._read(cfg.train, cfg, cache_dir / "train", callbacks, cancel)}
        for name, path in (("validation", cfg.val), ("test", cfg.test)):
            if path:
                files[name] = self._read(path, cfg, cache_dir / name, callbacks, cancel, like=files["train"])
        sources = {k: str(f.table.path) for k, f in files.items()}
        refuse_malformed({k: f.table.malformed for k, f in files.items()}, sources, cfg)
        findings = _missing_images(files, sources, cfg)
        splits = {k: f.rows for k, f in files.items()}
        sample_train(splits, cfg, seed, stratify=False)  # before decoding: a quick trial decodes what it uses
        policy = self.choose_preprocessing([Path(p) for p in _column(splits["train"], "path")])
        callbacks.on_event(PhaseChanged("preprocessing", policy.describe()))
        splits, hashes, problems = self._decode(splits, sources, cache_dir, callbacks, cancel)
        callbacks.on_event(PhaseChanged("validating"))
        hold_out(splits, sources, cfg, seed, stratify=False)
        report = _validate(splits, sources, hashes, findings + problems)
        label_map = self.label_map = train_label_map(splits["train"])
        train = files["train"]
        self.set_labels(label_map.names, train.source.separator)
        self.eval_split = eval_split_of(splits)
        return PreparedData(splits=splits, label_map=label_map, report=report, eval_split=self.eval_split,
                            resolved=self._resolved(train, splits, sources, label_map, len(problems)))

    def _decode(self, splits: dict[str, Any], sources: dict[str, str], cache_dir: Path, callbacks, cancel
                ) -> tuple[dict[str, Any], np.ndarray, list[Finding]]:
        """Decode every split's images once into one cache; the splits keep the rows whose image could
        be read, with their place in the cache ("index"); the content hashes; what was skipped."""
        assert self.policy is not None, "choose_preprocessing chose the policy"
        order = [s for s in SPLITS if s in splits]
        where = [(s, int(line), p) for s in order
                 for line, p in zip(_column(splits[s], "row"), _column(splits[s], "path"))]
        side = self.policy.resize_to
        callbacks.on_event(PhaseChanged("decoding", f"{len(where):,} images at {side}x{side}"))
        decoded = decode_to_cache([Path(p) for _, _, p in where], side, cache_dir / f"images-{side}.npy",
                                  lambda done, total: callbacks.on_event(Progress("decoding", done, total)), cancel)
        self.images = decoded.array
        out, start = {}, 0
        for s in order:
            positions = np.arange(start, start + len(splits[s]))
            start += len(positions)
            out[s] = splits[s].add_column("index", positions.tolist()).select(np.flatnonzero(decoded.ok[positions]))
        problems = _decode_findings(decoded.problems, where, sources)
        if len(out["train"]) == 0:
            raise InputError("no training image could be read" + "".join(f"; {f.message}" for f in problems)[:500],
                             path=sources["train"])
        return out, decoded.hashes, problems

    def _resolved(self, train: ImageTable, splits: dict[str, Any], sources: dict[str, str], label_map: LabelMap,
                  skipped: int) -> dict[str, Any]:
        """What the data decided, for config.json (the path column is pinned as the text column)."""
        policy, stats = self.policy, self.stats
        assert policy is not None and stats is not None, "choose_preprocessing measured the images"
        return {"text_column": train.column, **train.source.resolved(), **table_format(train.table),
                "sources": sources, "rows": {k: len(v) for k, v in splits.items()}, "labels": label_map.names,
                "image_size": policy.image_size, "resize_to": policy.resize_to, "augment": policy.augment,
                "image_stats": stats.to_dict(), "image_policy": policy.to_dict(), "skipped_files": skipped,
                "warnings": list(train.table.warnings)}

    def describe_data(self, data: PreparedData) -> str:
        columns = data.resolved.get("label_columns")
        sep = data.resolved.get("label_separator", "|")
        where = f"0/1 columns {', '.join(columns)}" if columns else f"lists separated by {SEPARATOR_NAMES.get(sep, sep)}"
        return (f"{len(data.require_label_map())} labels ({where}); images from the column "
                f"'{data.resolved.get('text_column')}'")

    def cache_rows(self, rows) -> np.ndarray:
        return _column(rows, "index").astype(np.int64)  # "row" is the file line here

    def encoded_labels(self, rows) -> np.ndarray:
        return multi_hot(arrow_table(rows, ["labels"]).column("labels").to_pylist(), self.label_names)

    # ---- model ----------------------------------------------------------------------------------
    def build_model(self, backbone_path: str, data: PreparedData):
        model = super().build_model(backbone_path, data)
        config = getattr(model, "config", None)
        if config is not None:  # a Hugging Face model: its pipeline then applies a sigmoid, not a softmax
            config.problem_type = "multi_label_classification"
        return model

    # ---- predictions and export ---------------------------------------------------------------------
    def write_predictions(self, path: Path, logits, split, data) -> None:
        rows = arrow_table(split.rows, ["row", "path"])
        lines, paths = rows.column("row").to_pylist(), rows.column("path").to_pylist()
        with open(path, "w", encoding="utf-8") as f:
            for start in range(0, len(lines), 5000):
                scored = self.scored_rows(logits[start:start + 5000], split.labels[start:start + 5000])
                for line, p, fields in zip(lines[start:start + 5000], paths[start:start + 5000], scored):
                    f.write(json.dumps({"row": int(line), "path": p, **fields}, ensure_ascii=False) + "\n")

    def model_card(self, *, task_title, pipeline_tag, backbone, data, hyper, metrics, report_table, eval_split) -> str:
        from ..image.card import image_model_card

        assert self.preprocessing is not None, "prepare_data chooses the preprocessing"
        card = image_model_card(
            task_title=task_title, backbone=backbone, data=data, hyper=hyper, metrics=metrics,
            report_table=report_table, eval_split=eval_split, preprocessing=self.preprocessing.to_dict(),
            hugging_face=self.kind == "hf", frozen=self.freeze, use=_use_section(self.preprocessing.image_size))
        return card + "\n" + self.thresholds_section() + "\n"


def _use_section(size: int) -> str:
    return f"""Each label is decided on its own: its sigmoid score against its threshold (the table below, and
`workbench.json` under "thresholds"). Workbench applies them:

```python
from workbench.core.predict.predictor import Predictor
Predictor("path/to/this/folder").predict(["photo.jpg"])  # [{{"labels": [...], "scores": {{label: score}}}}]
```

`workbench predict path/to/this/folder photos/` does the same for a folder of images, or a table of image paths.

### ONNX
`model.onnx` takes `pixel_values` (N, 3, {size}, {size}) float32, preprocessed as above, and returns `logits`
(N, labels) and `labels` (N, labels): 1 where a label's sigmoid score reaches its threshold. `onnx_check.json`
records how often ONNX Runtime and PyTorch decided the same labels."""


# ---- checks -----------------------------------------------------------------------------------------


def _missing_images(files: dict[str, ImageTable], sources: dict[str, str], cfg: DataConfig) -> list[Finding]:
    """Rows whose image is not there stop the run unless --skip-bad-rows; then they are a warning."""
    out = []
    for split, f in files.items():
        if not f.missing:
            continue
        (line, why), n = f.missing[0], len(f.missing)
        lines = [m[0] for m in f.missing[:MAX_LINES]]
        if not cfg.skip_bad_rows:
            more = f" ({n:,} such rows; lines {', '.join(map(str, lines[:10]))}{', ...' if n > 10 else ''})" if n > 1 else ""
            raise InputError(f"{why}{more}. Paths are read relative to the table's folder; fix them, or pass "
                             "--skip-bad-rows to train without those rows.", path=sources[split], line=line)
        out.append(Finding("warning", "missing_images", f"{sources[split]}: {n:,} row(s) name an image that is not "
                           f"there and were skipped (--skip-bad-rows); the first: line {line} {why}", lines, n,
                           sources[split], split, items=[f"line {ln}: {w}" for ln, w in f.missing[:200]]))
    return out


def _decode_findings(problems: list[tuple[int, str, str]], where: list[tuple[str, int, str]],
                     sources: dict[str, str]) -> list[Finding]:
    """One warning per file and kind of unusable image (as the image task lists them), with its lines."""
    grouped: dict[tuple[str, str], list[tuple[int, str, str]]] = {}
    for k, code, detail in problems:
        split, line, path = where[k]
        grouped.setdefault((split, code), []).append((line, path, detail))
    out = []
    for (split, code), found in grouped.items():
        source = sources[split]
        out.append(Finding("warning", code, f"{source}: {len(found):,} {PROBLEM_TEXT.get(code, code)} skipped",
                           sorted(line for line, _, _ in found)[:MAX_LINES], len(found), source, split,
                           items=[f"line {line}: {path} ({detail})" for line, path, detail in found[:200]]))
    return out


def _validate(splits: dict[str, Any], sources: dict[str, str], hashes: np.ndarray,
              findings: list[Finding]) -> ValidationReport:
    """The image checks (unusable splits, duplicate files, test images that are training images) and the
    label-set checks (rows without labels, labels only in test, rare labels); errors stop the run."""
    items = {s: [ImageItem(Path(p), "|".join(labels) or NO_LABELS, s)
                 for p, labels in zip(_column(ds, "path"), arrow_table(ds, ["labels"]).column("labels").to_pylist())]
             for s, ds in splits.items()}
    split_hashes = {s: hashes[_column(ds, "index").astype(np.int64)] for s, ds in splits.items()}
    report = check_images(items, split_hashes, sources, list(findings))
    report.findings = [_in_table_words(f) for f in report.findings]
    report = with_label_sets(report, splits, sources)
    if report.errors:
        raise InputError(report.error_message())
    return report


def _in_table_words(f: Finding) -> Finding:
    """The image folders' wording of a finding, for a table of label sets."""
    if f.code == "conflicting_duplicates":
        return replace(f, message=f"{f.path}: {f.count:,} identical image(s) have different label sets; the model "
                                  "cannot get all of them right")
    return f
