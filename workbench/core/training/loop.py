"""The generic training loop. It knows the Task interface and nothing about any model or task.

AdamW (fused on CUDA and the CPU), linear warm-up then decay, bf16/fp16 autocast on GPUs (bf16 on CPUs with bf16 units), gradient
accumulation and clipping, evaluation each epoch and optionally every N steps, early stopping with
the best weights restored. The cancel token is checked before every micro-batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..cancel import NEVER, CancelToken
from ..config import TrainConfig
from ..errors import OutOfMemory, Paused
from ..events import Callbacks, CheckpointSaved, EvalMetrics, PhaseChanged, StepMetrics, Warning_
from ..tasks.base import EncodedSplit, EvalResult, PreparedData, Task
from .batching import length_grouped_batches, random_batches, sorted_batches, split_by_length, token_balanced_batches
from .checkpoints import Checkpoints, LoopState

log = logging.getLogger(__name__)

# The fixed cost of one forward and backward call on the CPU, in padded tokens' worth of work
# (MiniLM-sized models): a random batch is split by length only where that saves more than this.
SPLIT_OVERHEAD_TOKENS = 64


@dataclass
class TrainOutcome:
    steps: int
    train_seconds: float
    samples_seen: int
    samples_per_second: float
    best_step: int | None
    best_metrics: dict[str, float] | None
    stopped_early: bool
    evaluations: list = dataclasses.field(default_factory=list)  # [step, metric value, loss] per validation


def _to_device(batch: dict[str, np.ndarray], device) -> dict:
    import torch

    non_blocking = device.type == "cuda"
    return {k: torch.from_numpy(v).to(device, non_blocking=non_blocking) for k, v in batch.items()}


def planned_steps(n_rows: int, cfg: TrainConfig) -> tuple[int, int]:
    """(optimizer steps per epoch, optimizer steps in all) for ``n_rows`` training rows."""
    n_batches = math.ceil(n_rows / cfg.batch_size)
    steps_per_epoch = max(1, math.ceil(n_batches / cfg.grad_accum))
    total_steps = max(1, math.ceil(cfg.epochs * steps_per_epoch))
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    return steps_per_epoch, total_steps


class TrainingLoop:
    def __init__(
        self,
        model,
        task: Task,
        data: PreparedData,
        train: EncodedSplit,
        validation: EncodedSplit | None,
        cfg: TrainConfig,
        device,
        precision: str,
        callbacks: Callbacks,
        cancel: CancelToken = NEVER,
        checkpoints: Checkpoints | None = None,
        metrics_position: Callable[[], int] | None = None,
        stop_at: int | None = None,
        method=None,
    ) -> None:
        # ``stop_at``: stop at that step of the configured run, its learning-rate schedule unchanged
        # (a refit repeats the first pass on all rows and stops where the validation split chose).
        self.stop_at = stop_at
        self.model, self.task, self.data = model, task, data
        self.train_split, self.val_split = train, validation
        self.cfg, self.device, self.precision = cfg, device, precision
        self.callbacks, self.cancel = callbacks, cancel
        self.metric = cfg.metric or task.default_metric
        self.checkpoints = checkpoints  # None: no checkpoints (library use, tests of the loop alone)
        self.metrics_position = metrics_position or (lambda: 0)
        self.method = method  # TrainingMethod (training/methods.py): AdaLoRA's hooks; None: plain training
        self.micro_batch: int | None = None  # set by an out-of-memory back-off
        self._step = 0  # the optimizer step being computed, for fault injection
        self._fault = _injected_oom()

    # ---- helpers --------------------------------------------------------------------------------
    def autocast(self):
        import torch

        if self.precision in ("bf16", "fp16") and self.device.type in ("cuda", "mps"):
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            return torch.autocast(self.device.type, dtype=dtype)
        if self.precision == "bf16" and self.device.type == "cpu":
            # Matrix products in bf16 on the CPU's bf16 units; weights, optimizer and loss stay fp32.
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _optimizer(self, total_steps: int):
        import torch
        from transformers import get_linear_schedule_with_warmup

        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            # Biases and norm weights are not decayed (the BERT recipe).
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
        groups = [
            {"params": decay, "weight_decay": self.cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        # The fused kernel updates all parameters in a few passes. On the CPU it is ~5x faster than
        # torch's default there (one small op per tensor), which for short inputs costs as much as
        # the forward pass; transformers' Trainer uses it too.
        kwargs = {"fused": True} if self.device.type in ("cuda", "cpu") else {}
        opt = torch.optim.AdamW(groups, lr=self.cfg.lr, **kwargs)
        warmup = int(round(self.cfg.warmup_ratio * total_steps))
        return opt, get_linear_schedule_with_warmup(opt, warmup, total_steps)

    def _grouped(self) -> bool:
        grouped = self.cfg.group_by_length
        return grouped if grouped is not None else self.task.group_by_length_default

    def _batches(self, epoch: int, lengths: np.ndarray | None = None) -> list[np.ndarray]:
        rng = np.random.default_rng(self.cfg.seed + epoch)
        lengths = self.train_split.lengths if lengths is None else lengths
        if self._grouped():
            group = token_balanced_batches if self.task.token_level_loss else length_grouped_batches
            return group(lengths, self.cfg.batch_size, rng)
        return random_batches(len(lengths), self.cfg.batch_size, rng)

    def _forward_backward(self, rows: np.ndarray, scaler) -> "torch.Tensor":  # noqa: F821 - torch loads lazily
        """Loss and gradients of one batch; returns the (detached) batch loss.

        Random batches on the CPU go through as micro-batches of similar length: their short rows
        are not padded to the longest, and each part's mean loss is weighted by its share of the
        batch's loss units, so the gradient is the whole batch's. GPUs take the batch at once:
        padding costs them little, another call more."""
        split = self.train_split
        if self.device.type == "cpu" and self.task.split_batches_by_length and not self._grouped():
            parts = split_by_length(rows, split.lengths[rows], SPLIT_OVERHEAD_TOKENS)
        else:
            parts = [rows]
        if self.micro_batch:  # after running out of memory: at most this many rows per call
            m = self.micro_batch
            parts = [q[i:i + m] for q in parts for i in range(0, len(q), m)]
        host = [self.task.make_batch(split, p) for p in parts]
        if len(host) == 1:
            weights = [1.0]
        else:
            units = [self.task.loss_units(h["labels"]) for h in host]
            weights = [u / max(sum(units), 1) for u in units]
        total = None
        for h, w in zip(host, weights):
            self._maybe_inject_oom(len(h["labels"]))
            batch = _to_device(h, self.device)
            labels = batch.pop("labels")
            with self.autocast():
                logits = self.task.forward(self.model, batch)
            loss = self.task.loss(logits, labels)
            if w != 1.0:
                loss = loss * w
            extra = self.method.regularization(self.model) if self.method is not None else None
            if extra is not None:
                loss = loss + extra * w
            scaled = loss / self.cfg.grad_accum
            # Cancel between forward and backward too: a step's first call can take seconds (the
            # first batch is the longest, and the CPU kernels are set up then). A cancelled run's
            # half-made gradient is never used; a pause waits for the step's end.
            self.cancel.raise_if_cancelled()
            (scaler.scale(scaled) if scaler else scaled).backward()
            total = loss.detach() if total is None else total + loss.detach()
        return total

    def _maybe_inject_oom(self, rows: int) -> None:
        """WORKBENCH_FAULT_OOM=STEP raises once at that optimizer step, STEP:always at every size."""
        step, always = self._fault
        if step == self._step and (always or not getattr(self, "_fault_fired", False)):
            self._fault_fired = True
            raise MemoryError(f"injected out-of-memory at step {step} ({rows} rows)")

    def _train_batch(self, rows: np.ndarray, scaler, window: list[np.ndarray]):
        """``_forward_backward`` with out-of-memory back-off: the micro-batch is halved (the batch goes
        through in more calls, the same gradient) until it fits, down to one row."""
        import torch

        window.append(rows)
        while True:
            try:
                return self._forward_backward(rows, scaler)
            except (MemoryError, torch.OutOfMemoryError) as e:
                current = self.micro_batch or max(len(r) for r in window)
                if current <= 1:
                    raise OutOfMemory(f"out of memory even with one row per call at step {self._step + 1} ({e}); "
                                      "lower --max-length or --batch-size, or train on a device with more "
                                      "memory") from None
                self.micro_batch = max(1, current // 2)
                message = (f"out of memory at step {self._step + 1} with {current} rows per call; going on with "
                           f"{self.micro_batch} (the same batch of {self.cfg.batch_size}, in more calls)")
                log.warning(message)
                self.callbacks.on_event(Warning_(message))
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                # The failed call may have left part of its gradient: rebuild this step's gradient
                # from the batches of the accumulation window that went through before it.
                self.model.zero_grad(set_to_none=True)
                for earlier in window[:-1]:
                    self._forward_backward(earlier, scaler)

    def _better(self, metric: str, new: float, old: float | None) -> bool:
        if old is None:
            return True
        return new < old if not self.task.greater_is_better.get(metric, True) else new > old

    # ---- inference ------------------------------------------------------------------------------
    def predict(self, split: EncodedSplit, phase: str = "evaluating") -> tuple[np.ndarray, float]:
        """Logits for every row, in row order, and the mean loss."""
        import torch

        model = self.model
        was_training = model.training
        model.eval()
        bs = self.cfg.eval_batch_size or 2 * self.cfg.batch_size
        outs: list[np.ndarray] = []
        order: list[np.ndarray] = []
        loss_sum, n = 0.0, 0
        with torch.inference_mode():
            for rows in sorted_batches(split.lengths, bs):
                self.cancel.raise_if_cancelled()
                batch = _to_device(self.task.make_batch(split, rows), self.device)
                labels = batch.pop("labels")
                with self.autocast():
                    logits = self.task.forward(model, batch)
                loss_sum += float(self.task.loss(logits, labels)) * len(rows)
                n += len(rows)
                outs.append(self.task.kept_outputs(logits, labels).float().cpu().numpy())
                order.append(rows)
        if was_training:
            model.train()
        if not outs:
            return np.zeros((0,)), float("nan")
        if outs[0].ndim == 3:
            # Per-token outputs (tagging): each batch is as wide as its longest row; pad to one width
            # (the padding sits where labels are ignored) so the rows can be gathered in one array.
            width = max(o.shape[1] for o in outs)
            outs = [np.pad(o, ((0, 0), (0, width - o.shape[1]), (0, 0))) for o in outs]
        # Padding to the longest row in a batch changes nothing for the rest: scatter back in place.
        logits = np.concatenate(outs)
        result = np.empty_like(logits)
        result[np.concatenate(order)] = logits
        return result, loss_sum / max(n, 1)

    def evaluate(self, split: EncodedSplit, phase: str = "evaluating") -> tuple[EvalResult, np.ndarray]:
        logits, loss = self.predict(split, phase)
        return self.task.evaluate(logits, split, loss, self.data), logits

    # ---- preflight ------------------------------------------------------------------------------
    def timed_batches(self, batches: list[np.ndarray]) -> list[float]:
        """Seconds of each batch's forward, backward, clipping and update, as ``run`` does them (the
        preflight estimate, core/preflight.py). The model's weights change: it is a throw-away model."""
        import torch

        model, device = self.model, self.device
        if device.type == "cuda":
            torch.cuda.set_device(device)
        model.to(device)
        model.train()
        optimizer, scheduler = self._optimizer(max(len(batches), 1))
        scaler = torch.amp.GradScaler(device.type) if self.precision == "fp16" else None
        seconds = []
        for rows in batches:
            self.cancel.raise_if_cancelled()
            t0 = time.perf_counter()
            loss = self._train_batch(rows, scaler, [])
            if scaler:
                scaler.unscale_(optimizer)
            if self.cfg.max_grad_norm and self.cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), self.cfg.max_grad_norm)
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            float(loss)  # waits for the device
            seconds.append(time.perf_counter() - t0)
        return seconds

    def epoch_batches(self, epoch: int = 0, lengths: np.ndarray | None = None) -> list[np.ndarray]:
        """The batches of rows ``run`` trains on in ``epoch``, in order; with ``lengths``, those it
        would make of rows of these lengths."""
        return self._batches(epoch, lengths)

    # ---- training -------------------------------------------------------------------------------
    def run(self, resume: Path | None = None) -> TrainOutcome:
        """Train to the end (or early stopping); with ``resume``, from that checkpoint on, exactly as
        the uninterrupted run would have gone on (same batches, dropout, optimizer state)."""
        import torch

        cfg, model, device = self.cfg, self.model, self.device
        torch.manual_seed(cfg.seed)
        steps_per_epoch, total_steps = planned_steps(len(self.train_split), cfg)
        schedule_steps = total_steps
        if self.stop_at:
            total_steps = min(total_steps, self.stop_at)
        if device.type == "cuda":
            torch.cuda.set_device(device)  # the current device is per thread; the app trains in a worker thread
        model.to(device)
        model.train()
        optimizer, scheduler = self._optimizer(schedule_steps)
        scaler = torch.amp.GradScaler(device.type) if self.precision == "fp16" else None
        # loss.item() forces a GPU sync; on GPUs read the loss only every few steps.
        log_every = 1 if device.type == "cpu" else 10

        s = LoopState()
        best_state = None
        if resume is not None:
            s = self.checkpoints.load(resume, model, optimizer, scheduler, scaler)
            best_state = self.checkpoints.best_weights()
            self.micro_batch = s.micro_batch
            self.callbacks.on_event(PhaseChanged("training", f"from step {s.step} of {total_steps}"))
        else:
            self.callbacks.on_event(PhaseChanged("training", f"{total_steps} steps"))
        stopped_early = False
        running_loss = torch.zeros((), device=device)
        running_n = 0
        last_save = time.monotonic()

        def save(reason: str) -> None:
            nonlocal last_save
            if self.checkpoints is None:
                return
            s.micro_batch = self.micro_batch
            s.metrics_bytes = self.metrics_position()
            path = self.checkpoints.save(s, model, optimizer, scheduler, scaler)
            last_save = time.monotonic()
            self.callbacks.on_event(CheckpointSaved(s.step, str(path), self.checkpoints.disk_bytes()))
            log.info("checkpoint at step %d (%s): %s", s.step, reason, path)

        def do_eval() -> bool:
            """Evaluate on the validation split; returns True when training should stop."""
            nonlocal best_state
            if self.val_split is None:
                return False
            self.callbacks.on_event(PhaseChanged("evaluating", "validation"))
            result, _ = self.evaluate(self.val_split)
            value = result.metrics[self.metric]
            s.evaluations.append([s.step, value, result.metrics.get("loss")])
            improved = self._better(self.metric, value, s.best_value)
            if improved:
                s.best_value, s.best_metrics, s.best_step, s.bad_evals = value, result.metrics, s.step, 0
                # Kept on the CPU so the best weights survive later steps without a second GPU copy.
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                if self.checkpoints is not None:
                    self.checkpoints.save_best(s, best_state)
            else:
                s.bad_evals += 1
            self.callbacks.on_event(
                EvalMetrics(s.step, s.step / steps_per_epoch, "validation", dict(result.metrics), improved)
            )
            self.callbacks.on_event(PhaseChanged("training"))
            patience = cfg.early_stopping_patience
            return patience is not None and s.bad_evals >= patience

        done = s.step >= total_steps
        while not done:
            batches = self._batches(s.epoch)
            t0 = time.perf_counter()
            window: list[np.ndarray] = []  # this optimizer step's batches (for the out-of-memory retry)
            while s.batch < len(batches):
                rows = batches[s.batch]
                self.cancel.raise_if_cancelled()
                self._step = s.step
                loss = self._train_batch(rows, scaler, window)
                running_loss += loss
                running_n += 1
                s.seen += len(rows)
                s.batch += 1
                last_in_epoch = s.batch == len(batches)
                if s.batch % cfg.grad_accum and not last_in_epoch:
                    continue
                window = []
                self.cancel.raise_if_cancelled()
                if scaler:
                    scaler.unscale_(optimizer)
                grad_norm = None
                if cfg.max_grad_norm and cfg.max_grad_norm > 0:
                    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                if scaler:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                if self.method is not None:
                    self.method.after_optimizer_step(s.step)
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                s.step += 1
                if last_in_epoch:  # the state says where training goes on: the next epoch's start
                    s.epoch, s.batch = s.epoch + 1, 0

                if s.step % log_every == 0 or s.step == total_steps:
                    now = time.perf_counter()
                    elapsed = s.train_seconds + (now - t0)
                    mean_loss = float(running_loss) / max(running_n, 1)
                    sps = s.seen / elapsed if elapsed > 0 else 0.0
                    self.callbacks.on_event(
                        StepMetrics(
                            step=s.step,
                            total_steps=total_steps,
                            epoch=s.step / steps_per_epoch,
                            loss=mean_loss,
                            learning_rate=float(scheduler.get_last_lr()[0]),
                            samples_per_second=sps,
                            elapsed_s=elapsed,
                            eta_s=(total_steps - s.step) * elapsed / s.step,
                            grad_norm=float(grad_norm) if grad_norm is not None else None,
                        )
                    )
                    running_loss.zero_()
                    running_n = 0

                stop_now = s.step >= total_steps
                at_epoch_end = last_in_epoch or stop_now
                evaluated = False
                if (cfg.eval_steps and s.step % cfg.eval_steps == 0 and not at_epoch_end) or at_epoch_end:
                    s.train_seconds += time.perf_counter() - t0
                    evaluated = True
                    if do_eval():
                        stopped_early = not stop_now
                        stop_now = True
                    t0 = time.perf_counter()
                if not stop_now:
                    paused = self.cancel.pause_requested
                    due = (evaluated or paused or (cfg.save_steps and s.step % cfg.save_steps == 0)
                           or (cfg.save_minutes and time.monotonic() - last_save >= cfg.save_minutes * 60))
                    if due:
                        s.train_seconds += time.perf_counter() - t0
                        save("pause" if paused else "evaluation" if evaluated else "interval")
                        t0 = time.perf_counter()
                    if paused:
                        raise Paused(s.step, f"paused at step {s.step} of {total_steps}")
                if stop_now:
                    done = True
                    break
                if last_in_epoch:
                    break
            s.train_seconds += time.perf_counter() - t0

        if best_state is not None and s.best_step != s.step:
            model.load_state_dict(best_state)
        return TrainOutcome(
            steps=s.step,
            train_seconds=s.train_seconds,
            samples_seen=s.seen,
            samples_per_second=s.seen / s.train_seconds if s.train_seconds > 0 else 0.0,
            best_step=s.best_step,
            best_metrics=s.best_metrics,
            stopped_early=stopped_early,
            evaluations=list(s.evaluations),
        )


def _injected_oom() -> tuple[int | None, bool]:
    """WORKBENCH_FAULT_OOM=STEP[:always]: a test hook that makes that optimizer step run out of memory."""
    spec = os.environ.get("WORKBENCH_FAULT_OOM", "")
    if not spec:
        return None, False
    step, _, mode = spec.partition(":")
    return int(step) - 1, mode == "always"  # steps count from 1 for people, from 0 here
