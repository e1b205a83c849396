"""Whether a classifier's confidences mean what they say, and a one-number fix.

Expected calibration error (ECE): the examples are put in equal-width bins of top-class confidence;
ECE is the share-weighted mean gap between each bin's accuracy and its mean confidence. The
reliability diagram plots the same bins. Temperature scaling (Guo et al., 2017) divides the logits by
one T > 0 fitted on the validation split by minimising the negative log-likelihood (L-BFGS on log T);
it never changes the predicted class, only how sure the model says it is.

Several labels per row (sigmoid scores, ``label_calibration``): every (row, label) pair is one
decision whose score claims a probability that the label applies. Its reliability bins are of the
score itself over 0..1, a bin's "accuracy" the share of its pairs whose label applies (the observed
frequency, as in scikit-learn's ``calibration_curve``); ECE the same share-weighted gap, per label and
over all pairs. No temperature is fitted: the thresholds tuned per label on validation make the
decisions, and dividing the logits would move them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BINS = 15


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> dict[str, Any]:
    """ECE and the reliability diagram's bins of (n, k) probabilities against label ids."""
    probs = np.asarray(probs, np.float64)
    labels = np.asarray(labels)
    conf = probs.max(1) if len(probs) else np.zeros(0)
    correct = (probs.argmax(1) == labels) if len(probs) else np.zeros(0, bool)
    ece, out = _bins(conf, correct, bins)
    return {"ece": ece, "bins": out, "n": int(len(conf)), "mean_confidence": float(conf.mean()) if len(conf) else 0.0,
            "accuracy": float(correct.mean()) if len(conf) else 0.0}


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the labels under softmax(logits / T)."""
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float(-logp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, max_iter: int = 100) -> float:
    """The T > 0 that minimises the validation NLL of softmax(logits / T)."""
    import torch

    z = torch.as_tensor(np.asarray(logits, np.float64))
    y = torch.as_tensor(np.asarray(labels, np.int64))
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)  # T = exp(log_t) stays positive
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.exp().item())
    if not np.isfinite(t) or nll(logits, labels, t) > nll(logits, labels, 1.0):
        return 1.0  # never worse than no scaling
    return t


def calibration_report(eval_logits: np.ndarray, eval_labels: np.ndarray, val_logits: np.ndarray | None = None,
                       val_labels: np.ndarray | None = None) -> dict[str, Any]:
    """report.json's "calibration": the evaluation split's reliability before and after temperature
    scaling, with T fitted on the validation split (none without one)."""
    from ..tasks.scoring import softmax

    out: dict[str, Any] = {"bins_count": BINS, **reliability(softmax(eval_logits), eval_labels)}
    out["nll"] = nll(eval_logits, eval_labels)
    if val_logits is not None and val_labels is not None and len(val_logits):
        t = fit_temperature(val_logits, val_labels)
        scaled = reliability(softmax(np.asarray(eval_logits) / t), eval_labels)
        out.update({"temperature": t, "fitted_on": "validation", "validation_n": int(len(val_logits)),
                    "validation_nll": nll(val_logits, val_labels), "validation_nll_scaled": nll(val_logits, val_labels, t),
                    "ece_scaled": scaled["ece"], "bins_scaled": scaled["bins"], "nll_scaled": nll(eval_logits, eval_labels, t)})
    else:
        out.update({"temperature": None, "fitted_on": None})
    return out


def _bins(conf: np.ndarray, hit: np.ndarray, bins: int) -> tuple[float, list[dict[str, Any]]]:
    """(ECE, bins) of confidences against 0/1 outcomes, bins of equal width over 0..1."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds confidences in (edges[i], edges[i+1]]; a confidence of exactly 0 goes to the first.
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    out, ece, n = [], 0.0, max(1, len(conf))
    for i in range(bins):
        mask = which == i
        count = int(mask.sum())
        acc: float | None = None
        mean_conf: float | None = None
        if count:
            acc, mean_conf = float(hit[mask].mean()), float(conf[mask].mean())
            ece += count / n * abs(acc - mean_conf)
        out.append({"lower": float(edges[i]), "upper": float(edges[i + 1]), "count": count, "accuracy": acc,
                    "confidence": mean_conf})
    return float(ece), out


def score_reliability(scores: np.ndarray, gold: np.ndarray, bins: int = BINS) -> dict[str, Any]:
    """ECE, bins, mean score and positive rate of sigmoid ``scores`` against 0/1 ``gold`` (any shape)."""
    conf = np.asarray(scores, np.float64).ravel()
    hit = (np.asarray(gold) > 0.5).ravel()
    ece, out = _bins(conf, hit, bins)
    return {"ece": ece, "bins": out, "n": int(len(conf)), "mean_confidence": float(conf.mean()) if len(conf) else 0.0,
            "accuracy": float(hit.mean()) if len(conf) else 0.0}


def binary_nll(logits: np.ndarray, gold: np.ndarray) -> float:
    """Mean binary cross-entropy of sigmoid(logits) over every (row, label) pair."""
    z = np.asarray(logits, np.float64)
    y = (np.asarray(gold) > 0.5).astype(np.float64)
    # log(1 + e^z) - y z, computed without overflow
    return float((np.logaddexp(0.0, z) - y * z).mean()) if z.size else 0.0


def label_calibration(logits: np.ndarray, gold: np.ndarray, names: list[str], bins: int = BINS) -> dict[str, Any]:
    """report.json's "calibration" of a multi-label run: reliability over every (row, label) pair and
    per label, on the sigmoid scores of the evaluation split (``gold``: its multi-hot labels)."""
    from ..tasks.multilabel.thresholds import sigmoid

    scores = sigmoid(logits)
    gold = np.asarray(gold) > 0.5
    per_label = []
    for j, name in enumerate(names):
        r = score_reliability(scores[:, j], gold[:, j], bins)
        per_label.append({"label": name, "ece": r["ece"], "bins": r["bins"], "n": r["n"],
                          "mean_score": r["mean_confidence"], "positive_rate": r["accuracy"],
                          "positives": int(gold[:, j].sum())})
    return {"kind": "label scores", "bins_count": bins, **score_reliability(scores, gold, bins),
            "rows": int(len(gold)), "labels": list(names), "per_label": per_label,
            "nll": binary_nll(logits, gold), "temperature": None, "fitted_on": None}
