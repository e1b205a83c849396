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
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .backbones import model_load_error
from .cancel import NEVER, CancelToken
from .config import RunConfig
from .device import resolve_device, resolve_precision
from .errors import Cancelled, InputError, WorkbenchError, WriteFailed, write_failure
from .events import CallbackList, Callbacks, Failed, Finished, PhaseChanged, RunStarted, TaskReady, Warning_
from .events import Cancelled as CancelledEvent
from .export import copy_export, export_model
from .export_target import ExportLock, check_export_target
from .paths import check_data_path
from .rundir import RunDirectory
from .tasks import get_task

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

    def summary(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "metrics": self.metrics,
            "eval_split": self.eval_split,
            "samples_per_second": round(self.samples_per_second, 2),
            "train_seconds": round(self.train_seconds, 2),
            "run_dir": self.run_dir,
            "export_dir": self.export_dir,
            "export_error": str(self.export_error) if self.export_error else None,
            "backbone": self.backbone,
        }


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


def run_training(config: RunConfig, callbacks: Callbacks | None = None, cancel: CancelToken = NEVER) -> RunResult:
    config = dataclasses.replace(
        config,
        data=dataclasses.replace(
            config.data, train=_absolute(config.data.train) or "", val=_absolute(config.data.val), test=_absolute(config.data.test)
        ),
    )
    config.validate()
    # Checked before a run directory exists (and before anything opens the data: a named pipe
    # would block) so a typo leaves nothing behind.
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
        config.train.group_by_length = task.group_by_length_default
    export_lock = None
    if config.export_dir:
        # Refused now, not after an hour of training; held until the run ends so that two runs
        # cannot write one folder at once.
        target = check_export_target(config.export_dir, overwrite=config.overwrite_export, data_paths=data_paths,
                                     run_dir=config.run_dir)
        config.export_dir = str(target)
        export_lock = ExportLock(target).acquire()
    try:
        rd = RunDirectory.create(config.run_dir, Path(config.data.train).stem, task.name)
    except BaseException:
        if export_lock is not None:
            export_lock.release()
        raise
    cb = CallbackList(rd, callbacks)
    try:
        cb.on_event(RunStarted(str(rd.path)))
        config.run_dir = str(rd.path)
        rd.write_json("config.json", config.to_dict())
        return _run(config, task, rd, cb, cancel, export_lock, data_paths)
    except Cancelled:
        _record(rd.set_status, "cancelled")
        _record(cb.on_event, CancelledEvent())
        raise
    except BaseException as e:
        failure = write_failure(e, rd.path)
        if failure is not None:
            rd.release_reserve()  # room for status.json and error.txt
        message = str(failure or e) if isinstance(e, WorkbenchError) or failure else f"{type(e).__name__}: {e}"
        if isinstance(e, InputError) and not rd.training_started:
            # Bad input found before any training: nothing worth keeping, so leave nothing behind.
            rd.discard()
        elif isinstance(e, KeyboardInterrupt):
            _record(rd.set_status, "cancelled")
            _record(cb.on_event, CancelledEvent())
        else:
            details = traceback.format_exc()
            _record(rd.write_text, "error.txt", details)
            _record(rd.set_status, "failed", message=message)
            _record(cb.on_event, Failed(message, details))
        if failure is not None:
            raise failure from e
        raise
    finally:
        rd.close()
        rd.remove_scratch()  # tokenized copies of the data; the report keeps the rest
        if export_lock is not None:
            export_lock.release()


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
         export_lock: ExportLock | None, data_paths: list[str]) -> RunResult:
    _quiet_libraries()
    import torch

    from .training.loop import TrainingLoop

    tc = config.train
    device = resolve_device(tc.device)
    precision = resolve_precision(tc.precision, device)
    log.info("run %s: task %s, device %s (asked for %s), precision %s (asked for %s)", rd.path, task.name, device,
             tc.device, precision, tc.precision)

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

    # The resolved config: what was inferred (columns, delimiter, header, task) is pinned so
    # re-running it reads the data the same way.
    for key in ("text_column", "label_column", "text_pair_column", "tag_column", "delimiter", "has_header"):
        if key in data.resolved:
            setattr(config.data, key, data.resolved[key])
    resolved = {
        **data.resolved,
        "device": str(device),
        "precision": precision,
        "backbone": dataclasses.asdict(backbone),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "truncated": {k: v.truncated for k, v in encoded.items()},
        "metrics": metric_specs,
    }
    rd.write_json("config.json", {**config.to_dict(), "resolved": resolved})

    cancel.raise_if_cancelled()
    torch.manual_seed(tc.seed)
    with _loading_model(backbone.path):
        model = task.build_model(backbone.path, data)
    n_params = sum(p.numel() for p in model.parameters())
    cb.on_event(PhaseChanged("model_ready", f"{backbone.name}: {type(model).__name__}, {n_params / 1e6:.1f}M parameters on {device} ({precision})"))

    loop = TrainingLoop(
        model, task, data, encoded["train"], encoded.get("validation"), tc, device, precision, cb, cancel
    )
    rd.training_started = True
    outcome = loop.run()

    eval_name = data.eval_split
    cb.on_event(PhaseChanged("testing", eval_name))
    result, logits = loop.evaluate(encoded[eval_name])
    cb.on_event(_eval_event(outcome, eval_name, result.metrics))
    report_text = task.report_text(result)
    rd.write_json(
        "report.json",
        {
            "task": task.name,
            "split": eval_name,
            "metrics": result.metrics,
            **result.report,
            "training": dataclasses.asdict(outcome),
        },
    )
    rd.write_text("report.txt", f"{task.title}, {eval_name} split ({data.resolved['sources'].get(eval_name)})\n\n{report_text}\n")
    task.write_predictions(rd.path / "predictions.jsonl", logits, encoded[eval_name], data)

    cancel.raise_if_cancelled()
    cb.on_event(PhaseChanged("exporting", str(rd.model_dir)))
    model.to("cpu")
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
            "max_length": tc.max_length, "backbone": backbone.name, "metrics": result.metrics}
    export_model(task, model, preprocessor, rd.model_dir, card, meta, tc.max_length, cancel)
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
    )
    rd.set_status("finished", metrics=result.metrics, export_dir=export_dir,
                  **({"export_error": str(export_error)} if export_error else {}))
    cb.on_event(Finished(result.metrics, outcome.samples_per_second, str(rd.path), export_dir))
    return run_result


def _eval_event(outcome, split: str, metrics: dict[str, float]):
    from .events import EvalMetrics

    return EvalMetrics(outcome.steps, 0.0, split, dict(metrics), False)
