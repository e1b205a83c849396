"""A study's results as plain data for a front end to draw (the app draws them with pyqtgraph): the
trials table, the optimisation history, parameter importance (optuna.importance) and parallel
coordinates, each axis scaled to 0..1 (log-scaled for a log range such as the learning rate)."""

from __future__ import annotations

import math
from typing import Any

from .study import Search


def _scaled(values: list[float], log: bool) -> list[float]:
    points = [math.log10(v) if log and v > 0 else float(v) for v in values]
    low, high = min(points), max(points)
    return [0.5 if high == low else (p - low) / (high - low) for p in points]


def importance(study) -> dict[str, float]:
    """Each searched setting's share of the variation in the score (fANOVA); {} while the study has
    too few finished trials for it."""
    import optuna

    try:
        return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}


def study_results(search: Search, study) -> dict[str, Any]:
    # A trial enqueued but not started (the defaults, when the caller's own settings filled the trials)
    # is not one of the search's yet.
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.name != "WAITING"]
    rows = [{"number": t.number, "state": t.state.name.lower(), "value": t.value, "params": dict(t.params),
             "seconds": t.user_attrs.get("seconds"), "run_dir": t.user_attrs.get("run_dir"),
             "defaults": bool(t.user_attrs.get("defaults"))} for t in trials]
    done = [t for t in trials if t.state.name == "COMPLETE" and t.value is not None]
    history: list[tuple[int, float, float]] = []
    best: float | None = None
    for t in sorted(done, key=lambda t: t.number):
        value = float(t.value or 0.0)  # never None: ``done`` has only scored trials
        best = value if best is None or (value > best if search.maximize else value < best) else best
        history.append((t.number, value, best))
    names = [r.name.split(".", 1)[1] for r in search.space]
    logs = {r.name.split(".", 1)[1]: r.log for r in search.space}
    axes = [n for n in names if done and all(isinstance(t.params.get(n), (int, float)) for t in done)]
    columns = {n: _scaled([float(t.params[n]) for t in done], logs.get(n, False)) for n in axes}
    parallel = {"axes": axes, "lines": [[columns[n][i] for n in axes] for i in range(len(done))],
                "values": [float(t.value) for t in done]}
    best_trial = None
    if done:
        pick = max if search.maximize else min
        best_trial = pick(done, key=lambda t: t.value).number
    return {"metric": search.metric, "maximize": search.maximize, "trials": rows, "history": history,
            "importance": importance(study) if len(done) > 1 else {}, "parallel": parallel, "best": best_trial}
