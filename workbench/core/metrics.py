"""What a task's metrics are: names, titles, direction and where they are shown.

A task declares its metrics once (``Task.metrics``); every front end reads them from there: the
CLI's validation line, the app's live validation plot, the Model page's "best model by" choice, the
Evaluate page's summary tiles and the Runs list. A run records them too (its ``RunStarted`` event
and config.json), so a past run is shown right without importing its task. Plain data, no imports.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Iterable


@dataclass(frozen=True)
class Metric:
    name: str  # the key in a run's metrics, e.g. "macro_f1"
    title: str  # for people: "Macro F1"
    greater_is_better: bool = True
    bounded: bool = True  # a score in [0, 1] (plots share a 0..1 axis); False for errors, losses
    plot: bool = False  # drawn on the live validation plot
    headline: bool = False  # in one-line summaries (CLI validation line, logs, tiles)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Metric":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


LOSS = Metric("loss", "Validation loss", greater_is_better=False, bounded=False, headline=True)

CLASSIFICATION = (
    Metric("accuracy", "Accuracy", plot=True, headline=True),
    Metric("macro_f1", "Macro F1", plot=True, headline=True),
    Metric("weighted_f1", "Weighted F1", headline=True),
    Metric("macro_precision", "Macro precision"),
    Metric("macro_recall", "Macro recall"),
    LOSS,
)


def specs_from(data: Iterable[dict[str, Any]] | None) -> tuple[Metric, ...]:
    """Metrics as a run recorded them; runs written before runs recorded them were classifiers."""
    out = tuple(Metric.from_dict(d) for d in (data or []) if isinstance(d, dict) and "name" in d)
    return out or CLASSIFICATION


def find(specs: Iterable[Metric], name: str) -> Metric:
    for m in specs:
        if m.name == name:
            return m
    return Metric(name, name.replace("_", " ").capitalize(), greater_is_better=name != "loss",
                  bounded=name != "loss")


def in_sentence(title: str) -> str:
    """A title as it reads inside a sentence: "Macro F1" -> "macro F1", "MSE" stays."""
    return title[0].lower() + title[1:] if len(title) > 1 and title[1].islower() else title


def summary_text(metrics: dict[str, Any], specs: Iterable[Metric]) -> str:
    """``accuracy 0.8123, macro F1 0.8011, validation loss 0.4123``: the headline metrics present."""
    parts = []
    for m in specs:
        value = metrics.get(m.name)
        if m.headline and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            parts.append(f"{in_sentence(m.title)} {value:.4f}")
    return ", ".join(parts)
