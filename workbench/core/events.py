"""Typed events the engine reports while it works.

Events are small frozen dataclasses of plain Python values (never tensors), so a front end can pass
them across threads or write them to JSON as they are. ``Callbacks`` is the one object a front end
hands the engine: the CLI prints a progress bar from it, the app forwards to Qt signals.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    def to_dict(self) -> dict[str, Any]:
        return {"event": type(self).__name__, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class RunStarted(Event):
    """The run directory exists: where everything about this run is written from now on."""

    run_dir: str


@dataclass(frozen=True)
class StageStarted(Event):
    """A run of several stages (adapting the backbone, then fine-tuning) starts stage ``index`` of
    ``count``, a run of its own in ``run_dir``."""

    index: int
    count: int
    title: str
    run_dir: str = ""


@dataclass(frozen=True)
class Resumed(Event):
    """A run goes on from its checkpoint at ``step`` (``workbench train --resume``, the app's Resume)."""

    step: int
    checkpoint: str = ""


@dataclass(frozen=True)
class CheckpointSaved(Event):
    step: int
    path: str
    disk_bytes: int  # all of the run's checkpoints together, on disk


@dataclass(frozen=True)
class TaskReady(Event):
    """The data is read and checked: which task this run trains and how it is scored. Front ends
    set up their displays from it (the metrics as ``workbench.core.metrics.Metric`` dicts)."""

    task: str
    title: str
    metrics: list[dict[str, Any]] = field(default_factory=list)
    main_metric: str = ""


@dataclass(frozen=True)
class PhaseChanged(Event):
    """The run moved to another phase: reading, validating, tokenizing, loading_model, training,
    evaluating, refitting, tuning, calibrating, testing, exporting."""

    phase: str
    detail: str = ""


@dataclass(frozen=True)
class Progress(Event):
    """Progress inside a phase that is not a training step (reading a file, tokenizing)."""

    phase: str
    done: int
    total: int


@dataclass(frozen=True)
class StepMetrics(Event):
    step: int
    total_steps: int
    epoch: float
    loss: float
    learning_rate: float
    samples_per_second: float
    elapsed_s: float
    eta_s: float
    grad_norm: float | None = None
    mfu: float | None = None  # model FLOPs utilisation on a known GPU (6 x parameters x tokens / peak)
    peak_memory_gib: float | None = None  # the GPU memory the run has held at most
    # In the refit (core/run/refit.py: the final model trained again on every row) ``step``,
    # ``total_steps`` and ``epoch`` go on from the first pass's, one x-axis for both; these are the
    # refit's own, for its own progress. None in the first pass.
    refit_step: int | None = None
    refit_steps: int | None = None
    refit_epoch: float | None = None


@dataclass(frozen=True)
class Refitted(Event):
    """The refit ended: the final model trained on ``rows`` rows (training and held-out validation)
    for ``steps`` steps of its own (``epochs`` passes over them); ``message`` says it in a sentence."""

    rows: int
    steps: int
    epochs: float
    message: str = ""


@dataclass(frozen=True)
class EvalMetrics(Event):
    step: int
    epoch: float
    split: str  # "validation" or "test"
    metrics: dict[str, float] = field(default_factory=dict)
    is_best: bool = False


@dataclass(frozen=True)
class GenerationSamples(Event):
    """Text generation: a few fixed validation prompts answered by the model as it is at ``step`` (step 0:
    the base model before training), so a front end shows the answers change while it trains. Each
    sample: {"prompt": last user turn, "reference": the data's answer, "output": the model's}."""

    step: int
    epoch: float
    samples: tuple[dict[str, str], ...] = ()


@dataclass(frozen=True)
class Warning_(Event):
    message: str


@dataclass(frozen=True)
class Finished(Event):
    metrics: dict[str, float]
    samples_per_second: float
    run_dir: str
    export_dir: str | None


@dataclass(frozen=True)
class Failed(Event):
    message: str
    details: str = ""


@dataclass(frozen=True)
class Cancelled(Event):
    step: int = 0


@dataclass(frozen=True)
class Paused(Event):
    step: int = 0
    message: str = ""


class Callbacks:
    """Receives every event. Subclass and override ``on_event``; the default does nothing.

    Called on the engine's thread: an implementation must be quick and must not touch a GUI.
    """

    def on_event(self, event: Event) -> None:  # pragma: no cover - trivial
        pass


class CallbackList(Callbacks):
    def __init__(self, *callbacks: Callbacks | None) -> None:
        self.callbacks = [c for c in callbacks if c is not None]

    def on_event(self, event: Event) -> None:
        for cb in self.callbacks:
            cb.on_event(event)
