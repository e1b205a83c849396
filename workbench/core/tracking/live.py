"""The trackers of a run as one Callbacks object that run_training adds on rank 0 (the process that
writes the run directory). Each event goes to each tracker as its metrics.jsonl dict; a tracker that
raises is dropped with one warning (in the log and the run's events) and the run goes on."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from ..events import Callbacks, Event, Resumed, RunStarted, Warning_
from .records import ENDINGS

log = logging.getLogger(__name__)


class Tracking(Callbacks):
    def __init__(self, trackers: list[Any], warn: Callable[[str], None] | None = None,
                 pending: list[str] | None = None) -> None:
        self.trackers = list(trackers)
        self.warn = warn or (lambda message: None)
        self.pending = list(pending or [])  # said once the run has started (after its first event)

    def on_event(self, event: Event) -> None:
        self.record(event.to_dict())
        if self.pending and isinstance(event, (RunStarted, Resumed)):
            for message in self.pending:
                self.warn(message)
            self.pending = []

    def record(self, record: dict[str, Any]) -> None:
        ending = record.get("event") in ENDINGS
        for tracker in list(self.trackers):
            self._call(tracker, tracker.finish if ending else tracker.record, record)
        if ending:
            self.trackers = []

    def _call(self, tracker, method: Callable[[dict[str, Any]], None], record: dict[str, Any]) -> None:
        try:
            method(record)
        except Exception as e:  # noqa: BLE001 - a tracker must never fail the run
            self.drop(tracker, e)

    def drop(self, tracker, error: BaseException) -> None:
        if tracker in self.trackers:
            self.trackers.remove(tracker)
        message = f"{tracker.name}: logging stopped ({type(error).__name__}: {error}); the run goes on without it"
        log.warning("%s", message, exc_info=log.isEnabledFor(logging.DEBUG))
        self.warn(message)

    def close(self) -> None:
        """The run's process is done with the run: anything still open is closed (a run stopped
        before training, or by an error no event reported)."""
        for tracker in self.trackers:
            try:
                tracker.close()
            except Exception as e:  # noqa: BLE001
                log.warning("%s: could not close (%s)", tracker.name, e)
        self.trackers = []


def make_trackers(names: list[str], run_dir: Path, mlflow_uri: str | None, resumed_at: int | None,
                  on_error: Callable[[str, BaseException], None]) -> list[Any]:
    """One tracker per name; one that cannot start (its library missing, a bad URI) is reported to
    ``on_error`` and left out."""
    out: list[Any] = []
    for name in dict.fromkeys(names):
        try:
            if name == "tensorboard":
                from .tensorboard import TensorBoardTracker

                out.append(TensorBoardTracker(run_dir, resumed_at))
            elif name == "mlflow":
                from .mlflow_log import MlflowTracker

                out.append(MlflowTracker(run_dir, mlflow_uri))
        except Exception as e:  # noqa: BLE001 - a tracker must never fail the run
            on_error(name, e)
    return out


def start_tracking(config, run_dir: Path, events: Callbacks, resumed_at: int | None = None) -> Tracking | None:
    """The run's trackers (config.report_to), or None when it has none. ``events``: where a
    tracker's warning goes (the run's own events: metrics.jsonl and the front end)."""
    if not config.report_to:
        return None
    problems: list[str] = []

    def failed(name: str, error: BaseException) -> None:
        problems.append(f"{name}: not logging this run ({error})")
        log.warning("%s", problems[-1])

    trackers = make_trackers(list(config.report_to), Path(run_dir), config.mlflow_uri, resumed_at, failed)
    return Tracking(trackers, lambda message: events.on_event(Warning_(message)), problems)
