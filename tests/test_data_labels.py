"""build_label_map: one order for label ids everywhere."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from workbench.core.labels import LabelMap, build_label_map


def test_integer_labels_sort_numerically_and_keep_their_text():
    lm = build_label_map(["10", "2", " 1", "-1", "2", "0 "])
    assert lm.names == ["-1", "0", "1", "2", "10"]
    assert lm.id2label == {0: "-1", 1: "0", 2: "1", 3: "2", 4: "10"}
    assert lm.label2id["10"] == 4


def test_string_labels_sort_as_strings():
    assert build_label_map(["World", "Sports", "Business", "Sci/Tech", "World"]).names == [
        "Business", "Sci/Tech", "Sports", "World"]


def test_mixed_labels_sort_as_strings():
    assert build_label_map(["10", "2", "n/a"]).names == ["10", "2", "n/a"]


def test_empty_and_null_are_not_labels():
    assert build_label_map(["a", "", "  ", None, "b"]).names == ["a", "b"]


def test_arrow_input_matches_python_input():
    values = ["pos", " neg", "pos", None, "neu "]
    chunked = pa.chunked_array([pa.array(values[:2]), pa.array(values[2:])])
    assert build_label_map(chunked) == build_label_map(values) == LabelMap(["neg", "neu", "pos"])


def test_non_string_values():
    assert build_label_map([3, 1, 2, 1]).names == ["1", "2", "3"]
    assert build_label_map(pa.array([3, 1, 2])).names == ["1", "2", "3"]


def test_encode_gives_minus_one_for_unknown():
    lm = build_label_map(["0", "1"])
    ids = lm.encode(["1", " 0", "7", "", None])
    assert ids.dtype == np.int64
    assert ids.tolist() == [1, 0, -1, -1, -1]
    assert lm.encode(pa.chunked_array([["0"], ["1", "1"]])).tolist() == [0, 1, 1]


def test_json_round_trip():
    lm = build_label_map(["négatif", "positif"])
    assert LabelMap.from_json(lm.to_json()) == lm
    assert LabelMap.from_json({"names": ["a", "b"]}).names == ["a", "b"]


def test_repeated_names_are_rejected():
    with pytest.raises(ValueError):
        LabelMap(["a", "a"])
