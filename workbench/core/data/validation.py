"""Checks on labelled classification data before any training time is spent.

Each split is first reduced, one batch at a time, to a compact digest: line number, a 64-bit hash
of the text, an empty-text flag and a label code per row (about 21 bytes a row whatever the text
length). Every check then runs as numpy/Arrow kernels on those arrays, so a million rows take
seconds and little memory; Python only touches the findings and their example line numbers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..cancel import NEVER, CancelToken
from ..labels import build_label_map
from .tabular import RowProblem, arrow_table, scan_batches

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
    items: list[str] = field(default_factory=list)  # example files (image folders), where lines do not apply


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

    def error_message(self) -> str:
        """The errors in one paragraph: each kind once (held-out splits of one file repeat the train
        split's), the first example of each."""
        firsts: dict[str, Finding] = {}
        for f in self.errors:
            firsts.setdefault(f.code, f)
        return " ".join(f.message for f in firsts.values())

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
            for item in f.items[:10]:
                out.append(f"        {item}")
            if f.items and f.count > min(len(f.items), 10):
                out.append(f"        ... and {f.count - min(len(f.items), 10):,} more")
        return "\n".join(out)


def validate_classification(
    splits: dict[str, tuple[datasets.Dataset, str | Path | None, list[RowProblem]]],
    cancel: CancelToken = NEVER,
) -> ValidationReport:
    """Check the labelled splits (datasets from ``build_labeled``) and report what a user should know."""
    findings: list[Finding] = []
    digests: dict[str, _Digest] = {}
    paths: dict[str, str | None] = {}
    names = sorted(splits, key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else len(SPLIT_ORDER), s))
    for split in names:
        ds, path, malformed = splits[split]
        paths[split] = str(path) if path is not None else None
        digest = digests[split] = _digest(ds, cancel)
        check = _SplitCheck(split, paths[split], digest, findings)
        check.malformed(malformed)
        check.empty_rows()
        cancel.raise_if_cancelled()
        check.duplicates_and_conflicts()
    if "train" in digests:
        train = digests["train"]
        _train_checks(paths["train"], train, findings)
        others = [split for split in names if split != "train"]
        if others:
            train_texts = np.unique(train.hashes[~train.empty_text])
            for split in others:
                cancel.raise_if_cancelled()
                _against_train(split, paths[split], paths["train"], digests[split], train, train_texts, findings)
    findings.sort(key=lambda f: SEVERITY_ORDER.get(f.severity, 3))  # stable: check order within a severity
    return ValidationReport(findings, {k: d.class_counts() for k, d in digests.items()},
                            {k: len(d.rows) for k, d in digests.items()}, paths)


# ---------------------------------------------------------------------------- digest


@dataclass
class _Digest:
    rows: np.ndarray  # int64 line numbers, in file order
    hashes: np.ndarray  # uint64 hash of each text
    empty_text: np.ndarray  # bool: nothing but whitespace
    codes: np.ndarray  # int32 index into label_names
    label_names: list[str]

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.codes, minlength=len(self.label_names))
        raw = {name: int(c) for name, c in zip(self.label_names, counts) if name != "" and c}
        return {name: raw[name] for name in build_label_map(list(raw)).names}  # ids order, as the model sees

    def label_mask(self, labels: list[str]) -> np.ndarray:
        wanted = set(labels)
        return np.isin(self.codes, [i for i, name in enumerate(self.label_names) if name in wanted])


def _digest(ds: datasets.Dataset, cancel: CancelToken) -> _Digest:
    n = len(ds)  # scan_batches yields exactly the dataset's rows, so the arrays can be filled in place
    d = _Digest(np.empty(n, np.int64), np.empty(n, np.uint64), np.empty(n, bool), np.empty(n, np.int32), [])
    label_ids: dict[str, int] = {}  # label -> code, grown batch by batch (labels are few)
    at = 0
    for batch in scan_batches(ds, ["row", "text", "label"], file_order=True):  # order is irrelevant here
        cancel.raise_if_cancelled()
        end = at + batch.num_rows
        # Copies only: a zero-copy view would pin the batch's whole read buffer, texts included.
        d.rows[at:end] = batch.column("row").to_numpy(zero_copy_only=False)
        text = pc.fill_null(batch.column("text"), "")
        d.hashes[at:end] = hash_strings(text)
        d.empty_text[at:end] = pc.or_(pc.equal(pc.utf8_length(text), 0), pc.utf8_is_space(text)).to_numpy(
            zero_copy_only=False)
        label = pc.fill_null(batch.column("label"), "")
        for name in pc.unique(label).to_pylist():
            label_ids.setdefault(name, len(label_ids))
        d.codes[at:end] = pc.index_in(label, value_set=pa.array(list(label_ids), pa.string())).to_numpy(
            zero_copy_only=False)
        at = end
    d.label_names = list(label_ids)
    return d


# Polynomial hash of the UTF-8 bytes modulo 2**64, then a splitmix64 finaliser. Vectorised with
# numpy: byte i of a segment is weighted by P**i, the per-string sums come from one reduceat, and
# multiplying by P**-start (P is odd, so invertible mod 2**64) rebases each string to its own start.
# Collisions among a million natural texts are ~1e-8 likely; a collision could only add a spurious
# duplicate/overlap example, never hide an error.
_P = 0x100000001B3
_P_INV = pow(_P, -1, 2**64)
_SEGMENT = 1 << 18  # bytes hashed per numpy pass, which bounds the temporary arrays (~8 bytes per byte)
_powers_cache: list[tuple[np.ndarray, np.ndarray]] = []  # computed once (4 MB), grown only for huge strings


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """P**i and P**-i mod 2**64 for i in 0..n (at least a segment's worth)."""
    if not _powers_cache or len(_powers_cache[0][0]) <= n:
        size = max(_SEGMENT, n) + 1
        with np.errstate(over="ignore"):
            w = np.ones(size, np.uint64)
            w_inv = np.ones(size, np.uint64)
            w[1:] = np.cumprod(np.full(size - 1, _P, dtype=np.uint64))
            w_inv[1:] = np.cumprod(np.full(size - 1, _P_INV, dtype=np.uint64))
        _powers_cache[:] = [(w, w_inv)]
    return _powers_cache[0]


def _mix(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hash_strings(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A uint64 hash per string (equal strings, equal hashes), computed without Python str objects."""
    if isinstance(arr, pa.ChunkedArray):
        parts = [hash_strings(c) for c in arr.chunks]
        return np.concatenate(parts) if parts else np.zeros(0, np.uint64)
    if arr.type != pa.string():
        arr = arr.cast(pa.string())
    arr = pc.fill_null(arr, "")
    n = len(arr)
    out = np.empty(n, np.uint64)
    if n == 0:
        return out
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32, count=n + 1, offset=arr.offset * 4).astype(np.int64)
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    with np.errstate(over="ignore"):
        i = 0
        while i < n:
            # As many strings as fit in one segment (at least one, however long).
            j = max(int(np.searchsorted(offsets, offsets[i] + _SEGMENT, side="right")) - 1, i + 1)
            base = offsets[i]
            segment = data[base:offsets[j]]
            starts = offsets[i:j] - base
            lengths = (offsets[i + 1:j + 1] - offsets[i:j]).astype(np.uint64)
            w, w_inv = _powers(len(segment))
            terms = np.zeros(len(segment) + 1, np.uint64)  # a trailing 0 keeps every start in range
            np.multiply(segment, w[:len(segment)], out=terms[:-1], casting="unsafe")
            sums = np.add.reduceat(terms, starts)
            sums[lengths == 0] = 0  # reduceat yields terms[start] for empty segments
            out[i:j] = _mix(sums * w_inv[starts] ^ _mix(lengths))
            i = j
    return out


# ---------------------------------------------------------------------------- checks


def _name(path: str | None, split: str) -> str:
    return path if path else f"the {split} data"


def _first_lines(rows: np.ndarray, mask: np.ndarray | None = None) -> list[int]:
    picked = rows[mask] if mask is not None else rows
    return np.sort(picked)[:MAX_LINES].tolist()


def _plural(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


def _shown(labels: list[str]) -> str:
    return ", ".join(f"'{x}'" for x in labels[:10]) + (" ..." if len(labels) > 10 else "")


@dataclass
class _SplitCheck:
    split: str
    path: str | None
    d: _Digest
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
        d = self.d
        if len(d.rows) == 0:
            self.add("error", "no_rows", "has no rows to use", [], 0)
            return
        n = int(d.empty_text.sum())
        if n == len(d.rows):
            self.add("error", "all_texts_empty", "every row's text is empty or blank: there is nothing to learn "
                     "from (is the text column right? choose it with --text-column)", _first_lines(d.rows), n)
        elif n:
            self.add("warning", "empty_text", f"{_plural(n, 'row has', 'rows have')} an empty text",
                     _first_lines(d.rows, d.empty_text), n)
        no_label = d.label_mask([""])
        n = int(no_label.sum())
        if n:
            self.add("warning", "empty_label",
                     f"{_plural(n, 'row has', 'rows have')} no label; they cannot be used for training or scoring",
                     _first_lines(d.rows, no_label), n)

    def duplicates_and_conflicts(self) -> None:
        d = self.d
        usable = ~d.empty_text & ~d.label_mask([""])  # empty ones are reported above
        h, c, rows = (d.hashes, d.codes, d.rows) if usable.all() else (d.hashes[usable], d.codes[usable], d.rows[usable])
        if len(rows) < 2:
            return
        # Sort by (text, label, line): a repeat follows its first occurrence in the file.
        order = np.lexsort((rows, c, h))
        h, c, rows = h[order], c[order], rows[order]
        del order
        same_text = h[1:] == h[:-1]
        repeat = np.concatenate([[False], same_text & (c[1:] == c[:-1])])
        n = int(repeat.sum())
        if n:
            severity = "warning" if n > 0.05 * len(d.rows) else "info"
            self.add(severity, "duplicates",
                     f"{_plural(n, 'row repeats', 'rows repeat')} an earlier row's text and label exactly",
                     _first_lines(rows, repeat), n)
        group = np.cumsum(np.concatenate([[True], ~same_text]))  # one id per distinct text
        clashing = np.unique(group[1:][same_text & (c[1:] != c[:-1])])
        if len(clashing):
            mask = np.isin(group, clashing)
            n = int(mask.sum())
            self.add("warning", "conflicting_duplicates",
                     f"{_plural(len(clashing), 'text occurs', 'texts occur')} with different labels "
                     f"({n:,} rows); the model cannot get all of them right", _first_lines(rows, mask), n)


def _train_checks(path: str | None, d: _Digest, findings: list[Finding]) -> None:
    name = _name(path, "train")
    counts = d.class_counts()
    if len(counts) < 2:
        only = f"only the class '{next(iter(counts))}'" if counts else "no labels at all"
        findings.append(Finding("error", "single_class",
                                f"{name}: has {only}; a classifier needs at least two classes",
                                [], len(counts), path, "train"))
        return
    rare = [label for label, c in counts.items() if c < 2]
    if rare:
        findings.append(Finding("warning", "rare_class",
                                f"{name}: {_plural(len(rare), 'class has', 'classes have')} fewer than 2 examples "
                                f"({_shown(rare)}); the model can hardly learn them and they cannot be held out "
                                "for validation", _first_lines(d.rows, d.label_mask(rare)), len(rare), path, "train"))
    most = max(counts, key=counts.__getitem__)
    least = min(counts, key=counts.__getitem__)
    if counts[most] > IMBALANCE_RATIO * counts[least]:
        small = sum(c * IMBALANCE_RATIO < counts[most] for c in counts.values())  # count: the minority classes
        findings.append(Finding("warning", "imbalance",
                                f"{name}: classes are imbalanced: '{most}' has {counts[most]:,} rows but "
                                f"'{least}' only {counts[least]:,} ({counts[most] / counts[least]:.0f}x); "
                                "accuracy will flatter the model, so watch macro-F1",
                                [], small, path, "train"))


def _against_train(split: str, path: str | None, train_path: str | None, d: _Digest, train: _Digest,
                   train_texts: np.ndarray, findings: list[Finding]) -> None:
    name, train_name = _name(path, split), _name(train_path, "train")
    overlap = np.isin(d.hashes, train_texts) & ~d.empty_text
    n = int(overlap.sum())
    if n:
        findings.append(Finding("warning", "train_test_overlap",
                                f"{name}: {_plural(n, 'row has', 'rows have')} the same text as a row of "
                                f"{train_name}; scores on them overstate how well the model generalises",
                                _first_lines(d.rows, overlap), n, path, split))
    present = set(np.array(d.label_names, dtype=object)[np.unique(d.codes)].tolist()) if len(d.codes) else set()
    unseen = build_label_map(present - set(train.label_names) - {""}).names
    if unseen:
        mask = d.label_mask(unseen)
        n = int(mask.sum())
        findings.append(Finding("warning", "unseen_test_labels",
                                f"{name}: {_plural(len(unseen), 'label does', 'labels do')} not occur in "
                                f"{train_name} ({_shown(unseen)}; {n:,} rows); the model can never predict them",
                                _first_lines(d.rows, mask), n, path, split))


def blank_pair_findings(ds: datasets.Dataset, path: str | None, split: str, columns: tuple[str, str]) -> list[Finding]:
    """What per-row checks on a joined pair cannot see: a first or second text that is blank on every
    row (an error: the wrong column, or nothing to learn from) or on most rows (a warning)."""
    t = arrow_table(ds, ["row", "text", "text_pair"])
    rows = t.column("row").to_numpy()
    out: list[Finding] = []
    if not len(rows):
        return out
    name = _name(path, split)
    blank = {}
    for col in ("text", "text_pair"):
        v = pc.fill_null(t.column(col), "")
        blank[col] = pc.or_(pc.equal(pc.utf8_length(v), 0), pc.utf8_is_space(v)).to_numpy(zero_copy_only=False)
    for col, title in zip(("text", "text_pair"), columns):
        n = int(blank[col].sum())
        which = "first" if col == "text" else "second"
        if n == len(rows):
            out.append(Finding("error", "all_texts_empty", f"{name}: the {which} text (column '{title}') is empty on "
                               "every row; is it the right column? choose the columns with --text-column and "
                               "--text-pair-column", _first_lines(rows), n, path, split))
        elif n > len(rows) / 2:
            out.append(Finding("warning", "mostly_empty_text", f"{name}: the {which} text (column '{title}') is empty "
                               f"on {n:,} of {len(rows):,} rows ({n / len(rows):.0%}); the model mostly sees one text "
                               "of each pair. Is it the right column?", _first_lines(rows, blank[col]), n, path, split))
    return out
