"""How classifiers are scored and reported, for every task that assigns classes (texts, pairs,
images; tags use the per-class table): probabilities, metrics, the per-class table and its text."""

from __future__ import annotations

import numpy as np

from ..escaping import one_line
from .base import EvalResult


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities over the last axis, computed stably (the largest logit subtracted first)."""
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def scored_row(names: list[str], gold: int, probs: np.ndarray) -> dict:
    """A row's gold class, predicted class, its confidence and every class's probability (rounded), as
    predictions.jsonl holds them."""
    pred = int(probs.argmax(-1))
    return {"gold": names[gold], "predicted": names[pred], "confidence": round(float(probs[pred]), 6),
            "probabilities": {n: round(float(p), 6) for n, p in zip(names, probs)}}


def classification_result(gold: np.ndarray, pred: np.ndarray, names: list[str], loss: float) -> EvalResult:
    """Accuracy, macro/weighted F1, macro precision/recall, the per-class table and confusion matrix."""
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

    ids = list(range(len(names)))
    rep = classification_report(gold, pred, labels=ids, target_names=names, output_dict=True, zero_division=0)
    metrics = {
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_f1": float(f1_score(gold, pred, labels=ids, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(gold, pred, labels=ids, average="weighted", zero_division=0)),
        "macro_precision": float(rep["macro avg"]["precision"]),
        "macro_recall": float(rep["macro avg"]["recall"]),
        "loss": float(loss),
    }
    per_class = [{"label": n, "precision": float(rep[n]["precision"]), "recall": float(rep[n]["recall"]),
                  "f1": float(rep[n]["f1-score"]), "support": int(rep[n]["support"])} for n in names]
    cm = confusion_matrix(gold, pred, labels=ids)
    return EvalResult(metrics, {"labels": names, "per_class": per_class, "confusion_matrix": cm.tolist(),
                                "n": int(len(gold))})


def classification_text(result: EvalResult) -> str:
    """The per-class table and the summary line of a ``classification_result``."""
    rep, m = result.report, result.metrics
    lines = per_class_table(rep["per_class"])
    lines.append("")
    lines.append(f"accuracy {m['accuracy']:.4f}   macro F1 {m['macro_f1']:.4f}   weighted F1 {m['weighted_f1']:.4f}   "
                 f"n={rep['n']}")
    return "\n".join(lines)


def per_class_table(rows: list[dict], head: str = "label") -> list[str]:
    """Lines of ``head  precision  recall  f1  support``; label names escaped onto one line each."""
    names = [one_line(r["label"]) for r in rows]
    width = max([len(head)] + [len(n) for n in names])
    lines = [f"{head:<{width}}  precision  recall      f1  support"]
    for name, r in zip(names, rows):
        lines.append(f"{name:<{width}}  {r['precision']:9.3f}  {r['recall']:6.3f}  {r['f1']:6.3f}  {r['support']:7d}")
    return lines
