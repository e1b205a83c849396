"""Checks on labelled classification data before any training time is spent.

Every check runs as Arrow compute kernels or group-bys over whole columns, so a million rows take
seconds; Python only ever touches the (few) findings and example line numbers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.compute as pc

from ..cancel import NEVER, CancelToken
from ..labels import build_label_map
from .tabular import RowProblem, arrow_table

MAX_LINES = 50  # example line numbers kept per finding
IMBALANCE_RATIO = 10
SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}
SPLIT_ORDER = ("train", "validation", "test")


@dataclass(frozen=True)
class Finding:
    severity: str  # "error" | "warning" | "info"
    code: str
    message: str  # one sentence that names the file
    lines: list[int] = field(default_factory=list)  # up to MAX_LINES example lines (1-based, physical)
    count: int = 0
    path: str | None = None
    split: str | None = None


@dataclass
class ValidationReport:
    findings: list[Finding]
    class_counts: dict[str, dict[str, int]]  # split -> label -> rows, labels in label-map order
    n_rows: dict[str, int]
    paths: dict[str, str | None] = field(default_factory=dict)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "n_rows": dict(self.n_rows),
            "class_counts": {k: dict(v) for k, v in self.class_counts.items()},
            "paths": dict(self.paths),
            "findings": [dataclasses.asdict(f) for f in self.findings],
        }

    def to_text(self) -> str:
        out = []
        for split, n in self.n_rows.items():
            counts = self.class_counts.get(split, {})
            where = f" ({self.paths[split]})" if self.paths.get(split) else ""
            out.append(f"{split}{where}: {n:,} rows, {len(counts)} classes")
            if counts:
                out.append("    " + ", ".join(f"{label}: {c:,}" for label, c in counts.items()))
        if not self.findings:
            out.append("No problems found.")
        for f in self.findings:
            out.append(f"{f.severity.upper():7} [{f.code}] {f.message}")
            if f.lines:
                more = f" and {f.count - len(f.lines):,} more" if f.count > len(f.lines) else ""
                out.append(f"        lines {', '.join(map(str, f.lines[:10]))}"
                           f"{' ...' if len(f.lines) > 10 else ''}{more}")
        return "\n".join(out)


def validate_classification(
    splits: dict[str, tuple[datasets.Dataset, str | Path | None, list[RowProblem]]],
    cancel: CancelToken = NEVER,
) -> ValidationReport:
    """Check the labelled splits (datasets from ``build_labeled``) and report what a user should know."""
    findings: list[Finding] = []
    class_counts: dict[str, dict[str, int]] = {}
    n_rows: dict[str, int] = {}
    paths: dict[str, str | None] = {}
    tables: dict[str, pa.Table] = {}
    names = sorted(splits, key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else len(SPLIT_ORDER), s))
    for split in names:
        cancel.raise_if_cancelled()
        ds, path, malformed = splits[split]
        path = str(path) if path is not None else None
        table = arrow_table(ds, ["row", "text", "label"])
        tables[split], paths[split], n_rows[split] = table, path, table.num_rows
        check = _SplitCheck(split, path, table, findings)
        check.malformed(malformed)
        check.empty_rows()
        cancel.raise_if_cancelled()
        class_counts[split] = check.class_counts()
        cancel.raise_if_cancelled()
        check.duplicates()
        check.conflicts()

    train_split = "train" if "train" in tables else None
    if train_split:
        _train_checks(paths["train"], tables["train"], class_counts["train"], findings)
        train_texts = _nonempty_unique_texts(tables["train"])
        for split in names:
            if split == train_split:
                continue
            cancel.raise_if_cancelled()
            _against_train(split, paths[split], paths["train"], tables[split], train_texts,
                           set(class_counts["train"]), findings)
    findings.sort(key=lambda f: SEVERITY_ORDER.get(f.severity, 3))  # stable: check order within a severity
    return ValidationReport(findings, class_counts, n_rows, paths)


def _name(path: str | None, split: str) -> str:
    return path if path else f"the {split} data"


def _lines(table: pa.Table, mask) -> list[int]:
    """Up to MAX_LINES line numbers of the rows selected by ``mask``, in file order."""
    rows = pc.filter(table.column("row"), mask)
    return sorted(rows.slice(0, MAX_LINES * 4).to_pylist())[:MAX_LINES] if len(rows) else []


def _count(mask) -> int:
    return int(pc.sum(pc.cast(mask, pa.int64())).as_py() or 0)


def _plural(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


@dataclass
class _SplitCheck:
    split: str
    path: str | None
    table: pa.Table
    findings: list[Finding]

    def add(self, severity: str, code: str, message: str, lines: list[int], count: int) -> None:
        self.findings.append(Finding(severity, code, f"{_name(self.path, self.split)}: {message}",
                                     lines[:MAX_LINES], count, self.path, self.split))

    def malformed(self, malformed: list[RowProblem]) -> None:
        if malformed:
            first = malformed[0]
            self.add("warning", "malformed_rows",
                     f"{_plural(len(malformed), 'row was', 'rows were')} skipped for having the wrong number "
                     f"of fields (line {first.line}: {first.problem})",
                     [m.line for m in malformed[:MAX_LINES]], len(malformed))

    def empty_rows(self) -> None:
        if self.table.num_rows == 0:
            self.add("error", "no_rows", "has no rows to use", [], 0)
            return
        empty = pc.equal(pc.utf8_trim_whitespace(self.table.column("text")), "")
        n = _count(empty)
        if n:
            self.add("warning", "empty_text", f"{_plural(n, 'row has', 'rows have')} an empty text",
                     _lines(self.table, empty), n)
        no_label = pc.equal(self.table.column("label"), "")
        n = _count(no_label)
        if n:
            self.add("warning", "empty_label",
                     f"{_plural(n, 'row has', 'rows have')} no label; they cannot be used for training or scoring",
                     _lines(self.table, no_label), n)

    def class_counts(self) -> dict[str, int]:
        counts = pc.value_counts(self.table.column("label"))
        raw = dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()))
        raw.pop("", None)  # reported as empty_label, not a class
        return {name: raw[name] for name in build_label_map(list(raw)).names}

    def duplicates(self) -> None:
        t = self.table
        # One string key per (text, label): hashing one column is cheaper than a two-key group-by.
        key = pc.binary_join_element_wise(t.column("text"), t.column("label"), "\x00")
        groups = pa.table({"key": key, "row": t.column("row")}).group_by("key").aggregate(
            [("row", "count"), ("row", "min")])
        repeated = groups.filter(pc.greater(groups.column("row_count"), 1))
        if not repeated.num_rows:
            return
        n = int(pc.sum(repeated.column("row_count")).as_py()) - repeated.num_rows
        # The repeats, not each group's first occurrence, so the user can jump to what to delete.
        mask = pc.and_(pc.is_in(key, value_set=repeated.column("key").combine_chunks()),
                       pc.invert(pc.is_in(t.column("row"), value_set=repeated.column("row_min").combine_chunks())))
        severity = "warning" if n > 0.05 * t.num_rows else "info"
        self.add(severity, "duplicates",
                 f"{_plural(n, 'row repeats', 'rows repeat')} an earlier row's text and label exactly",
                 _lines(t, mask), n)

    def conflicts(self) -> None:
        t = self.table.filter(pc.not_equal(self.table.column("label"), ""))
        groups = t.group_by("text").aggregate([("label", "count_distinct")])
        texts = groups.filter(pc.greater(groups.column("label_count_distinct"), 1)).column("text").combine_chunks()
        texts = pc.filter(texts, pc.not_equal(pc.utf8_trim_whitespace(texts), ""))  # empty_text covers those
        if not len(texts):
            return
        mask = pc.is_in(t.column("text"), value_set=texts)
        n = _count(mask)
        self.add("warning", "conflicting_duplicates",
                 f"{_plural(len(texts), 'text occurs', 'texts occur')} with different labels "
                 f"({n:,} rows); the model cannot get all of them right", _lines(t, mask), n)


def _train_checks(path: str | None, table: pa.Table, counts: dict[str, int], findings: list[Finding]) -> None:
    name = _name(path, "train")
    if len(counts) < 2:
        only = f"only '{next(iter(counts))}'" if counts else "no labels at all"
        findings.append(Finding("error", "single_class",
                                f"{name}: has {only}; a classifier needs at least two classes",
                                [], len(counts), path, "train"))
        return
    rare = [label for label, c in counts.items() if c < 2]
    if rare:
        mask = pc.is_in(table.column("label"), value_set=pa.array(rare, pa.string()))
        shown = ", ".join(f"'{r}'" for r in rare[:10]) + (" ..." if len(rare) > 10 else "")
        findings.append(Finding("warning", "rare_class",
                                f"{name}: {_plural(len(rare), 'class has', 'classes have')} fewer than 2 examples "
                                f"({shown}); the model can hardly learn them and they cannot be held out for "
                                "validation", _lines(table, mask), len(rare), path, "train"))
    most = max(counts, key=counts.get)
    least = min(counts, key=counts.get)
    if counts[most] > IMBALANCE_RATIO * counts[least]:
        findings.append(Finding("warning", "imbalance",
                                f"{name}: classes are imbalanced: '{most}' has {counts[most]:,} rows but "
                                f"'{least}' only {counts[least]:,} ({counts[most] / counts[least]:.0f}x); "
                                "accuracy will look better than the model is (watch macro-F1)",
                                [], counts[most] // max(counts[least], 1), path, "train"))


def _nonempty_unique_texts(table: pa.Table) -> pa.Array:
    texts = pc.unique(table.column("text"))
    return pc.filter(texts, pc.not_equal(pc.utf8_trim_whitespace(texts), ""))


def _against_train(split: str, path: str | None, train_path: str | None, table: pa.Table,
                   train_texts: pa.Array, train_labels: set[str], findings: list[Finding]) -> None:
    name, train_name = _name(path, split), _name(train_path, "train")
    if table.num_rows == 0:
        return
    overlap = pc.is_in(table.column("text"), value_set=train_texts)
    n = _count(overlap)
    if n:
        findings.append(Finding("warning", "train_test_overlap",
                                f"{name}: {_plural(n, 'row has', 'rows have')} the same text as a row of "
                                f"{train_name}; scores on them overstate how well the model generalises",
                                _lines(table, overlap), n, path, split))
    labels = table.column("label")
    unseen = sorted(set(pc.unique(labels).to_pylist()) - train_labels - {""})
    if unseen:
        mask = pc.is_in(labels, value_set=pa.array(unseen, pa.string()))
        n = _count(mask)
        shown = ", ".join(f"'{u}'" for u in unseen[:10]) + (" ..." if len(unseen) > 10 else "")
        findings.append(Finding("warning", "unseen_test_labels",
                                f"{name}: {_plural(len(unseen), 'label does', 'labels do')} not occur in "
                                f"{train_name} ({shown}; {n:,} rows); the model can never predict them",
                                _lines(table, mask), n, path, split))
