"""`workbench track RUN...`: a run logged to the trackers after the fact, from its run directory
(metrics.jsonl, config.json, report.json, model/), through the trackers a live run uses, so both
log the same things. A run already logged (RUN/tensorboard has events; RUN/tracking.json names an
MLflow run in the same store) is left alone unless ``force``."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..processes import run_owner
from .live import Tracking, make_trackers
from .records import ENDINGS, read_json


@dataclass
class Tracked:
    run_dir: str
    logged: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # tracker: why not
    problems: list[str] = field(default_factory=list)  # a tracker that failed part way
    mlflow: dict[str, Any] = field(default_factory=dict)  # uri, run_id, model_uri

    def to_dict(self) -> dict[str, Any]:
        return {"run_dir": self.run_dir, "logged": self.logged, "skipped": self.skipped, "problems": self.problems,
                "mlflow": self.mlflow}


def read_records(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's events; a line cut short by a kill is skipped."""
    out = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("event"), str):
            out.append(record)
    return out


def _run_folder(run_dir: str | Path) -> Path:
    path = Path(run_dir).expanduser().resolve()
    if not path.is_dir():
        raise InputError("no such run directory", path=path)
    if not (path / "config.json").is_file() or not (path / "metrics.jsonl").is_file():
        raise InputError("is not a Workbench run directory (it has no config.json and metrics.jsonl)", path=path)
    owner = run_owner(read_json(path / "status.json"))
    if owner is not None:
        raise InputError(f"this run is still going (process {owner}); log it once it has ended", path=path)
    return path


def _already(path: Path, name: str, mlflow_uri: str | None) -> str | None:
    """Why ``name`` has this run already, or None."""
    if name == "tensorboard" and any((path / "tensorboard").glob("events.out.tfevents.*")):
        return f"{path / 'tensorboard'} has its events already"
    if name == "mlflow":
        from .mlflow_log import TRACKING_FILE, tracking_uri

        known = read_json(path / TRACKING_FILE).get("mlflow") or {}
        if known.get("run_id") and known.get("uri") == tracking_uri(mlflow_uri):
            return f"logged to {known['uri']} already (MLflow run {known['run_id']})"
    return None


def _forget(path: Path, name: str) -> None:
    """Make way for logging ``name`` again (force)."""
    if name == "tensorboard":
        shutil.rmtree(path / "tensorboard", ignore_errors=True)
    else:
        from .mlflow_log import TRACKING_FILE

        (path / TRACKING_FILE).unlink(missing_ok=True)


def track_run(run_dir: str | Path, names: list[str], mlflow_uri: str | None = None, force: bool = False) -> Tracked:
    """Log one finished (or failed, cancelled, paused) run to the trackers ``names``."""
    path = _run_folder(run_dir)
    out = Tracked(str(path))
    todo = []
    for name in dict.fromkeys(names):
        why = None if force else _already(path, name, mlflow_uri)
        if why is None:
            todo.append(name)
        else:
            out.skipped[name] = why
    for name in todo if force else ():
        _forget(path, name)

    def failed(name: str, error: BaseException) -> None:
        raise InputError(f"{name}: cannot log ({error})") from error

    trackers = make_trackers(todo, path, mlflow_uri, None, failed)
    tracking = Tracking(trackers, out.problems.append)
    records = read_records(path / "metrics.jsonl")
    for record in records:
        tracking.record(record)
    if not records or records[-1].get("event") not in ENDINGS:
        tracking.close()  # killed part way: its trackers' runs end there
    dropped = {p.split(":")[0] for p in out.problems}
    out.logged = [t.name for t in trackers if t.name not in dropped]
    mlflow = next((t for t in trackers if t.name == "mlflow"), None)
    if mlflow is not None and mlflow.name in out.logged:
        out.mlflow = read_json(path / "tracking.json").get("mlflow") or {}
    return out
