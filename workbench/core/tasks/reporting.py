"""The fixed-width per-class table every classifying task prints (CLI, report.txt, model card)."""

from __future__ import annotations

from ..escaping import one_line


def per_class_table(rows: list[dict], head: str = "label") -> list[str]:
    """Lines of ``head  precision  recall  f1  support``; label names escaped onto one line each."""
    names = [one_line(r["label"]) for r in rows]
    width = max([len(head)] + [len(n) for n in names])
    lines = [f"{head:<{width}}  precision  recall      f1  support"]
    for name, r in zip(names, rows):
        lines.append(f"{name:<{width}}  {r['precision']:9.3f}  {r['recall']:6.3f}  {r['f1']:6.3f}  {r['support']:7d}")
    return lines
