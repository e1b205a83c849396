"""The run as named stages: each a function of typed inputs that returns a small dataclass.

    stage                                   returns    what it does
    check(config)                           Checked    validate the config, choose the task, check the
                                                       data paths (nothing opened, no folder made yet)
    choose_hardware(config, task)           Hardware   device and precision (first: a bad --device
                                                       costs nothing)
    prepare(checked, cache)                 Prepared   read, validate and split the data; pin what it
                                                       decided: columns, image size, epochs and early
                                                       stopping, refit, learning rate
    encode(prepared, cache)                 Encoded    the backbone, its preprocessor, every split encoded
      record_config(rd, ...)                           config.json rewritten with everything resolved
    build(prepared, backbone, hardware)     Built      the model with its training method (full, frozen,
                                                       LoRA), seeded, for the device and precision
    fit(prepared, encoded, built)           Trained    the training loop, from the start or a checkpoint
    refit(prepared, encoded, first)         Trained    the final model trained again on every row
                                                       (when asked; the first model is let go)
    final_test(prepared, encoded, trained)  Tested     the fp32 pass over the evaluation split, the bf16
                                                       check
    report(..., tested)                     Reported   metrics, calibration, baseline: report.json,
                                                       report.txt, predictions.jsonl
    export(..., reported)                   Exported   RUN/model (ONNX, merged adapters), its copy to
                                                       --export

``pipeline.run_training`` calls them in that order. The estimate before Start (preflight.py) runs
check, choose_hardware, prepare, find_backbone and load_preprocessor (encode's first half) and
build; label issues run check, prepare and find_backbone. Called for a measurement (prepare
without a run directory, load_preprocessor without ``announce``, build without callbacks), a
stage writes nothing and reports only its progress, none of the run's warnings and choices.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import shutil
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import distributed
from ..backbones import BackboneInfo, model_load_error
from ..cancel import CancelToken
from ..config import RunConfig, TrainConfig
from ..data.fingerprints import data_fingerprints
from ..device import REPORT_PRECISION, choose_precision, cpu_bf16_units, resolve_device
from ..errors import Cancelled, InputError, Paused, WorkbenchError, WriteFailed, write_failure
from ..events import Callbacks, EvalMetrics, PhaseChanged, TaskReady, Warning_
from ..export.model import copy_export, export_model
from ..export.onnx_export import export_with_onnx
from ..export.target import ExportLock
from ..paths import check_data_path
from ..predict.inputs import prediction_inputs
from ..tasks import get_task
from ..tasks.table import check_method
from ..training.checkpoints import Checkpoints
from .directory import RunDirectory, read_json_or_none
from .refit import (
    AfterFirstPass,
    RefitPlan,
    announce,
    describe,
    held_out_validation,
    merged_rows,
    plan_refit,
    refit_config,
    refit_stop,
    refitted,
    wants_refit,
)

if TYPE_CHECKING:
    from ..distributed import Dist
    from ..tasks.base import EncodedSplit, EvalResult, PreparedData, Task
    from ..training.loop import TrainingLoop, TrainOutcome
    from ..training.methods import TrainingMethod

log = logging.getLogger(__name__)


# ---- set-up helpers ------------------------------------------------------------------------------

def quiet_libraries() -> None:
    """Silence the libraries' own progress bars and notes: the engine reports its progress as events."""
    # Their "newly initialized weights" notes are for library developers.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    import transformers

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


@contextmanager
def loading_model(folder: str) -> Iterator[None]:
    """Failures that come from the model folder (an unsafe pickle, damaged weights, no tokenizer)
    are the user's input, said plainly; anything else is left alone."""
    try:
        yield
    except WorkbenchError:
        raise
    except Exception as e:
        error = model_load_error(e, folder)
        if error is None:
            raise
        raise error from e


def quietly(write: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Record how a run ended without letting a second failure (the disk still full) hide the first."""
    try:
        write(*args, **kwargs)
    except (OSError, ValueError):
        pass


def _absolute(path: str | None) -> str | None:
    return str(Path(path).expanduser().resolve()) if path else None


# ---- check and hardware ------------------------------------------------------------------------

class Checked(NamedTuple):
    """A config that passed every check, with its task's choices pinned; its task; its data paths."""
    config: RunConfig
    task: Task
    data_paths: list[str]


def check(config: RunConfig) -> Checked:
    """The config with absolute data paths and the task's choices pinned, its task, its data paths;
    everything a user can get wrong is refused here, before a run directory exists (and before
    anything opens the data: a named pipe would block), so a typo leaves nothing behind."""
    config = dataclasses.replace(
        config,
        data=dataclasses.replace(
            config.data, train=_absolute(config.data.train) or "", val=_absolute(config.data.val),
            test=_absolute(config.data.test)
        ),
    )
    config.validate()
    data_paths = [p for p in (config.data.train, config.data.val, config.data.test) if p]
    for path in data_paths:
        check_data_path(Path(path), folder_ok=True)
    task = get_task(config.task, config.data.train, config.data)
    config.task = task.name
    if config.train.metric is None:
        config.train.metric = task.default_metric
    if config.train.metric not in task.metric_names:
        raise InputError(f"--metric {config.train.metric!r} does not apply to {task.name}; choose one of "
                         f"{', '.join(task.metric_names)}")
    check_method(task.name, config.model.method)  # before configure: QLoRA outside generation
    task.configure(config)
    if config.train.group_by_length is None:
        config.train.group_by_length = task.groups_by_length(config.model.method)
    return Checked(config, task, data_paths)


@dataclass(frozen=True)
class Hardware:
    device: Any  # torch.device
    precision: str  # what training runs in: fp32, bf16, fp16
    reason: str  # why that precision


def choose_hardware(config: RunConfig, task: Task, dist: Dist | None = None) -> Hardware:
    """The device this process trains on (a distributed rank's own GPU) and the precision."""
    device = distributed.device_for_rank(resolve_device(config.train.device), dist)
    precision, reason = choose_precision(config.train.precision, device, task.cpu_bf16_not_worth,
                                         task.cpu_bf16_needs_amx)
    return Hardware(device, precision, reason)


# ---- prepare -----------------------------------------------------------------------------------

@dataclass
class Prepared:
    config: RunConfig  # checked, with what the data decided pinned
    task: Task
    data: PreparedData  # the splits, the label map, what was inferred (data.resolved)
    rows: dict[str, int]  # split -> rows
    data_paths: list[str]
    epochs_reason: str
    refit_reason: str


def prepare(checked: Checked, cache_dir: Path, cb: Callbacks, cancel: CancelToken,
            rd: RunDirectory | None = None) -> Prepared:
    """Read, validate and split the data, and pin in the config what it decided: the columns and
    delimiter it inferred, the image size and augmentation, the epochs and early stopping when
    --epochs was not given, whether to refit, and the learning rate when --lr was not given.

    With ``rd`` (a run) the validation report is written there and the data's warnings, the task
    and the choices are announced on ``cb``; without (a measurement) only the reading's progress."""
    config, task, data_paths = checked
    tc = config.train
    data = task.prepare_data(config.data, tc.seed, cache_dir, cb, cancel)
    if rd is not None:
        _announce_data(rd, task, data, tc.metric or task.default_metric, cb)
    told = cb if rd is not None else Callbacks()
    _pin_what_the_data_decided(config, data)
    rows = {k: len(v) for k, v in data.splits.items()}
    sources = data.resolved.get("sources", {})
    epochs_reason = _choose_epochs(task, config, rows, sources, "validation" in rows, told)
    tc.refit, refit_reason = wants_refit(tc.refit, sources, rows, capped=bool(tc.max_steps))
    if tc.refit:
        told.on_event(PhaseChanged("planning", f"after choosing the number of epochs on the held-out validation "
                                               f"split, the final model trains again on all "
                                               f"{rows['train'] + rows['validation']:,} {task.row_unit} "
                                               f"({refit_reason}; --no-refit turns it off)"))
    if tc.lr is None:  # pinned like the epochs: config.json repeats the run as it ran
        tc.lr = task.default_lr(config)
        log.info("learning rate: %g, the %s default for --method %s", tc.lr, task.name, config.model.method)
    return Prepared(config, task, data, rows, data_paths, epochs_reason, refit_reason)


def _announce_data(rd: RunDirectory, task: Task, data: PreparedData, metric: str, cb: Callbacks) -> None:
    rd.write_json("validation.json", data.report.to_dict())
    for w in data.resolved.get("warnings", []):
        cb.on_event(Warning_(w))
    for f in data.report.findings:
        if f.severity == "warning":
            cb.on_event(Warning_(f.message))
    cb.on_event(TaskReady(task.name, task.title, [m.to_dict() for m in task.metric_specs()], metric))


def _pin_what_the_data_decided(config: RunConfig, data: PreparedData) -> None:
    """What was inferred (columns, delimiter, header) is pinned so re-running the config reads the
    data the same way; the image size and augmentation were chosen from the images (image_policy.py)."""
    for key in ("text_column", "label_column", "text_pair_column", "tag_column", "delimiter", "has_header"):
        if key in data.resolved:
            setattr(config.data, key, data.resolved[key])
    for key in ("image_size", "augment"):
        if getattr(config.train, key, None) is None and data.resolved.get(key) is not None:
            setattr(config.train, key, data.resolved[key])


def _choose_epochs(task: Task, config: RunConfig, rows: dict[str, int], data_sources: dict[str, str],
                   validated: bool, cb: Callbacks) -> str:
    """Pin the number of epochs (and early stopping) when --epochs was not given; returns why."""
    tc = config.train
    if tc.epochs is not None:
        return "--epochs"
    # The images of the training folder, as the user counts them (and front ends preview the choice):
    # a held-out validation part is included.
    n = rows.get("train", 0) + (rows.get("validation", 0) if held_out_validation(data_sources) else 0)
    tc.epochs, patience, reason = task.default_epochs(n, config)
    if patience is not None and tc.early_stopping_patience is None:
        if validated:
            tc.early_stopping_patience = patience
        else:
            reason += " (without a validation split nothing can stop it early)"
    log.info("epochs: %s", reason)
    cb.on_event(PhaseChanged("epochs", f"{reason}; --epochs sets them"))
    return reason


# ---- encode ------------------------------------------------------------------------------------

@dataclass
class Encoded:
    backbone: BackboneInfo
    preprocessor: Any  # the backbone's tokenizer or image processor
    splits: dict[str, EncodedSplit]  # every split of the data, encoded


def find_backbone(prepared: Prepared, cb: Callbacks) -> BackboneInfo:
    """The backbone --model names (a packaged one, a folder, a Hugging Face id in the cache)."""
    name = prepared.config.model.name
    cb.on_event(PhaseChanged("loading_model", name))
    backbone = prepared.task.resolve_backbone(name)
    log.info("backbone %r resolved to %s (%s)", name, backbone.path, backbone.source)
    return backbone


def load_preprocessor(prepared: Prepared, backbone: BackboneInfo, cb: Callbacks, cancel: CancelToken,
                      announce: bool = False) -> Any:
    """The backbone's tokenizer (or image processor); --max-length is cut to what the backbone can
    take (said on ``cb`` when ``announce``)."""
    tc = prepared.config.train
    cancel.raise_if_cancelled()
    with loading_model(backbone.path):
        preprocessor = prepared.task.load_preprocessor(backbone.path)
    limit = prepared.task.position_limit(backbone.path, preprocessor)
    if limit and tc.max_length > limit:
        if announce:
            cb.on_event(Warning_(f"--max-length {tc.max_length} is more than {backbone.name} can take ({limit} "
                                 f"tokens); using {limit}"))
        tc.max_length = limit
    return preprocessor


def encode(prepared: Prepared, cache_dir: Path, cb: Callbacks, cancel: CancelToken,
           dist: Dist | None = None) -> Encoded:
    """Every split encoded (tokenized, or images decoded) with the backbone's preprocessor; the
    processes of a distributed run check that they all read the same rows."""
    task, tc = prepared.task, prepared.config.train
    backbone = find_backbone(prepared, cb)
    preprocessor = load_preprocessor(prepared, backbone, cb, cancel, announce=True)
    splits = {name: task.encode(name, ds, preprocessor, tc.max_length, cache_dir, cb, cancel)
              for name, ds in prepared.data.splits.items()}
    for name, split in splits.items():
        if split.truncated:
            cb.on_event(Warning_(f"{split.truncated} of {len(split)} {name} rows reached --max-length "
                                 f"{tc.max_length} and were cut"))
    if dist is not None:
        _check_same_data(dist, splits, prepared.data)
    return Encoded(backbone, preprocessor, splits)


def _check_same_data(dist: Dist, encoded: dict[str, EncodedSplit], data: PreparedData) -> None:
    """Every rank must have read the same rows (a machine with another copy of the data would train
    on something else): compare the split sizes and label names with rank 0's."""
    label_map = getattr(data, "label_map", None)
    mine = {"rows": {k: len(v) for k, v in encoded.items()}, "labels": list(label_map.names) if label_map else None}
    for rank, theirs in enumerate(dist.gather(mine)):
        if theirs != mine:
            raise InputError(f"the processes of this run read different data (rank {dist.rank}: {mine}; rank {rank}: "
                             f"{theirs}); every machine needs the same data files at the same paths")


def record_config(rd: RunDirectory, prepared: Prepared, encoded: Encoded, hardware: Hardware,
                  dist: Dist | None) -> None:
    """config.json with everything resolved: the settings as they run (a re-run reads the data the
    same way) and, under "resolved", what was inferred and why, with the data's fingerprints."""
    import torch

    from ..corrections import read_corrections

    config, tc, data = prepared.config, prepared.config.train, prepared.data
    resolved = {
        **data.resolved,
        "refit_reason": prepared.refit_reason,
        "epochs_reason": prepared.epochs_reason,
        "device": str(hardware.device),
        "precision": hardware.precision,
        "precision_reason": hardware.reason,
        "backbone": dataclasses.asdict(encoded.backbone),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "truncated": {k: v.truncated for k, v in encoded.splits.items()},
        "metrics": [m.to_dict() for m in prepared.task.metric_specs()],
        "data_fingerprint": data_fingerprints(prepared.data_paths),
        **({"distributed": {"processes": dist.world_size, "backend": dist.backend,
                            "effective_batch": tc.batch_size * dist.world_size * tc.grad_accum}} if dist else {}),
    }
    if (corrected := read_corrections(config.data.train)) is not None:
        resolved["corrected_from"] = corrected  # a corrected copy: its original and every decision
    rd.write_json("config.json", {**config.to_dict(), "resolved": resolved})


# ---- build -------------------------------------------------------------------------------------

@dataclass
class Built:
    model: Any  # torch.nn.Module, with the method applied (LoRA adapters...)
    method: TrainingMethod
    parameters: int  # the backbone's and head's, before the method adds any (adapters)
    architecture: str  # the model's class before the method wraps it
    hardware: Hardware


def build(prepared: Prepared, backbone: BackboneInfo, hardware: Hardware, train_rows: int, cancel: CancelToken,
          cb: Callbacks | None = None, tc: TrainConfig | None = None) -> Built:
    """The model for ``backbone`` and the data's labels, seeded, with the training method applied
    for a run of ``train_rows`` rows under ``tc`` (default: the config's). With ``cb`` (a run's
    first model) what was built is logged and announced."""
    import torch

    from ..training.loop import planned_steps
    from ..training.methods import apply_method

    tc = tc or prepared.config.train
    cancel.raise_if_cancelled()
    torch.manual_seed(tc.seed)
    with loading_model(backbone.path):
        model = prepared.task.build_model(backbone.path, prepared.data)
    parameters = sum(p.numel() for p in model.parameters())
    architecture = type(model).__name__
    if cb is not None:  # sdpa: fused attention kernels
        log.info("attention: %s", getattr(getattr(model, "config", None), "_attn_implementation", "n/a"))
    task = prepared.task
    model, method = apply_method(model, prepared.config.model, planned_steps(train_rows, tc)[1],
                                 targets=task.lora_targets(model), new_head=task.head_is_new)
    if cb is not None:
        log.info("training method: %s", method.describe())
        cb.on_event(PhaseChanged("model_ready", f"{backbone.name}: {architecture}, {method.describe()}, on "
                                                f"{hardware.device} ({hardware.precision}: {hardware.reason})"
                                                f"{_effective_batch(tc, distributed.current())}"))
    return Built(model, method, parameters, architecture, hardware)


def _effective_batch(tc: TrainConfig, dist: Dist | None) -> str:
    """", effective batch 64 = 16 rows x 2 processes x 2 accumulated" where it is not just --batch-size."""
    n = dist.world_size if dist is not None else 1
    if n == 1 and tc.grad_accum == 1:
        return ""
    return (f", effective batch {tc.batch_size * n * tc.grad_accum} = {tc.batch_size} rows x {n} "
            f"process{'es' if n > 1 else ''} x {tc.grad_accum} accumulated")


# ---- fit and refit -----------------------------------------------------------------------------

@dataclass
class Trained:
    model: Any  # the model tested and exported (after a refit, the second pass's); None once let go
    method: TrainingMethod
    loop: Any  # the TrainingLoop that trained it (it predicts for the test); None once let go
    outcome: TrainOutcome  # every pass together
    first: TrainOutcome  # the first pass alone: report.json's "training"
    parameters: int
    hardware: Hardware
    before: dict[str, float] | None = None  # the untrained model's metrics (masked-LM adaptation)
    plan: RefitPlan | None = None  # how the refit trained, when there was one
    first_pass_val_logits: Any = None  # for the temperature after a refit: the validation rows' logits

    def let_go(self) -> None:
        """Drop the model and the loop (with its best weights) so that memory holds one model at a time."""
        self.model = self.loop = None


def fit(prepared: Prepared, encoded: Encoded, built: Built, rd: RunDirectory, cb: Callbacks, cancel: CancelToken,
        resume: Path | None = None) -> Trained:
    """Train to the end (or early stopping), checkpointing into ``rd``; with ``resume``, from that
    checkpoint on, exactly as the uninterrupted run would have gone on."""
    from ..training.loop import TrainingLoop

    task, data, hw = prepared.task, prepared.data, built.hardware
    loop = TrainingLoop(
        built.model, task, data, encoded.splits["train"], encoded.splits.get("validation"), prepared.config.train,
        hw.device, hw.precision, cb, cancel, checkpoints=Checkpoints(rd.checkpoints_dir),
        metrics_position=rd.metrics_position, method=built.method,
    )
    before = _evaluate_before(task, loop, encoded.splits[data.eval_split], rd, cb, resume)
    # Every rank does it (only rank 0 writes): the others would otherwise wait for it at their first
    # collective and time out while it generates.
    task.before_training(built.model, encoded.splits, rd.path, resume is not None, main=loop.is_main)
    rd.training_started = True
    outcome = loop.run(resume)
    return Trained(built.model, built.method, loop, outcome, outcome, built.parameters, hw, before)


def _evaluate_before(task: Task, loop: TrainingLoop, split: EncodedSplit, rd: RunDirectory, cb: Callbacks,
                     resume: Path | None) -> dict[str, float] | None:
    """The untrained model's metrics, for tasks that compare before and after (masked-LM adaptation);
    plotted at step 0. A resumed run reads what its first start measured."""
    if not task.evaluate_before_training:
        return None
    if resume is not None:
        return read_json_or_none(rd.path / "before_training.json")
    cb.on_event(PhaseChanged("evaluating", "before training"))
    result, _ = loop.evaluate(split, precision=REPORT_PRECISION)  # compared with the fp32 test below
    rd.write_json("before_training.json", result.metrics)
    cb.on_event(EvalMetrics(0, 0.0, split.name, dict(result.metrics), False))
    return result.metrics


def refit(prepared: Prepared, encoded: Encoded, first: Trained, rd: RunDirectory, cb: Callbacks,
          cancel: CancelToken) -> Trained:
    """Train the final model from the backbone on the training and held-out rows together, by the
    same method, for the epochs the first pass chose (refit.py). ``first`` is let go of."""
    from ..training.loop import planned_steps

    task, tc = prepared.task, prepared.config.train
    plan = plan_refit(first.outcome, planned_steps(len(encoded.splits["train"]), tc)[0], prepared.rows)
    val_logits = None
    if task.calibrated or task.tunes_on_validation:  # the refitted model will have seen these rows
        val_logits = first.loop.predict(encoded.splits["validation"], "calibrating", REPORT_PRECISION)[0]
    first.let_go()  # the first pass's model (and its best weights) are done with
    one = first.outcome
    model, loop, second, method = _second_pass(prepared, encoded, plan, one, first.hardware, rd, cb, cancel)
    outcome = dataclasses.replace(
        second, steps=one.steps + second.steps, train_seconds=one.train_seconds + second.train_seconds,
        samples_seen=one.samples_seen + second.samples_seen, best_step=one.best_step,
        best_metrics=one.best_metrics, stopped_early=one.stopped_early,
        samples_per_second=(one.samples_seen + second.samples_seen)
        / max(one.train_seconds + second.train_seconds, 1e-9))
    return Trained(model, method, loop, outcome, one, first.parameters, first.hardware, first.before, plan, val_logits)


def _second_pass(prepared: Prepared, encoded: Encoded, plan: RefitPlan, first: TrainOutcome, hw: Hardware,
                 rd: RunDirectory, cb: Callbacks, cancel: CancelToken
                 ) -> tuple[Any, TrainingLoop, TrainOutcome, TrainingMethod]:
    from ..training.loop import TrainingLoop, planned_steps

    task, data, tc = prepared.task, prepared.data, prepared.config.train
    cb.on_event(PhaseChanged("refitting", announce(plan, task.row_unit)))
    # Its own cache folder: the first pass's token files stay mapped while this one is written.
    split = task.encode("train", merged_rows(data.splits), encoded.preprocessor, tc.max_length, rd.cache_dir / "refit",
                        cb, cancel)
    # No checkpoints: a run stopped in this pass goes on from the first pass's last one and trains
    # this pass again (it is short: refit is for small sets).
    refit_tc = refit_config(tc, plan)
    built = build(prepared, encoded.backbone, hw, len(split), cancel, tc=refit_tc)
    per_epoch, _ = planned_steps(len(split), refit_tc)
    loop = TrainingLoop(built.model, task, data, split, None, refit_tc, hw.device, hw.precision,
                        AfterFirstPass(cb, first.steps, plan.first_pass_epochs, first.train_seconds),
                        cancel, checkpoints=None, metrics_position=rd.metrics_position,
                        stop_at=refit_stop(plan, per_epoch), method=built.method)
    try:
        second = loop.run()
    except Paused as e:
        last = Checkpoints(rd.checkpoints_dir).latest()
        at = Checkpoints.loop_state(last).step if last else 0
        raise Paused(at, f"paused while training on all rows (step {first.steps + e.step}); it goes on from "
                         f"the checkpoint at step {at} and trains the final model again") from None
    cb.on_event(refitted(plan, second.steps, second.steps / max(per_epoch, 1), task.row_unit))  # said as it ends
    return built.model, loop, second, built.method


# ---- test and report ---------------------------------------------------------------------------

@dataclass
class Tested:
    split: str  # the evaluation split's name (test, or validation without one)
    result: EvalResult
    logits: Any  # np.ndarray, one row per evaluation row
    bf16_check: dict[str, Any] | None


def final_test(prepared: Prepared, encoded: Encoded, trained: Trained, cb: Callbacks) -> Tested:
    """The report's pass over the evaluation split. The report describes the export: fp32, as
    pipeline and ONNX Runtime run it, whatever precision trained."""
    name = prepared.data.eval_split
    split = encoded.splits[name]
    _tune_on_validation(prepared.task, encoded, trained, cb)
    cb.on_event(PhaseChanged("testing", name))
    result, logits = trained.loop.evaluate(split, precision=REPORT_PRECISION)
    result = prepared.task.score_with_model(trained.model, split, result)
    cb.on_event(EvalMetrics(trained.outcome.steps, 0.0, name, dict(result.metrics), False))
    bf16 = _bf16_check(prepared.task, trained.loop, split, logits, trained.hardware.device, cb)
    return Tested(name, result, logits, bf16)


def _tune_on_validation(task: Task, encoded: Encoded, trained: Trained, cb: Callbacks) -> None:
    """A task's decisions fitted on validation outputs of a model that never trained on those rows
    (after a refit: the first pass's), before the test split is scored with them."""
    val = encoded.splits.get("validation")
    if not task.tunes_on_validation or val is None or not len(val):
        return
    logits = trained.first_pass_val_logits
    if logits is None:
        cb.on_event(PhaseChanged("tuning", "decisions on the validation split"))
        logits = trained.loop.predict(val, "tuning", REPORT_PRECISION)[0]
    task.tune_on_validation(logits, val)


def _bf16_check(task: Task, loop: TrainingLoop, split: EncodedSplit, logits: Any, device: Any,
                cb: Callbacks) -> dict[str, Any] | None:
    """On a CPU with bf16 units: does bf16 autocast change any class the fp32 report gives on the
    evaluation split? Recorded in the export, where ``predict --precision auto`` reads it: bf16 is
    chosen automatically only for a model whose labels it leaves as they are."""
    import numpy as np

    if device.type != "cpu" or len(split) == 0:
        return None
    fp32 = task.predicted_classes(logits, split)
    if fp32 is None:
        return None
    units, why = cpu_bf16_units()
    if not units:
        return {"ran": False, "reason": why}
    cb.on_event(PhaseChanged("testing", f"{split.name} again in bf16: does it change any label?"))
    bf16_logits, _ = loop.predict(split, "testing", "bf16")
    bf16 = task.predicted_classes(bf16_logits, split)
    changed = int(np.sum(bf16 != fp32))
    diff = float(np.abs(bf16_logits - logits).max()) if logits.shape == bf16_logits.shape else None
    log.info("bf16 check on %s: %d of %d labels change, logits move by up to %s", split.name, changed, len(fp32),
             "?" if diff is None else f"{diff:.3g}")
    return {"ran": True, "split": split.name, "items": int(len(fp32)), "changed": changed,
            "max_abs_logit_diff": diff, "reason": why}


@dataclass
class Reported:
    text: str  # the report's table (report.txt, the model card)
    calibration: dict[str, Any] | None


def report(prepared: Prepared, encoded: Encoded, trained: Trained, tested: Tested, rd: RunDirectory, cb: Callbacks,
           cancel: CancelToken) -> Reported:
    """report.json, report.txt and predictions.jsonl: the metrics, the calibration (temperature
    fitted on validation), the frozen-feature baseline of tasks that have one, which rows trained
    the model and how."""
    task, data, hw = prepared.task, prepared.data, trained.hardware
    text = task.report_text(tested.result)
    if trained.plan is not None:
        text += "\n" + describe(trained.plan, task.row_unit).capitalize() + "."
    calibration = _calibration(task, trained.loop, encoded.splits, tested.split, tested.logits, cb,
                               trained.first_pass_val_logits, data.label_map.names if data.label_map else [])
    baseline = _baseline(prepared, encoded.backbone, trained.plan, tested.split, rd, cb, cancel)
    if baseline is not None:
        from ..tasks.image.baseline import baseline_text

        text += "\n" + baseline_text(baseline, tested.result.metrics)
    rd.write_json("report.json", {
        "task": task.name,
        "split": tested.split,
        "metrics": tested.result.metrics,
        **tested.result.report,
        "training": dataclasses.asdict(trained.first),
        "trained_on": _trained_on(prepared.rows, trained.plan, task.row_unit),
        **({"calibration": calibration} if calibration else {}),
        **({"baseline": baseline} if baseline is not None else {}),
        "method": trained.method.summary(),
        **({"before_training": trained.before} if trained.before is not None else {}),
        "precision": {"training": hw.precision, "training_reason": hw.reason, "report": REPORT_PRECISION,
                      **({"bf16_check": tested.bf16_check} if tested.bf16_check else {})},
    })
    rd.write_text("report.txt", f"{task.title}, {tested.split} split ({data.resolved['sources'].get(tested.split)})"
                                f"\n\n{text}\n")
    task.write_predictions(rd.path / "predictions.jsonl", tested.logits, encoded.splits[tested.split], data)
    return Reported(text, calibration)


def _trained_on(rows: dict[str, int], plan: RefitPlan | None, unit: str) -> dict[str, Any]:
    """Which rows trained the model that was tested and exported."""
    if plan is None:
        return {"splits": ["train"], "rows": rows.get("train", 0), "unit": unit, "refit": False}
    return {"splits": ["train", "validation"], "rows": plan.rows, "unit": unit, "refit": True,
            **dataclasses.asdict(plan)}


def _calibration(task: Task, loop: TrainingLoop, encoded: dict[str, EncodedSplit], eval_name: str, logits: Any,
                 cb: Callbacks, first_pass_val_logits: Any = None, names: list[str] | None = None
                 ) -> dict[str, Any] | None:
    """ECE and reliability bins of the evaluation split, with a temperature fitted on validation.

    After a refit the final model has trained on the validation rows, so the temperature is fitted
    on the first pass's predictions of them (a model that never saw them, trained the same way).
    Multi-hot labels (several per row): each label's sigmoid scores, no temperature."""
    if not task.calibrated or getattr(logits, "ndim", 0) != 2 or len(logits) == 0:
        return None
    from ..analysis.calibration import calibration_report, label_calibration

    if getattr(encoded[eval_name].labels, "ndim", 1) == 2:
        return label_calibration(logits, encoded[eval_name].labels, list(names or []))

    val = encoded.get("validation")
    val_logits = first_pass_val_logits
    if val_logits is None and val is not None and len(val):
        cb.on_event(PhaseChanged("calibrating", "temperature on the validation split"))
        val_logits = logits if eval_name == "validation" else loop.predict(val, "calibrating", REPORT_PRECISION)[0]
    return calibration_report(logits, encoded[eval_name].labels, val_logits, val.labels if val is not None else None)


def _baseline(prepared: Prepared, backbone: BackboneInfo, plan: RefitPlan | None, eval_name: str, rd: RunDirectory,
              cb: Callbacks, cancel: CancelToken) -> dict[str, Any] | None:
    """The frozen-feature baseline of tasks that report one, trained on the rows the final model
    trained on. A baseline that fails costs the run nothing: the report says why it is missing."""
    task, data, tc = prepared.task, prepared.data, prepared.config.train
    if not task.frozen_baseline:
        return None
    from ..tasks.image.baseline import KIND, frozen_feature_baseline

    rows = merged_rows(data.splits) if plan is not None else data.splits["train"]
    try:
        return frozen_feature_baseline(task, backbone, data, rows, eval_name, tc.max_length, rd.cache_dir / "baseline",
                                       cb, cancel, seed=tc.seed)
    except (Cancelled, KeyboardInterrupt, MemoryError):
        raise
    except Exception as e:  # noqa: BLE001 - reported, with the traceback in the log
        log.warning("the frozen-feature baseline failed", exc_info=True)
        cb.on_event(Warning_(f"the quick baseline (logistic regression on frozen features) failed: "
                             f"{type(e).__name__}: {e}"))
        return {"kind": KIND, "error": f"{type(e).__name__}: {e}"}


# ---- export ------------------------------------------------------------------------------------

@dataclass
class Exported:
    export_dir: str | None  # where --export put the copy
    export_error: Exception | None  # --export could not be written; the model is in RUN/model


def export(prepared: Prepared, encoded: Encoded, trained: Trained, tested: Tested, reported: Reported,
           rd: RunDirectory, cb: Callbacks, cancel: CancelToken, export_lock: ExportLock | None) -> Exported:
    """Write RUN/model (weights, preprocessor, card, ONNX; adapters merged into a plain model) and
    copy it to --export. A copy that fails does not fail the run: the model is in RUN/model."""
    task, tc = prepared.task, prepared.config.train
    cancel.raise_if_cancelled()
    cb.on_event(PhaseChanged("exporting", str(rd.model_dir)))
    model, extra, merge_check = _plain_model(prepared, encoded, trained, tested.split, rd, cb)
    card, meta = _card_and_meta(prepared, encoded, trained, tested, reported, merge_check)
    onnx: Callable[[Path], Any] = partial(
        export_with_onnx, task, model, split=encoded.splits[tested.split], data=prepared.data,
        quantize=prepared.config.quantize, callbacks=cb, cancel=cancel, batch_size=tc.eval_batch_size or 2 * tc.batch_size)
    if not task.onnx_export:  # the task's own extra files (GGUF) in place of ONNX, recorded in workbench.json
        onnx = partial(task.write_extra_exports, meta=meta, callbacks=cb, cancel=cancel)
    export_model(task, model, encoded.preprocessor, rd.model_dir, card, meta, tc.max_length, cancel, onnx=onnx,
                 extra=extra)
    if not prepared.config.export_dir:
        return Exported(None, None)
    return _copy_to_export_dir(prepared, rd, cb, cancel, export_lock)


def _plain_model(prepared: Prepared, encoded: Encoded, trained: Trained, eval_name: str, rd: RunDirectory,
                 cb: Callbacks) -> tuple[Any, Any, dict[str, Any] | None]:
    """The model on the CPU, adapters merged into it; what copies the adapter into the export (with
    --export-adapter), and how far merging moved the outputs."""
    model, method = trained.model, trained.method
    model.to("cpu")
    if not method.uses_adapters:
        return model, None, None
    extra = (_save_adapter(method, model, encoded.preprocessor, rd, encoded.backbone)
             if prepared.config.model.export_adapter else None)
    model, merge_check = _merge_adapters(prepared.task, model, method, encoded.splits[eval_name])
    if method.settings.get("quantization"):
        # QLoRA: the adapters fold into the full-precision base, whose outputs differ from the 4-bit
        # base's by its quantization error; recorded in workbench.json, not warned about
        merge_check["base"] = f"full precision (trained on a {method.settings['quantization']} 4-bit base)"
    elif merge_check["max_abs_diff"] > 1e-3 * max(1.0, merge_check["max_abs_output"]):
        cb.on_event(Warning_(f"the merged model's outputs differ from the trained adapters' by up to "
                             f"{merge_check['max_abs_diff']:.3g} on {merge_check['rows']} {eval_name} rows"))
    return model, extra, merge_check


def _card_and_meta(prepared: Prepared, encoded: Encoded, trained: Trained, tested: Tested, reported: Reported,
                   merge_check: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """The model card (README.md) and workbench.json's facts: labels, metrics, precision, method."""
    task, data, tc, hw = prepared.task, prepared.data, prepared.config.train, trained.hardware
    backbone, metrics, before, bf16 = encoded.backbone, tested.result.metrics, trained.before, tested.bf16_check
    hyper = {k: v for k, v in dataclasses.asdict(tc).items() if v is not None}
    card = task.model_card(task_title=task.title, pipeline_tag=task.pipeline_tag, backbone=backbone.name,
                           data=_card_data(data.resolved, trained.plan), hyper=hyper, metrics=metrics,
                           report_table=reported.text, eval_split=tested.split)
    meta = {"task": task.name, "labels": data.label_map.names if data.label_map else None,
            "max_length": tc.max_length, "backbone": backbone.name, "metrics": metrics,
            "inputs": prediction_inputs(data.resolved),
            "trained_on": data.resolved.get("sources", {}).get("train"),
            **({"metrics_before_training": before} if before is not None else {}),
            **trained.method.summary(), **({"merge_check": merge_check} if merge_check else {}),
            "precision": {"training": hw.precision, "report": REPORT_PRECISION,
                          **({"bf16_check": bf16} if bf16 else {})}}
    meta.update(task.export_meta())  # a task's own facts (a multi-label model's thresholds)
    if reported.calibration and reported.calibration.get("temperature"):
        # Divide the logits by it for calibrated probabilities; transformers' pipeline ignores it.
        meta["temperature"] = reported.calibration["temperature"]
    return card, meta


def _card_data(resolved: dict[str, Any], plan: RefitPlan | None) -> dict[str, Any]:
    """The data as the model card lists it: the rows that trained the final model. After a refit the
    training and held-out validation rows are one source, named so; the test split stays apart."""
    if plan is None:
        return resolved
    sources, rows = dict(resolved.get("sources", {})), dict(resolved.get("rows", {}))
    both = (f"train, refit on all rows ({plan.train_rows:,} training + {plan.validation_rows:,} held out for "
            f"validation)")
    merged_sources = {both: sources.pop("train", "?")}
    merged_rows = {both: f"{plan.rows:,}"}
    for name in sources:
        if name != "validation":
            merged_sources[name], merged_rows[name] = sources[name], rows.get(name, "?")
    return {**resolved, "sources": merged_sources, "rows": merged_rows}


def _copy_to_export_dir(prepared: Prepared, rd: RunDirectory, cb: Callbacks, cancel: CancelToken,
                        export_lock: ExportLock | None) -> Exported:
    config = prepared.config
    target = config.export_dir or ""
    cb.on_event(PhaseChanged("exporting", target))
    try:
        return Exported(str(copy_export(rd.model_dir, target, overwrite=config.overwrite_export,
                                        data_paths=prepared.data_paths, run_dir=rd.path, cancel=cancel,
                                        lock=export_lock)), None)
    except Exception as e:  # the training is done and RUN/model holds it: this run did not fail
        error = e if isinstance(e, WorkbenchError) else (
            write_failure(e, target, permission_too=True)
            or WriteFailed(f"copying the model failed: {type(e).__name__}: {e}", path=target))
        if not isinstance(e, WorkbenchError):
            quietly(rd.write_text, "error.txt", traceback.format_exc())
        cb.on_event(Warning_(f"the model was not copied to {target}: {error} (it is in {rd.model_dir})"))
        return Exported(None, error)


def _save_adapter(method: TrainingMethod, model: Any, preprocessor: Any, rd: RunDirectory, backbone: BackboneInfo):
    """Save the adapter now (merging changes the model in place); returns what copies it into the
    export as ``adapter/``."""
    scratch = rd.cache_dir / "adapter"
    shutil.rmtree(scratch, ignore_errors=True)
    method.save_adapter(model, scratch, backbone.path)
    if hasattr(preprocessor, "save_pretrained"):
        preprocessor.save_pretrained(str(scratch))
    return lambda folder: shutil.copytree(scratch, folder / "adapter")


def _merge_adapters(task: Task, model: Any, method: TrainingMethod, split: EncodedSplit,
                    rows: int = 32) -> tuple[Any, dict[str, Any]]:
    """The adapters merged into a plain model, and how far its outputs moved on a few evaluation rows
    (they should not: merging is exact up to rounding)."""
    import numpy as np
    import torch

    sample = np.arange(min(len(split), rows))

    def outputs(m):
        if not len(sample):
            return None
        batch = {k: torch.from_numpy(v) for k, v in task.make_batch(split, sample).items()}
        labels = batch.pop("labels")
        m.eval()
        with torch.inference_mode():
            return task.kept_outputs(task.forward(m, batch), labels).float()

    before = outputs(model)
    merged = method.merged(model)
    after = outputs(merged)
    diff = float((before - after).abs().max()) if before is not None else 0.0
    scale = float(before.abs().max()) if before is not None else 0.0
    return merged, {"rows": int(len(sample)), "max_abs_diff": diff, "max_abs_output": scale}
