"""One fine-tuning run, end to end: the function every front end calls.

    result = run_training(config, callbacks, cancel)

It reads and validates the data, resolves the backbone, tokenizes, trains, evaluates, writes the
run directory and exports the model. Failures end with the run directory marked failed or
cancelled and the exception re-raised for the front end to present.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import shutil
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from . import distributed
from .backbones import model_load_error
from .cancel import NEVER, CancelToken
from .config import RunConfig
from .data.fingerprints import data_fingerprints
from .device import REPORT_PRECISION, choose_precision, cpu_bf16_units, resolve_device
from .errors import Cancelled, InputError, Paused, WorkbenchError, WriteFailed, write_failure
from .events import CallbackList, Callbacks, Failed, Finished, PhaseChanged, RunStarted, TaskReady, Warning_
from .events import Cancelled as CancelledEvent
from .events import Paused as PausedEvent
from .events import Resumed as ResumedEvent
from .export import copy_export, export_model
from .export_target import ExportLock, check_export_target
from .onnx_export import export_with_onnx
from .paths import check_data_path
from .predict.inputs import prediction_inputs
from .refit import (
    AfterFirstPass,
    RefitPlan,
    describe,
    held_out_validation,
    merged_rows,
    plan_refit,
    refit_config,
    refit_stop,
    wants_refit,
)
from .rundir import RankDirectory, RunDirectory, RunLock, read_json_or_none
from .tasks import get_task
from .training.checkpoints import Checkpoints

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    task: str
    metrics: dict[str, float]
    samples_per_second: float
    train_seconds: float
    run_dir: str
    export_dir: str | None
    report_text: str
    eval_split: str
    backbone: dict[str, Any]
    export_error: Exception | None = None  # --export could not be written; the model is in RUN/model
    method: str = "full"
    trainable_parameters: int | None = None
    metrics_before: dict[str, float] | None = None  # tasks that evaluate before training (masked-LM)

    def summary(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "method": self.method,
            "trainable_parameters": self.trainable_parameters,
            "metrics": self.metrics,
            "eval_split": self.eval_split,
            "samples_per_second": round(self.samples_per_second, 2),
            "train_seconds": round(self.train_seconds, 2),
            "run_dir": self.run_dir,
            "export_dir": self.export_dir,
            "export_error": str(self.export_error) if self.export_error else None,
            "backbone": self.backbone,
        }


def result_from_run_dir(run_dir: str | Path) -> RunResult:
    """The result of a finished run read back from its folder (a run another process trained: the
    app's multi-GPU runs)."""
    path = Path(run_dir)
    report = read_json_or_none(path / "report.json") or {}
    status = read_json_or_none(path / "status.json") or {}
    config = read_json_or_none(path / "config.json") or {}
    training = report.get("training") or {}
    backbone = ((config.get("resolved") or {}).get("backbone") or {}) if isinstance(config, dict) else {}
    method = report.get("method") or {}
    try:
        text = (path / "report.txt").read_text(encoding="utf-8")
    except OSError:
        text = ""
    return RunResult(
        task=report.get("task", ""), metrics=report.get("metrics") or status.get("metrics") or {},
        samples_per_second=float(training.get("samples_per_second") or 0.0),
        train_seconds=float(training.get("train_seconds") or 0.0), run_dir=str(path),
        export_dir=status.get("export_dir"), report_text=text, eval_split=report.get("split", ""),
        backbone={"name": backbone.get("name"), "architecture": backbone.get("architecture")},
        method=method.get("method", "full") if isinstance(method, dict) else "full",
        trainable_parameters=method.get("trainable_parameters") if isinstance(method, dict) else None,
    )


def _absolute(path: str | None) -> str | None:
    return str(Path(path).expanduser().resolve()) if path else None


def _quiet_libraries() -> None:
    # Their progress bars and "newly initialized weights" notes are for library developers; the
    # engine reports its own progress through events.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    import transformers

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _checked(config: RunConfig) -> tuple[RunConfig, Any, list[str]]:
    """The config with absolute data paths and the task's choices pinned, its task, its data paths;
    everything a user can get wrong is refused here, before a run directory exists (and before
    anything opens the data: a named pipe would block), so a typo leaves nothing behind."""
    config = dataclasses.replace(
        config,
        data=dataclasses.replace(
            config.data, train=_absolute(config.data.train) or "", val=_absolute(config.data.val), test=_absolute(config.data.test)
        ),
    )
    config.validate()
    data_paths = [p for p in (config.data.train, config.data.val, config.data.test) if p]
    for path in data_paths:
        check_data_path(Path(path), folder_ok=True)
    task = get_task(config.task, config.data.train)
    config.task = task.name
    if config.train.metric is None:
        config.train.metric = task.default_metric
    if config.train.metric not in task.metric_names:
        raise InputError(f"--metric {config.train.metric!r} does not apply to {task.name}; choose one of {', '.join(task.metric_names)}")
    task.configure(config)
    if config.train.group_by_length is None:
        config.train.group_by_length = task.groups_by_length(config.model.method)
    return config, task, data_paths


def _lock_export(config: RunConfig, data_paths: list[str]) -> ExportLock | None:
    """Refuse a bad --export target now, not after an hour of training, and hold it until the run
    ends so that two runs cannot write one folder at once."""
    if not config.export_dir:
        return None
    target = check_export_target(config.export_dir, overwrite=config.overwrite_export, data_paths=data_paths,
                                 run_dir=config.run_dir)
    config.export_dir = str(target)
    return ExportLock(target).acquire()


def run_training(config: RunConfig, callbacks: Callbacks | None = None, cancel: CancelToken = NEVER) -> RunResult:
    """Train ``config``. Started by a launcher as one of several processes (WORLD_SIZE > 1), this
    process joins the group: rank 0 checks the settings and makes the run directory, the others
    follow it (core/distributed.py)."""
    dist = distributed.setup(config.train.device)
    if dist is not None and not dist.main:
        return _follow_rank_zero(config, cancel, dist, resume=False)
    try:
        config, task, data_paths = _checked(config)
        export_lock = _lock_export(config, data_paths)
    except BaseException as e:
        _tell_ranks(dist, e)
        raise
    try:
        rd = RunDirectory.create(config.run_dir, Path(config.data.train).stem, task.name)
    except BaseException as e:
        if export_lock is not None:
            export_lock.release()
        _tell_ranks(dist, e)
        raise
    try:
        _tell_ranks(dist, None, run_dir=str(rd.path))
    except BaseException:
        rd.release_lock()
        raise
    return _execute(config, task, rd, CallbackList(rd, callbacks), cancel, export_lock, data_paths, None)


def resume_training(run_dir: str | Path, callbacks: Callbacks | None = None, cancel: CancelToken = NEVER) -> RunResult:
    """Carry on a paused, cancelled, crashed or killed run from its last complete checkpoint, in its
    own folder; the report and export are those of the whole run."""
    saved = read_json_or_none(Path(run_dir).expanduser() / "config.json")
    device = ((saved or {}).get("train") or {}).get("device", "auto") if isinstance(saved, dict) else "auto"
    dist = distributed.setup(device)
    if dist is not None and not dist.main:
        return _follow_rank_zero(None, cancel, dist, resume=True)
    lock = export_lock = None
    try:
        # The run is this process's before anything in it is read for going on: a second resume
        # (or a run still going) is refused here. Nothing changes until every check has passed.
        path = _run_folder(run_dir)
        lock = _take_run(path)
        plan, (config, task, data_paths) = _plan_resume(path)
        export_lock = _lock_export(config, data_paths)
        cancel.raise_if_cancelled()  # Ctrl+C while the checkpoints were checked: nothing has changed
        _cut_back(plan)
        rd = RunDirectory.reopen(plan.run_dir, lock=lock)
    except BaseException as e:
        if lock is not None:
            lock.release()
        if export_lock is not None:
            export_lock.release()
        _tell_ranks(dist, e)
        raise
    try:
        _tell_ranks(dist, None, run_dir=str(rd.path), checkpoint=str(plan.checkpoint), config=plan.config.to_dict())
    except BaseException:
        rd.close()
        rd.release_lock()
        raise
    return _execute(config, task, rd, CallbackList(rd, callbacks), cancel, export_lock, data_paths, plan.checkpoint,
                    warnings=plan.warnings)


def _tell_ranks(dist, error: BaseException | None, **start) -> None:
    """Rank 0 tells the other ranks where the run is, or that it will not start (and why)."""
    if dist is None:
        return
    dist.broadcast({"error": str(error) or type(error).__name__} if error is not None else start)


def _follow_rank_zero(config: RunConfig | None, cancel: CancelToken, dist, resume: bool) -> RunResult:
    """A rank other than 0: the same run, from where rank 0 says it is, writing nothing."""
    told = dist.broadcast(None)
    if "error" in told:
        raise distributed.RankStopped(f"rank 0 did not start the run: {told['error']}")
    checkpoint = None
    if resume:
        config = RunConfig.from_dict(told["config"])
        checkpoint = Path(told["checkpoint"])
        if not (checkpoint / "state.json").is_file():
            raise InputError("rank 0's checkpoint is not readable from this process: resuming a run on several "
                             "machines needs its run directory on a filesystem they share", path=checkpoint)
    config.run_dir = told["run_dir"]
    config, task, data_paths = _checked(config)
    rd = RankDirectory(Path(told["run_dir"]))
    return _execute(config, task, rd, CallbackList(rd), cancel, None, data_paths, checkpoint)


def _execute(config: RunConfig, task, rd: RunDirectory, cb: CallbackList, cancel: CancelToken,
             export_lock: ExportLock | None, data_paths: list[str], resume: Path | None,
             warnings: list[str] = ()) -> RunResult:
    """Run (or go on with) the run in ``rd``, and record how it ended whatever happens."""
    try:
        if (dist := distributed.current()) is not None:
            config.train.num_processes = dist.world_size  # config.json repeats the run as it ran
        if resume is None:
            cb.on_event(RunStarted(str(rd.path)))
            config.run_dir = str(rd.path)
            rd.write_json("config.json", config.to_dict())
        else:
            cb.on_event(ResumedEvent(Checkpoints.loop_state(resume).step, str(resume)))
        for warning in warnings:
            cb.on_event(Warning_(warning))
        return _run(config, task, rd, cb, cancel, export_lock, data_paths, resume)
    except Paused as e:
        distributed.set_ending()
        _record(rd.set_status, "paused", step=e.step, message=str(e))
        _record(cb.on_event, PausedEvent(e.step, str(e)))
        raise
    except Cancelled:
        distributed.set_ending()
        _record(rd.set_status, "cancelled")
        _record(cb.on_event, CancelledEvent())
        raise
    except BaseException as e:
        distributed.set_ending()
        failure = write_failure(e, rd.path)
        if failure is not None:
            rd.release_reserve()  # room for status.json and error.txt
        message = str(failure or e) if isinstance(e, WorkbenchError) or failure else f"{type(e).__name__}: {e}"
        # A resumed run has its checkpoint from the start: a full disk before training pauses it too.
        checkpoint = Checkpoints(rd.checkpoints_dir).latest() if rd.training_started or resume else None
        if isinstance(e, InputError) and not rd.training_started and resume is None:
            # Bad input found before any training: nothing worth keeping, so leave nothing behind.
            rd.discard()
        elif isinstance(e, KeyboardInterrupt):
            _record(rd.set_status, "cancelled")
            _record(cb.on_event, CancelledEvent())
        elif failure is not None and checkpoint is not None:
            # A full disk: the run keeps its last checkpoint and can go on once there is room.
            failure = WriteFailed(f"{str(failure).rstrip('.')}. The run is paused at its checkpoint of step "
                                  f"{Checkpoints.loop_state(checkpoint).step}: workbench train --resume {rd.path}",
                                  path=failure.path)
            _record(rd.set_status, "paused", step=Checkpoints.loop_state(checkpoint).step, message=str(failure))
            _record(cb.on_event, PausedEvent(Checkpoints.loop_state(checkpoint).step, str(failure)))
        else:
            details = traceback.format_exc()
            _record(rd.write_text, "error.txt", details)
            _record(rd.set_status, "failed", message=message)
            _record(cb.on_event, Failed(message, details))
        if failure is not None:
            raise failure from e
        raise
    finally:
        rd.remove_scratch()  # tokenized copies of the data; the report keeps the rest
        rd.close()  # and its lock: another process may take the run on
        if export_lock is not None:
            export_lock.release()
        distributed.forget()
        distributed.set_ending(False)


@dataclass
class ResumePlan:
    run_dir: Path
    config: RunConfig
    checkpoint: Path
    step: int
    fingerprints: dict[str, Any]
    # Newer checkpoints found damaged (each with what is wrong): set aside when the run goes on.
    damaged: list[tuple[Path, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # said when the run goes on (damaged checkpoints...)
    metrics_bytes: int | None = None  # metrics.jsonl is cut back to this length (the checkpoint's)


def prepare_resume(run_dir: str | Path) -> ResumePlan:
    """Check that the run in ``run_dir`` can go on and, once every check has passed, cut its
    metrics.jsonl back to its newest intact checkpoint (steps logged after it are trained again).
    Quick: a front end calls it before it shows the run's curves and starts the worker. A run that
    cannot go on is refused (InputError) with its folder left exactly as it was."""
    path = _run_folder(run_dir)
    lock = _take_run(path)
    try:
        plan, _ = _plan_resume(path)
        _cut_back(plan)
        return plan
    finally:
        lock.release()


def _run_folder(run_dir: str | Path) -> Path:
    path = Path(run_dir).expanduser().resolve()
    if not path.exists():
        raise InputError("no such folder: --resume takes a run directory (RUN_DIR, as printed when the run "
                         "started)", path=path)
    if not path.is_dir():
        raise InputError("is a file; --resume takes the run's folder (RUN_DIR, as printed when the run started)",
                         path=path)
    if not (path / "config.json").is_file():
        raise InputError("is not a Workbench run directory (it has no config.json)", path=path)
    return path


def _take_run(path: Path) -> RunLock:
    """The run's lock, or why not: another process has it (InputError naming it), or the folder
    cannot be written (WriteFailed)."""
    try:
        return RunLock.acquire(path)
    except OSError as e:
        if write_failure(e, path, permission_too=True) is None:
            raise
        raise WriteFailed(f"{path}: cannot write in this run directory ({e.strerror or e}); a run goes on in its "
                          "own folder: make it writable (or free space on its disk) and resume again",
                          path=path) from None


def _plan_resume(path: Path) -> tuple[ResumePlan, tuple[RunConfig, Any, list[str]]]:
    """Every check a resume needs, reading only: the run's state, its checkpoints (sizes and hashes),
    its config and its data. Returns the plan and the checked config, task and data paths."""
    from .processes import run_owner

    status = read_json_or_none(path / "status.json")
    status = status if isinstance(status, dict) else {}
    state = status.get("state")
    if state == "finished":
        raise InputError(f"this run finished already; its model is in {path / 'model'}", path=path)
    if run_owner(status) is not None:
        raise InputError(f"this run is still going (process {status.get('pid')})", path=path)
    checkpoints = Checkpoints(path / "checkpoints")
    checkpoint, damaged = checkpoints.newest_intact()
    if checkpoint is None:
        if damaged:
            raise InputError("this run cannot go on where it stopped: its checkpoints are damaged ("
                             + "; ".join(f"{cp.name}: {why}" for cp, why in damaged)
                             + "); start it again with workbench train --config RUN/config.json", path=path)
        raise InputError("this run has no checkpoint to go on from: it stopped before its first one (checkpoints "
                         "are written at each evaluation and every --save-minutes); start it again with "
                         "workbench train --config RUN/config.json", path=path)
    if (problem := checkpoints.verify_best()) is not None:
        raise InputError(f"this run cannot go on where it stopped: its best weights so far are damaged ({problem}); "
                         "start it again with workbench train --config RUN/config.json",
                         path=checkpoints.folder / "best")
    raw = read_json_or_none(path / "config.json")
    if not isinstance(raw, dict):
        raise InputError("config.json is not readable", path=path / "config.json")
    resolved = raw.pop("resolved", {}) or {}
    try:
        config = RunConfig.from_dict(raw)
    except (TypeError, ValueError, AttributeError, KeyError) as e:
        raise InputError(f"invalid config ({e})", path=path / "config.json") from None
    config.run_dir = str(path)
    for data in (config.data.train, config.data.val, config.data.test):
        if data and not Path(data).exists() and not Path(data).is_symlink():
            raise InputError("this run's data is not there any more (moved or deleted?); --resume goes on with the "
                             "same data at the same path: put it back, or start a new run", path=data)
    checked = _checked(config)
    fingerprints = (resolved.get("data_fingerprint") or {}) if isinstance(resolved, dict) else {}
    changed = [p for p, fp in data_fingerprints(checked[2]).items() if fingerprints.get(p) != fp]
    if fingerprints and changed:
        raise InputError("the data changed since this run started, so it cannot go on where it stopped; start a "
                         "new run (workbench train --config RUN/config.json)", path=changed[0])
    loop = Checkpoints.loop_state(checkpoint)
    warnings = [f"checkpoint {cp} is damaged ({why}); going on from {checkpoint.name}, the newest intact one "
                f"({cp.name} is kept aside as damaged-{cp.name})" for cp, why in damaged]
    warnings += [f"checkpoint {old} was found damaged and set aside; going on from {checkpoint.name}"
                 for old in checkpoints.damaged_after(loop.step)]
    try:
        size = (path / "metrics.jsonl").stat().st_size
    except FileNotFoundError:
        size = None
    if size is None or size < loop.metrics_bytes:
        warnings.append(f"metrics.jsonl is {'missing' if size is None else 'shorter than when the checkpoint was written'}"
                        f": the events before step {loop.step} are lost (the run goes on)")
    return ResumePlan(path, config, checkpoint, loop.step, fingerprints, damaged, warnings, loop.metrics_bytes), checked


def _cut_back(plan: ResumePlan) -> None:
    """Every check has passed: what was logged after the checkpoint goes (it is logged again), and
    half-written and damaged checkpoints are put out of the way."""
    checkpoints = Checkpoints(plan.run_dir / "checkpoints")
    metrics = plan.run_dir / "metrics.jsonl"
    cut = plan.metrics_bytes
    if cut is None:
        cut = Checkpoints.loop_state(plan.checkpoint).metrics_bytes
    try:
        try:
            if metrics.stat().st_size > cut:
                with open(metrics, "r+b") as f:
                    f.truncate(cut)
        except FileNotFoundError:
            pass  # RunDirectory.reopen starts it again
        checkpoints.sweep()
        for cp, _ in plan.damaged:
            checkpoints.set_aside(cp)
    except OSError as e:
        failure = write_failure(e, plan.run_dir, permission_too=True)
        if failure is None:
            raise
        raise failure from None


def _record(write, *args, **kwargs) -> None:
    """Record how a run ended without letting a second failure (the disk still full) hide the first."""
    try:
        write(*args, **kwargs)
    except (OSError, ValueError):
        pass


@contextmanager
def _loading_model(folder: str):
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


def _run(config: RunConfig, task, rd: RunDirectory, cb: CallbackList, cancel: CancelToken,
         export_lock: ExportLock | None, data_paths: list[str], resume: Path | None) -> RunResult:
    _quiet_libraries()
    import torch

    from .training.loop import TrainingLoop, planned_steps
    from .training.methods import apply_method

    tc = config.train
    dist = distributed.current()
    device = distributed.device_for_rank(resolve_device(tc.device), dist)
    precision, precision_reason = choose_precision(tc.precision, device, task.cpu_bf16_not_worth)
    log.info("run %s: task %s, device %s (asked for %s), precision %s (%s)", rd.path, task.name, device,
             tc.device, precision, precision_reason)

    data = task.prepare_data(config.data, tc.seed, rd.cache_dir, cb, cancel)
    rd.write_json("validation.json", data.report.to_dict())
    for w in data.resolved.get("warnings", []):
        cb.on_event(Warning_(w))
    for f in data.report.findings:
        if f.severity == "warning":
            cb.on_event(Warning_(f.message))
    metric_specs = [m.to_dict() for m in task.metric_specs()]
    cb.on_event(TaskReady(task.name, task.title, metric_specs, tc.metric))

    cb.on_event(PhaseChanged("loading_model", config.model.name))
    backbone = task.resolve_backbone(config.model.name)
    log.info("backbone %r resolved to %s (%s)", config.model.name, backbone.path, backbone.source)
    cancel.raise_if_cancelled()
    with _loading_model(backbone.path):
        preprocessor = task.load_preprocessor(backbone.path)
    limit = task.position_limit(backbone.path, preprocessor)
    if limit and tc.max_length > limit:
        cb.on_event(Warning_(f"--max-length {tc.max_length} is more than {backbone.name} can take ({limit} tokens); "
                             f"using {limit}"))
        tc.max_length = limit

    encoded = {
        name: task.encode(name, ds, preprocessor, tc.max_length, rd.cache_dir, cb, cancel)
        for name, ds in data.splits.items()
    }
    for name, split in encoded.items():
        if split.truncated:
            cb.on_event(Warning_(f"{split.truncated} of {len(split)} {name} rows reached --max-length {tc.max_length} and were cut"))
    if dist is not None:
        _check_same_data(dist, encoded, data)

    # The resolved config: what was inferred (columns, delimiter, header, task) is pinned so
    # re-running it reads the data the same way.
    for key in ("text_column", "label_column", "text_pair_column", "tag_column", "delimiter", "has_header"):
        if key in data.resolved:
            setattr(config.data, key, data.resolved[key])
    for key in ("image_size", "augment"):  # chosen from the images (image_policy.py)
        if getattr(tc, key) is None and data.resolved.get(key) is not None:
            setattr(tc, key, data.resolved[key])
    rows = {k: len(v) for k, v in data.splits.items()}
    epochs_reason = _choose_epochs(task, config, rows, data.resolved.get("sources", {}), "validation" in encoded, cb)
    tc.refit, refit_reason = wants_refit(tc.refit, data.resolved.get("sources", {}), rows, capped=bool(tc.max_steps))
    if tc.refit:
        cb.on_event(PhaseChanged("planning", f"after choosing the number of epochs on the held-out validation "
                                             f"split, the final model trains again on all {rows['train'] + rows['validation']:,} "
                                             f"{task.row_unit} ({refit_reason}; --no-refit turns it off)"))
    resolved = {
        **data.resolved,
        "refit_reason": refit_reason,
        "epochs_reason": epochs_reason,
        "device": str(device),
        "precision": precision,
        "precision_reason": precision_reason,
        "backbone": dataclasses.asdict(backbone),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "truncated": {k: v.truncated for k, v in encoded.items()},
        "metrics": metric_specs,
        "data_fingerprint": data_fingerprints(data_paths),
        **({"distributed": {"processes": dist.world_size, "backend": dist.backend,
                            "effective_batch": tc.batch_size * dist.world_size * tc.grad_accum}} if dist else {}),
    }
    from .corrections import read_corrections

    if (corrected := read_corrections(config.data.train)) is not None:
        resolved["corrected_from"] = corrected  # a corrected copy: its original and every decision
    rd.write_json("config.json", {**config.to_dict(), "resolved": resolved})

    cancel.raise_if_cancelled()
    torch.manual_seed(tc.seed)
    with _loading_model(backbone.path):
        model = task.build_model(backbone.path, data)
    n_params = sum(p.numel() for p in model.parameters())
    architecture = type(model).__name__
    log.info("attention: %s", getattr(getattr(model, "config", None), "_attn_implementation", "n/a"))  # sdpa: fused kernels
    model, method = apply_method(model, config.model, planned_steps(len(encoded["train"]), tc)[1])
    log.info("training method: %s", method.describe())
    cb.on_event(PhaseChanged("model_ready", f"{backbone.name}: {architecture}, {method.describe()}, on {device} "
                                            f"({precision}: {precision_reason}){_effective_batch(tc, dist)}"))

    checkpoints = Checkpoints(rd.checkpoints_dir)
    loop = TrainingLoop(
        model, task, data, encoded["train"], encoded.get("validation"), tc, device, precision, cb, cancel,
        checkpoints=checkpoints, metrics_position=rd.metrics_position, method=method,
    )
    before = _evaluate_before(task, loop, encoded[data.eval_split], rd, cb, resume)
    rd.training_started = True
    outcome = first = loop.run(resume)
    plan, first_pass_val_logits = None, None
    if tc.refit:
        plan = plan_refit(first, planned_steps(len(encoded["train"]), tc)[0], rows)
        if task.calibrated:  # for the temperature: the refitted model will have seen these rows
            first_pass_val_logits = loop.predict(encoded["validation"], "calibrating", REPORT_PRECISION)[0]
        del model, loop  # the first pass's model (and its best weights) are done with
        model, loop, second, method = _second_pass(task, data, tc, config.model, plan, first, backbone, preprocessor,
                                                   device, precision, rd, cb, cancel)
        outcome = dataclasses.replace(
            second, steps=first.steps + second.steps, train_seconds=first.train_seconds + second.train_seconds,
            samples_seen=first.samples_seen + second.samples_seen, best_step=first.best_step,
            best_metrics=first.best_metrics, stopped_early=first.stopped_early,
            samples_per_second=(first.samples_seen + second.samples_seen)
            / max(first.train_seconds + second.train_seconds, 1e-9))

    if dist is not None:
        # Training is over: rank 0 tests, reports and exports alone; the other ranks are done.
        dist.finish()
        if not dist.main:
            return RunResult(task=task.name, metrics=dict(outcome.best_metrics or {}),
                             samples_per_second=outcome.samples_per_second, train_seconds=outcome.train_seconds,
                             run_dir=str(rd.path), export_dir=None, report_text="", eval_split=data.eval_split,
                             backbone={"name": backbone.name, "architecture": backbone.architecture,
                                       "parameters": n_params}, method=method.name)

    eval_name = data.eval_split
    cb.on_event(PhaseChanged("testing", eval_name))
    # The report describes the export: fp32, as pipeline and ONNX Runtime run it, whatever trained.
    result, logits = loop.evaluate(encoded[eval_name], precision=REPORT_PRECISION)
    cb.on_event(_eval_event(outcome, eval_name, result.metrics))
    bf16_check = _bf16_check(task, loop, encoded[eval_name], logits, device, cb)
    report_text = task.report_text(result)
    if plan is not None:
        report_text += "\n" + describe(plan, task.row_unit).capitalize() + "."
    calibration = _calibration(task, loop, encoded, eval_name, logits, cb, first_pass_val_logits)
    baseline = _baseline(task, backbone, data, plan, eval_name, tc, rd, cb, cancel)
    if baseline is not None:
        from .baseline import baseline_text

        report_text += "\n" + baseline_text(baseline, result.metrics)
    rd.write_json(
        "report.json",
        {
            "task": task.name,
            "split": eval_name,
            "metrics": result.metrics,
            **result.report,
            "training": dataclasses.asdict(first),
            "trained_on": _trained_on(rows, plan, task.row_unit),
            **({"calibration": calibration} if calibration else {}),
            **({"baseline": baseline} if baseline is not None else {}),
            "method": method.summary(),
            **({"before_training": before} if before is not None else {}),
            "precision": {"training": precision, "training_reason": precision_reason, "report": REPORT_PRECISION,
                          **({"bf16_check": bf16_check} if bf16_check else {})},
        },
    )
    rd.write_text("report.txt", f"{task.title}, {eval_name} split ({data.resolved['sources'].get(eval_name)})\n\n{report_text}\n")
    task.write_predictions(rd.path / "predictions.jsonl", logits, encoded[eval_name], data)

    cancel.raise_if_cancelled()
    cb.on_event(PhaseChanged("exporting", str(rd.model_dir)))
    model.to("cpu")
    extra = None
    merge_check = None
    if method.uses_adapters:
        extra = _save_adapter(method, model, preprocessor, rd, backbone) if config.model.export_adapter else None
        model, merge_check = _merge_adapters(task, model, method, encoded[eval_name])
        if merge_check["max_abs_diff"] > 1e-3 * max(1.0, merge_check["max_abs_output"]):
            cb.on_event(Warning_(f"the merged model's outputs differ from the trained adapters' by up to "
                                 f"{merge_check['max_abs_diff']:.3g} on {merge_check['rows']} {eval_name} rows"))
    hyper = {k: v for k, v in dataclasses.asdict(tc).items() if v is not None}
    card = task.model_card(
        task_title=task.title,
        pipeline_tag=task.pipeline_tag,
        backbone=backbone.name,
        data=data.resolved,
        hyper=hyper,
        metrics=result.metrics,
        report_table=report_text,
        eval_split=eval_name,
    )
    meta = {"task": task.name, "labels": data.label_map.names if data.label_map else None,
            "max_length": tc.max_length, "backbone": backbone.name, "metrics": result.metrics,
            "inputs": prediction_inputs(data.resolved),
            "trained_on": data.resolved.get("sources", {}).get("train"),
            **({"metrics_before_training": before} if before is not None else {}),
            **method.summary(), **({"merge_check": merge_check} if merge_check else {}),
            "precision": {"training": precision, "report": REPORT_PRECISION,
                          **({"bf16_check": bf16_check} if bf16_check else {})}}
    if calibration and calibration.get("temperature"):
        # Divide the logits by it for calibrated probabilities; transformers' pipeline ignores it.
        meta["temperature"] = calibration["temperature"]
    onnx = partial(export_with_onnx, task, model, split=encoded[eval_name], data=data, quantize=config.quantize,
                   callbacks=cb, cancel=cancel, batch_size=tc.eval_batch_size or 2 * tc.batch_size)
    export_model(task, model, preprocessor, rd.model_dir, card, meta, tc.max_length, cancel, onnx=onnx, extra=extra)
    export_dir, export_error = None, None
    if config.export_dir:
        cb.on_event(PhaseChanged("exporting", config.export_dir))
        try:
            export_dir = str(copy_export(rd.model_dir, config.export_dir, overwrite=config.overwrite_export,
                                         data_paths=data_paths, run_dir=rd.path, cancel=cancel, lock=export_lock))
        except Exception as e:  # the training is done and RUN/model holds it: this run did not fail
            export_error = e if isinstance(e, WorkbenchError) else (
                write_failure(e, config.export_dir, permission_too=True)
                or WriteFailed(f"copying the model failed: {type(e).__name__}: {e}", path=config.export_dir))
            if not isinstance(e, WorkbenchError):
                _record(rd.write_text, "error.txt", traceback.format_exc())
            cb.on_event(Warning_(f"the model was not copied to {config.export_dir}: {export_error} (it is in "
                                 f"{rd.model_dir})"))

    run_result = RunResult(
        task=task.name,
        metrics=result.metrics,
        samples_per_second=outcome.samples_per_second,
        train_seconds=outcome.train_seconds,
        run_dir=str(rd.path),
        export_dir=export_dir,
        report_text=report_text,
        eval_split=eval_name,
        backbone={"name": backbone.name, "architecture": backbone.architecture, "parameters": n_params},
        export_error=export_error,
        method=method.name,
        trainable_parameters=method.trainable,
        metrics_before=before,
    )
    if not tc.keep_checkpoints:  # a finished run cannot be resumed; its model is exported
        shutil.rmtree(rd.checkpoints_dir, ignore_errors=True)
    rd.set_status("finished", metrics=result.metrics, export_dir=export_dir,
                  **({"export_error": str(export_error)} if export_error else {}))
    cb.on_event(Finished(result.metrics, outcome.samples_per_second, str(rd.path), export_dir))
    return run_result


def _second_pass(task, data, tc, model_cfg, plan: RefitPlan, first, backbone, preprocessor, device, precision, rd,
                 cb, cancel):
    """Train the final model from the backbone on the training and held-out rows together, by the
    same method (full, frozen, LoRA)."""
    import torch

    from .training.loop import TrainingLoop, planned_steps
    from .training.methods import apply_method

    cb.on_event(PhaseChanged("refitting", describe(plan, task.row_unit)))
    # Its own cache folder: the first pass's token files stay mapped while this one is written.
    split = task.encode("train", merged_rows(data.splits), preprocessor, tc.max_length, rd.cache_dir / "refit", cb,
                        cancel)
    cancel.raise_if_cancelled()
    torch.manual_seed(tc.seed)
    with _loading_model(backbone.path):
        model = task.build_model(backbone.path, data)
    # No checkpoints: a run stopped in this pass goes on from the first pass's last one and trains
    # this pass again (it is short: refit is for small sets).
    refit_tc = refit_config(tc, plan)
    per_epoch, total = planned_steps(len(split), refit_tc)
    model, method = apply_method(model, model_cfg, total)
    loop = TrainingLoop(model, task, data, split, None, refit_tc, device, precision,
                        AfterFirstPass(cb, first.steps, plan.first_pass_epochs, first.train_seconds),
                        cancel, checkpoints=None, metrics_position=rd.metrics_position,
                        stop_at=refit_stop(plan, per_epoch), method=method)
    try:
        return model, loop, loop.run(), method
    except Paused as e:
        last = Checkpoints(rd.checkpoints_dir).latest()
        at = Checkpoints.loop_state(last).step if last else 0
        raise Paused(at, f"paused while training on all rows (step {first.steps + e.step}); it goes on from the "
                         f"checkpoint at step {at} and trains the final model again") from None


def _effective_batch(tc, dist) -> str:
    """", effective batch 64 = 16 rows x 2 processes x 2 accumulated" where it is not just --batch-size."""
    n = dist.world_size if dist is not None else 1
    if n == 1 and tc.grad_accum == 1:
        return ""
    return (f", effective batch {tc.batch_size * n * tc.grad_accum} = {tc.batch_size} rows x {n} "
            f"process{'es' if n > 1 else ''} x {tc.grad_accum} accumulated")


def _check_same_data(dist, encoded, data) -> None:
    """Every rank must have read the same rows (a machine with another copy of the data would train
    on something else): compare the split sizes and label names with rank 0's."""
    mine = {"rows": {k: len(v) for k, v in encoded.items()},
            "labels": list(data.label_map.names) if getattr(data, "label_map", None) else None}
    for rank, theirs in enumerate(dist.gather(mine)):
        if theirs != mine:
            raise InputError(f"the processes of this run read different data (rank {dist.rank}: {mine}; rank {rank}: "
                             f"{theirs}); every machine needs the same data files at the same paths")


def _baseline(task, backbone, data, plan: RefitPlan | None, eval_name: str, tc, rd: RunDirectory, cb: CallbackList,
              cancel: CancelToken) -> dict[str, Any] | None:
    """The frozen-feature baseline of tasks that report one, trained on the rows the final model
    trained on. A baseline that fails costs the run nothing: the report says why it is missing."""
    if not task.frozen_baseline:
        return None
    from .baseline import KIND, frozen_feature_baseline

    rows = merged_rows(data.splits) if plan is not None else data.splits["train"]
    try:
        return frozen_feature_baseline(task, backbone, data, rows, eval_name, tc.max_length, rd.cache_dir / "baseline",
                                       cb, cancel, seed=tc.seed)
    except (Cancelled, KeyboardInterrupt, MemoryError):
        raise
    except Exception as e:  # noqa: BLE001 - reported, with the traceback in the log
        log.warning("the frozen-feature baseline failed", exc_info=True)
        cb.on_event(Warning_(f"the quick baseline (logistic regression on frozen features) failed: {type(e).__name__}: {e}"))
        return {"kind": KIND, "error": f"{type(e).__name__}: {e}"}


def _choose_epochs(task, config: RunConfig, rows: dict[str, int], data_sources: dict[str, str], validated: bool,
                   cb) -> str:
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


def _trained_on(rows: dict[str, int], plan: RefitPlan | None, unit: str) -> dict[str, Any]:
    """Which rows trained the model that was tested and exported."""
    if plan is None:
        return {"splits": ["train"], "rows": rows.get("train", 0), "unit": unit, "refit": False}
    return {"splits": ["train", "validation"], "rows": plan.rows, "unit": unit, "refit": True,
            **dataclasses.asdict(plan)}


def _calibration(task, loop, encoded, eval_name: str, logits, cb, first_pass_val_logits=None) -> dict[str, Any] | None:
    """ECE and reliability bins of the evaluation split, with a temperature fitted on validation.

    After a refit the final model has trained on the validation rows, so the temperature is fitted
    on the first pass's predictions of them (a model that never saw them, trained the same way)."""
    if not task.calibrated or getattr(logits, "ndim", 0) != 2 or len(logits) == 0:
        return None
    from .calibration import calibration_report

    val = encoded.get("validation")
    val_logits = first_pass_val_logits
    if val_logits is None and val is not None and len(val):
        cb.on_event(PhaseChanged("calibrating", "temperature on the validation split"))
        val_logits = logits if eval_name == "validation" else loop.predict(val, "calibrating", REPORT_PRECISION)[0]
    return calibration_report(logits, encoded[eval_name].labels, val_logits, val.labels if val is not None else None)


def _bf16_check(task, loop, split, logits, device, cb) -> dict[str, Any] | None:
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
    changed = int((bf16 != fp32).sum())
    diff = float(np.abs(bf16_logits - logits).max()) if logits.shape == bf16_logits.shape else None
    log.info("bf16 check on %s: %d of %d labels change, logits move by up to %s", split.name, changed, len(fp32), diff)
    return {"ran": True, "split": split.name, "items": int(len(fp32)), "changed": changed,
            "max_abs_logit_diff": diff, "reason": why}


def _evaluate_before(task, loop, split, rd: RunDirectory, cb: CallbackList, resume: Path | None):
    """The untrained model's metrics, for tasks that compare before and after (masked-LM adaptation);
    plotted at step 0. A resumed run reads what its first start measured."""
    from .events import EvalMetrics

    if not task.evaluate_before_training:
        return None
    if resume is not None:
        return read_json_or_none(rd.path / "before_training.json")
    cb.on_event(PhaseChanged("evaluating", "before training"))
    result, _ = loop.evaluate(split, precision=REPORT_PRECISION)  # compared with the fp32 test below
    rd.write_json("before_training.json", result.metrics)
    cb.on_event(EvalMetrics(0, 0.0, split.name, dict(result.metrics), False))
    return result.metrics


def _save_adapter(method, model, preprocessor, rd: RunDirectory, backbone):
    """Save the adapter now (merging changes the model in place); returns what copies it into the
    export as ``adapter/``."""
    scratch = rd.cache_dir / "adapter"
    shutil.rmtree(scratch, ignore_errors=True)
    method.save_adapter(model, scratch, backbone.path)
    if hasattr(preprocessor, "save_pretrained"):
        preprocessor.save_pretrained(str(scratch))
    return lambda folder: shutil.copytree(scratch, folder / "adapter")


def _merge_adapters(task, model, method, split, rows: int = 32):
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


def _eval_event(outcome, split: str, metrics: dict[str, float]):
    from .events import EvalMetrics

    return EvalMetrics(outcome.steps, 0.0, split, dict(metrics), False)
