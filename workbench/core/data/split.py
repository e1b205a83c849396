"""Hold out part of a labelled dataset with the class proportions kept (stratified)."""

from __future__ import annotations

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InputError
from .tabular import arrow_table


def stratified_split(ds: datasets.Dataset, fraction: float, seed: int) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Split ``ds`` (with a ``label`` column) into (kept, held_out); ``fraction`` of rows go to held_out.

    Classes with a single example cannot be stratified, so they stay in the kept part. Every other
    class gets at least one held-out row (a validation set missing a class hides errors on it).
    Both parts keep file order. The same seed always gives the same split.
    """
    # Imported here: scikit-learn pulls in scipy (~70 MB), which reading and checking data never need.
    from sklearn.model_selection import train_test_split

    if not 0.0 < fraction < 1.0:
        raise InputError(f"the held-out fraction must be between 0 and 1, not {fraction}")
    codes = _label_codes(arrow_table(ds, ["label"]).column("label"))
    counts = np.bincount(codes) if len(codes) else np.zeros(0, dtype=np.int64)
    splittable = counts[codes] >= 2 if len(codes) else np.zeros(0, dtype=bool)
    candidates = np.flatnonzero(splittable)
    n_classes = int((counts >= 2).sum())
    if n_classes == 0:
        raise InputError(
            f"cannot hold out {fraction:.0%} of the rows: no class has two or more examples ({len(codes)} rows)")
    # Room for one held-out row per class, but never more than a class-preserving split allows.
    n_held = min(max(round(fraction * len(codes)), n_classes), len(candidates) - n_classes)
    kept_idx, held_idx = train_test_split(candidates, test_size=n_held, stratify=codes[candidates],
                                          random_state=seed, shuffle=True)
    held_idx = _one_per_class(codes, kept_idx, held_idx, counts, seed)
    kept_mask = np.ones(len(codes), dtype=bool)
    kept_mask[held_idx] = False
    return ds.select(np.flatnonzero(kept_mask)), ds.select(np.sort(held_idx))


def _label_codes(labels: pa.ChunkedArray) -> np.ndarray:
    """Dense integer codes (0..k-1) for the labels, without converting them to Python strings."""
    if isinstance(labels, pa.ChunkedArray):
        labels = labels.combine_chunks()
    encoded = pc.dictionary_encode(pc.fill_null(labels, ""))
    return np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)


def _one_per_class(codes: np.ndarray, kept_idx: np.ndarray, held_idx: np.ndarray, counts: np.ndarray,
                   seed: int) -> np.ndarray:
    """Move one (seeded, random) row of each splittable class missing from held_idx over to it."""
    missing = np.setdiff1d(np.flatnonzero(counts >= 2), np.unique(codes[held_idx]))
    if not len(missing):
        return held_idx
    rng = np.random.default_rng(seed)
    kept_codes = codes[kept_idx]
    moved = [rng.choice(kept_idx[kept_codes == c]) for c in missing]
    return np.concatenate([held_idx, np.asarray(moved, dtype=held_idx.dtype)])
