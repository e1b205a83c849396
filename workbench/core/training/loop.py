"""The generic training loop. It knows the Task interface and nothing about any model or task.

AdamW (fused on CUDA and the CPU), linear warm-up then decay, bf16/fp16 autocast on GPUs, gradient
accumulation and clipping, evaluation each epoch and optionally every N steps, early stopping with
the best weights restored. The cancel token is checked before every micro-batch.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import numpy as np

from ..cancel import NEVER, CancelToken
from ..config import TrainConfig
from ..events import Callbacks, EvalMetrics, PhaseChanged, StepMetrics
from ..tasks.base import EncodedSplit, EvalResult, PreparedData, Task
from .batching import length_grouped_batches, random_batches, sorted_batches, split_by_length, token_balanced_batches

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


def _to_device(batch: dict[str, np.ndarray], device) -> dict:
    import torch

    non_blocking = device.type == "cuda"
    return {k: torch.from_numpy(v).to(device, non_blocking=non_blocking) for k, v in batch.items()}


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
    ) -> None:
        self.model, self.task, self.data = model, task, data
        self.train_split, self.val_split = train, validation
        self.cfg, self.device, self.precision = cfg, device, precision
        self.callbacks, self.cancel = callbacks, cancel
        self.metric = cfg.metric or task.default_metric

    # ---- helpers --------------------------------------------------------------------------------
    def autocast(self):
        import torch

        if self.precision in ("bf16", "fp16") and self.device.type in ("cuda", "mps"):
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            return torch.autocast(self.device.type, dtype=dtype)
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

    def _batches(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng(self.cfg.seed + epoch)
        if self._grouped():
            group = token_balanced_batches if self.task.token_level_loss else length_grouped_batches
            return group(self.train_split.lengths, self.cfg.batch_size, rng)
        return random_batches(len(self.train_split), self.cfg.batch_size, rng)

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
        host = [self.task.make_batch(split, p) for p in parts]
        if len(host) == 1:
            weights = [1.0]
        else:
            units = [self.task.loss_units(h["labels"]) for h in host]
            weights = [u / max(sum(units), 1) for u in units]
        total = None
        for h, w in zip(host, weights):
            batch = _to_device(h, self.device)
            labels = batch.pop("labels")
            with self.autocast():
                logits = self.task.forward(self.model, batch)
            loss = self.task.loss(logits, labels)
            if w != 1.0:
                loss = loss * w
            scaled = loss / self.cfg.grad_accum
            (scaler.scale(scaled) if scaler else scaled).backward()
            total = loss.detach() if total is None else total + loss.detach()
        return total

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
                outs.append(logits.float().cpu().numpy())
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

    # ---- training -------------------------------------------------------------------------------
    def run(self) -> TrainOutcome:
        import torch

        cfg, model, device = self.cfg, self.model, self.device
        torch.manual_seed(cfg.seed)
        n_batches = math.ceil(len(self.train_split) / cfg.batch_size)
        steps_per_epoch = max(1, math.ceil(n_batches / cfg.grad_accum))
        total_steps = max(1, math.ceil(cfg.epochs * steps_per_epoch))
        if cfg.max_steps:
            total_steps = min(total_steps, cfg.max_steps)
        if device.type == "cuda":
            torch.cuda.set_device(device)  # the current device is per thread; the app trains in a worker thread
        model.to(device)
        model.train()
        optimizer, scheduler = self._optimizer(total_steps)
        scaler = torch.amp.GradScaler(device.type) if self.precision == "fp16" else None
        # loss.item() forces a GPU sync; on GPUs read the loss only every few steps.
        log_every = 1 if device.type == "cpu" else 10

        self.callbacks.on_event(PhaseChanged("training", f"{total_steps} steps"))
        step, seen, train_time = 0, 0, 0.0
        best_value, best_metrics, best_step, best_state = None, None, None, None
        bad_evals, stopped_early = 0, False
        running_loss = torch.zeros((), device=device)
        running_n = 0

        def do_eval() -> bool:
            """Evaluate on the validation split; returns True when training should stop."""
            nonlocal best_value, best_metrics, best_step, best_state, bad_evals
            if self.val_split is None:
                return False
            self.callbacks.on_event(PhaseChanged("evaluating", "validation"))
            result, _ = self.evaluate(self.val_split)
            value = result.metrics[self.metric]
            improved = self._better(self.metric, value, best_value)
            if improved:
                best_value, best_metrics, best_step, bad_evals = value, result.metrics, step, 0
                # Kept on the CPU so the best weights survive later steps without a second GPU copy.
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            else:
                bad_evals += 1
            self.callbacks.on_event(
                EvalMetrics(step, step / steps_per_epoch, "validation", dict(result.metrics), improved)
            )
            self.callbacks.on_event(PhaseChanged("training"))
            patience = cfg.early_stopping_patience
            return patience is not None and bad_evals >= patience

        epoch = 0
        done = False
        while not done:
            batches = self._batches(epoch)
            t0 = time.perf_counter()
            for i, rows in enumerate(batches):
                self.cancel.raise_if_cancelled()
                loss = self._forward_backward(rows, scaler)
                running_loss += loss
                running_n += 1
                seen += len(rows)
                last_in_epoch = i == len(batches) - 1
                if (i + 1) % cfg.grad_accum and not last_in_epoch:
                    continue
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
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1

                if step % log_every == 0 or step == total_steps:
                    now = time.perf_counter()
                    elapsed = train_time + (now - t0)
                    mean_loss = float(running_loss) / max(running_n, 1)
                    sps = seen / elapsed if elapsed > 0 else 0.0
                    self.callbacks.on_event(
                        StepMetrics(
                            step=step,
                            total_steps=total_steps,
                            epoch=step / steps_per_epoch,
                            loss=mean_loss,
                            learning_rate=float(scheduler.get_last_lr()[0]),
                            samples_per_second=sps,
                            elapsed_s=elapsed,
                            eta_s=(total_steps - step) * elapsed / step,
                            grad_norm=float(grad_norm) if grad_norm is not None else None,
                        )
                    )
                    running_loss.zero_()
                    running_n = 0

                stop_now = step >= total_steps
                at_epoch_end = last_in_epoch or stop_now
                if (cfg.eval_steps and step % cfg.eval_steps == 0 and not at_epoch_end) or at_epoch_end:
                    train_time += time.perf_counter() - t0
                    if do_eval():
                        stopped_early = not stop_now
                        stop_now = True
                    t0 = time.perf_counter()
                if stop_now:
                    done = True
                    break
            train_time += time.perf_counter() - t0
            epoch += 1

        if best_state is not None and best_step != step:
            model.load_state_dict(best_state)
        return TrainOutcome(
            steps=step,
            train_seconds=train_time,
            samples_seen=seen,
            samples_per_second=seen / train_time if train_time > 0 else 0.0,
            best_step=best_step,
            best_metrics=best_metrics,
            stopped_early=stopped_early,
        )
