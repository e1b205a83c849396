"""validate_classification: each finding, triggered by a small file made to have it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from workbench.core.cancel import CancelToken
from workbench.core.data import build_labeled, choose_columns, read_table, validate_classification
from workbench.core.data.validation import hash_strings
from workbench.core.errors import Cancelled


def labeled(tmp_path: Path, name: str, rows: list[tuple[str, str]], extra: str = ""):
    """Write a TSV with a header (data starts on line 2) and return (dataset, path, malformed)."""
    path = tmp_path / name
    path.write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows) + extra, encoding="utf-8")
    table = read_table(path)
    return build_labeled(table, choose_columns(table)), str(path), table.malformed


def balanced(n: int, prefix: str = "text") -> list[tuple[str, str]]:
    return [(f"{prefix} {i}", "pos" if i % 2 else "neg") for i in range(n)]


def codes(report) -> list[str]:
    return [f.code for f in report.findings]


def finding(report, code: str, split: str | None = None):
    found = [f for f in report.findings if f.code == code and (split is None or f.split == split)]
    assert len(found) == 1, codes(report)
    return found[0]


def test_clean_data_has_no_findings(tmp_path):
    report = validate_classification({
        "train": labeled(tmp_path, "train.tsv", balanced(20)),
        "validation": labeled(tmp_path, "dev.tsv", balanced(6, "other")),
    })
    assert report.findings == []
    assert report.class_counts == {"train": {"neg": 10, "pos": 10}, "validation": {"neg": 3, "pos": 3}}
    assert report.n_rows == {"train": 20, "validation": 6}
    assert report.errors == [] and report.ok
    assert "No problems found" in report.to_text()


def test_malformed_rows(tmp_path):
    train = labeled(tmp_path, "train.tsv", balanced(10), extra="a\tb\tc\nlonely\n")
    f = finding(validate_classification({"train": train}), "malformed_rows")
    assert (f.severity, f.count, f.lines) == ("warning", 2, [12, 13])
    assert train[1] in f.message and "line 12" in f.message


def test_empty_texts(tmp_path):
    rows = balanced(10)
    rows[3] = ("   ", "pos")
    rows[6] = ("", "neg")
    f = finding(validate_classification({"train": labeled(tmp_path, "train.tsv", rows)}), "empty_text")
    assert (f.severity, f.count, f.lines) == ("warning", 2, [5, 8])
    assert "train.tsv" in f.message


def test_empty_labels(tmp_path):
    rows = balanced(10)
    rows[2] = ("no label here", " ")
    report = validate_classification({"train": labeled(tmp_path, "train.tsv", rows)})
    f = finding(report, "empty_label")
    assert (f.count, f.lines) == (1, [4])
    assert "" not in report.class_counts["train"]


def test_rare_class(tmp_path):
    rows = balanced(10) + [("the only one", "odd")]
    f = finding(validate_classification({"train": labeled(tmp_path, "train.tsv", rows)}), "rare_class")
    assert (f.severity, f.count, f.lines) == ("warning", 1, [12])
    assert "'odd'" in f.message


def test_single_class_is_an_error(tmp_path):
    rows = [(f"text {i}", "pos") for i in range(5)]
    report = validate_classification({"train": labeled(tmp_path, "train.tsv", rows)})
    f = finding(report, "single_class")
    assert f.severity == "error" and "needs at least two classes" in f.message and "train.tsv" in f.message
    assert report.errors == [f] and not report.ok
    assert report.findings[0] is f  # errors first


def test_imbalance(tmp_path):
    rows = [(f"text {i}", "big") for i in range(33)] + [("x 1", "small"), ("x 2", "small"), ("x 3", "small")]
    f = finding(validate_classification({"train": labeled(tmp_path, "train.tsv", rows)}), "imbalance")
    assert f.severity == "warning" and "'big'" in f.message and "'small'" in f.message and "11x" in f.message
    rows = [(f"text {i}", "big") for i in range(30)] + [("x 1", "small"), ("x 2", "small"), ("x 3", "small")]
    assert "imbalance" not in codes(validate_classification({"train": labeled(tmp_path, "t2.tsv", rows)}))


def test_duplicates(tmp_path):
    rows = balanced(100)
    rows[50] = rows[10]
    rows[70] = rows[10]
    rows[80] = rows[20]
    report = validate_classification({"train": labeled(tmp_path, "train.tsv", rows)})
    f = finding(report, "duplicates")
    assert (f.severity, f.count, f.lines) == ("info", 3, [52, 72, 82])  # the repeats, not the originals
    assert "conflicting_duplicates" not in codes(report)
    rows = balanced(10) + balanced(10)
    assert finding(validate_classification({"train": labeled(tmp_path, "t2.tsv", rows)}), "duplicates").severity \
        == "warning"


def test_conflicting_duplicates(tmp_path):
    rows = balanced(20)
    rows[5] = ("same words", "pos")
    rows[9] = ("same words", "neg")
    rows[12] = ("same words", "neg")
    f = finding(validate_classification({"train": labeled(tmp_path, "train.tsv", rows)}), "conflicting_duplicates")
    assert (f.severity, f.count, f.lines) == ("warning", 3, [7, 11, 14])
    assert "1 text occurs with different labels" in f.message


def test_train_test_overlap(tmp_path):
    train = balanced(20)
    test = balanced(6, "fresh") + [train[3], train[8]]
    report = validate_classification({
        "train": labeled(tmp_path, "train.tsv", train),
        "test": labeled(tmp_path, "test.tsv", test),
    })
    f = finding(report, "train_test_overlap")
    assert (f.split, f.count, f.lines) == ("test", 2, [8, 9])
    assert "test.tsv" in f.message and "train.tsv" in f.message


def test_unseen_test_labels(tmp_path):
    test = balanced(6, "fresh") + [("surprise", "neutral"), ("again", "neutral")]
    report = validate_classification({
        "train": labeled(tmp_path, "train.tsv", balanced(10)),
        "validation": labeled(tmp_path, "dev.tsv", test),
    })
    f = finding(report, "unseen_test_labels")
    assert (f.split, f.count, f.lines) == ("validation", 2, [8, 9])
    assert "'neutral'" in f.message and "dev.tsv" in f.message


def test_empty_split_is_an_error(tmp_path):
    train = labeled(tmp_path, "train.tsv", balanced(10))
    report = validate_classification({"train": train, "test": (train[0].select([]), "test.tsv", [])})
    assert finding(report, "no_rows").severity == "error"


def test_lines_are_capped_at_fifty(tmp_path):
    rows = [("", "pos" if i % 2 else "neg") for i in range(120)] + balanced(4)
    f = finding(validate_classification({"train": labeled(tmp_path, "train.tsv", rows)}), "empty_text")
    assert f.count == 120 and f.lines == list(range(2, 52))


def test_selected_datasets_are_checked_by_their_rows(tmp_path):
    ds, path, _ = labeled(tmp_path, "all.tsv", balanced(30) + [("text 4", "neg")])
    train, test = ds.select(range(0, 20)), ds.select([25, 3, 30, 3])  # out of order, one row twice
    report = validate_classification({"train": (train, path, []), "test": (test, path, [])})
    assert report.n_rows == {"train": 20, "test": 4}
    assert finding(report, "train_test_overlap").lines == [5, 5, 32]
    assert finding(report, "duplicates", "test").lines == [5]


def test_report_as_dict_and_text(tmp_path):
    rows = balanced(10) + [("the only one", "odd")]
    report = validate_classification({"train": labeled(tmp_path, "train.tsv", rows)})
    data = json.loads(json.dumps(report.to_dict()))
    assert data["n_rows"] == {"train": 11}
    assert data["findings"][0]["code"] == "rare_class"
    text = report.to_text()
    assert "train" in text and "11 rows, 3 classes" in text and "WARNING" in text and "lines 12" in text


def test_cancel(tmp_path):
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        validate_classification({"train": labeled(tmp_path, "train.tsv", balanced(4))}, cancel=token)


def test_hash_strings_equal_iff_equal_text():
    values = ["", "a", "ab", "ba", "a" * 5000, "é", "a", "", "ab", "longer text with spaces", None]
    arr = pa.chunked_array([pa.array(values[:4]), pa.array(values[4:]).slice(0)])
    h = hash_strings(arr)
    assert len(h) == len(values) and h.dtype == np.uint64
    for i, a in enumerate(values):
        for j, b in enumerate(values):
            assert (h[i] == h[j]) == ((a or "") == (b or "")), (a, b)
    # Slices and segment boundaries must not change a string's hash.
    big = pa.array([f"row {i % 1000}" * (1 + i % 7) for i in range(60_000)])
    hb = hash_strings(big)
    assert (hash_strings(big.slice(1000, 5000)) == hb[1000:6000]).all()
    assert len(np.unique(hb)) == len(set(big.to_pylist()))
