"""Hold out a random part of a dataset, for data without classes to stratify on (scores, tagged sentences)."""

from __future__ import annotations

import numpy as np

from ..errors import InputError


def random_split(ds, fraction: float, seed: int):
    """(kept, held_out) with ``fraction`` of the rows (at least one) held out at random, both in
    file order; the same seed gives the same split."""
    n = len(ds)
    n_held = max(1, round(fraction * n))
    if n - n_held < 1:
        raise InputError(f"cannot hold out {fraction:.0%} of {n} rows and keep any for training")
    held = np.sort(np.random.default_rng(seed).permutation(n)[:n_held])
    mask = np.ones(n, dtype=bool)
    mask[held] = False
    return ds.select(np.flatnonzero(mask)), ds.select(held)
