"""What the trackers log, read from a run's events as metrics.jsonl holds them (``Event.to_dict()``)
and from its config.json: one definition for live runs and for runs logged afterwards."""

from __future__ import annotations

import math
from typing import Any

# StepMetrics fields logged as train/NAME scalars (the rest say where the run is, not how it trains).
STEP_SCALARS = ("loss", "learning_rate", "samples_per_second", "epoch", "grad_norm", "mfu", "peak_memory_gib")
ENDINGS = ("Finished", "Failed", "Cancelled", "Paused")  # the events that end a run's process


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def scalars(record: dict[str, Any]) -> list[tuple[str, int, float]]:
    """(tag, step, value) for each metric in one event: train/loss..., validation/accuracy, test/..."""
    kind, step = record.get("event"), record.get("step")
    if not isinstance(step, int):
        return []
    if kind == "StepMetrics":
        values = [(f"train/{name}", _number(record.get(name))) for name in STEP_SCALARS]
    elif kind == "EvalMetrics":
        split = str(record.get("split") or "validation")
        values = [(f"{split}/{name}", _number(v)) for name, v in _section(record, "metrics").items()]
    else:
        return []
    return [(tag, step, v) for tag, v in values if v is not None]


def samples_text(record: dict[str, Any]) -> tuple[int, str] | None:
    """(step, Markdown table) of a text-generation run's live samples (a GenerationSamples event: step 0
    is the base model), or None for any other event."""
    samples = record.get("samples")
    if record.get("event") != "GenerationSamples" or not isinstance(samples, (list, tuple)) or not samples:
        return None
    step = record.get("step")

    def cell(value: Any) -> str:  # one table cell: no line breaks, no column separators
        return " ".join(str(value or "").split()).replace("|", "\\|")[:500] or " "

    lines = ["| prompt | reference | answer |", "| --- | --- | --- |"]
    lines += [f"| {cell(s.get('prompt'))} | {cell(s.get('reference'))} | {cell(s.get('output'))} |"
              for s in samples if isinstance(s, dict)]
    what = "the base model, before training" if step == 0 else f"step {step}"
    return (step if isinstance(step, int) else 0), f"Live samples, {what}:\n\n" + "\n".join(lines)


def flat_params(config: dict[str, Any]) -> dict[str, str | float | int | bool]:
    """config.json as flat ``section.name`` parameters (None and lists as text), without what the
    run resolved (``resolved``: columns, device...) beyond the backbone's name."""
    out: dict[str, str | float | int | bool] = {}
    for key, value in config.items():
        if key == "resolved":
            continue
        if isinstance(value, dict):
            for name, v in value.items():
                out[f"{key}.{name}"] = _param(v)
        else:
            out[key] = _param(value)
    backbone = (config.get("resolved") or {}).get("backbone") if isinstance(config.get("resolved"), dict) else None
    if isinstance(backbone, dict) and backbone.get("name"):
        out["resolved.backbone"] = str(backbone["name"])
    return out


def _param(value: Any) -> str | float | int | bool:
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return "None" if value is None else str(value)


def run_tags(config: dict[str, Any], task: str) -> dict[str, str]:
    """task, backbone and method: what a tracker's run list is filtered by (``task``: the TaskReady
    event's, as config.json may say auto)."""
    resolved = _section(config, "resolved")
    backbone, model = _section(resolved, "backbone"), _section(config, "model")
    return {"task": task or str(config.get("task") or ""),
            "backbone": str(backbone.get("name") or model.get("name") or ""),
            "method": str(model.get("method") or "")}


def read_json(path) -> dict[str, Any]:
    """A JSON object file of the run, or {} (missing, half-written, not an object)."""
    import json
    from pathlib import Path

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _section(config: dict[str, Any], name: str) -> dict[str, Any]:
    value = config.get(name)
    return value if isinstance(value, dict) else {}
