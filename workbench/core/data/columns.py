"""Pick the text and label columns of a table and build the (row, text, label) dataset from them."""

from __future__ import annotations

import re
from dataclasses import dataclass

import datasets
import pyarrow as pa
import pyarrow.compute as pc

from ..cancel import NEVER, CancelToken
from ..errors import InputError
from .tabular import LINE_COLUMN, Table, arrow_table, dataset_dir, scan_batches, write_arrow_dataset

# Column names that say what a column holds, best first. A primary name beats a secondary one
# outright; two matches of the same kind make the choice a guess (the app then shows a picker).
TEXT_NAMES = ("text", "sentence", "review", "content", "document", "body", "tweet", "comment", "message", "utterance")
TEXT_NAMES_SECONDARY = (
    "description", "abstract", "passage", "question", "query", "input", "title",
    "sentence1", "sentence2", "text_a", "text_b", "premise", "hypothesis",
)
LABEL_NAMES = ("label", "labels", "class", "category", "target", "y", "gold_label", "class_label", "label_id")
LABEL_NAMES_SECONDARY = ("sentiment", "topic", "intent", "tag", "output", "rating", "stars", "score")
# A word-level name match ("review_text") does not count when another word says the column only
# describes the text ("sentence_id", "text_length").
NOT_CONTENT_WORDS = frozenset("id ids idx index len length count num number size hash url date time".split())
SAMPLE_ROWS = 10_000  # enough to tell labels from text without scanning a large file
MAX_LABELS = 1000  # more distinct labels than this is free text, not classes
LABELED_SCHEMA = pa.schema([("row", pa.int64()), ("text", pa.string()), ("label", pa.string())])


@dataclass(frozen=True)
class ColumnChoice:
    text: str
    label: str
    ambiguous: bool  # the automatic choice was a guess between plausible columns: show a picker
    candidates_text: list[str]  # best first
    candidates_label: list[str]  # best first


def choose_columns(table: Table, text_column: str | int | None = None,
                   label_column: str | int | None = None) -> ColumnChoice:
    """Resolve the columns the user named (by name or 0-based position) and guess the others."""
    columns = list(table.columns)
    text = _resolve(table, text_column, "text") if text_column is not None else None
    label = _resolve(table, label_column, "label") if label_column is not None else None
    if text is not None and text == label:
        raise InputError(f"the text and label columns are both '{text}'; choose two different columns",
                         path=table.path)
    if len(columns) < 2:
        raise InputError(
            f"has only one column ({columns[0]!r}) but needs a text column and a label column; "
            f"the fields were taken to be separated by {table.format.delimiter_name}, pass the delimiter "
            "if that is wrong",
            path=table.path,
        )
    stats = _column_stats(table)
    label_names, text_names = (LABEL_NAMES, LABEL_NAMES_SECONDARY), (TEXT_NAMES, TEXT_NAMES_SECONDARY)
    label_ranked, label_named = _rank(columns, stats, label_names, _label_order)
    ambiguous = False
    if label is None:
        pool = [c for c in label_ranked if c != text]
        label = pool[0]
        if label in label_named:
            ambiguous |= _tied_names(label_named, label_names)
        else:  # by content: a guess unless exactly one column looks like labels
            ambiguous |= sum(stats[c].label_like for c in pool) != 1
    text_ranked, text_named = _rank([c for c in columns if c != label], stats, text_names, _text_order)
    if text is None:
        text = text_ranked[0]
        if text in text_named:
            ambiguous |= _tied_names(text_named, text_names)
        elif len(text_ranked) > 1:  # by length: a guess when the runner-up is about as long
            ambiguous |= stats[text_ranked[1]].mean_length >= stats[text].mean_length / 2
    return ColumnChoice(
        text=text,
        label=label,
        ambiguous=ambiguous,
        candidates_text=text_ranked,
        candidates_label=[c for c in label_ranked if c != text],
    )


def _resolve(table: Table, spec: str | int, role: str) -> str:
    columns = table.columns
    available = ", ".join(f"{i}: {c}" for i, c in enumerate(columns))
    if isinstance(spec, str):
        if spec in columns:
            return spec
        folded = [c for c in columns if c.lower() == spec.strip().lower()]
        if len(folded) == 1:
            return folded[0]
        if not spec.strip().isdigit():
            raise InputError(f"has no {role} column named {spec!r}; available columns: {available}",
                             path=table.path)
        spec = int(spec)
    if isinstance(spec, bool) or not isinstance(spec, int) or not 0 <= spec < len(columns):
        raise InputError(f"has no {role} column at position {spec!r} (positions count from 0); "
                         f"available columns: {available}", path=table.path)
    return columns[spec]


@dataclass(frozen=True)
class _Stats:
    distinct: int
    mean_length: float
    rows: int

    @property
    def label_like(self) -> bool:
        # Labels repeat; free text mostly does not. Mirrors the free-text check of build_labeled.
        if self.distinct > MAX_LABELS:
            return False
        return self.distinct <= self.rows / 2 or (self.distinct <= 50 and self.distinct < self.rows)


def _column_stats(table: Table) -> dict[str, _Stats]:
    n = min(len(table.dataset), SAMPLE_ROWS)
    sample = arrow_table(table.dataset, table.columns, limit=n)
    stats = {}
    for name in table.columns:
        col = pc.utf8_trim_whitespace(sample.column(name))
        lengths = pc.utf8_length(col)
        mean = pc.mean(lengths).as_py() if n else 0.0
        stats[name] = _Stats(pc.count_distinct(col).as_py(), mean or 0.0, n)
    return stats


def _name_rank(name: str, names: tuple[str, ...], secondary: tuple[str, ...]) -> tuple[int, int] | None:
    """(tier, position) of the best name match, lower is better; None when the name says nothing.

    Tier 0: a primary name; 1: a secondary name; 2: one word of the name is either ("review_text").
    """
    norm = re.sub(r"[\s\-]+", "_", name.strip().lower())
    every = names + secondary
    if norm in every:
        return (0 if norm in names else 1), every.index(norm)
    words = [w for w in re.split(r"[_\W]+", norm) if w]
    hits = [every.index(w) for w in words if w in every]
    return (2, min(hits)) if hits and not NOT_CONTENT_WORDS.intersection(words) else None


def _rank(columns: list[str], stats: dict[str, _Stats], names: tuple[tuple[str, ...], tuple[str, ...]],
          order) -> tuple[list[str], list[str]]:
    """Columns best first for a role, and those chosen by name: name matches first, then by content."""
    ranked = [(rank, c) for c in columns if (rank := _name_rank(c, *names))]
    named = [c for _, c in sorted(ranked, key=lambda rc: rc[0])]
    position = {c: i for i, c in enumerate(columns)}
    rest = sorted((c for c in columns if c not in named), key=lambda c: order(stats[c], position[c]))
    return named + rest, named


def _label_order(s: _Stats, position: int):
    # Label-like first, then fewest distinct values; ties go to the later column (labels usually come last).
    return (not s.label_like, s.distinct, -position)


def _text_order(s: _Stats, position: int):
    return (-s.mean_length, position)


def _tied_names(named: list[str], names: tuple[tuple[str, ...], tuple[str, ...]]) -> bool:
    """Whether the best name match shares its tier with another column's."""
    if len(named) < 2:
        return False
    first, second = _name_rank(named[0], *names), _name_rank(named[1], *names)
    return first is not None and second is not None and first[0] == second[0]


def build_labeled(table: Table, choice: ColumnChoice, cancel: CancelToken = NEVER) -> datasets.Dataset:
    """A memory-mapped dataset with ``row`` (the file line), ``text`` (null -> "") and ``label`` (stripped)."""
    for name in (choice.text, choice.label):
        if name not in table.columns:
            raise InputError(f"has no column named {name!r}; available columns: {', '.join(table.columns)}",
                             path=table.path)
    labels = pc.utf8_trim_whitespace(arrow_table(table.dataset, [choice.label]).column(choice.label))
    distinct = pc.count_distinct(labels).as_py()
    rows = len(labels)
    if distinct > MAX_LABELS or (distinct > 50 and distinct > rows / 2):
        raise InputError(
            f"the label column '{choice.label}' looks like free text, not classes: it has {distinct:,} "
            f"distinct values in {rows:,} rows; choose another column as the label (if these are numeric "
            "scores, a regression task handles them instead)",
            path=table.path,
        )

    def batches():
        for batch in scan_batches(table.dataset, [LINE_COLUMN, choice.text, choice.label]):
            cancel.raise_if_cancelled()
            yield pa.table(
                [
                    batch.column(LINE_COLUMN),
                    pc.fill_null(batch.column(choice.text), ""),
                    pc.utf8_trim_whitespace(pc.fill_null(batch.column(choice.label), "")),
                ],
                schema=LABELED_SCHEMA,
            )

    folder = table.cache_dir or dataset_dir(table.dataset)
    return write_arrow_dataset(batches(), LABELED_SCHEMA, folder, stem=f"{table.path.stem}-labeled")
