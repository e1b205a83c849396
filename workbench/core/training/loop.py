"""The generic training loop. It knows the Task interface and nothing about any model or task.

AdamW (fused on CUDA and the CPU), linear warm-up then decay, bf16/fp16 autocast on GPUs (bf16 on CPUs with bf16 units), gradient
accumulation and clipping, evaluation each epoch and optionally every N steps, early stopping with
the best weights restored. The cancel token is checked before every micro-batch.

In a distributed run (core/distributed.py) every rank makes the same global batches of
batch_size x world rows and trains its shard of each through DistributedDataParallel; the ranks
agree on the rows of each batch and on stopping (cancel, pause) in one small all-reduce per batch,
evaluation is sharded and gathered, and only rank 0 writes checkpoints.

``run`` is the plain loop; its features (checkpoints, evaluation and early stopping, best weights,
pause, out-of-memory back-off, test fault injection) are callbacks in callbacks.py that it calls at
fixed points and that steer it through a ``LoopControl``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from .. import distributed
from ..cancel import NEVER, CancelToken
from ..config import TrainConfig
from ..errors import Cancelled, Paused
from ..events import Callbacks, EvalMetrics, PhaseChanged, StepMetrics
from ..tasks.base import EncodedSplit, EvalResult, PreparedData, Task
from .batching import (
    bucket_widths,
    length_grouped_batches,
    random_batches,
    sorted_batches,
    split_by_length,
    token_balanced_batches,
)
from .callbacks import (
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
from .checkpoints import Checkpoints, LoopState
from .performance import StepCounter, enable_fast_matmul, keep_freed_memory

if TYPE_CHECKING:
    import torch

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


class _Clock:
    """Training seconds: counted into ``state.train_seconds`` while running, not while evaluating
    or saving a checkpoint."""

    def __init__(self, state: LoopState) -> None:
        self.state = state
        self.t0 = time.perf_counter()

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def stop(self) -> None:
        self.state.train_seconds += time.perf_counter() - self.t0

    def elapsed(self) -> float:
        return self.state.train_seconds + (time.perf_counter() - self.t0)

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        self.stop()
        yield
        self.start()


def _to_device(batch: dict[str, np.ndarray], device) -> dict:
    import torch

    if device.type != "cuda":
        return {k: torch.from_numpy(v).to(device) for k, v in batch.items()}
    # Pinned (page-locked) host memory: the copy runs asynchronously while the GPU still works.
    return {k: torch.from_numpy(v).pin_memory().to(device, non_blocking=True) for k, v in batch.items()}


def planned_steps(n_rows: int, cfg: TrainConfig) -> tuple[int, int]:
    """(optimizer steps per epoch, optimizer steps in all) for ``n_rows`` training rows; a
    distributed run's steps each take batch_size rows on every process."""
    n_batches = math.ceil(n_rows / (cfg.batch_size * distributed.world_size()))
    steps_per_epoch = max(1, math.ceil(n_batches / cfg.grad_accum))
    assert cfg.epochs is not None, "the epochs are settled before training (Task.default_epochs)"
    total_steps = max(1, math.ceil(cfg.epochs * steps_per_epoch))
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    return steps_per_epoch, total_steps


class TrainingLoop:
    """Trains ``model`` on ``train`` for ``task``; reports to ``callbacks`` (the front end's events)
    and calls ``hooks`` (its own LoopCallbacks, after the built-in ones) at the points callbacks.py
    lists."""

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
        hooks: Sequence[LoopCallback] = (),
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
        self.current_step = 0  # the optimizer step being computed (from 0), for the callbacks
        self.dist = distributed.current()  # None: this process trains alone
        self.train_model = model  # what training calls: the DDP wrapper and/or torch.compile of ``model``
        self.counter = StepCounter()
        task.use_model(model, device)
        self.upcoming: np.ndarray | None = None  # the next training batch's rows, for the prefetch
        self._prefetched: tuple[np.ndarray, Any] | None = None  # (rows, Future of task.loop_batch(train split, rows))
        self._prefetcher: Any = None  # a one-thread executor, while run() trains
        # The loop's features, in calling order (callbacks.py); ``hooks``: the caller's own, last.
        self.backoff = OutOfMemoryBackoff()
        builtin = [FaultInjection.from_environment(), self.backoff,
                   Validation(cfg.eval_steps, cfg.early_stopping_patience), BestWeights(), PauseAgreement(),
                   Checkpointing(cfg.save_steps, cfg.save_minutes)]
        self.hooks = LoopHooks([*(cb for cb in builtin if cb is not None), *hooks])
        self.control = LoopControl()
        # Set by run(): the run in progress, as the callbacks read it.
        self.state = LoopState()
        self.optimizer: Any = None
        self.scheduler: Any = None
        self.scaler: Any = None  # fp16 only
        self.total_steps = 0
        self.steps_per_epoch = 1
        self.epoch_ended = False  # the last optimizer step ended an epoch
        self.stopped_early = False  # a callback stopped training before its last step
        self.log_every = 1  # optimizer steps between StepMetrics
        self.running_loss: Any = None  # the loss summed since the last StepMetrics (a device tensor)
        self.running_n = 0
        self.clock = _Clock(self.state)

    # ---- helpers --------------------------------------------------------------------------------
    def autocast(self, precision: str | None = None):
        """The autocast of ``precision`` (default: the run's) on this device."""
        import torch

        precision = precision or self.precision
        if precision in ("bf16", "fp16") and self.device.type in ("cuda", "mps"):
            dtype = torch.bfloat16 if precision == "bf16" else torch.float16
            return torch.autocast(self.device.type, dtype=dtype)
        if precision == "bf16" and self.device.type == "cpu":
            # Matrix products in bf16 on the CPU's bf16 units; weights, optimizer and loss stay fp32.
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _optimizer(self, total_steps: int):
        import torch
        from transformers import get_linear_schedule_with_warmup

        decay: list[torch.nn.Parameter] = []
        no_decay: list[torch.nn.Parameter] = []
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
        fused = True if self.device.type in ("cuda", "cpu") else None  # None: torch's default
        assert self.cfg.lr is not None, "the learning rate is settled before training (Task.default_lr)"
        opt = torch.optim.AdamW(groups, lr=self.cfg.lr, fused=fused)
        warmup = int(round(self.cfg.warmup_ratio * total_steps))
        return opt, get_linear_schedule_with_warmup(opt, warmup, total_steps)

    def _grouped(self) -> bool:
        grouped = self.cfg.group_by_length
        return grouped if grouped is not None else self.task.groups_by_length(self.method.name if self.method else "full")

    def _batches(self, epoch: int, lengths: np.ndarray | None = None) -> list[np.ndarray]:
        """The epoch's batches; distributed, the global batches (batch_size rows per process), the
        same on every rank: each trains its shard of each."""
        rng = np.random.default_rng(self.cfg.seed + epoch)
        lengths = self.train_split.lengths if lengths is None else lengths
        size = self.cfg.batch_size * (self.group.world_size if self.is_distributed else 1)
        if self._grouped():
            group = token_balanced_batches if self.task.token_level_loss else length_grouped_batches
            return group(lengths, size, rng)
        return random_batches(len(lengths), size, rng)

    @property
    def is_distributed(self) -> bool:
        """Whether this process trains with others (DistributedDataParallel) right now."""
        return self.dist is not None and self.dist.active

    @property
    def group(self) -> distributed.Dist:
        """The process group of a distributed run (only while ``is_distributed``)."""
        assert self.dist is not None, "not a distributed run"
        return self.dist

    @property
    def is_main(self) -> bool:
        """Rank 0, or a process training alone: the one that writes checkpoints."""
        return self.dist is None or self.dist.main

    @property
    def micro_batch(self) -> int | None:
        """The most rows per forward call after an out-of-memory back-off; None: a batch at once."""
        return self.backoff.micro_batch

    def sync_state(self) -> LoopState:
        """``state`` with every callback's part filled in: the loop state a checkpoint holds."""
        for key, value in self.hooks.state_dict().items():
            setattr(self.state, key, value)
        return self.state

    def _check_cancel(self) -> None:
        """Stop now if cancelled; a distributed run stops only where all ranks agree (``_agree``)."""
        if not self.is_distributed:
            self.cancel.raise_if_cancelled()

    def _agree(self, units: int) -> int:
        """Distributed: the loss units of the whole global batch, and whether any rank was asked to
        cancel or pause: one all-reduce, so every rank stops at the same batch."""
        total, cancel, pause = self.group.sum([units, self.cancel.cancelled, self.cancel.pause_requested])
        if cancel:
            self.cancel.cancel()
            raise Cancelled()
        self.hooks.on_ranks_agreed(self, bool(pause))
        return int(total)

    def _forward_backward(self, rows: np.ndarray, scaler, sync: bool = True) -> torch.Tensor:
        """Loss and gradients of one batch; returns the (detached) batch loss.

        Random batches on the CPU go through as micro-batches of similar length: their short rows
        are not padded to the longest, and each part's mean loss is weighted by its share of the
        batch's loss units, so the gradient is the whole batch's. GPUs take the batch at once:
        padding costs them little, another call more.

        Distributed, ``rows`` is the global batch and this rank trains its shard; each part's
        weight is its share of the global batch's units times the world size (DDP averages the
        ranks' gradients), so the gradient is the global batch's whatever the shards hold. Only
        the last backward call of an optimizer step (``sync``) all-reduces the gradients."""
        split = self.train_split
        empty, rows_in = False, rows
        if self.is_distributed:
            rows = distributed.shard(rows, self.group.rank, self.group.world_size)
            if len(rows) == 0:  # a short tail batch: a weightless row keeps this rank in step
                rows, empty = distributed.shard(rows_in, 0, 1)[:1], True
        if self.device.type == "cpu" and self.task.split_batches_by_length and not self._grouped():
            parts = split_by_length(rows, split.lengths[rows], SPLIT_OVERHEAD_TOKENS)
        else:
            parts = [rows]
        if self.micro_batch:  # after running out of memory: at most this many rows per call
            m = self.micro_batch
            parts = [q[i:i + m] for q in parts for i in range(0, len(q), m)]
        host = [self._host_batch(split, p) for p in parts]
        self._prefetch_next(split, len(parts))
        if self.cfg.compile and self.device.type == "cuda":  # a few padded widths, not a graph per batch length
            host = [bucket_widths(h, getattr(self.task, "pad_id", 0), self.cfg.max_length) for h in host]
        if self.is_distributed:
            units = [0 if empty else self.task.loss_units(h["labels"]) for h in host]
            total_units = self._agree(sum(units))
            weights = [self.group.world_size * u / max(total_units, 1) for u in units]
        elif len(host) == 1:
            weights = [1.0]
        else:
            units = [self.task.loss_units(h["labels"]) for h in host]
            weights = [u / max(sum(units), 1) for u in units]
        self.counter.add_batch(host, len(rows) if not empty else 0)
        total = None
        for i, (h, w) in enumerate(zip(host, weights)):
            self.hooks.on_forward(self, len(h["labels"]))
            batch = _to_device(h, self.device)
            labels = batch.pop("labels")
            last_call = sync and i == len(host) - 1
            no_sync = self.train_model.no_sync() if self.is_distributed and not last_call else contextlib.nullcontext()
            with no_sync, self.autocast():
                logits = self.task.forward(self.train_model, batch)
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
            self._check_cancel()
            (scaler.scale(scaled) if scaler else scaled).backward()
            total = loss.detach() if total is None else total + loss.detach()
        assert total is not None  # a batch has one part at least
        return total

    def _host_batch(self, split: EncodedSplit, rows: np.ndarray) -> dict[str, np.ndarray]:
        if self._prefetched is not None:
            ahead, future = self._prefetched
            self._prefetched = None
            result = future.result()  # also when unused: the task's random draws stay in order
            if split is self.train_split and len(ahead) == len(rows) and np.array_equal(ahead, rows):
                return result
        return self.task.loop_batch(split, rows)

    def _prefetch_next(self, split: EncodedSplit, parts: int) -> None:
        """Start making the next training batch while this one trains (``task.prefetch_batches``):
        for steps taken whole, whose next batch is known (distributed: this rank's shard of it)."""
        upcoming, self.upcoming = self.upcoming, None
        if (self._prefetcher is None or upcoming is None or split is not self.train_split or parts != 1
                or self.micro_batch):
            return
        if self.is_distributed:
            upcoming = distributed.shard(upcoming, self.group.rank, self.group.world_size)
            if len(upcoming) == 0:  # a short tail batch: this rank takes a weightless row instead
                return
        self._prefetched = (upcoming, self._prefetcher.submit(self.task.loop_batch, split, upcoming))

    def _stop_prefetch(self) -> None:
        if self._prefetcher is not None:
            self._prefetcher.shutdown(wait=True, cancel_futures=True)  # a batch in making ends first
        self._prefetcher, self._prefetched, self.upcoming = None, None, None

    def _train_batch(self, rows: np.ndarray, scaler, window: list[np.ndarray], sync: bool = True):
        """``_forward_backward``, tried again after running out of memory where a callback says so
        (OutOfMemoryBackoff: with fewer rows per call)."""
        import torch

        window.append(rows)
        while True:
            try:
                return self._forward_backward(rows, scaler, sync)
            except (MemoryError, torch.OutOfMemoryError) as e:
                if not self.hooks.on_out_of_memory(self, e, window):
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                # The failed call may have left part of its gradient: rebuild this step's gradient
                # from the batches of the accumulation window that went through before it.
                self.model.zero_grad(set_to_none=True)
                for earlier in window[:-1]:
                    self._forward_backward(earlier, scaler, sync=False)

    # ---- inference ------------------------------------------------------------------------------
    def predict(self, split: EncodedSplit, phase: str = "evaluating",
                precision: str | None = None) -> tuple[np.ndarray, float]:
        """Logits for every row, in row order, and the mean loss; ``precision``: the run's unless
        given (the report's passes run in fp32, as the export does in standard tools)."""
        import torch

        model = self.model
        was_training = model.training
        model.eval()
        runner = self.task.inference_model(model)  # e.g. batch norms folded: the same outputs, faster
        bs = self.cfg.eval_batch_size or 2 * self.cfg.batch_size
        outs: list[np.ndarray] = []
        order: list[np.ndarray] = []
        loss_sum, n = 0.0, 0
        batches = sorted_batches(split.lengths, bs)
        if self.is_distributed:  # each rank predicts every world-th batch; the parts are gathered below
            batches = batches[self.group.rank::self.group.world_size]
        with torch.inference_mode():
            for rows in batches:
                self._check_cancel()
                batch = _to_device(self.task.loop_batch(split, rows), self.device)
                labels = batch.pop("labels")
                with self.autocast(precision):
                    logits = self.task.forward(runner, batch)
                loss_sum += float(self.task.loss(logits, labels)) * len(rows)
                n += len(rows)
                outs.append(self.task.kept_outputs(logits, labels).float().cpu().numpy())
                order.append(rows)
        if was_training:
            model.train()
        if self.is_distributed:
            parts = self.group.gather((outs, order, loss_sum, n))
            outs = [o for p in parts for o in p[0]]
            order = [r for p in parts for r in p[1]]
            loss_sum, n = sum(p[2] for p in parts), sum(p[3] for p in parts)
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

    def evaluate(self, split: EncodedSplit, phase: str = "evaluating",
                 precision: str | None = None) -> tuple[EvalResult, np.ndarray]:
        logits, loss = self.predict(split, phase, precision)
        return self.task.evaluate(logits, split, loss, self.data), logits

    # ---- preflight ------------------------------------------------------------------------------
    def timed_batches(self, batches: list[np.ndarray]) -> list[float]:
        """Seconds of each batch's forward, backward, clipping and update, as ``run`` does them (the
        preflight estimate, core/run/preflight.py). The model's weights change: it is a throw-away model."""
        import torch

        model, device = self.model, self.device
        if device.type == "cuda":
            torch.cuda.set_device(device)
        else:
            keep_freed_memory()  # as run() does: the estimate times what the run will do
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
        """Train to the end (or until a callback stops it); with ``resume``, from that checkpoint on,
        exactly as the uninterrupted run would have gone on (same batches, dropout, optimizer state)."""
        self._start(resume)
        if self.task.prefetch_batches:
            from concurrent.futures import ThreadPoolExecutor

            self._prefetcher = ThreadPoolExecutor(1, thread_name_prefix="workbench-batches")
        try:
            done = self.state.step >= self.total_steps
            while not done:
                done = self._train_epoch()
            return self._finish()
        finally:
            self._stop_prefetch()
            # The optimizer's state (AdamW: two more copies of the weights) goes as training ends: the
            # loop lives on to predict for the test and the export, and must not hold it meanwhile.
            self.optimizer = self.scheduler = self.scaler = None

    def _start(self, resume: Path | None) -> None:
        """Device, optimizer, schedule and the state to start from (``resume``'s, with the callbacks')."""
        import torch

        cfg, model, device = self.cfg, self.model, self.device
        # Each rank its own dropout masks; one process keeps the seed as it always was.
        torch.manual_seed(cfg.seed + (self.group.rank if self.is_distributed else 0))
        self.steps_per_epoch, schedule_steps = planned_steps(len(self.train_split), cfg)
        self.total_steps = min(schedule_steps, self.stop_at) if self.stop_at else schedule_steps
        if device.type == "cuda":
            torch.cuda.set_device(device)  # the current device is per thread; the app trains in a worker thread
            enable_fast_matmul()
            torch.cuda.reset_peak_memory_stats(device)
        else:
            keep_freed_memory()  # each step's activations reuse the last step's pages
        model.to(device)
        model.train()
        self.optimizer, self.scheduler = self._optimizer(schedule_steps)
        self.scaler = torch.amp.GradScaler(device.type) if self.precision == "fp16" else None
        # loss.item() forces a GPU sync; on GPUs read the loss only every few steps.
        self.log_every = 1 if device.type == "cpu" else 10
        self._load_state(resume)
        self.train_model = self._wrapped(model)
        self.counter.start(model, device, self.precision, self.group.world_size if self.is_distributed else 1)
        self.stopped_early = False
        self.running_loss = torch.zeros((), device=device)  # summed on the device: no sync per batch
        self.running_n = 0
        self.clock = _Clock(self.state)

    def _load_state(self, resume: Path | None) -> None:
        """A fresh state, or ``resume``'s checkpoint put back into the model, optimizer, random
        generators and callbacks."""
        import torch

        if resume is None:
            self.state = LoopState()
            self.hooks.on_train_start(self, resumed=False)
            self.callbacks.on_event(PhaseChanged("training", f"{self.total_steps} steps"))
        else:
            assert self.checkpoints is not None, "resuming needs the run's checkpoints"
            self.state = self.checkpoints.load(resume, self.model, self.optimizer, self.scheduler, self.scaler)
            self.hooks.load_state_dict(self.state.to_dict())
            self.hooks.on_train_start(self, resumed=True)
            if self.is_distributed and self.group.rank:  # the checkpoint holds rank 0's generators
                torch.manual_seed(self.cfg.seed + self.group.rank + 7919 * self.state.step)
            self.callbacks.on_event(PhaseChanged("training", f"from step {self.state.step} of {self.total_steps}"))
        extra = self.state.extra
        world = self.group.world_size if self.is_distributed else 1
        if resume is not None and extra.get("world_size", 1) != world:
            from ..errors import InputError

            raise InputError(f"this run trained on {extra.get('world_size', 1)} process(es); resume it with "
                             f"--num-processes {extra.get('world_size', 1)} (its batches are cut for that many)")
        extra["world_size"] = world

    def _train_epoch(self) -> bool:
        """The epoch's batches from ``state.batch`` on; True when training is done."""
        s, cfg = self.state, self.cfg
        batches = self._batches(s.epoch)
        self.clock.start()
        window: list[np.ndarray] = []  # this optimizer step's batches (for the out-of-memory retry)
        done = False
        while s.batch < len(batches):
            rows = batches[s.batch]
            self._check_cancel()
            self.current_step = s.step
            self.hooks.on_batch_start(self)
            last_of_step = (s.batch + 1) % cfg.grad_accum == 0 or s.batch + 1 == len(batches)
            self.upcoming = batches[s.batch + 1] if s.batch + 1 < len(batches) else None
            self.running_loss += self._train_batch(rows, self.scaler, window, sync=last_of_step)
            self.running_n += 1
            s.seen += len(rows)
            s.batch += 1
            self.epoch_ended = s.batch == len(batches)
            if s.batch % cfg.grad_accum and not self.epoch_ended:
                continue
            window = []
            grad_norm = self._optimizer_step()
            if self.epoch_ended:  # the state says where training goes on: the next epoch's start
                s.epoch, s.batch = s.epoch + 1, 0
            if s.step % self.log_every == 0 or s.step == self.total_steps:
                self._report_step(grad_norm)
            done = self._end_step()
            if done or self.epoch_ended:
                break
        self.clock.stop()
        return done

    def _optimizer_step(self) -> torch.Tensor | None:
        """Clip, step the optimizer and the schedule, count the step; returns the gradient norm
        (None without clipping)."""
        import torch

        self._check_cancel()
        optimizer, scaler = self.optimizer, self.scaler
        if scaler:
            scaler.unscale_(optimizer)
        grad_norm = None
        if self.cfg.max_grad_norm and self.cfg.max_grad_norm > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if self.method is not None:
            self.method.after_optimizer_step(self.state.step)
        self.scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        return grad_norm

    def _report_step(self, grad_norm: torch.Tensor | None) -> None:
        """StepMetrics: the mean loss since the last report, speed, learning rate."""
        s = self.state
        loss_sum = float(self.running_loss)
        if self.is_distributed:  # each rank's loss is its weighted share of the global batch's
            loss_sum = self.group.sum([loss_sum])[0] / self.group.world_size
        elapsed = self.clock.elapsed()
        mfu, peak = self.counter.read(elapsed)
        self.callbacks.on_event(
            StepMetrics(
                step=s.step,
                total_steps=self.total_steps,
                epoch=s.step / self.steps_per_epoch,
                loss=loss_sum / max(self.running_n, 1),
                learning_rate=float(self.scheduler.get_last_lr()[0]),
                samples_per_second=s.seen / elapsed if elapsed > 0 else 0.0,
                elapsed_s=elapsed,
                eta_s=(self.total_steps - s.step) * elapsed / s.step,
                grad_norm=float(grad_norm) if grad_norm is not None else None,
                mfu=mfu,
                peak_memory_gib=peak,
            )
        )
        self.running_loss.zero_()
        self.running_n = 0

    def _end_step(self) -> bool:
        """The callbacks' turn after an optimizer step: evaluation, stopping, a checkpoint, a pause
        (raises Paused). True: training ends with this step."""
        s, control = self.state, self.control
        control.clear()
        self.hooks.on_step_end(self, control)
        if control.should_evaluate:
            with self.clock.stopped():
                self._validate(control)
        reached_end = s.step >= self.total_steps
        if control.should_stop or reached_end:
            self.stopped_early = not reached_end
            return True
        self.hooks.on_before_save(self, control)
        if control.should_save:
            with self.clock.stopped():
                self.hooks.on_save(self, control)
        if control.should_pause:
            raise Paused(s.step, f"paused at step {s.step} of {self.total_steps}")
        return False

    def _validate(self, control: LoopControl) -> None:
        """Evaluate on the validation split (if there is one) and tell the callbacks."""
        s = self.state
        if self.val_split is None:
            self.hooks.on_evaluate(self, control, None)
            return
        self.callbacks.on_event(PhaseChanged("evaluating", "validation"))
        if self.is_distributed:  # every rank the same batch-norm statistics: one model evaluated
            self.group.average_norm_statistics(self.model)
        result, _ = self.evaluate(self.val_split)
        self.hooks.on_evaluate(self, control, result.metrics)
        self.callbacks.on_event(
            EvalMetrics(s.step, s.step / self.steps_per_epoch, "validation", dict(result.metrics), control.is_best)
        )
        # Every rank (its events go nowhere but on rank 0): a rank left waiting at the next collective
        # while rank 0 generates alone would time out.
        self.task.after_validation(s.step, s.step / self.steps_per_epoch)
        self.callbacks.on_event(PhaseChanged("training"))

    def _finish(self) -> TrainOutcome:
        if self.is_distributed:  # rank 0 goes on alone: with the statistics of every rank's batches
            self.group.average_norm_statistics(self.model)
        self.hooks.on_train_end(self)
        self.train_model = self.model
        s = self.sync_state()
        return TrainOutcome(
            steps=s.step,
            train_seconds=s.train_seconds,
            samples_seen=s.seen,
            samples_per_second=s.seen / s.train_seconds if s.train_seconds > 0 else 0.0,
            best_step=s.best_step,
            best_metrics=s.best_metrics,
            stopped_early=self.stopped_early,
            evaluations=list(s.evaluations),
        )

    def _wrapped(self, model):
        """What training calls: DistributedDataParallel around the model in a distributed run, and
        torch.compile's graph with --compile. Evaluation, checkpoints and the export use ``model``."""
        import torch

        if self.is_distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            # Buffers are not broadcast at each forward: ranks may make different numbers of forward
            # calls per step (length-split micro-batches), and a collective in forward would then
            # not match. The weights stay equal through the averaged gradients.
            import inspect

            newer = "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
            no_buffer_sync = {"forward_sync_buffers": False} if newer else {"broadcast_buffers": False}
            model = DistributedDataParallel(model, device_ids=ids, **no_buffer_sync)
        if self.cfg.compile:
            if self.device.type != "cuda":
                log.info("--compile is for GPUs; training on %s without it", self.device)
            else:
                model = torch.compile(model)
        return model

