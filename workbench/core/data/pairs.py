"""Columns for sentence-pair and score (regression) data, and the datasets built from them.

A pair dataset has ``row``, ``text``, ``text_pair`` and ``label`` (a string, as for classification);
a scored dataset has ``row``, ``text``, optionally ``text_pair``, and ``label`` as float64.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..cancel import NEVER, CancelToken
from ..errors import InputError
from .columns import _resolve, choose_columns
from .sniffing import SCORE_NAMES, named_pair, norm_name, text_like
from .tabular import LINE_COLUMN, RowProblem, Table, arrow_table, dataset_dir, scan_batches, write_arrow_dataset

SAMPLE_ROWS = 2000
_NUMBER = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"


@dataclass(frozen=True)
class TextColumns:
    text: str
    pair: str | None
    label: str


def _sample(table: Table) -> dict[str, list[str]]:
    t = arrow_table(table.dataset, table.columns, limit=min(len(table.dataset), SAMPLE_ROWS))
    return {c: [("" if v is None else v.strip()) for v in t.column(c).to_pylist()] for c in table.columns}


def _numeric(values: list[str]) -> bool:
    """Numbers, bar a few stray values ("n/a") that the row checks then report by line."""
    filled = [v for v in values if v]
    return bool(filled) and sum(bool(re.match(_NUMBER, v)) for v in filled) >= 0.95 * len(filled)


def choose_text_columns(table: Table, text: str | None = None, pair: str | None = None, label: str | None = None,
                        *, pair_required: bool, numeric_label: bool) -> TextColumns:
    """Resolve named columns (by name or 0-based position) and guess the rest.

    The label is, for classification, what :func:`choose_columns` picks; for regression a numeric
    column (a score-like name first, else the last numeric column). The texts are a named pair
    (sentence1/sentence2, question/sentence, premise/hypothesis, ...) or the longest free-text
    columns in file order.
    """
    cols = list(table.columns)
    text = _resolve(table, text, "text") if text is not None else None
    pair = _resolve(table, pair, "second text") if pair is not None else None
    label = _resolve(table, label, "label") if label is not None else None
    sample = _sample(table)
    taken = {c for c in (text, pair) if c}
    if label is None:
        if numeric_label:
            numeric = [c for c in cols if c not in taken and _numeric(sample[c])]
            named = [c for name in SCORE_NAMES for c in numeric if norm_name(c) == name]
            if not numeric:
                raise InputError("has no numeric column to use as the score; choose one with --label-column",
                                 path=table.path)
            label = named[0] if named else numeric[-1]
        else:
            label = choose_columns(table, text, None).label if text else _classification_label(table, taken)
    if label in taken:
        raise InputError(f"the column '{label}' cannot be both a text and the label", path=table.path)
    rest = [c for c in cols if c != label and c not in taken]
    if text is None or (pair is None and pair_required):
        pair_at = named_pair([c for c in cols]) if table.format.has_header else None
        if pair_at and cols[pair_at[0]] != label and cols[pair_at[1]] != label:
            text = text or cols[pair_at[0]]
            pair = pair or (cols[pair_at[1]] if cols[pair_at[1]] != text else None)
        rest = [c for c in cols if c not in (label, text, pair)]
        texts = sorted(rest, key=lambda c: -_mean_length(sample[c]))
        if text is None:
            if not texts:
                raise InputError("has no column left for the text", path=table.path)
            text = texts.pop(0)
        if pair is None and pair_required:
            if not texts:
                raise InputError("needs two text columns and a label for sentence pairs, but has only "
                                 f"{len(cols)} columns ({', '.join(cols)})", path=table.path)
            pair = texts.pop(0)
            if cols.index(pair) < cols.index(text):  # keep file order: the first text first
                text, pair = pair, text
    if pair is None and not pair_required:
        # A score over two texts (STS-B): pair them when they are named as a pair, or when a
        # headerless file holds exactly two free-text columns.
        others = [c for c in cols if c not in (label, text)]
        pair_at = named_pair(cols) if table.format.has_header else None
        if pair_at and text in (cols[pair_at[0]], cols[pair_at[1]]):
            other = cols[pair_at[1]] if text == cols[pair_at[0]] else cols[pair_at[0]]
            pair = other if other != label else None
        elif not table.format.has_header:
            texts = [c for c in others if text_like(sample[c])]
            if len(texts) == 1 and text_like(sample[text]):
                pair = texts[0]
        if pair is not None and cols.index(pair) < cols.index(text):
            text, pair = pair, text
    if pair is not None and pair == text:
        raise InputError(f"the two text columns are both '{text}'; choose two different columns", path=table.path)
    return TextColumns(text, pair, label)


def _classification_label(table: Table, taken: set[str]) -> str:
    choice = choose_columns(table)
    if choice.label not in taken:
        return choice.label
    return next(c for c in choice.candidates_label if c not in taken)


def _mean_length(values: list[str]) -> float:
    return sum(len(v) for v in values) / max(len(values), 1)


def pair_schema(with_pair: bool, numeric: bool) -> pa.Schema:
    fields = [("row", pa.int64()), ("text", pa.string())]
    if with_pair:
        fields.append(("text_pair", pa.string()))
    fields.append(("label", pa.float64() if numeric else pa.string()))
    return pa.schema(fields)


def build_text_dataset(table: Table, cols: TextColumns, *, numeric: bool, skip_bad: bool = False,
                       cancel: CancelToken = NEVER) -> tuple[datasets.Dataset, list[RowProblem]]:
    """(row, text, [text_pair], label) rows; for ``numeric`` labels, rows whose label is not a number
    are returned as problems (and left out when ``skip_bad``, else an error naming the first)."""
    for name in (cols.text, cols.pair, cols.label):
        if name is not None and name not in table.columns:
            raise InputError(f"has no column named {name!r}; available columns: {', '.join(table.columns)}",
                             path=table.path)
    schema = pair_schema(cols.pair is not None, numeric)
    problems: list[RowProblem] = []
    wanted = [LINE_COLUMN, cols.text] + ([cols.pair] if cols.pair else []) + [cols.label]

    def batches():
        for batch in scan_batches(table.dataset, wanted):
            cancel.raise_if_cancelled()
            label = pc.utf8_trim_whitespace(pc.fill_null(batch.column(cols.label), ""))
            keep = None
            if numeric:
                ok = pc.match_substring_regex(label, _NUMBER)
                # 1e999 is written like a number but overflows to infinity: no usable target either.
                value = pc.cast(pc.if_else(ok, label, "0"), pa.float64())
                ok = pc.and_(ok, pc.is_finite(value))
                if not pc.all(ok).as_py():
                    bad = np.flatnonzero(~ok.to_numpy(zero_copy_only=False))
                    lines = batch.column(LINE_COLUMN).to_numpy()
                    values = label.to_pylist()
                    for i in bad:
                        if not values[i]:
                            what = "the label is empty"
                        elif re.match(_NUMBER, values[i]):
                            what = f"the label {values[i]!r} is too large a number (it overflows to infinity)"
                        else:
                            what = f"the label {values[i]!r} is not a number"
                        problems.append(RowProblem(int(lines[i]), what))
                    if not skip_bad:
                        first = problems[0]
                        raise InputError(f"{first.problem}; a regression needs a number in every row "
                                         "(pass --skip-bad-rows to train without such rows)",
                                         path=table.path, line=first.line)
                    keep = ok
                label = pc.cast(pc.if_else(ok, label, "0"), pa.float64())
            arrays = [batch.column(LINE_COLUMN), pc.fill_null(batch.column(cols.text), "")]
            if cols.pair:
                arrays.append(pc.fill_null(batch.column(cols.pair), ""))
            arrays.append(label)
            out = pa.table(arrays, schema=schema)
            yield out.filter(keep) if keep is not None else out

    folder = table.cache_dir or dataset_dir(table.dataset)
    ds = write_arrow_dataset(batches(), schema, folder, stem=f"{table.path.stem}-texts")
    return ds, problems
