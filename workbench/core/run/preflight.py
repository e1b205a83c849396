"""Before Start: how long the run will take and how much memory it will need, measured.

The data is read and checked as the run will read it, a random sample of the training rows is
tokenized (or decoded), and the model is built as the run builds it (same backbone, method,
device and precision). A few batches then train for real: the longest batch of the sample first
(the memory peak, untimed), then ordinary batches of the first epoch, timed. A pass over sampled
validation rows gives the evaluation speed. The figures are scaled to the whole data set by row
and step counts; nothing is written outside a temporary folder.

Memory is the peak the device saw: on a GPU, the most memory torch allocated; on the CPU, the
peak resident size of this process (which is why the app measures in a child process).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..cancel import NEVER, CancelToken
from ..config import RunConfig
from ..events import Callbacks, PhaseChanged, Warning_

if TYPE_CHECKING:
    from .stages import Built, Prepared

# Training rows sampled and tokenized; enough for the timed batches of large batch sizes too.
SAMPLE_ROWS = 512
EVAL_SAMPLE_ROWS = 256


@dataclass
class Preflight:
    device: str
    precision: str
    rows: dict[str, int]  # split -> rows of the whole data set
    row_unit: str
    epochs: float
    steps_per_epoch: int  # optimizer steps
    total_steps: int
    seconds_per_step: float  # one optimizer step (grad_accum batches)
    train_seconds_per_epoch: float
    validation_seconds: float  # one pass over the validation rows (0 when there are none)
    evaluations: int  # validation passes in the run
    seconds_per_epoch: float  # training and its validation pass
    early_stopping: bool  # the run may stop before its last epoch: the times are the most it takes
    refit: bool
    refit_seconds: float  # the second pass on all rows (workbench/core/run/refit.py), 0 without it
    setup_seconds: float  # reading, tokenizing every row, loading the model
    final_seconds: float  # the test pass and the export
    total_seconds: float
    peak_memory_bytes: int | None
    memory_kind: str  # what the peak is of
    parameters: int
    trainable_parameters: int
    measured_batches: int
    sample_rows: int
    # A frozen backbone's cached features (workbench/core/tasks/image/feature_cache.py): the first
    # ``backbone_epochs`` epochs pass the images through the backbone, later ones train the head
    # alone in ``cached_epoch_seconds`` each; None without a cache.
    backbone_epochs: int | None = None
    cached_epoch_seconds: float | None = None
    # Text generation: the base model's and the fine-tuned model's answers, the live samples (in the total)
    generating_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def text(self) -> str:
        """One paragraph for the CLI and the app: the total first, then what it is made of."""
        epochs = ("up to " if self.early_stopping else "") + f"{self.epochs:g} epoch{'s' if self.epochs != 1 else ''}"
        parts = [f"About {rough_duration(self.total_seconds)} in all on {self.device} ({self.precision}): "
                 f"{epochs} of {duration(self.seconds_per_epoch)} ({self.steps_per_epoch:,} steps of "
                 f"{self.seconds_per_step:.2g} s"
                 + (f", then {duration(self.validation_seconds)} of validation" if self.validation_seconds else "")
                 + ")"]
        if self.backbone_epochs is not None and self.epochs > self.backbone_epochs:
            n = self.backbone_epochs
            parts[0] = parts[0].replace(f"{epochs} of", f"{epochs}: the first {n:g} of" if n > 1 else
                                        f"{epochs}: the first of", 1)
            parts.append(f"later ones {duration(self.cached_epoch_seconds or 0.0)} each on the backbone's cached "
                         "features")
        if self.refit:
            parts.append(f"then up to {duration(self.refit_seconds)} training again on all rows (refit)")
        if self.generating_seconds:
            parts.append(f"up to {duration(self.generating_seconds)} generating answers (the base model's, the "
                         "fine-tuned model's and the live samples)")
        parts.append(f"{duration(self.setup_seconds)} to read the data and load the model")
        text = ", ".join(parts) + "."
        if self.peak_memory_bytes:
            text += f" Peak memory about {_size(self.peak_memory_bytes)} ({self.memory_kind})."
        text += (f" Measured on {self.measured_batches} batches of {self.sample_rows:,} sampled "
                 f"{self.row_unit}.")
        return text


def _padded(lengths: np.ndarray, batch: np.ndarray) -> int:
    """What a batch costs: its rows times its longest row (rows are padded to it)."""
    return len(batch) * int(lengths[batch].max()) if len(batch) else 0


def duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    if seconds < 3600:
        m, s = divmod(round(seconds), 60)
        return f"{m} min" if m >= 10 or not s else f"{m} min {s} s"
    h, rest = divmod(round(seconds / 60), 60)
    return f"{h} h {rest} min" if rest else f"{h} h"


def rough_duration(seconds: float) -> str:
    """An estimate's total, no more precise than it is: 5 s steps, then minutes, then 5 minutes."""
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{max(5, 5 * round(seconds / 5))} s"
    if seconds < 3600:
        return f"{round(seconds / 60)} min"
    return duration(300 * round(seconds / 300))


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


def process_peak_memory() -> int | None:
    """The peak resident size of this process so far, in bytes (None where it cannot be read)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # bytes on macOS, KiB on Linux


def estimate(config: RunConfig, callbacks: Callbacks | None = None, cancel: CancelToken = NEVER,
             batches: int | None = None) -> Preflight:
    """Measure ``config``'s run without making it. ``batches``: how many to time (default: 8 on
    the CPU, 20 on a GPU, where single steps are short and noisy). The set-up is the run's own
    stages (stages.py): check, prepare, the backbone and preprocessor, build."""
    from .stages import build, check, choose_hardware, find_backbone, load_preprocessor, prepare, quiet_libraries

    quiet_libraries()
    import torch

    cb = callbacks or Callbacks()
    started = time.perf_counter()
    checked = check(copy.deepcopy(config))
    hardware = choose_hardware(checked.config, checked.task)
    device = hardware.device
    on_gpu = device.type == "cuda"
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(device)
    n_timed = batches or (20 if on_gpu else 8)

    with tempfile.TemporaryDirectory(prefix="workbench-preflight-") as tmp:
        prepared = prepare(checked, Path(tmp), cb, cancel)
        backbone = find_backbone(prepared, cb)
        preprocessor = load_preprocessor(prepared, backbone, cb, cancel)
        sample = _encode_sample(prepared, preprocessor, n_timed, Path(tmp), cb, cancel)
        built = build(prepared, backbone, hardware, prepared.rows["train"], cancel)
        setup = (time.perf_counter() - started
                 + sample.encode_per_row * (sum(prepared.rows.values()) - sample.train_rows - sample.eval_rows))
        timing = _time(prepared, built, sample, n_timed, cb, cancel)

    if on_gpu:
        peak: int | None = int(torch.cuda.max_memory_allocated(device))
        kind = f"allocated by torch on {device}"
    else:
        peak, kind = process_peak_memory(), "this process, CPU"
    return _scaled(prepared, built, sample, timing, setup, peak, kind, cb)


@dataclass
class _Sample:
    """The sampled rows the estimate measures on, encoded."""
    train: Any  # EncodedSplit of sampled training rows
    evaluation: Any  # EncodedSplit of the first validation (or evaluation) rows
    scored: str  # the split ``evaluation`` is from
    train_rows: int  # rows sampled
    eval_rows: int
    encode_per_row: float  # seconds
    rng: np.random.Generator  # drew the sample; draws the whole set's lengths next


def _encode_sample(prepared: Prepared, preprocessor: Any, n_timed: int, cache: Path, cb: Callbacks,
                   cancel: CancelToken) -> _Sample:
    task, data, rows, tc = prepared.task, prepared.data, prepared.rows, prepared.config.train
    rng = np.random.default_rng(tc.seed)
    sample_n = min(rows["train"], max(SAMPLE_ROWS, (n_timed + 1) * tc.batch_size))
    picked = np.sort(rng.choice(rows["train"], sample_n, replace=False))
    t0 = time.perf_counter()
    train = task.encode("train", data.splits["train"].select(picked), preprocessor, tc.max_length, cache / "train", cb,
                        cancel)
    encode_per_row = (time.perf_counter() - t0) / max(sample_n, 1)
    scored = "validation" if "validation" in rows else data.eval_split
    eval_n = min(rows[scored], EVAL_SAMPLE_ROWS)
    evaluation = task.encode(scored, data.splits[scored].select(range(eval_n)), preprocessor, tc.max_length,
                             cache / "eval", cb, cancel)
    return _Sample(train, evaluation, scored, sample_n, eval_n, encode_per_row, rng)


@dataclass
class _Timing:
    per_batch: float  # seconds a training batch of the whole set takes, on average
    eval_per_row: float
    measured: int  # batches timed
    backbone_epochs: int | None  # epochs that pass images through a frozen backbone before its cache serves
    cached_per_batch: float = 0.0
    cached_eval_per_row: float = 0.0


def _time(prepared: Prepared, built: Built, sample: _Sample, n_timed: int, cb: Callbacks,
          cancel: CancelToken) -> _Timing:
    """Train a few batches for real: the longest of the sample first (the memory peak, untimed),
    then ordinary ones of the first epoch, timed; then a pass over the sampled evaluation rows."""
    from ..training.loop import TrainingLoop

    task, tc, train, hw = prepared.task, prepared.config.train, sample.train, built.hardware
    cb.on_event(PhaseChanged("training", f"timing {n_timed} batches"))
    loop = TrainingLoop(built.model, task, prepared.data, train, None, tc, hw.device, hw.precision, cb, cancel,
                        checkpoints=None)
    longest = np.argsort(train.lengths, kind="stable")[-tc.batch_size:]
    ordinary = [b for b in loop.epoch_batches(0) if len(b)][:n_timed]
    seconds = loop.timed_batches([longest] + ordinary)[1:]  # the first also pays one-off set-up
    # A batch costs about its padded size. Batches grouped by length from a 512-row sample pad
    # more than those of the whole set would, so the epoch is costed by the padded size of the
    # batches the loop would make of the whole set's rows (lengths drawn from the sample).
    n_train = prepared.rows["train"]
    per_token = sum(seconds) / max(sum(_padded(train.lengths, b) for b in ordinary[:len(seconds)]), 1)
    whole = sample.rng.choice(train.lengths, n_train)
    epoch_tokens = sum(_padded(whole, b) for b in loop.epoch_batches(0, whole))
    per_batch = per_token * epoch_tokens / max(math.ceil(n_train / tc.batch_size), 1)
    eval_n = sample.eval_rows
    cb.on_event(PhaseChanged("evaluating", f"timing {eval_n} {sample.scored} {task.row_unit}"))
    t0 = time.perf_counter()
    loop.predict(sample.evaluation)
    timing = _Timing(per_batch, (time.perf_counter() - t0) / max(eval_n, 1), len(seconds), task.backbone_epochs())
    if timing.backbone_epochs is not None:
        # The same batches and rows again, their features now cached: the head alone.
        task.reset_views()
        again = loop.timed_batches(ordinary[:len(seconds)])
        timing.cached_per_batch = sum(again) / max(len(again), 1)
        t0 = time.perf_counter()
        loop.predict(sample.evaluation)
        timing.cached_eval_per_row = (time.perf_counter() - t0) / max(eval_n, 1)
    return timing


def _scaled(prepared: Prepared, built: Built, sample: _Sample, timing: _Timing, setup: float, peak: int | None,
            kind: str, cb: Callbacks) -> Preflight:
    """The measurements scaled to the whole data set by row and step counts."""
    from ..training.loop import planned_steps

    rows, tc, per_batch = prepared.rows, prepared.config.train, timing.per_batch
    steps_per_epoch, total_steps = planned_steps(rows["train"], tc)
    batches_per_epoch = math.ceil(rows["train"] / tc.batch_size)
    train_epoch = per_batch * batches_per_epoch
    validation = timing.eval_per_row * rows.get("validation", 0)
    evaluations = 0
    if "validation" in rows:
        evaluations = math.ceil(total_steps / steps_per_epoch) + (total_steps // tc.eval_steps if tc.eval_steps else 0)
    refit = bool(tc.refit)  # decided by prepare
    epochs = total_steps / steps_per_epoch
    training = train_epoch * epochs
    evaluating = validation * evaluations
    cached_epoch = None
    if (backbone_epochs := timing.backbone_epochs) is not None:
        cached_epoch = timing.cached_per_batch * batches_per_epoch
        training = train_epoch * min(epochs, backbone_epochs) + cached_epoch * max(0.0, epochs - backbone_epochs)
        evaluating = (validation + timing.cached_eval_per_row * rows.get("validation", 0) * max(0, evaluations - 1)
                      if evaluations else 0.0)
    refit_seconds = (training * (rows["train"] + rows.get("validation", 0)) / rows["train"]
                     if refit else 0.0)
    # The test pass, the refitted model's calibration pass, and a rough export (the weights, the ONNX
    # trace and its check).
    final = timing.eval_per_row * (rows.get(prepared.data.eval_split, 0) + (rows.get("validation", 0) if refit else 0)
                                   + 3 * sample.eval_rows)
    generating = prepared.task.generating_seconds(built.model, sample.evaluation, rows, prepared.data.eval_split,
                                                  evaluations)
    total = setup + training + evaluating + refit_seconds + final + generating
    if per_batch == 0:
        cb.on_event(Warning_("no batch could be timed"))
    model = built.model
    return Preflight(
        device=str(built.hardware.device), precision=built.hardware.precision, rows=rows, row_unit=prepared.task.row_unit,
        epochs=epochs, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
        seconds_per_step=per_batch * tc.grad_accum, train_seconds_per_epoch=train_epoch,
        validation_seconds=validation, evaluations=evaluations,
        seconds_per_epoch=train_epoch + (validation if evaluations else 0.0),
        early_stopping=bool(tc.early_stopping_patience and evaluations), refit=refit,
        refit_seconds=refit_seconds, setup_seconds=setup, final_seconds=final, total_seconds=total,
        peak_memory_bytes=peak, memory_kind=kind, parameters=sum(p.numel() for p in model.parameters()),
        trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        measured_batches=timing.measured, sample_rows=sample.train_rows, backbone_epochs=backbone_epochs,
        cached_epoch_seconds=cached_epoch, generating_seconds=generating,
    )
