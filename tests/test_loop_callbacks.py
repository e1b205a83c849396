"""The training loop's callbacks (workbench/core/training/callbacks.py): a caller's own callback steers
the loop, and each built-in one's state survives a checkpoint. The loop trains a small linear model
on a stand-in task here, so these tests take a second; test_resume.py runs the real thing."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from workbench.core.config import TrainConfig
from workbench.core.events import Callbacks, CheckpointSaved, EvalMetrics, StepMetrics, Warning_
from workbench.core.tasks.base import EncodedSplit, EvalResult
from workbench.core.training.callbacks import (
    BestWeights,
    Checkpointing,
    FaultInjection,
    LoopCallback,
    LoopControl,
    LoopHooks,
    OutOfMemoryBackoff,
    PauseAgreement,
    Validation,
)
from workbench.core.training.checkpoints import Checkpoints, LoopState
from workbench.core.training.loop import TrainingLoop


class LinearTask:
    """The part of the Task interface the loop uses, for rows of 4 numbers and 2 classes. Its
    validation ``score`` follows ``scores`` (then the negative loss), to script early stopping."""

    default_metric = "score"
    greater_is_better = {"score": True, "loss": False}
    token_level_loss = False
    split_batches_by_length = False
    prefetch_batches = False

    def __init__(self, scores=()) -> None:
        self.scores = list(scores)

    def use_model(self, model, device) -> None:
        pass

    def after_validation(self, step: int, epoch: float) -> None:
        pass  # the loop's hook after each validation pass (text generation's live samples): nothing here

    def groups_by_length(self, method: str) -> bool:
        return False

    def loss_units(self, labels) -> int:
        return len(labels)

    def loop_batch(self, split, rows):
        return {"x": split.inputs["x"][rows], "labels": split.labels[rows]}

    def forward(self, model, batch):
        return model(batch["x"])

    def loss(self, logits, labels):
        return torch.nn.functional.cross_entropy(logits, labels)

    def inference_model(self, model):
        return model

    def kept_outputs(self, logits, labels):
        return logits

    def evaluate(self, logits, split, loss, data) -> EvalResult:
        score = self.scores.pop(0) if self.scores else -loss
        return EvalResult({"score": float(score), "loss": float(loss)}, {})


def split(n: int, seed: int) -> EncodedSplit:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    return EncodedSplit("train", None, {"x": x}, y, np.ones(n, dtype=np.int64))


class Recorder(Callbacks):
    def __init__(self) -> None:
        self.events: list = []

    def on_event(self, event) -> None:
        self.events.append(event)

    def of(self, kind) -> list:
        return [e for e in self.events if isinstance(e, kind)]


def make_loop(tmp_path, validation: bool = False, scores=(), hooks=(), **train) -> tuple[TrainingLoop, Recorder]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(8, 2))
    opts = dict(epochs=2, batch_size=8, lr=1e-2, seed=0, save_minutes=0)
    opts.update(train)
    events = Recorder()
    loop = TrainingLoop(model, LinearTask(scores), None, split(64, 1), split(16, 2) if validation else None,
                        TrainConfig(**opts), torch.device("cpu"), "fp32", events,
                        checkpoints=Checkpoints(tmp_path / "checkpoints"), hooks=hooks)
    return loop, events


class StopAndSave(LoopCallback):
    """Asks for a checkpoint at step ``save_at`` and stops training at step ``stop_at``."""

    def __init__(self, save_at: int, stop_at: int) -> None:
        self.save_at, self.stop_at, self.saves = save_at, stop_at, []

    def on_step_end(self, loop, control) -> None:
        control.should_save = loop.state.step == self.save_at
        control.should_stop = loop.state.step == self.stop_at

    def on_save(self, loop, control) -> None:
        self.saves.append((loop.state.step, control.save_reason))


def test_a_callback_can_stop_the_loop_early_and_ask_for_a_save(tmp_path):
    own = StopAndSave(save_at=2, stop_at=5)
    loop, events = make_loop(tmp_path, hooks=[own])  # 8 steps an epoch, 16 in all
    outcome = loop.run()
    assert outcome.steps == 5 and outcome.stopped_early
    assert [e.step for e in events.of(StepMetrics)] == [1, 2, 3, 4, 5]
    assert [e.step for e in events.of(CheckpointSaved)] == [2]
    assert own.saves == [(2, "")]  # its own save: no built-in reason
    assert [p.name for p in loop.checkpoints.complete()] == ["step-2"]
    assert Checkpoints.loop_state(loop.checkpoints.latest()).step == 2


def test_without_callbacks_of_its_own_the_loop_runs_to_the_end_saving_at_each_epoch(tmp_path):
    loop, events = make_loop(tmp_path, save_steps=3)
    outcome = loop.run()
    assert outcome.steps == 16 and not outcome.stopped_early
    # Every third step, and the end of the first epoch (an evaluation, of no validation split here);
    # none at the last step: the run ends there.
    assert [e.step for e in events.of(CheckpointSaved)] == [3, 6, 8, 9, 12, 15]


def test_early_stopping_puts_the_best_weights_back(tmp_path):
    best = {}

    class KeepBest(LoopCallback):
        def on_evaluate(self, loop, control, metrics) -> None:
            if control.is_best:
                best.update({k: v.clone() for k, v in loop.model.state_dict().items()})

    # Evaluated every 2 steps: the second evaluation scores best, the next two do not (patience 2).
    loop, events = make_loop(tmp_path, validation=True, scores=[0.5, 0.9, 0.7, 0.8], eval_steps=2,
                             early_stopping_patience=2, hooks=[KeepBest()])
    outcome = loop.run()
    assert outcome.steps == 8 and outcome.stopped_early and outcome.best_step == 4
    assert [(e.step, e.is_best) for e in events.of(EvalMetrics)] == [(2, True), (4, True), (6, False), (8, False)]
    assert [row[:2] for row in outcome.evaluations] == [[2, 0.5], [4, 0.9], [6, 0.7], [8, 0.8]]
    for name, value in loop.model.state_dict().items():
        assert torch.equal(value, best[name]), name
    assert loop.checkpoints.best() is not None


def test_a_paused_loop_resumes_bit_exact(tmp_path):
    reference, ref_events = make_loop(tmp_path / "ref", validation=True, eval_steps=3)
    reference.run()

    class PauseAt(LoopCallback):
        def on_step_end(self, loop, control) -> None:
            if loop.state.step == 5:
                loop.cancel.pause()

    from workbench.core.cancel import CancelToken
    from workbench.core.errors import Paused

    loop, events = make_loop(tmp_path / "run", validation=True, eval_steps=3, hooks=[PauseAt()])
    loop.cancel = CancelToken()
    with pytest.raises(Paused):
        loop.run()
    again, later = make_loop(tmp_path / "run", validation=True, eval_steps=3)
    outcome = again.run(resume=again.checkpoints.latest())
    losses = [(e.step, e.loss) for e in events.of(StepMetrics) + later.of(StepMetrics)]
    assert losses == [(e.step, e.loss) for e in ref_events.of(StepMetrics)]  # float equality
    assert outcome.evaluations == [row for row in reference.sync_state().evaluations]


def round_trip(callback: LoopCallback) -> dict:
    """``callback``'s state through a checkpoint's state.json into a new callback of its kind."""
    state = LoopState(**callback.state_dict())
    saved = json.loads(json.dumps(state.to_dict()))
    fresh = type(callback)()
    fresh.load_state_dict(LoopState.from_dict(saved).to_dict())
    return fresh.state_dict()


def test_each_built_in_callbacks_state_dict_round_trips():
    backoff = OutOfMemoryBackoff()
    backoff.micro_batch = 4
    validation = Validation()
    validation.best_value, validation.best_step, validation.bad_evals = 0.75, 6, 2
    validation.best_metrics = {"score": 0.75, "loss": 0.5}
    validation.evaluations = [[3, 0.5, 0.7], [6, 0.75, 0.5], [9, 0.6, 0.6]]
    built_in = [backoff, validation, BestWeights(), PauseAgreement(), Checkpointing(), FaultInjection()]
    for callback in built_in:
        assert round_trip(callback) == callback.state_dict(), type(callback).__name__
    assert round_trip(backoff) == {"micro_batch": 4}
    assert round_trip(validation)["evaluations"] == validation.evaluations
    # Together they save under distinct LoopState fields: the checkpoint's format stays as it was.
    merged = LoopHooks(built_in).state_dict()
    assert set(merged) <= {f.name for f in dataclasses.fields(LoopState)}
    restored = LoopHooks([OutOfMemoryBackoff(), Validation()])
    restored.load_state_dict(LoopState(**merged).to_dict())
    assert restored.state_dict() == merged


def test_two_callbacks_saving_the_same_field_or_one_a_checkpoint_lacks_are_refused():
    with pytest.raises(ValueError, match="micro_batch"):
        LoopHooks([OutOfMemoryBackoff(), OutOfMemoryBackoff()]).state_dict()

    class Counts(LoopCallback):
        def state_dict(self) -> dict:
            return {"my_counter": 3}

    with pytest.raises(ValueError, match="my_counter"):
        LoopHooks([Counts()]).state_dict()


def test_control_is_cleared_before_each_step():
    control = LoopControl(should_evaluate=True, should_save=True, save_reason="x", should_stop=True,
                          should_pause=True, is_best=True)
    control.clear()
    assert control == LoopControl()


def test_fault_injection_comes_only_from_the_environment(monkeypatch):
    for name in ("WORKBENCH_FAULT_OOM", "WORKBENCH_FAULT_KILL_RANK", "WORKBENCH_FAULT_CANCEL"):
        monkeypatch.delenv(name, raising=False)
    assert FaultInjection.from_environment() is None
    monkeypatch.setenv("WORKBENCH_FAULT_OOM", "4:always")
    monkeypatch.setenv("WORKBENCH_FAULT_KILL_RANK", "1:3")
    fault = FaultInjection.from_environment()
    assert fault is not None
    assert (fault.oom_step, fault.oom_always, fault.kill_rank, fault.kill_step, fault.cancel_step) == (3, True, 1, 3, None)


def test_an_injected_out_of_memory_halves_the_rows_per_call(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_FAULT_OOM", "3")
    loop, events = make_loop(tmp_path)
    outcome = loop.run()
    assert outcome.steps == 16 and loop.micro_batch == 4
    warnings = [e.message for e in events.of(Warning_)]
    assert warnings == ["out of memory at step 3 with 8 rows per call; going on with 4 (the same batch of 8, "
                        "in more calls)"]
