"""Cheap looks at the first few KB of a delimited file, for ``--task auto``.

Each task's ``sniff`` asks the questions it cares about (is there a pair of text columns? is the
label a continuous number?) of one :class:`TableSample`; nothing here reads the whole file.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .tabular import _is_number, _sample_records, detect_header, sniff_delimiter

SAMPLE_BYTES = 64 * 1024
TABLE_SUFFIXES = (".tsv", ".csv", ".txt", ".tab")

# Column-name pairs that mean "two texts judged together", first text first.
PAIR_NAMES = (
    ("sentence1", "sentence2"), ("sentence_1", "sentence_2"), ("sentence_a", "sentence_b"),
    ("text_a", "text_b"), ("text1", "text2"), ("text_1", "text_2"), ("question1", "question2"),
    ("premise", "hypothesis"), ("question", "sentence"), ("question", "answer"), ("question", "passage"),
    ("query", "passage"), ("query", "document"), ("anchor", "positive"), ("#1_string", "#2_string"),
    ("string1", "string2"), ("source", "target"), ("claim", "evidence"),
)
SCORE_NAMES = ("score", "label", "similarity", "rating", "target", "value", "y", "relatedness", "relatedness_score",
               "gold_score", "stars", "price")
_INTEGER = re.compile(r"[+-]?\d+\Z")


def norm_name(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().strip("\"'").lower())


@dataclass
class TableSample:
    header: list[str] | None
    records: list[list[str]]  # data records of the modal width

    @property
    def width(self) -> int:
        return len(self.records[0]) if self.records else 0

    def column(self, j: int) -> list[str]:
        return [r[j].strip() for r in self.records]


def sample_table(path: Path) -> TableSample | None:
    """The first records of ``path`` (header detected), or None when it is not a readable table."""
    try:
        if not path.is_file() or path.suffix.lower() not in TABLE_SUFFIXES:
            return None
        with open(path, "rb") as f:
            data = f.read(SAMPLE_BYTES + 1)
    except OSError:
        return None
    if not data or b"\x00" in data[:SAMPLE_BYTES]:
        return None
    complete = len(data) <= SAMPLE_BYTES
    text = data[:SAMPLE_BYTES].decode("utf-8", errors="replace").lstrip("\ufeff")
    delimiter = sniff_delimiter(text, complete, path.suffix)
    records = _sample_records(text, complete, delimiter, 200)
    if len(records) < 2:
        return None
    header = records[0] if detect_header(records) else None
    body = records[1:] if header else records
    if not body:
        return None
    width = Counter(len(r) for r in body).most_common(1)[0][0]
    body = [r for r in body if len(r) == width]
    if header is not None and len(header) != width:
        header = None
    return TableSample(header, body)


def text_like(values: list[str]) -> bool:
    """Free text: long-ish and mostly distinct."""
    filled = [v for v in values if v]
    if not filled:
        return False
    mean = sum(len(v) for v in filled) / len(filled)
    return mean >= 15 and len(set(filled)) >= 0.5 * len(filled) and not all(_is_number(v) for v in filled)


def continuous(values: list[str]) -> bool:
    """A numeric column with many distinct values: a score to regress, not classes."""
    filled = [v for v in values if v]
    if len(filled) < 5 or not all(_is_number(v) for v in filled):
        return False
    distinct = len(set(float(v) for v in filled))
    fractional = any(not _INTEGER.match(v) for v in filled)
    return distinct >= 30 or (fractional and distinct >= min(10, max(3, len(filled) // 3)))


def named_pair(header: list[str]) -> tuple[int, int] | None:
    names = [norm_name(h) for h in header]
    for a, b in PAIR_NAMES:
        if a in names and b in names:
            return names.index(a), names.index(b)
    return None


CLASS_NAMES = frozenset(
    {"label", "labels", "class", "category", "sentiment", "topic", "intent", "gold_label", "class_label", "target", "y"}
)


def score_column(sample: TableSample, exclude: tuple[int, ...] = ()) -> int | None:
    """The column that holds a continuous score: by name first, else the last continuous column."""
    if sample.header:
        names = [norm_name(h) for h in sample.header]
        # A categorical column named like a class label ("sentiment" beside a "confidence" number)
        # makes the file a classification one, whatever other numeric columns it has.
        for j, name in enumerate(names):
            if name in CLASS_NAMES and j not in exclude and not continuous(sample.column(j)):
                return None
        for name in SCORE_NAMES:
            if name in names and names.index(name) not in exclude and continuous(sample.column(names.index(name))):
                return names.index(name)
    for j in reversed(range(sample.width)):
        if j not in exclude and continuous(sample.column(j)):
            return j
    return None


def pair_columns(sample: TableSample, exclude: tuple[int, ...] = ()) -> tuple[int, int] | None:
    """Two text columns to encode together: named ones, or (without a header) the two text-like columns."""
    if sample.header:
        return named_pair(sample.header)
    texts = [j for j in range(sample.width) if j not in exclude and text_like(sample.column(j))]
    return (texts[0], texts[1]) if len(texts) == 2 else None
