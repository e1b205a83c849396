"""Reading label sets from a table and checking them, for any multi-label task.

A label set comes from one column of separated lists ("billing|bug") or from several 0/1 columns, one
per label. The dataset built here has ``row`` (the file line), the input column (``text`` for texts),
``labels`` (the row's list) and ``label`` (the set as one sortable key: the single-label checks of
duplicates and conflicting labels then apply to whole sets). Nothing here reads the input itself, so
an image variant (a path column) builds and checks its label sets the same way."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ...cancel import NEVER, CancelToken
from ...config import DataConfig
from ...data.tabular import LINE_COLUMN, Table, arrow_table, dataset_dir, scan_batches, write_arrow_dataset
from ...data.validation import MAX_LINES, Finding, ValidationReport
from ...errors import InputError
from ...labels import LabelMap, build_label_map
from .labels import (
    MAX_LABELS,
    ONE_HOT_SEPARATOR,
    SEPARATOR_NAMES,
    SEPARATORS,
    check_separator,
    detect_separator,
    separator_fit,
    split_labels,
)

KEY_JOIN = "\x1f"  # joins a set's sorted labels into its key (a control character: not in a label)
NO_LABELS_KEY = "\x1e"  # the key of an empty set: a value, so the single-label "no label" check stays quiet
SNIFF_ROWS = 10_000  # cells of the label column the separator is detected from
MIN_TRAIN_ROWS = 5  # a label on fewer training rows than this is hard to learn (and to tune)
TOP_PAIRS = 5  # label pairs named in the co-occurrence note
ONE_HOT_VALUES = ("0", "0.0", "1", "1.0")  # what a 0/1 column may hold (stripped); the last two mean 1
# The single-label checks that do not apply to label sets; label_findings makes their multi-label kind.
SINGLE_LABEL_CODES = frozenset({"single_class", "rare_class", "imbalance", "unseen_test_labels", "empty_label"})


@dataclass(frozen=True)
class LabelSource:
    """Where a file's label sets are: one column of lists and its separator, or 0/1 columns."""

    column: str | None = None
    separator: str = ONE_HOT_SEPARATOR
    columns: tuple[str, ...] = ()

    @property
    def one_hot(self) -> bool:
        return bool(self.columns)

    def resolved(self) -> dict[str, Any]:
        """What config.json's "resolved" records of it."""
        if self.one_hot:
            return {"label_columns": list(self.columns), "label_separator": self.separator}
        return {"label_column": self.column, "label_separator": self.separator}


def schema(input_name: str) -> pa.Schema:
    return pa.schema([("row", pa.int64()), (input_name, pa.string()), ("labels", pa.list_(pa.string())),
                      ("label", pa.string())])


def list_source(table: Table, column: str, separator: str | None) -> LabelSource:
    """The label column ``column`` of ``table`` with ``separator``, or the one its cells are lists of
    (when none looks like label lists: the one that splits most cells, else "|": single labels)."""
    check_separator(separator)
    if separator is None:
        cells = [c or "" for c in arrow_table(table.dataset, [column], limit=SNIFF_ROWS).column(column).to_pylist()]
        separator = detect_separator(cells)
        if separator is None:
            fits = [f for s in SEPARATORS if (f := separator_fit(cells, s)) is not None and f.multi_rows]
            separator = max(fits, key=lambda f: f.multi_rows).separator if fits else SEPARATORS[0]
    return LabelSource(column=column, separator=separator)


def one_hot_source(table: Table, names: list[str]) -> LabelSource:
    """The 0/1 columns ``names`` (header names, case-insensitive, or 0-based positions) of ``table``."""
    if not names:
        raise InputError("--label-columns names no column", path=table.path)
    found = [_one_hot_column(table, n) for n in names]
    repeated = sorted({c for c in found if found.count(c) > 1})
    if repeated:
        raise InputError(f"--label-columns names the column '{repeated[0]}' twice", path=table.path)
    return LabelSource(columns=tuple(found))


def _one_hot_column(table: Table, name: str) -> str:
    columns = list(table.columns)
    if name in columns:
        return name
    folded = [c for c in columns if c.lower() == name.strip().lower()]
    if len(folded) == 1:
        return folded[0]
    if name.strip().isdigit() and int(name) < len(columns):
        return columns[int(name)]
    available = ", ".join(f"{i}: {c}" for i, c in enumerate(columns))
    raise InputError(f"has no column named {name!r} (from --label-columns); available columns: {available}",
                     path=table.path)


def matching_source(table: Table, train_table: Table, train: LabelSource) -> LabelSource:
    """The same label columns in a validation or test ``table`` (by name, else by position), with the
    training file's separator."""
    from ...data.prepare import matching_column

    if train.one_hot:
        return LabelSource(columns=tuple(matching_column(table, train_table, c) for c in train.columns))
    return LabelSource(column=matching_column(table, train_table, train.column), separator=train.separator)


def build_label_sets(table: Table, input_column: str, source: LabelSource, input_name: str = "text",
                     cancel: CancelToken = NEVER):
    """A memory-mapped dataset of ``row``, ``input_name`` (the input column, null -> ""), ``labels``
    and ``label`` (the set's key). Refuses a 0/1 column holding anything else, naming the line."""
    if input_column not in table.columns:
        raise InputError(f"has no column named {input_column!r}; available columns: {', '.join(table.columns)}",
                         path=table.path)
    if source.one_hot:
        _check_one_hot(table, source.columns)
    label_columns = list(source.columns) if source.one_hot else [source.column]
    out_schema = schema(input_name)

    def batches():
        for batch in scan_batches(table.dataset, [LINE_COLUMN, input_column, *label_columns]):
            cancel.raise_if_cancelled()
            lists = _batch_lists(batch, source)
            keys = [KEY_JOIN.join(sorted(labels)) if labels else NO_LABELS_KEY for labels in lists]
            yield pa.table([batch.column(LINE_COLUMN), pc.fill_null(batch.column(input_column), ""),
                            pa.array(lists, pa.list_(pa.string())), pa.array(keys, pa.string())], schema=out_schema)

    folder = table.cache_dir or dataset_dir(table.dataset)
    ds = write_arrow_dataset(batches(), out_schema, folder, stem=f"{table.path.stem}-labelsets")
    _check_vocabulary(ds, table.path, source)
    return ds


def _batch_lists(batch: pa.RecordBatch | pa.Table, source: LabelSource) -> list[list[str]]:
    if not source.one_hot:
        return [split_labels(cell, source.separator) for cell in batch.column(source.column).to_pylist()]
    on = np.stack([pc.index_in(pc.utf8_trim_whitespace(batch.column(c)), value_set=pa.array(ONE_HOT_VALUES))
                   .to_numpy(zero_copy_only=False) >= 2 for c in source.columns], axis=1)
    return [[source.columns[j] for j in np.flatnonzero(row)] for row in on]


def _check_one_hot(table: Table, columns: tuple[str, ...]) -> None:
    """Every cell of the 0/1 columns holds 0 or 1; else an error naming the first bad line."""
    t = arrow_table(table.dataset, [LINE_COLUMN, *columns])
    lines = t.column(LINE_COLUMN).to_numpy()
    for c in columns:
        bad = pc.is_null(pc.index_in(pc.utf8_trim_whitespace(t.column(c)), value_set=pa.array(ONE_HOT_VALUES)))
        bad_rows = np.flatnonzero(bad.to_numpy(zero_copy_only=False))
        if len(bad_rows):
            first = int(bad_rows[np.argmin(lines[bad_rows])])
            value = t.column(c)[first].as_py()
            raise InputError(f"the label column '{c}' (from --label-columns) holds {value!r}, but each of those "
                             f"columns must hold 0 or 1 ({len(bad_rows):,} such cells)", path=table.path,
                             line=int(lines[first]))


def _check_vocabulary(ds, path: Path, source: LabelSource) -> None:
    """Refuse a label column that is free text split into pieces, not a set of labels."""
    if source.one_hot:
        return
    distinct = len(pc.unique(pc.list_flatten(arrow_table(ds, ["labels"]).column("labels"))))
    if distinct > MAX_LABELS or (distinct > 50 and distinct > len(ds) / 2):
        raise InputError(f"the label column '{source.column}' looks like free text, not label lists: split on "
                         f"{SEPARATOR_NAMES[source.separator]} it has {distinct:,} distinct labels in {len(ds):,} "
                         "rows; choose another column (--label-column) or separator (--label-separator)", path=path)


def refuse_malformed(malformed: dict[str, list], sources: dict[str, str], cfg: DataConfig) -> None:
    """Rows with the wrong number of fields stop the run unless --skip-bad-rows (as for one label)."""
    bad = [(sources[k], p) for k in malformed for p in malformed[k]]
    if bad and not cfg.skip_bad_rows:
        path, first = bad[0]
        lines = ", ".join(str(p.line) for _, p in bad[:10])
        raise InputError(f"{len(bad)} malformed row(s) ({first.problem} at line {first.line}; lines {lines}"
                         f"{', ...' if len(bad) > 10 else ''}). Fix the file, or pass --skip-bad-rows to train "
                         "without them.", path=path, line=first.line)


# ---- label sets of a split -------------------------------------------------------------------------


@dataclass
class LabelSets:
    """A split's label sets, flat: row ``parents[i]`` holds label ``names[codes[i]]``."""

    lines: np.ndarray  # int64 file line of each row
    sizes: np.ndarray  # labels per row
    parents: np.ndarray  # row index of each (row, label) pair
    codes: np.ndarray  # label code of each pair
    names: list[str]  # label names by code (this split's own)

    @classmethod
    def of(cls, ds) -> "LabelSets":
        t = arrow_table(ds, ["row", "labels"])
        col = t.column("labels").combine_chunks() if t.num_rows else pa.array([], pa.list_(pa.string()))
        flat = pc.list_flatten(col)
        encoded = pc.dictionary_encode(flat) if len(flat) else None
        codes = encoded.indices.to_numpy(zero_copy_only=False) if encoded is not None else np.zeros(0, np.int64)
        names = encoded.dictionary.to_pylist() if encoded is not None else []
        return cls(t.column("row").to_numpy(), pc.list_value_length(col).to_numpy(zero_copy_only=False),
                   pc.list_parent_indices(col).to_numpy(zero_copy_only=False), np.asarray(codes, np.int64), names)

    def counts(self) -> dict[str, int]:
        """Rows per label, in label-map order."""
        raw = dict(zip(self.names, np.bincount(self.codes, minlength=len(self.names)).tolist()))
        return {n: int(raw[n]) for n in build_label_map(list(raw)).names}

    def rows_with(self, labels: set[str]) -> np.ndarray:
        """Row indices whose set holds any of ``labels``."""
        wanted = [i for i, n in enumerate(self.names) if n in labels]
        return np.unique(self.parents[np.isin(self.codes, wanted)])

    def lists(self, rows: np.ndarray) -> list[list[str]]:
        starts = np.concatenate([[0], np.cumsum(self.sizes)])
        return [[self.names[c] for c in self.codes[starts[r]:starts[r + 1]]] for r in rows]


def train_label_map(train) -> LabelMap:
    """The labels the model learns: every label of the training split, in build_label_map order."""
    return build_label_map(LabelSets.of(train).names)


def _lines(sets: LabelSets, rows: np.ndarray) -> list[int]:
    return np.sort(sets.lines[rows])[:MAX_LINES].tolist()


def _shown(labels: list[str]) -> str:
    return ", ".join(f"'{x}'" for x in labels[:10]) + (" ..." if len(labels) > 10 else "")


def label_findings(splits: dict[str, LabelSets], paths: Mapping[str, str | None]) -> list[Finding]:
    """What a user should know of the label sets: rows without labels, labels seen only outside the
    training split, rare labels, which labels occur together; an error when training has no label."""
    out: list[Finding] = []
    train = splits.get("train")
    for split, sets in splits.items():
        out += _empty_sets(split, paths.get(split), sets)
        if train is not None and split != "train":
            out += _unseen(split, paths.get(split), sets, train)
    if train is not None:
        out += _train_labels(paths.get("train"), train)
    return out


def _empty_sets(split: str, path: str | None, sets: LabelSets) -> list[Finding]:
    empty = np.flatnonzero(sets.sizes == 0)
    if not len(empty) or (split == "train" and len(empty) == len(sets.sizes)):
        return []  # a training split without any label is an error of its own (_train_labels)
    name = path or f"the {split} data"
    role = "they teach the model to predict no label" if split == "train" else "the right answer there is no label"
    return [Finding("info", "no_labels", f"{name}: {len(empty):,} of {len(sets.sizes):,} rows have no label (an empty "
                    f"list: none of the labels applies); {role}", _lines(sets, empty), len(empty), path, split)]


def _unseen(split: str, path: str | None, sets: LabelSets, train: LabelSets) -> list[Finding]:
    unseen = build_label_map(set(sets.names) - set(train.names)).names
    if not unseen:
        return []
    rows = sets.rows_with(set(unseen))
    name = path or f"the {split} data"
    return [Finding("warning", "unseen_test_labels",
                    f"{name}: {len(unseen):,} label(s) do not occur in the training data ({_shown(unseen)}; "
                    f"{len(rows):,} rows); the model can never predict them, so they are left out of these rows' "
                    "label sets when scoring", _lines(sets, rows), len(rows), path, split)]


def _train_labels(path: str | None, train: LabelSets) -> list[Finding]:
    name = path or "the training data"
    counts = train.counts()
    if not counts:
        return [Finding("error", "no_labels_at_all", f"{name}: no row has a label (every label list is empty); is "
                        "the label column right? choose it with --label-column, or the 0/1 columns with "
                        "--label-columns", [], 0, path, "train")]
    out = []
    rare = [n for n, c in counts.items() if c < MIN_TRAIN_ROWS]
    if rare:
        rows = train.rows_with(set(rare))
        out.append(Finding("warning", "rare_label", f"{name}: {len(rare):,} label(s) occur on fewer than "
                           f"{MIN_TRAIN_ROWS} rows ({_shown(rare)}); the model can hardly learn them and their "
                           "thresholds stay at 0.5", _lines(train, rows), len(rare), path, "train"))
    pairs = _top_pairs(train)
    if pairs:
        multi = np.flatnonzero(train.sizes >= 2)
        shown = ", ".join(f"'{a}' + '{b}' ({n:,})" for (a, b), n in pairs)
        out.append(Finding("info", "label_pairs", f"{name}: {len(multi):,} rows have two or more labels; the pairs "
                           f"that occur together most often: {shown}", _lines(train, multi), len(multi), path,
                           "train"))
    return out


def _top_pairs(sets: LabelSets) -> list[tuple[tuple[str, str], int]]:
    multi = np.flatnonzero(sets.sizes >= 2)
    pairs: Counter[tuple[str, str]] = Counter()
    for labels in sets.lists(multi):
        pairs.update(itertools.combinations(sorted(labels), 2))
    return pairs.most_common(TOP_PAIRS)


def with_label_sets(report: ValidationReport, splits: dict[str, Any], paths: Mapping[str, str | None]) -> ValidationReport:
    """``report`` of the single-label row checks (run on each row's set as one label) with the checks that
    only make sense for one label per row replaced by the label-set ones, and per-label counts."""
    sets = {k: LabelSets.of(ds) for k, ds in splits.items()}
    findings = [f for f in report.findings if f.code not in SINGLE_LABEL_CODES]
    findings += label_findings(sets, paths)
    order = {"error": 0, "warning": 1, "info": 2}
    findings.sort(key=lambda f: order.get(f.severity, 3))
    return ValidationReport(findings, {k: s.counts() for k, s in sets.items()}, dict(report.n_rows),
                            dict(report.paths))
