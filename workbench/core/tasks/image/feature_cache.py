"""A frozen image backbone's outputs, computed once per image and view, so that training a head on
them takes seconds an epoch instead of a pass through the backbone.

A frozen backbone (``--method frozen``) never changes: its weights get no gradient and its batch-norm
statistics stay those of pretraining (eval mode). So its output for a given crop of a given image is
the same every epoch, and only the crops need to be decided:

- view 0 of an image is its centre crop, the crop evaluation and prediction use;
- views 1 .. views-1 are random resized crops (the run's augmentation), drawn when first needed.

A training row takes view ``epoch % views`` (the epoch counted by how often that row was drawn), so
with ``views`` = 1 every epoch after the first trains on cached features only; with more views each
of the first ``views`` epochs pays one backbone pass per image, and later ones cycle through them.
Features are computed by a copy of the backbone with its batch norms folded into the convolutions,
in inference mode, on the run's device, and kept in host memory as float32.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

# A cap on the cache's host memory: past it, fewer views are kept (at least one).
MAX_CACHE_BYTES = 2 * 2**30


def views_that_fit(requested: int, images: int, width: int, max_bytes: int = MAX_CACHE_BYTES) -> int:
    per_view = max(images, 1) * width * 4
    return max(1, min(requested, max_bytes // per_view))


class FeatureCache:
    """Features of ``images`` images (their row in the decoded-image cache) in ``views`` views each."""

    def __init__(self, images: int, views: int, width: int) -> None:
        self.views = views
        self.features = np.zeros((images, views, width), np.float32)
        self.have = np.zeros((images, views), bool)
        self.computed = 0  # backbone passes made, one per image and view

    def take(self, index: np.ndarray, view: np.ndarray,
             compute: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
        """The features of images ``index`` in views ``view`` (arrays of one length); those not yet
        cached come from ``compute(index, view)`` (float32, one row each) and are kept."""
        index, view = np.asarray(index, np.int64), np.asarray(view, np.int64)
        missing = ~self.have[index, view]
        if missing.any():
            # One image may be asked twice in a batch (never in training batches; an evaluation
            # split may repeat an image): compute each (image, view) once.
            pairs = np.unique(np.stack([index[missing], view[missing]], 1), axis=0)
            feats = compute(pairs[:, 0], pairs[:, 1])
            self.features[pairs[:, 0], pairs[:, 1]] = feats
            self.have[pairs[:, 0], pairs[:, 1]] = True
            self.computed += len(pairs)
        return self.features[index, view]
