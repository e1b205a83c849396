"""The run directory: the contract between the engine and every front end.

    RUN/config.json        the resolved config; `workbench train --config RUN/config.json` repeats it
    RUN/status.json        running | finished | failed | cancelled, replaced atomically
    RUN/metrics.jsonl      every event, appended and flushed as it happens (survives kill -9)
    RUN/validation.json    the data validation report
    RUN/report.json        final metrics, per-class table, confusion matrix
    RUN/report.txt         the same for people
    RUN/predictions.jsonl  one line per evaluated row
    RUN/model/             the fine-tuned model, in the export format
    RUN/error.txt          details of a failure
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .events import Callbacks, Event


def runs_home() -> Path:
    """Where runs go when no --run-dir is given: $WORKBENCH_HOME/runs or the user data folder."""
    home = os.environ.get("WORKBENCH_HOME")
    if home:
        return Path(home).expanduser() / "runs"
    from platformdirs import user_data_dir

    return Path(user_data_dir("workbench", appauthor=False)) / "runs"


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:40] or "run"


@dataclass
class RunDirectory(Callbacks):
    path: Path
    training_started: bool = False

    @classmethod
    def create(cls, requested: str | None, label: str) -> "RunDirectory":
        if requested:
            path = Path(requested).expanduser()
            if path.exists() and any(path.iterdir()):
                raise FileExistsError(path)
        else:
            base = runs_home() / f"{datetime.now():%Y%m%d-%H%M%S}-{_slug(label)}"
            path, n = base, 1
            while path.exists():
                n += 1
                path = base.with_name(f"{base.name}-{n}")
        path.mkdir(parents=True, exist_ok=True)
        rd = cls(path.resolve())
        rd._metrics = open(rd.path / "metrics.jsonl", "a", encoding="utf-8")
        rd.set_status("running")
        return rd

    # Each event is one JSON line, flushed at once: a run killed with -9 keeps everything up to it.
    def on_event(self, event: Event) -> None:
        if event.__class__.__name__ == "Progress":
            return  # progress ticks are for live displays, not for the record
        d = event.to_dict()
        d["time"] = round(time.time(), 3)
        self._metrics.write(json.dumps(d, ensure_ascii=False) + "\n")
        self._metrics.flush()

    def set_status(self, state: str, **extra: Any) -> None:
        status_path = self.path / "status.json"
        current = {}
        if status_path.exists():
            try:
                current = json.loads(status_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                current = {}
        current.setdefault("started", datetime.now().isoformat(timespec="seconds"))
        current.update(state=state, pid=os.getpid(), **extra)
        if state != "running":
            current["ended"] = datetime.now().isoformat(timespec="seconds")
        write_json_atomic(status_path, current)

    def write_json(self, name: str, data: Any) -> None:
        write_json_atomic(self.path / name, data)

    def write_text(self, name: str, text: str) -> None:
        tmp = self.path / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.path / name)

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def cache_dir(self) -> Path:
        return self.path / "cache"

    def close(self) -> None:
        if getattr(self, "_metrics", None) and not self._metrics.closed:
            self._metrics.close()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every complete line of metrics.jsonl; a line cut short by a kill is ignored."""
    out = []
    try:
        with open(Path(run_dir) / "metrics.jsonl", encoding="utf-8") as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
    except FileNotFoundError:
        pass
    return out
