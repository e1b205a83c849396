"""The data layer on real files, when the shared datasets are present (skipped otherwise)."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.core.data import (
    build_label_map,
    build_labeled,
    choose_columns,
    read_table,
    stratified_split,
    validate_classification,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"

pytestmark = pytest.mark.skipif(not SHARED.exists(), reason=f"{SHARED} not present (shared datasets are optional)")


def test_agnews_dev_without_header():
    table = read_table(SHARED / "agnews" / "dev.tsv")
    assert (table.format.delimiter, table.format.has_header, table.format.encoding) == ("\t", False, "utf-8")
    assert table.n_rows == 10_001 and table.malformed == [] and table.warnings == []
    choice = choose_columns(table)
    assert (choice.text, choice.label, choice.ambiguous) == ("column_1", "column_2", False)
    ds = build_labeled(table, choice)
    assert build_label_map(ds.with_format("arrow")["label"]).names == ["Business", "Sci/Tech", "Sports", "World"]
    # CSV-style quoted rows come out unquoted, with their doubled quotes undone.
    quoted = [t for t in ds.select(range(100))["text"] if '"' in t]
    assert quoted and not any(t.startswith('"') and t.endswith('"') for t in quoted)
    assert ds[-1]["row"] == 10_001
    report = validate_classification({"train": (ds, str(table.path), table.malformed)})
    assert report.ok and sum(report.class_counts["train"].values()) == 10_001


def test_sst2_test_with_header():
    table = read_table(SHARED / "sst2" / "test.tsv")
    assert table.format.has_header and table.columns == ["sentence", "label"]
    assert table.n_rows == 872
    choice = choose_columns(table)
    assert (choice.text, choice.label, choice.ambiguous) == ("sentence", "label", False)
    ds = build_labeled(table, choice)
    assert build_label_map(ds.with_format("arrow")["label"]).names == ["0", "1"]
    assert ds[0]["row"] == 2
    kept, held = stratified_split(ds, 0.1, seed=0)
    assert len(held) == 87 and len(kept) == 785
