"""Label lists: splitting a cell into labels, detecting the separator, 0/1 columns, multi-hot arrays.

Nothing here knows whether an example is a text or an image: the image variant reads its label
column the same way."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ...config import LABEL_SEPARATORS as SEPARATORS  # what a label column may separate its labels with
from ...errors import InputError

ONE_HOT_SEPARATOR = "|"  # how labels read from 0/1 columns are written back (predict's output column)
SEPARATOR_NAMES = {"|": "'|'", ",": "','", ";": "';'"}
# What makes a column of separated lists labels and not text with punctuation in it: several rows
# with two or more parts, parts that are short and repeat (a small vocabulary), and parts that
# combine (more distinct cells than distinct parts; class names that merely contain a comma do not).
MIN_MULTI_ROWS = 3
MAX_PART_LENGTH = 40
MAX_SNIFF_VOCABULARY = 200
MAX_LABELS = 1000  # more distinct labels than this is free text, not a label set


def split_labels(cell: str | None, separator: str) -> list[str]:
    """The labels of one cell: parts stripped, empty parts dropped, repeats kept once (first order)."""
    if not cell:
        return []
    return list(dict.fromkeys(p.strip() for p in cell.split(separator) if p.strip()))


@dataclass(frozen=True)
class SeparatorFit:
    separator: str
    multi_rows: int  # cells with two or more parts
    vocabulary: int  # distinct parts
    parts: int  # parts in all
    cells: int  # distinct non-empty cells

    @property
    def is_label_list(self) -> bool:
        return (self.multi_rows >= MIN_MULTI_ROWS and self.vocabulary <= MAX_SNIFF_VOCABULARY
                and self.vocabulary * 2 <= self.parts and self.vocabulary < self.cells)


def separator_fit(cells: Sequence[str], separator: str) -> SeparatorFit | None:
    """How ``cells`` look when split on ``separator``; None when a part is too long to be a label."""
    parts: Counter[str] = Counter()
    multi = 0
    for cell in cells:
        labels = split_labels(cell, separator)
        if any(len(p) > MAX_PART_LENGTH for p in labels):
            return None
        multi += len(labels) >= 2
        parts.update(labels)
    distinct_cells = len({c.strip() for c in cells if c and c.strip()})
    return SeparatorFit(separator, multi, len(parts), sum(parts.values()), distinct_cells)


def detect_separator(cells: Sequence[str]) -> str | None:
    """The separator ``cells`` (a sample of a label column) are lists of, or None when they do not look
    like label lists: the one that splits the most cells, among those whose split looks like labels."""
    fits = [f for s in SEPARATORS if (f := separator_fit(cells, s)) is not None and f.is_label_list]
    return max(fits, key=lambda f: f.multi_rows).separator if fits else None


def check_separator(separator: str | None) -> None:
    """``--label-separator``: one of SEPARATORS (None: detected)."""
    if separator is not None and separator not in SEPARATORS:
        raise InputError(f"--label-separator must be one of {', '.join(SEPARATOR_NAMES.values())}, "
                         f"got {separator!r}")


def multi_hot(lists: Iterable[Sequence[str]], names: Sequence[str]) -> np.ndarray:
    """A float32 array, one row per list, one column per name: 1 where the list holds the name (labels
    not in ``names``, e.g. seen only in a test file, are left out)."""
    index = {n: i for i, n in enumerate(names)}
    rows = list(lists)
    out = np.zeros((len(rows), len(names)), np.float32)
    for r, labels in enumerate(rows):
        for label in labels:
            j = index.get(label)
            if j is not None:
                out[r, j] = 1.0
    return out


def decided_labels(decisions: np.ndarray, names: Sequence[str]) -> list[list[str]]:
    """The label names of each row's 1s (a boolean or 0/1 array, one column per name)."""
    return [[names[int(j)] for j in np.flatnonzero(row)] for row in np.asarray(decisions)]


def one_hot_value(value: str | None) -> int | None:
    """A 0/1 cell as 0 or 1 (whitespace and "1.0"-style numbers allowed); None for anything else."""
    v = (value or "").strip()
    if v in ("0", "1"):
        return int(v)
    try:
        f = float(v)
    except ValueError:
        return None
    return int(f) if f in (0.0, 1.0) else None
