"""One decision threshold per label, tuned on the validation split to maximise that label's F1.

A label is decided where its sigmoid score reaches its threshold (``score >= threshold``), in the
report, predict, serve and the ONNX export alike."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_THRESHOLD = 0.5
# Fewer validation positives than this and a tuned threshold would follow a handful of rows: the label
# keeps the global 0.5 (the report says which labels did).
MIN_POSITIVES = 5
# Of the cut-offs whose validation F1 is within this of the best, the one nearest 0.5 is kept: a few
# hundred validation rows cannot tell F1s this close apart, and a threshold far from 0.5 chosen on
# such a difference is noise that the test split (and a refitted model) does not share. Measured on
# the multi-label benchmark (docs/BENCHMARKS.md): the exact best cut-off scored below 0.5 on test.
F1_TOLERANCE = 0.01


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Scores in (0, 1), computed in float64 without overflow for large negative logits."""
    x = np.asarray(logits, dtype=np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def decide(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """The decided labels: True where a score reaches its label's threshold."""
    return np.asarray(scores) >= np.asarray(thresholds)[None, :]


@dataclass
class Thresholds:
    """Each label's threshold and whether it was tuned (False: the global 0.5, too few positives)."""

    values: np.ndarray  # float64, one per label
    tuned: np.ndarray  # bool, one per label

    @classmethod
    def default(cls, n_labels: int) -> "Thresholds":
        return cls(np.full(n_labels, DEFAULT_THRESHOLD), np.zeros(n_labels, bool))

    @property
    def any_tuned(self) -> bool:
        return bool(self.tuned.any())

    def as_dict(self, names: list[str]) -> dict[str, float]:
        return {n: round(float(t), 6) for n, t in zip(names, self.values)}

    def fallback(self, names: list[str]) -> list[str]:
        return [n for n, t in zip(names, self.tuned) if not t]


def tune(scores: np.ndarray, gold: np.ndarray, min_positives: int = MIN_POSITIVES) -> Thresholds:
    """Per label, the threshold with the best F1 on (``scores``, ``gold``) of validation rows; labels
    with fewer than ``min_positives`` positives keep 0.5."""
    scores, gold = np.asarray(scores, dtype=np.float64), np.asarray(gold) > 0.5
    out = Thresholds.default(scores.shape[1])
    for j in range(scores.shape[1]):
        if int(gold[:, j].sum()) >= min_positives:
            out.values[j], out.tuned[j] = best_f1_threshold(scores[:, j], gold[:, j]), True
    return out


def best_f1_threshold(scores: np.ndarray, gold: np.ndarray) -> float:
    """The threshold that maximises F1 for one label: half way between the lowest score decided
    positive and the next lower score (a test score between them falls on the side of neither); of
    cut-offs within F1_TOLERANCE of the best F1, the one nearest 0.5."""
    order = np.argsort(-scores, kind="stable")
    s, g = scores[order], gold[order]
    last = np.flatnonzero(np.append(s[1:] != s[:-1], True))  # the last row of each run of equal scores
    tp = np.cumsum(g)[last]
    predicted = last + 1
    f1 = 2 * tp / (predicted + g.sum())
    lower = np.append(s[last[1:]], 0.0)  # the next lower distinct score (0 below the lowest)
    cuts = (s[last] + lower) / 2
    best = np.flatnonzero(f1 >= f1.max() - F1_TOLERANCE - 1e-12)
    k = best[np.argmin(np.abs(cuts[best] - DEFAULT_THRESHOLD))]
    return float(cuts[k])
