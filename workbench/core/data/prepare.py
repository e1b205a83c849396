"""Steps every task's ``prepare_data`` takes the same way: matching a validation file's columns to
the training file's, sampling, holding out validation and test parts, leaving out rows whose label
training never saw, and choosing the split the final report is computed on."""

from __future__ import annotations

from typing import Any, overload

import numpy as np

from ..config import DataConfig
from ..errors import InputError
from .tabular import Table, arrow_table

HELD_OUT = " (held out)"  # appended to the training source's name for a part held out of it


@overload
def matching_column(table: Table, train_table: Table, column: str) -> str: ...
@overload
def matching_column(table: Table, train_table: Table, column: None) -> None: ...
@overload
def matching_column(table: Table, train_table: Table, column: str | None) -> str | None: ...
def matching_column(table: Table, train_table: Table, column: str | None) -> str | None:
    """The column of a validation or test ``table`` that holds what the training file's ``column``
    holds: by name when both have a header naming it, else at the same position."""
    if column is None or (table.format.has_header and column in table.columns):
        return column
    k = train_table.columns.index(column)
    if k >= len(table.columns):
        raise InputError(f"has {len(table.columns)} columns but the training file's column '{column}' is at "
                         f"position {k}", path=table.path)
    return table.columns[k]


def _splitter(stratify: bool):
    if stratify:
        from .split import stratified_split

        return stratified_split
    from .holdout import random_split

    return random_split


def sample_train(splits: dict[str, Any], cfg: DataConfig, seed: int, *, stratify: bool) -> None:
    """``--sample N``: keep a random N rows of the training split (stratified by label for classes)."""
    n = len(splits["train"])
    if cfg.sample and cfg.sample < n:
        _, splits["train"] = _splitter(stratify)(splits["train"], cfg.sample / n, seed)


def hold_out(splits: dict[str, Any], sources: dict[str, str], cfg: DataConfig, seed: int, *, stratify: bool) -> None:
    """Hold parts of the training split out for the files the user did not give: a test part only
    when neither a validation nor a test file was given, then a validation part (fractions from
    ``cfg``; 0 turns either off). ``sources`` gets "(held out)" names for them."""
    split = _splitter(stratify)
    if "test" not in splits and "validation" not in splits and cfg.test_fraction > 0:
        splits["train"], splits["test"] = split(splits["train"], cfg.test_fraction, seed)
        sources["test"] = sources["train"] + HELD_OUT
    if "validation" not in splits and cfg.val_fraction > 0:
        splits["train"], splits["validation"] = split(splits["train"], cfg.val_fraction, seed + 1)
        sources["validation"] = sources["train"] + HELD_OUT


def keep_known_labels(splits: dict[str, Any], sources: dict[str, str], label_map, unit: str = "row") -> None:
    """Leave out of validation and test the rows whose label never occurs in training: the model
    cannot learn them (the validation report names them) and counting them as errors would mislead."""
    for name in ("validation", "test"):
        if name not in splits:
            continue
        labels = arrow_table(splits[name], ["label"]).column("label").to_numpy(zero_copy_only=False)
        ids = label_map.encode(labels)
        if (ids < 0).any():
            splits[name] = splits[name].select(np.flatnonzero(ids >= 0))
        if len(splits[name]) == 0:
            raise InputError(f"no {name} {unit} has a label seen in training", path=sources[name])


def eval_split_of(splits: dict[str, Any]) -> str:
    """The split the final report is computed on: test, else validation, else (nothing held out) train."""
    return "test" if "test" in splits else "validation" if "validation" in splits else "train"
