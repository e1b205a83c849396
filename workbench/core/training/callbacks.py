"""The training loop's features as callbacks that may steer it.

``TrainingLoop.run`` (loop.py) is the plain loop: epochs, batches, the optimizer step and its report.
At fixed points it calls hooks on its callbacks, in order. They read the loop (its model, config,
``state``) and steer it through a ``LoopControl``: evaluate now, save a checkpoint, stop, pause (as
transformers' ``TrainerCallback`` and ``TrainerControl`` do). A callback whose state decides what the
run does next gives it in ``state_dict``, under the names of ``LoopState`` fields: the loop writes it
into each checkpoint and hands it back on resume, so a resumed run goes on exactly as it would have
(Lightning's ``Callback.state_dict``), and the checkpoint's files stay what they always were.

The built-in callbacks, in the order the loop calls them:

    FaultInjection       the WORKBENCH_FAULT_* test hooks (present only when one is set)
    OutOfMemoryBackoff   halves the rows per forward call when memory runs out
    Validation           when to evaluate, the best score so far, early stopping
    BestWeights          keeps the best evaluation's weights and puts them back at the end
    PauseAgreement       a pause request; in a distributed run, one that every rank agreed to
    Checkpointing        when checkpoints are written (cadence) and what goes into them

The hooks of one optimizer step, as the loop calls them::

    on_batch_start -> (on_forward -> [on_out_of_memory])* -> [on_ranks_agreed]   each batch
    on_step_end(control)                  ask for an evaluation, a save or a stop
    on_evaluate(control, metrics)         when an evaluation was asked for
    on_before_save(control)               when training goes on after this step
    on_save(control)                      when a save was asked for; then Paused if asked for

A save asked for at the step where training stops is not made: the run ends there, with nothing
to go on from.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

from ..errors import OutOfMemory
from ..events import CheckpointSaved, Warning_
from .checkpoints import LoopState, load_weights, model_weights

if TYPE_CHECKING:
    import numpy as np

    from .loop import TrainingLoop

log = logging.getLogger(__name__)


@dataclass
class LoopControl:
    """What the callbacks ask of the loop at the end of an optimizer step; cleared before each."""

    should_evaluate: bool = False  # evaluate on the validation split now
    should_save: bool = False  # write a checkpoint (training goes on)
    save_reason: str = ""  # why, for the log: evaluation, interval, pause, ...
    should_stop: bool = False  # training ends after this step (early stopping)
    should_pause: bool = False  # write a checkpoint and raise Paused
    is_best: bool = False  # this step's evaluation scored best so far (set by Validation)

    def clear(self) -> None:
        self.should_evaluate = self.should_save = self.should_stop = self.should_pause = self.is_best = False
        self.save_reason = ""


class LoopCallback:
    """A feature of the training loop. Each hook does nothing unless overridden; the loop calls only
    the overridden ones, so an unused hook costs nothing per batch."""

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs of this callback, under ``LoopState`` field names."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take this callback's part of a checkpoint's loop state (a ``LoopState.to_dict()``)."""

    def on_train_start(self, loop: TrainingLoop, resumed: bool) -> None:
        """Training is set up (and, resumed, the checkpoint loaded); no step taken yet."""

    def on_batch_start(self, loop: TrainingLoop) -> None:
        """Before each batch; ``loop.current_step`` is the optimizer step it is part of (from 0)."""

    def on_forward(self, loop: TrainingLoop, rows: int) -> None:
        """Before each forward call, of ``rows`` rows (a batch may go through in several)."""

    def on_out_of_memory(self, loop: TrainingLoop, error: BaseException, window: list[np.ndarray]) -> bool:
        """A batch ran out of memory; ``window``: this optimizer step's batches so far, the failed
        one last. True: the loop rebuilds the step's gradient and tries the batch again."""
        return False

    def on_ranks_agreed(self, loop: TrainingLoop, pause: bool) -> None:
        """Distributed: the ranks' per-batch agreement; ``pause``: some rank was asked to pause."""

    def on_step_end(self, loop: TrainingLoop, control: LoopControl) -> None:
        """An optimizer step is done and reported (``loop.state.step`` counts it)."""

    def on_evaluate(self, loop: TrainingLoop, control: LoopControl, metrics: dict[str, float] | None) -> None:
        """The validation split was evaluated (``metrics``; None: the run has no validation split)."""

    def on_before_save(self, loop: TrainingLoop, control: LoopControl) -> None:
        """Training goes on after this step: the last chance to ask for a checkpoint or a pause."""

    def on_save(self, loop: TrainingLoop, control: LoopControl) -> None:
        """A checkpoint was asked for (``control.save_reason``)."""

    def on_train_end(self, loop: TrainingLoop) -> None:
        """Training ended normally (its last step, or a stop); not called when it raised."""


HOOKS = tuple(name for name in vars(LoopCallback) if name.startswith("on_"))
# The LoopState fields a callback may save; the loop keeps its position and counters itself.
_SAVED_FIELDS = {f.name for f in dataclasses.fields(LoopState)} - {
    "step", "epoch", "batch", "seen", "train_seconds", "metrics_bytes", "extra"}


class LoopHooks:
    """The loop's callbacks in calling order, with one method per hook that calls them all."""

    def __init__(self, callbacks: Iterable[LoopCallback]) -> None:
        self.callbacks = list(callbacks)
        self._bind()

    def append(self, callback: LoopCallback) -> None:
        self.callbacks.append(callback)
        self._bind()

    def _bind(self) -> None:
        # Per hook, the bound methods of the callbacks that override it: a hook called per batch
        # walks no list of no-ops.
        self._hooks: dict[str, list[Any]] = {
            name: [getattr(cb, name) for cb in self.callbacks if getattr(type(cb), name) is not getattr(LoopCallback, name)]
            for name in HOOKS
        }

    def state_dict(self) -> dict[str, Any]:
        """Every callback's state, for ``LoopState``: each field saved by one callback at most."""
        merged: dict[str, Any] = {}
        for cb in self.callbacks:
            part = cb.state_dict()
            if merged.keys() & part.keys():
                raise ValueError(f"{type(cb).__name__} saves {sorted(merged.keys() & part.keys())}, saved already")
            if part.keys() - _SAVED_FIELDS:  # anything else would be dropped from the checkpoint unseen
                raise ValueError(f"{type(cb).__name__} saves {sorted(part.keys() - _SAVED_FIELDS)}, "
                                 "which a checkpoint's loop state has no field for")
            merged.update(part)
        return merged

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.load_state_dict(state)

    def on_train_start(self, loop: TrainingLoop, resumed: bool) -> None:
        for hook in self._hooks["on_train_start"]:
            hook(loop, resumed)

    def on_batch_start(self, loop: TrainingLoop) -> None:
        for hook in self._hooks["on_batch_start"]:
            hook(loop)

    def on_forward(self, loop: TrainingLoop, rows: int) -> None:
        for hook in self._hooks["on_forward"]:
            hook(loop, rows)

    def on_out_of_memory(self, loop: TrainingLoop, error: BaseException, window: list[np.ndarray]) -> bool:
        return any([hook(loop, error, window) for hook in self._hooks["on_out_of_memory"]])

    def on_ranks_agreed(self, loop: TrainingLoop, pause: bool) -> None:
        for hook in self._hooks["on_ranks_agreed"]:
            hook(loop, pause)

    def on_step_end(self, loop: TrainingLoop, control: LoopControl) -> None:
        for hook in self._hooks["on_step_end"]:
            hook(loop, control)

    def on_evaluate(self, loop: TrainingLoop, control: LoopControl, metrics: dict[str, float] | None) -> None:
        for hook in self._hooks["on_evaluate"]:
            hook(loop, control, metrics)

    def on_before_save(self, loop: TrainingLoop, control: LoopControl) -> None:
        for hook in self._hooks["on_before_save"]:
            hook(loop, control)

    def on_save(self, loop: TrainingLoop, control: LoopControl) -> None:
        for hook in self._hooks["on_save"]:
            hook(loop, control)

    def on_train_end(self, loop: TrainingLoop) -> None:
        for hook in self._hooks["on_train_end"]:
            hook(loop)


# ---- fault injection (tests) -------------------------------------------------------------------------
@dataclass
class FaultInjection(LoopCallback):
    """Test hooks that make a run fail on purpose, set in the environment (``from_environment``):

    WORKBENCH_FAULT_OOM=STEP[:always]   that optimizer step (from 1) runs out of memory, once or at every size
    WORKBENCH_FAULT_KILL_RANK=RANK:STEP that rank kills itself (SIGKILL) at that step
    WORKBENCH_FAULT_CANCEL=STEP         rank 0 alone is cancelled at that step (distributed runs)
    """

    oom_step: int | None = None  # from 0, as loop.current_step counts
    oom_always: bool = False
    kill_rank: int | None = None
    kill_step: int = 1
    cancel_step: int | None = None
    oom_fired: bool = False  # not saved: a resumed run is a new process, and the hook fires in it again

    @classmethod
    def from_environment(cls) -> FaultInjection | None:
        """The hooks set in the environment; None when none is (real runs)."""
        oom = os.environ.get("WORKBENCH_FAULT_OOM", "")
        kill = os.environ.get("WORKBENCH_FAULT_KILL_RANK", "")
        cancel = os.environ.get("WORKBENCH_FAULT_CANCEL", "")
        if not (oom or kill or cancel):
            return None
        fault = cls(cancel_step=int(cancel) if cancel else None)
        if oom:
            step, _, mode = oom.partition(":")
            fault.oom_step, fault.oom_always = int(step) - 1, mode == "always"  # from 1 for people, 0 here
        if kill:
            rank, _, at = kill.partition(":")
            fault.kill_rank, fault.kill_step = int(rank), int(at or 1)
        return fault

    def on_batch_start(self, loop: TrainingLoop) -> None:
        step = loop.current_step + 1
        dist = loop.dist
        if dist is None:
            return
        if self.kill_rank is not None and dist.rank == self.kill_rank and step >= self.kill_step:
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        # Seen at this batch's agreement (one all-reduce, in the forward pass): every rank stops there.
        if self.cancel_step is not None and loop.is_distributed and dist.main and step >= self.cancel_step:
            loop.cancel.cancel()

    def on_forward(self, loop: TrainingLoop, rows: int) -> None:
        if self.oom_step == loop.current_step and (self.oom_always or not self.oom_fired):
            self.oom_fired = True
            raise MemoryError(f"injected out-of-memory at step {self.oom_step} ({rows} rows)")


# ---- out-of-memory back-off --------------------------------------------------------------------------
class OutOfMemoryBackoff(LoopCallback):
    """When a batch runs out of memory, halve the rows per forward call (the batch goes through in
    more calls, the same gradient) until it fits, down to one row; the loop then redoes the step's
    batches so far. The size is kept in checkpoints: a resumed run does not run out again."""

    def __init__(self) -> None:
        self.micro_batch: int | None = None  # the most rows per forward call; None: a batch at once

    def state_dict(self) -> dict[str, Any]:
        return {"micro_batch": self.micro_batch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.micro_batch = state.get("micro_batch")

    def on_out_of_memory(self, loop: TrainingLoop, error: BaseException, window: list[np.ndarray]) -> bool:
        step = loop.current_step + 1
        if loop.is_distributed:  # the other ranks cannot redo their part of the step with this one
            raise OutOfMemory(f"out of memory at step {step} on rank {loop.group.rank} ({error}); "
                              "lower --batch-size (rows per process) or --max-length") from None
        current = self.micro_batch or max(len(r) for r in window)
        if current <= 1:
            raise OutOfMemory(f"out of memory even with one row per call at step {step} ({error}); "
                              "lower --max-length or --batch-size, or train on a device with more "
                              "memory") from None
        self.micro_batch = max(1, current // 2)
        message = (f"out of memory at step {step} with {current} rows per call; going on with "
                   f"{self.micro_batch} (the same batch of {loop.cfg.batch_size}, in more calls)")
        log.warning(message)
        loop.callbacks.on_event(Warning_(message))
        return True


# ---- evaluation and early stopping -------------------------------------------------------------------
class Validation(LoopCallback):
    """Evaluation at each epoch's end (and the last step) and every ``eval_steps`` steps; keeps the
    best score of ``loop.metric`` and stops training after ``patience`` evaluations without a better one."""

    def __init__(self, eval_steps: int | None = None, patience: int | None = None) -> None:
        self.eval_steps, self.patience = eval_steps, patience
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.best_metrics: dict[str, float] | None = None
        self.bad_evals = 0  # evaluations since the best one
        self.evaluations: list[list] = []  # [step, metric value, loss] of each evaluation

    def state_dict(self) -> dict[str, Any]:
        return {"best_value": self.best_value, "best_step": self.best_step, "best_metrics": self.best_metrics,
                "bad_evals": self.bad_evals, "evaluations": list(self.evaluations)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_value, self.best_step = state.get("best_value"), state.get("best_step")
        self.best_metrics, self.bad_evals = state.get("best_metrics"), state.get("bad_evals", 0)
        self.evaluations = list(state.get("evaluations", []))

    def on_step_end(self, loop: TrainingLoop, control: LoopControl) -> None:
        step = loop.state.step
        at_epoch_end = loop.epoch_ended or step >= loop.total_steps
        control.should_evaluate = at_epoch_end or bool(self.eval_steps and step % self.eval_steps == 0)

    def on_evaluate(self, loop: TrainingLoop, control: LoopControl, metrics: dict[str, float] | None) -> None:
        if metrics is None:
            return
        value, step = metrics[loop.metric], loop.state.step
        self.evaluations.append([step, value, metrics.get("loss")])
        if self._better(loop, value):
            self.best_value, self.best_metrics, self.best_step, self.bad_evals = value, metrics, step, 0
            control.is_best = True
        else:
            self.bad_evals += 1
        if self.patience is not None and self.bad_evals >= self.patience:
            control.should_stop = True

    def _better(self, loop: TrainingLoop, value: float) -> bool:
        if self.best_value is None:
            return True
        greater = loop.task.greater_is_better.get(loop.metric, True)
        return value > self.best_value if greater else value < self.best_value


class BestWeights(LoopCallback):
    """The weights of the best evaluation so far, kept on the CPU (so they survive later steps
    without a second GPU copy) and in ``checkpoints/best``; put back into the model when training
    ends at another step. Only rank 0 keeps them: it alone goes on to test and export."""

    def __init__(self) -> None:
        self.weights: dict | None = None  # not in state_dict: checkpoints/best holds them

    def on_train_start(self, loop: TrainingLoop, resumed: bool) -> None:
        if resumed and loop.checkpoints is not None:
            self.weights = loop.checkpoints.best_weights() if loop.is_main else None

    def on_evaluate(self, loop: TrainingLoop, control: LoopControl, metrics: dict[str, float] | None) -> None:
        if not control.is_best:
            return
        if not loop.is_main:
            self.weights = None
            return
        self.weights = {k: v.detach().to("cpu", copy=True) for k, v in model_weights(loop.model).items()}
        if loop.checkpoints is not None:
            loop.checkpoints.save_best(loop.sync_state(), self.weights)

    def on_train_end(self, loop: TrainingLoop) -> None:
        state = loop.sync_state()
        if self.weights is not None and state.best_step != state.step:
            load_weights(loop.model, self.weights)
        # The copy goes now, not with the loop: the report and the export come after training, and
        # a second copy of the weights would raise their peak memory by the model's size.
        self.weights = None


# ---- pause and checkpoints ---------------------------------------------------------------------------
class PauseAgreement(LoopCallback):
    """A pause asked for (``CancelToken.pause``) stops training at the end of the step, after a
    checkpoint. Distributed, the ranks pause together: at the first step end after any of them saw
    the request in the per-batch agreement, so that all stop at the same step."""

    def __init__(self) -> None:
        self.agreed = False  # not saved: a paused run stops, and its resumed run starts unpaused

    def on_ranks_agreed(self, loop: TrainingLoop, pause: bool) -> None:
        self.agreed = self.agreed or pause

    def on_before_save(self, loop: TrainingLoop, control: LoopControl) -> None:
        control.should_pause = self.agreed if loop.is_distributed else loop.cancel.pause_requested


class Checkpointing(LoopCallback):
    """Writes a checkpoint (rank 0; the ranks hold the same weights) after each evaluation, at a
    pause, every ``save_steps`` steps and every ``save_minutes`` minutes, unless training ends at
    that step. A checkpoint holds the weights, optimizer, scheduler, scaler, random states and the
    loop's state with every callback's part (``TrainingLoop.sync_state``)."""

    def __init__(self, save_steps: int | None = None, save_minutes: float | None = None) -> None:
        self.save_steps, self.save_minutes = save_steps, save_minutes
        self.last_save = time.monotonic()  # not saved: minutes count from each start

    def on_train_start(self, loop: TrainingLoop, resumed: bool) -> None:
        self.last_save = time.monotonic()

    def on_evaluate(self, loop: TrainingLoop, control: LoopControl, metrics: dict[str, float] | None) -> None:
        control.should_save, control.save_reason = True, "evaluation"

    def on_before_save(self, loop: TrainingLoop, control: LoopControl) -> None:
        if control.should_pause:
            control.should_save, control.save_reason = True, "pause"
        elif not control.should_save and self._interval_due(loop.state.step):
            control.should_save, control.save_reason = True, "interval"

    def _interval_due(self, step: int) -> bool:
        if self.save_steps and step % self.save_steps == 0:
            return True
        return bool(self.save_minutes and time.monotonic() - self.last_save >= self.save_minutes * 60)

    def on_save(self, loop: TrainingLoop, control: LoopControl) -> None:
        if loop.checkpoints is None or not loop.is_main:
            return
        state = loop.sync_state()
        state.metrics_bytes = loop.metrics_position()  # where metrics.jsonl is cut back to on resume
        path = loop.checkpoints.save(state, loop.model, loop.optimizer, loop.scheduler, loop.scaler)
        self.last_save = time.monotonic()
        loop.callbacks.on_event(CheckpointSaved(state.step, str(path), loop.checkpoints.disk_bytes()))
        log.info("checkpoint at step %d (%s): %s", state.step, control.save_reason or "asked for", path)
