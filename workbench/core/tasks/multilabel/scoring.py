"""How a multi-label classifier is scored and reported: micro/macro F1, exact-match (subset) accuracy,
Hamming loss, label-ranking average precision, and per label precision/recall/F1/support, its
threshold and its confusion counts. The figures are scikit-learn's (zero_division=0, as the
single-label report)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...escaping import one_line
from ..base import EvalResult
from .thresholds import DEFAULT_THRESHOLD, MIN_POSITIVES, Thresholds, decide


def metrics_at(gold: np.ndarray, scores: np.ndarray, decided: np.ndarray) -> dict[str, float]:
    """The flat metrics of ``decided`` (bool, rows x labels) against ``gold`` (0/1), LRAP from ``scores``."""
    from sklearn.metrics import accuracy_score, f1_score, hamming_loss, label_ranking_average_precision_score

    y, p = np.asarray(gold).astype(int), np.asarray(decided).astype(int)
    if not len(y):
        return {"micro_f1": 0.0, "macro_f1": 0.0, "subset_accuracy": 0.0, "hamming_loss": 0.0, "lrap": 0.0}
    return {
        "micro_f1": float(f1_score(y, p, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(y, p, average="macro", zero_division=0)),
        "subset_accuracy": float(accuracy_score(y, p)),
        "hamming_loss": float(hamming_loss(y, p)),
        "lrap": float(label_ranking_average_precision_score(y, scores)),
    }


def per_label(gold: np.ndarray, decided: np.ndarray, names: list[str], thresholds: Thresholds) -> list[dict[str, Any]]:
    """One row per label: precision, recall, F1, support, threshold, tuned, and tp/fp/fn/tn."""
    from sklearn.metrics import multilabel_confusion_matrix, precision_recall_fscore_support

    y, p = np.asarray(gold).astype(int), np.asarray(decided).astype(int)
    ids = list(range(len(names)))
    if len(y):
        prec, rec, f1, support = precision_recall_fscore_support(y, p, labels=ids, average=None, zero_division=0)
        cms = multilabel_confusion_matrix(y, p, labels=ids)
    else:
        prec = rec = f1 = support = np.zeros(len(names))
        cms = np.zeros((len(names), 2, 2), int)
    return [{"label": n, "precision": float(prec[j]), "recall": float(rec[j]), "f1": float(f1[j]),
             "support": int(support[j]), "threshold": round(float(thresholds.values[j]), 6),
             "tuned": bool(thresholds.tuned[j]), "tp": int(cms[j][1][1]), "fp": int(cms[j][0][1]),
             "fn": int(cms[j][1][0]), "tn": int(cms[j][0][0])} for j, n in enumerate(names)]


def multilabel_result(gold: np.ndarray, scores: np.ndarray, names: list[str], thresholds: Thresholds,
                      loss: float) -> EvalResult:
    """The headline metrics at ``thresholds``; the report holds them at 0.5 and at the tuned thresholds
    too, and the per-label table at ``thresholds``."""
    decided = decide(scores, thresholds.values)
    metrics = {**metrics_at(gold, scores, decided), "loss": float(loss)}
    half = metrics_at(gold, scores, decide(scores, np.full(len(names), DEFAULT_THRESHOLD)))
    report: dict[str, Any] = {
        "labels": list(names),
        "per_label": per_label(gold, decided, names, thresholds),
        "thresholds": thresholds.as_dict(names),
        "thresholds_fallback": thresholds.fallback(names),
        "thresholds_tuned": thresholds.any_tuned,
        "at_0_5": half,
        "n": int(len(gold)),
        "rows_without_labels": int((np.asarray(gold).sum(1) == 0).sum()) if len(gold) else 0,
    }
    if thresholds.any_tuned:
        report["at_tuned"] = {k: v for k, v in metrics.items() if k != "loss"}
    return EvalResult(metrics, report)


def multilabel_text(result: EvalResult) -> str:
    """The per-label table, the summary lines and which labels kept 0.5."""
    rep, m = result.report, result.metrics
    lines = per_label_table(rep["per_label"])
    lines.append("")
    lines.append(summary_line(m) + f"   n={rep['n']}")
    if rep.get("thresholds_tuned"):
        lines.append("at a global 0.5:  " + summary_line(rep["at_0_5"]))
    lines.append(thresholds_note(rep["labels"], rep["thresholds_fallback"], rep.get("thresholds_tuned", False)))
    if rep.get("tuned_on_this_split"):
        lines.append("They were tuned on these same rows (no test split), so the figures at them are optimistic.")
    return "\n".join(lines)


def summary_line(m: dict[str, float]) -> str:
    return (f"micro F1 {m['micro_f1']:.4f}   macro F1 {m['macro_f1']:.4f}   exact-match accuracy "
            f"{m['subset_accuracy']:.4f}   Hamming loss {m['hamming_loss']:.4f}   LRAP {m['lrap']:.4f}")


def thresholds_note(labels: list[str], fallback: list[str], tuned: bool) -> str:
    """Where the decisions come from, in a sentence."""
    if not tuned:
        return ("Thresholds: a global 0.5 for every label (not tuned: no validation split, or no label with "
                f"{MIN_POSITIVES}+ validation positives).")
    note = f"Thresholds tuned on the validation split for {len(labels) - len(fallback)} of {len(labels)} labels"
    if fallback:
        shown = ", ".join(one_line(n) for n in fallback[:10]) + (" ..." if len(fallback) > 10 else "")
        note += f"; 0.5 for {shown} (fewer than {MIN_POSITIVES} validation positives)"
    return note + "."


def per_label_table(rows: list[dict[str, Any]]) -> list[str]:
    """Lines of ``label  precision  recall  f1  support  threshold`` with tp/fp/fn counts."""
    names = [one_line(r["label"]) for r in rows]
    width = max([len("label")] + [len(n) for n in names])
    lines = [f"{'label':<{width}}  precision  recall      f1  support  threshold      tp      fp      fn"]
    for name, r in zip(names, rows):
        mark = "" if r["tuned"] else " (0.5)"
        lines.append(f"{name:<{width}}  {r['precision']:9.3f}  {r['recall']:6.3f}  {r['f1']:6.3f}  "
                     f"{r['support']:7d}  {r['threshold']:9.3f}  {r['tp']:6d}  {r['fp']:6d}  {r['fn']:6d}{mark}")
    return lines
