"""Sentence-pair classification (paraphrase, entailment, question/answer match).

Two text columns and a label; the pair is encoded jointly (``[CLS] a [SEP] b [SEP]``, with token
type ids where the backbone uses them) so attention sees both texts at once. Everything after
encoding (model head, loss, metrics, export) is text classification's.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from ..cancel import NEVER
from ..data.columns import MAX_LABELS
from ..data.pairs import TextColumns, build_text_dataset, choose_text_columns
from ..data.prepare import matching_column
from ..data.sniffing import continuous, pair_columns, sample_table, score_column
from ..data.tabular import arrow_table, dataset_dir, iter_batches, write_arrow_dataset
from ..data.validation import blank_pair_findings
from ..errors import InputError
from ..events import PhaseChanged
from .base import EncodedSplit
from .table import TASKS
from .text_classification import TextClassification
from .tokenize import tokenize_columns

_VALIDATION_SCHEMA = pa.schema([("row", pa.int64()), ("text", pa.string()), ("label", pa.string())])


def wide_sample(path: Path, columns: int):
    """The sampled head of the delimited file at ``path`` when it has at least ``columns`` columns, else None."""
    sample = sample_table(path)
    return sample if sample is not None and sample.width >= columns else None


def text_columns(table, cfg, like, *, pair_required: bool, numeric_label: bool) -> TextColumns:
    """The text, second text and label columns of ``table``: chosen from the settings for the training
    file; for another file (``like`` = the training file's table and columns) the training file's."""
    if like is None:
        return choose_text_columns(table, cfg.text_column, cfg.text_pair_column, cfg.label_column,
                                   pair_required=pair_required, numeric_label=numeric_label)
    train_table, train_cols = like
    return TextColumns(*(matching_column(table, train_table, c) for c in (train_cols.text, train_cols.pair,
                                                                          train_cols.label)))


class TextPairClassification(TextClassification):
    spec = TASKS["text-pair-classification"]

    @classmethod
    def sniff(cls, path: Path) -> float:
        sample = wide_sample(path, 3)
        pair = pair_columns(sample) if sample is not None else None
        if sample is None or pair is None:
            return 0.0
        # A continuous score over a pair is a regression (STS-B), not classes.
        if score_column(sample, exclude=pair) is not None:
            return 0.0
        others = [j for j in range(sample.width) if j not in pair]
        if not any(not continuous(sample.column(j)) for j in others):
            return 0.0
        return 0.8 if sample.header else 0.6

    data_view_column_choice = False

    def _read(self, path, cfg, cache_dir, callbacks, cancel, like=None):
        table = self._read_table(path, cfg, cache_dir, callbacks, cancel, first=like is None)
        cols = text_columns(table, cfg, like, pair_required=True, numeric_label=False)
        ds, _ = build_text_dataset(table, cols, numeric=False, cancel=cancel)
        labels = arrow_table(ds, ["label"]).column("label")
        distinct = pc.count_distinct(labels).as_py()
        if distinct > MAX_LABELS or (distinct > 50 and distinct > len(labels) / 2):
            raise InputError(
                f"the label column '{cols.label}' has {distinct:,} distinct values in {len(labels):,} rows: "
                "free text or scores, not classes; for numeric scores use --task text-regression",
                path=table.path)
        return table, cols, ds

    def _text_findings(self, ds, path, split):
        return blank_pair_findings(ds, path, split, (self.columns.text, self.columns.pair))

    def _validation_view(self, ds):
        # The checks (duplicates, conflicting labels, train/test overlap) are about the pair, so
        # they see both texts joined; the same premise with two hypotheses is not a duplicate.
        def batches():
            for b in iter_batches(ds, ["row", "text", "text_pair", "label"]):
                joined = pc.binary_join_element_wise(b.column("text"), b.column("text_pair"), "\x1f")
                yield pa.table([b.column("row"), joined, b.column("label")], schema=_VALIDATION_SCHEMA)

        return write_arrow_dataset(batches(), _VALIDATION_SCHEMA, dataset_dir(ds), stem="pairs-joined")

    def encode(self, name, rows, tokenizer, max_length, cache_dir, callbacks, cancel=NEVER) -> EncodedSplit:
        callbacks.on_event(PhaseChanged("tokenizing", name))
        t = arrow_table(rows, ["text", "text_pair"])
        inputs, lengths = tokenize_columns(t.column("text"), tokenizer, max_length, cache_dir / f"{name}-tokens.arrow",
                                           callbacks, cancel, pairs=t.column("text_pair"))
        return EncodedSplit(name, rows, inputs, self._labels(rows), lengths, truncated=int((lengths >= max_length).sum()))
