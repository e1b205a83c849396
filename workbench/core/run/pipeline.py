"""One fine-tuning run, end to end: the function every front end calls.

    result = run_training(config, callbacks, cancel)

The work is the stages of stages.py, called in order by ``_run``: check, prepare (read, validate,
split), encode, build, fit, refit, the fp32 test, the report, the export. This module starts a run
(or resumes one from its checkpoint), joins the ranks of a distributed run, holds the locks, and
records how the run ended: failures end with the run directory marked failed, paused or cancelled
and the exception re-raised for the front end to present.
"""

from __future__ import annotations

import logging
import shutil
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import distributed
from ..cancel import NEVER, CancelToken
from ..config import RunConfig
from ..data.fingerprints import data_fingerprints
from ..errors import Cancelled, InputError, Paused, WorkbenchError, WriteFailed, write_failure
from ..events import CallbackList, Callbacks, Failed, Finished, RunStarted, Warning_
from ..events import Cancelled as CancelledEvent
from ..events import Paused as PausedEvent
from ..events import Resumed as ResumedEvent
from ..export.target import ExportLock, check_export_target
from ..training.checkpoints import Checkpoints
from .directory import RankDirectory, RunDirectory, RunLock, read_json_or_none
from .stages import (
    Checked,
    Encoded,
    Exported,
    Prepared,
    Reported,
    Tested,
    Trained,
    build,
    check,
    choose_hardware,
    encode,
    export,
    final_test,
    fit,
    prepare,
    quiet_libraries,
    quietly,
    record_config,
    refit,
    report,
)

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
        config, task, data_paths = check(config)
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
    cb, tracking = _with_tracking(config, rd, callbacks, None)
    try:
        return _execute(config, task, rd, cb, cancel, export_lock, data_paths, None)
    finally:
        if tracking is not None:
            tracking.close()


def _with_tracking(config: RunConfig, rd: RunDirectory, callbacks: Callbacks | None, resumed_at: int | None):
    """The run's events for the run directory, the front end and (rank 0 only: the other ranks never
    come here) the trackers of --report-to, which must never fail the run."""
    from ..tracking.live import start_tracking

    cb = CallbackList(rd, callbacks)
    tracking = start_tracking(config, rd.path, cb, resumed_at)
    if tracking is not None:
        cb.callbacks.append(tracking)
    return cb, tracking


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
    cb, tracking = _with_tracking(config, rd, callbacks, plan.step)
    try:
        return _execute(config, task, rd, cb, cancel, export_lock, data_paths, plan.checkpoint,
                        warnings=plan.warnings)
    finally:
        if tracking is not None:
            tracking.close()


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
    assert config is not None  # a new run's own, or read back from rank 0's above
    config.run_dir = told["run_dir"]
    config, task, data_paths = check(config)
    rd = RankDirectory(Path(told["run_dir"]))
    return _execute(config, task, rd, CallbackList(rd), cancel, None, data_paths, checkpoint)


def _execute(config: RunConfig, task, rd: RunDirectory, cb: CallbackList, cancel: CancelToken,
             export_lock: ExportLock | None, data_paths: list[str], resume: Path | None,
             warnings: Sequence[str] = ()) -> RunResult:
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
        quietly(rd.set_status, "paused", step=e.step, message=str(e))
        quietly(cb.on_event, PausedEvent(e.step, str(e)))
        raise
    except Cancelled:
        distributed.set_ending()
        quietly(rd.set_status, "cancelled")
        quietly(cb.on_event, CancelledEvent())
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
            quietly(rd.set_status, "cancelled")
            quietly(cb.on_event, CancelledEvent())
        elif failure is not None and checkpoint is not None:
            # A full disk: the run keeps its last checkpoint and can go on once there is room.
            failure = WriteFailed(f"{str(failure).rstrip('.')}. The run is paused at its checkpoint of step "
                                  f"{Checkpoints.loop_state(checkpoint).step}: workbench train --resume {rd.path}",
                                  path=failure.path)
            quietly(rd.set_status, "paused", step=Checkpoints.loop_state(checkpoint).step, message=str(failure))
            quietly(cb.on_event, PausedEvent(Checkpoints.loop_state(checkpoint).step, str(failure)))
        else:
            details = traceback.format_exc()
            quietly(rd.write_text, "error.txt", details)
            quietly(rd.set_status, "failed", message=message)
            quietly(cb.on_event, Failed(message, details))
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
    from ..processes import run_owner

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
    checked = check(config)
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


def _run(config: RunConfig, task, rd: RunDirectory, cb: CallbackList, cancel: CancelToken,
         export_lock: ExportLock | None, data_paths: list[str], resume: Path | None) -> RunResult:
    """The stages in order (stages.py); ``resume``: the checkpoint a resumed run goes on from."""
    quiet_libraries()
    dist = distributed.current()
    hardware = choose_hardware(config, task, dist)
    log.info("run %s: task %s, device %s (asked for %s), precision %s (%s)", rd.path, task.name, hardware.device,
             config.train.device, hardware.precision, hardware.reason)
    prepared = prepare(Checked(config, task, data_paths), rd.cache_dir, cb, cancel, rd=rd)
    encoded = encode(prepared, rd.cache_dir, cb, cancel, dist)
    record_config(rd, prepared, encoded, hardware, dist)
    built = build(prepared, encoded.backbone, hardware, len(encoded.splits["train"]), cancel, cb=cb)
    trained = fit(prepared, encoded, built, rd, cb, cancel, resume)
    del built  # the first model lives on in ``trained`` alone: a refit lets go of it before building the final one
    if config.train.refit:
        trained = refit(prepared, encoded, trained, rd, cb, cancel)
    if dist is not None:
        # Training is over: rank 0 tests, reports and exports alone; the other ranks are done.
        dist.finish()
        if not dist.main:
            return _rank_result(prepared, encoded, trained, rd)
    tested = final_test(prepared, encoded, trained, cb)
    reported = report(prepared, encoded, trained, tested, rd, cb, cancel)
    exported = export(prepared, encoded, trained, tested, reported, rd, cb, cancel, export_lock)
    return _finished(prepared, encoded, trained, tested, reported, exported, rd, cb)


def _rank_result(prepared: Prepared, encoded: Encoded, trained: Trained, rd: RunDirectory) -> RunResult:
    """What a rank other than 0 returns: it trained, rank 0 tests and exports."""
    outcome, backbone = trained.outcome, encoded.backbone
    return RunResult(task=prepared.task.name, metrics=dict(outcome.best_metrics or {}),
                     samples_per_second=outcome.samples_per_second, train_seconds=outcome.train_seconds,
                     run_dir=str(rd.path), export_dir=None, report_text="", eval_split=prepared.data.eval_split,
                     backbone={"name": backbone.name, "architecture": backbone.architecture,
                               "parameters": trained.parameters}, method=trained.method.name)


def _finished(prepared: Prepared, encoded: Encoded, trained: Trained, tested: Tested, reported: Reported,
              exported: Exported, rd: RunDirectory, cb: CallbackList) -> RunResult:
    """The run's result; its checkpoints go (a finished run cannot be resumed; its model is exported)
    and it is marked finished."""
    outcome, backbone, metrics = trained.outcome, encoded.backbone, tested.result.metrics
    export_dir, export_error = exported.export_dir, exported.export_error
    result = RunResult(
        task=prepared.task.name,
        metrics=metrics,
        samples_per_second=outcome.samples_per_second,
        train_seconds=outcome.train_seconds,
        run_dir=str(rd.path),
        export_dir=export_dir,
        report_text=reported.text,
        eval_split=tested.split,
        backbone={"name": backbone.name, "architecture": backbone.architecture, "parameters": trained.parameters},
        export_error=export_error,
        method=trained.method.name,
        trainable_parameters=trained.method.trainable,
        metrics_before=trained.before,
    )
    if not prepared.config.train.keep_checkpoints:
        shutil.rmtree(rd.checkpoints_dir, ignore_errors=True)
    rd.set_status("finished", metrics=metrics, export_dir=export_dir,
                  **({"export_error": str(export_error)} if export_error else {}))
    cb.on_event(Finished(metrics, outcome.samples_per_second, str(rd.path), export_dir))
    return result
