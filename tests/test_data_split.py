"""stratified_split: proportions, determinism and the awkward small classes."""

from __future__ import annotations

from collections import Counter

import datasets
import pytest

from workbench.core.data import stratified_split
from workbench.core.errors import InputError


def dataset(labels: list[str]) -> datasets.Dataset:
    return datasets.Dataset.from_dict({
        "row": list(range(2, len(labels) + 2)),
        "text": [f"text {i}" for i in range(len(labels))],
        "label": labels,
    })


def counts(ds: datasets.Dataset) -> Counter:
    return Counter(ds["label"][:])


def test_proportions_are_kept():
    ds = dataset(["a"] * 600 + ["b"] * 300 + ["c"] * 100)
    kept, held = stratified_split(ds, 0.2, seed=0)
    assert (len(kept), len(held)) == (800, 200)
    assert counts(held) == {"a": 120, "b": 60, "c": 20}
    assert counts(kept) == {"a": 480, "b": 240, "c": 80}
    assert sorted(kept["row"][:] + held["row"][:]) == list(range(2, 1002))
    assert held["row"][:] == sorted(held["row"][:])  # file order kept


def test_deterministic_for_a_seed():
    ds = dataset(["a", "b"] * 200)
    first = stratified_split(ds, 0.25, seed=7)[1]["row"][:]
    assert stratified_split(ds, 0.25, seed=7)[1]["row"][:] == first
    assert stratified_split(ds, 0.25, seed=8)[1]["row"][:] != first


def test_singleton_classes_stay_in_the_first_part():
    ds = dataset(["a"] * 50 + ["b"] * 50 + ["lonely"])
    kept, held = stratified_split(ds, 0.1, seed=0)
    assert counts(kept)["lonely"] == 1 and "lonely" not in counts(held)
    assert set(counts(held)) == {"a", "b"}


def test_every_class_gets_a_held_out_row():
    ds = dataset(["big"] * 500 + ["pair"] * 2 + ["trio"] * 3)
    kept, held = stratified_split(ds, 0.05, seed=3)
    assert set(counts(held)) == {"big", "pair", "trio"}
    assert counts(kept)["pair"] == 1 and counts(kept)["trio"] >= 1


def test_tiny_fraction_still_holds_out_one_per_class():
    ds = dataset(["a", "b", "c", "d"] * 5)
    kept, held = stratified_split(ds, 0.01, seed=0)
    assert counts(held) == {"a": 1, "b": 1, "c": 1, "d": 1}
    assert len(kept) == 16


def test_works_on_a_selected_dataset():
    ds = dataset(["a", "b"] * 100).select(range(0, 200, 2))  # only "a" rows... and an indices mapping
    ds = datasets.concatenate_datasets([ds, dataset(["b"] * 100)])
    kept, held = stratified_split(ds, 0.1, seed=0)
    assert counts(held) == {"a": 10, "b": 10}


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1])
def test_bad_fraction(fraction):
    with pytest.raises(InputError, match="between 0 and 1"):
        stratified_split(dataset(["a", "b"] * 5), fraction, seed=0)


def test_nothing_to_split():
    with pytest.raises(InputError, match="no class has two"):
        stratified_split(dataset(["a", "b", "c"]), 0.2, seed=0)
