"""The quick baseline every image run reports beside its fine-tuned model: a logistic regression on
the frozen backbone's pooled features of the training rows, scored on the same evaluation rows.

It takes seconds (one forward pass per image, no backward), and tells a user when fine-tuning did not
pay: on small or unusual data a linear model on pretrained features can match the fine-tuned network.
At most ``MAX_ROWS`` training rows are embedded (a seeded random sample beyond that), so that the
baseline never costs more than a fraction of an epoch of training on a large set.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from ...cancel import NEVER, CancelToken
from ...events import Callbacks, PhaseChanged

log = logging.getLogger(__name__)

KIND = "logistic_regression_on_frozen_features"
MAX_ROWS = 5_000  # training rows embedded for the baseline


def frozen_feature_baseline(task, backbone, data, train_rows, eval_name: str, max_length: int, cache_dir,
                            callbacks: Callbacks, cancel: CancelToken = NEVER, seed: int = 0,
                            max_rows: int = MAX_ROWS) -> dict[str, Any]:
    """Fit and score the baseline; returns what report.json records under ``"baseline"``.

    ``train_rows``: the dataset of rows that trained the fine-tuned model (training, plus the held-out
    validation rows after a refit); ``backbone``: the run's BackboneInfo (its pretrained weights)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ..embeddings import embed_rows, feature_model
    from ..scoring import classification_result

    t0 = time.perf_counter()
    n_all = len(train_rows)
    capped = n_all > max_rows
    if capped:
        keep = np.sort(np.random.default_rng(seed).choice(n_all, max_rows, replace=False))
        train_rows = train_rows.select(keep)
    callbacks.on_event(PhaseChanged("baseline", f"logistic regression on the frozen {backbone.name} features of "
                                                f"{len(train_rows):,} training {task.row_unit}"))
    _, features = feature_model(task, backbone.path, data)
    x_train, y_train = embed_rows(task, backbone.path, data, "baseline-train", train_rows, max_length, cache_dir,
                                  callbacks, cancel, features)
    x_eval, y_eval = embed_rows(task, backbone.path, data, "baseline-eval", data.splits[eval_name], max_length,
                                cache_dir, callbacks, cancel, features)
    cancel.raise_if_cancelled()
    names = data.label_map.names
    classes = np.unique(y_train)
    if len(classes) < 2:
        raise ValueError("the baseline needs at least two classes among its training rows")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    clf.fit(x_train, y_train)
    proba = clf.predict_proba(x_eval)
    pred = classes[proba.argmax(1)]
    # Cross-entropy over every class: a class the sample missed gets probability zero (clipped).
    full = np.zeros((len(y_eval), len(names)))
    full[:, classes] = proba
    loss = float(-np.mean(np.log(np.clip(full[np.arange(len(y_eval)), y_eval], 1e-12, 1)))) if len(y_eval) else 0.0
    result = classification_result(y_eval, pred, names, loss)
    seconds = time.perf_counter() - t0
    out = {
        "kind": KIND,
        "backbone": backbone.name,
        "pretrained": backbone.source != "builtin",  # the small CNN has no pretrained weights: random features
        "features": int(x_train.shape[1]),
        "split": eval_name,
        "unit": task.row_unit,
        "train_rows": int(len(train_rows)),
        "rows_available": int(n_all),
        "max_rows": int(max_rows),
        "capped": bool(capped),
        "seconds": round(seconds, 2),
        **{k: result.metrics[k] for k in ("accuracy", "macro_f1", "weighted_f1", "loss")},
    }
    log.info("baseline: logistic regression on the %s %s features of %s training %s, %.1f s: accuracy %.3f, "
             "macro F1 %.3f on the %s split", "frozen" if out["pretrained"] else "untrained (random)",
             backbone.name, f"{out['train_rows']:,}", task.row_unit, seconds, out["accuracy"], out["macro_f1"],
             eval_name)
    return out


def baseline_text(baseline: dict[str, Any], fine_tuned: dict[str, float]) -> str:
    """One line for report.txt and the terminal: the baseline beside the fine-tuned model."""
    if "error" in baseline:
        return f"Baseline (logistic regression on frozen features): not computed ({baseline['error']})"
    rows = f"{baseline['train_rows']:,} training {baseline.get('unit', 'rows')}" + (
        f", a sample of {baseline['rows_available']:,}" if baseline.get("capped") else "")
    what = "frozen" if baseline.get("pretrained", True) else "untrained (random)"
    gap = fine_tuned.get("accuracy", float("nan")) - baseline["accuracy"]
    verdict = ("fine-tuning gained " if gap > 0 else "fine-tuning did not beat it: ") + f"{gap:+.3f} accuracy"
    return (f"Baseline, logistic regression on the {what} {baseline['backbone']} features ({rows}, "
            f"{baseline['seconds']:.1f} s): accuracy {baseline['accuracy']:.4f}, macro-F1 {baseline['macro_f1']:.4f} "
            f"(fine-tuned: {fine_tuned.get('accuracy', float('nan')):.4f}, {fine_tuned.get('macro_f1', float('nan')):.4f}; "
            f"{verdict})")
