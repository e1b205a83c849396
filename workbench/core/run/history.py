"""Reading run directories back: the list of past runs and everything one run left behind.

Front ends reopen a run from its folder alone (see ``rundir.py`` for the layout), so this reader is
forgiving: a run still being written, killed with -9 or cut short by a full disk is listed with
what it has, never an exception. Only a folder that is not a run at all is an ``InputError``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..metrics import CLASSIFICATION, Metric, find, specs_from
from ..processes import run_owner
from .directory import read_json_or_none, read_metrics, runs_home

# Any of these marks a folder as a run directory; status.json is written first, config.json next.
_MARKERS = ("status.json", "config.json", "metrics.jsonl")



RESUMABLE_STATES = ("paused", "cancelled", "interrupted", "failed")  # with a checkpoint, --resume goes on


def resumable(run_dir: str | Path) -> bool:
    """Whether the run in ``run_dir`` has a complete checkpoint to go on from (the state aside)."""
    folder = Path(run_dir) / "checkpoints"
    try:
        return bool(str(run_dir)) and any(p.name.startswith("step-") for p in folder.iterdir())
    except OSError:
        return False


def is_run_dir(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and any((p / m).is_file() for m in _MARKERS)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def effective_state(status: dict[str, Any] | None) -> str:
    """status.json's state, with 'interrupted' for a run marked running whose process is gone."""
    if not status or not isinstance(status.get("state"), str):
        return "interrupted"  # a run folder whose status never got written or was damaged
    state = status["state"]
    if state in ("running", "resumed") and run_owner(status) is None:
        return "interrupted"
    return state


@dataclass
class RunSummary:
    """One line of the runs list: enough to choose a run without reading its predictions."""

    path: Path
    name: str
    task: str | None
    state: str  # running | finished | failed | cancelled | interrupted
    started: datetime | None
    ended: datetime | None
    dataset: str | None  # the training file's name
    dataset_path: str | None
    backbone: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    main_metric: str | None = None  # the metric the run selected its best checkpoint by
    message: str | None = None  # why it failed
    metric_specs: tuple[Metric, ...] = CLASSIFICATION  # as the run recorded them (config.json)
    method: str | None = None  # the training method (config.json's model.method)
    # Where the folder came from when it was not trained here: status.json's "imported" ({"pack": run
    # name, "packed": when, "at": when unpacked, "via": "unpack" or "import"}).
    imported: dict[str, Any] | None = None

    @property
    def duration_s(self) -> float | None:
        if self.started and self.ended:
            return (self.ended - self.started).total_seconds()
        return None

    def key_metrics(self) -> dict[str, float]:
        """The run's headline metrics (as its task declared them), in the task's order."""
        return {m.name: self.metrics[m.name] for m in self.metric_specs
                if m.headline and isinstance(self.metrics.get(m.name), (int, float))}

    @property
    def main_value(self) -> float | None:
        value = self.metrics.get(self.main_metric) if self.main_metric else None
        return value if isinstance(value, (int, float)) else None

    @property
    def main_title(self) -> str:
        return find(self.metric_specs, self.main_metric).title if self.main_metric else ""


def _backbone_name(config: dict[str, Any]) -> str | None:
    resolved = (config.get("resolved") or {}).get("backbone") or {}
    name = resolved.get("name") or (config.get("model") or {}).get("name")
    if isinstance(name, str) and os.sep in name:
        name = Path(name).name  # a local folder: its name says enough in a list
    return name


def summarize(path: str | Path) -> RunSummary:
    path = Path(path)
    status = read_json_or_none(path / "status.json")
    config = read_json_or_none(path / "config.json") or {}
    status = status if isinstance(status, dict) else None
    config = config if isinstance(config, dict) else {}
    started = _parse_time((status or {}).get("started"))
    if started is None:
        try:
            started = datetime.fromtimestamp(path.stat().st_mtime)
        except OSError:
            started = None
    metrics = (status or {}).get("metrics")
    if not isinstance(metrics, dict):
        report = read_json_or_none(path / "report.json")
        metrics = report.get("metrics") if isinstance(report, dict) else None
    train_file = (config.get("data") or {}).get("train")
    return RunSummary(
        path=path,
        name=path.name,
        task=config.get("task"),
        state=effective_state(status),
        started=started,
        ended=_parse_time((status or {}).get("ended")),
        dataset=Path(train_file).name if train_file else None,
        dataset_path=train_file,
        backbone=_backbone_name(config),
        metrics={k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float))},
        main_metric=(config.get("train") or {}).get("metric"),
        message=(status or {}).get("message"),
        metric_specs=specs_from((config.get("resolved") or {}).get("metrics")),
        method=(config.get("model") or {}).get("method"),
        imported=_dict_or_none((status or {}).get("imported")),
    )


def _dict_or_none(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def list_runs(home: str | Path | None = None) -> list[RunSummary]:
    """Every run under ``home`` (default: ``runs_home()``), newest first. A missing home is no runs."""
    home = Path(home) if home is not None else runs_home()
    try:
        entries = list(home.iterdir())
    except OSError:
        return []
    runs = [summarize(p) for p in entries if not p.name.startswith(".") and is_run_dir(p)]
    runs.sort(key=lambda r: (r.started or datetime.min, r.name), reverse=True)
    return runs


@dataclass
class RunData:
    """Everything one run left behind, read once; predictions are read only when asked for."""

    path: Path
    config: dict[str, Any]
    status: dict[str, Any]
    state: str
    metrics: list[dict[str, Any]]
    report: dict[str, Any] | None
    validation: dict[str, Any] | None
    report_text: str | None
    error_text: str | None
    _predictions: Any = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def task(self) -> str | None:
        return (self.report or {}).get("task") or self.config.get("task")

    @property
    def metric_specs(self) -> tuple[Metric, ...]:
        """The run's metrics as its task declared them: recorded in config.json, else (runs made
        before they were recorded) the task's declaration."""
        recorded = (self.config.get("resolved") or {}).get("metrics")
        if recorded:
            return specs_from(recorded)
        try:
            from ..tasks import task_class

            return task_class(self.task).metrics if self.task else CLASSIFICATION
        except (KeyError, ImportError):
            return CLASSIFICATION

    @property
    def model_dir(self) -> Path | None:
        """The exported model, when the run got as far as writing it completely."""
        folder = self.path / "model"
        return folder if (folder / "config.json").is_file() else None

    @property
    def predictions_path(self) -> Path:
        return self.path / "predictions.jsonl"

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.metrics if e.get("event") == name]

    def predictions(self):
        """predictions.jsonl as a pyarrow Table (cached); an empty table when the run wrote none."""
        if self._predictions is None:
            self._predictions = read_predictions(self.predictions_path)
        return self._predictions


def read_predictions(path: str | Path):
    """A predictions.jsonl file as a pyarrow Table, read by Arrow's multi-threaded JSON reader.

    A last line cut short by a kill is dropped, as ``read_metrics`` does for metrics.jsonl.
    """
    import pyarrow as pa
    import pyarrow.json as pj

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return pa.table({})
    end = data.rfind(b"\n")
    if end < 0:
        return pa.table({})
    data = data[: end + 1]
    try:
        # Large blocks: one schema inference over many lines rather than per 1 MB.
        return pj.read_json(pa.BufferReader(data), read_options=pj.ReadOptions(block_size=1 << 24))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    # A line Arrow cannot type consistently (e.g. a value that is sometimes a number, sometimes a
    # string): read it line by line instead and name the first bad line.
    rows = []
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as e:  # a JSONDecodeError, or e.g. an integer too long to convert
            why = e.msg if isinstance(e, json.JSONDecodeError) else str(e)
            raise InputError(f"not a JSON line ({why})", path=path, line=number) from None
    # A field of more than one kind (1 here, "x" there) is shown as text.
    kinds: dict[str, set[type]] = {}
    for r in rows:
        for k, v in r.items():
            if v is not None:
                kinds.setdefault(k, set()).add(float if type(v) is int else type(v))
    mixed = [k for k, t in kinds.items() if len(t) > 1]
    for r in rows:
        for k in mixed:
            v = r.get(k)
            if v is not None and not isinstance(v, str):
                r[k] = json.dumps(v, ensure_ascii=False)
    try:
        return pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise InputError(f"predictions have inconsistent fields: {e}", path=path) from None


def load_run(run_dir: str | Path) -> RunData:
    path = Path(run_dir).expanduser()
    if not path.exists():
        raise InputError("run folder not found", path=path)
    if not path.is_dir():
        raise InputError("not a folder; choose a run folder (one holding status.json and metrics.jsonl)", path=path)
    if not is_run_dir(path):
        raise InputError("not a Workbench run folder: it has no status.json, config.json or metrics.jsonl", path=path)
    path = path.resolve()
    status = read_json_or_none(path / "status.json")
    status = status if isinstance(status, dict) else {}
    config = read_json_or_none(path / "config.json")
    report = read_json_or_none(path / "report.json")
    validation = read_json_or_none(path / "validation.json")

    def text(name: str) -> str | None:
        try:
            return (path / name).read_text(encoding="utf-8")
        except OSError:
            return None

    return RunData(
        path=path,
        config=config if isinstance(config, dict) else {},
        status=status,
        state=effective_state(status or None),
        metrics=read_metrics(path),
        report=report if isinstance(report, dict) else None,
        validation=validation if isinstance(validation, dict) else None,
        report_text=text("report.txt"),
        error_text=text("error.txt"),
    )
