"""`workbench search`: an Optuna study whose trials are ordinary runs, grouped in a search folder.

    RUNS_HOME/searches/NAME/study.db        the study (Optuna's RDB storage; --storage URL for a
                                             shared server): run the same search again and it goes on
    RUNS_HOME/searches/NAME/search.json     the base settings, the ranges, the metric
    RUNS_HOME/searches/NAME/trials/trial-N  each trial's run directory (and its trial.json)
    RUNS_HOME/searches/NAME/best.json       the best trial: settings, validation score, the command
                                             that trains with them; the test score and the final
                                             run (--final, --train-best: an ordinary run in the runs
                                             home, listed with the others) once tested

The choice is by the validation metric only: a trial stops where its run would test (the test split
waits for the winner, tested once by the final run). TPE samples; a median pruner stops a trial at an
evaluation scoring below the median of earlier trials at that step (through the run's EvalMetrics
events, stopped with the trial's cancel token). The study counts the trials of every worker
(processes or machines sharing --storage) towards --trials.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..atomic import write_json_atomic
from ..cancel import NEVER, CancelToken
from ..command import command_line
from ..config import RunConfig
from ..errors import Cancelled, InputError
from ..events import CallbackList, Callbacks, EvalMetrics, Event, PhaseChanged
from ..home import runs_home
from ..metrics import find
from ..processes import run_owner
from ..tracking import need
from ..tracking.records import read_json
from .space import Range, apply, search_space

log = logging.getLogger(__name__)
STALE_SECONDS = 60.0  # a RUNNING trial this old with no live run is one a killed search left behind


@dataclass
class Search:
    config: RunConfig  # the user's settings; the trials vary ``space`` on copies of it
    trials: int
    name: str
    folder: Path
    storage: str
    metric: str
    maximize: bool
    space: list[Range]
    timeout_s: float | None = None
    fixed: list[str] = field(default_factory=list)  # settings the user gave, not searched
    defaults_first: bool = True  # the first trial tries the defaults (default_trial)

    @property
    def direction(self) -> str:
        return "maximize" if self.maximize else "minimize"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "folder": str(self.folder), "storage": self.storage, "trials": self.trials,
                "metric": self.metric, "direction": self.direction, "fixed": self.fixed,
                "space": [{"name": r.name, "low": r.low, "high": r.high, "log": r.log, "integer": r.integer,
                           "choices": list(r.choices)} for r in self.space],
                "config": self.config.to_dict()}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")[:80] or "search"


def plan_search(config: RunConfig, trials: int, name: str | None = None, storage: str | None = None,
                timeout_min: float | None = None, fixed: list[str] | tuple[str, ...] = ()) -> Search:
    """Check a search's settings (nothing is written): the task, its metric and direction, the ranges.
    ``fixed``: RunConfig fields ("train.lr") the user set, kept as they are in every trial."""
    from ..tasks import get_task
    from ..tasks.table import METHODS

    if trials < 1:
        raise InputError(f"--trials must be at least 1, got {trials}")
    if timeout_min is not None and timeout_min <= 0:
        raise InputError(f"--timeout must be a positive number of minutes, got {timeout_min}")
    config.validate()
    if not config.data.val and config.data.val_fraction <= 0:
        raise InputError("a search chooses by the validation split: give --val or a --val-fraction above 0")
    task = get_task(config.task, config.data.train, config.data)
    metric = config.train.metric or task.default_metric
    if metric not in {m.name for m in task.metrics}:
        raise InputError(f"--metric {metric} is not a metric of {task.name} "
                         f"({', '.join(m.name for m in task.metrics)})")
    maximize = find(task.metrics, metric).greater_is_better
    method = METHODS[config.model.method].name
    base_lr = config.train.lr or task.default_lr(config)
    space = [r for r in search_space(method, task.modality, base_lr, task.name) if r.name not in fixed]
    name = _slug(name or f"{Path(config.data.train).stem}-{task.name}-{method}")
    folder = runs_home() / "searches" / name
    return Search(config, trials, name, folder, storage or f"sqlite:///{folder / 'study.db'}", metric, maximize,
                  space, timeout_min * 60 if timeout_min else None, list(fixed))


def default_trial(search: Search) -> dict[str, Any]:
    """The value a plain run of the user's settings takes for each searched setting, where it lies in
    the range: the first trial tries them, so the search's best is never below the defaults on
    validation (a search of a few trials may otherwise sample only worse ones). Image runs choose
    their epochs by the data's size: left to the sampler."""
    from ..config import DEFAULT_EPOCHS
    from ..tasks import get_task

    config = search.config
    task = get_task(config.task, config.data.train, config.data)
    t, m = config.train, config.model
    values = {"lr": t.lr or task.default_lr(config), "batch_size": t.batch_size, "warmup_ratio": t.warmup_ratio,
              "weight_decay": t.weight_decay, "lora_rank": m.lora_rank, "lora_alpha": m.lora_alpha,
              "epochs": t.epochs or (DEFAULT_EPOCHS if task.modality == "text" else None)}
    out: dict[str, Any] = {}
    for r in search.space:
        key = r.name.split(".", 1)[1]
        value = values.get(key)
        if value is not None and (value in r.choices if r.choices else r.low <= value <= r.high):
            out[key] = int(value) if r.integer else value
    return out


def open_study(search: Search, pruner: Any = None):
    """The search's study, new or carried on (its finished trials kept; a trial a killed search left
    RUNNING is marked failed)."""
    optuna = need("optuna", "workbench search")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search.folder.mkdir(parents=True, exist_ok=True)
    if pruner is None:  # a few trials first, so the median means something
        pruner = optuna.pruners.MedianPruner(n_startup_trials=max(1, min(5, search.trials // 4)), n_warmup_steps=0)
    study = optuna.create_study(study_name=search.name, storage=search.storage, load_if_exists=True,
                                direction=search.direction, pruner=pruner,
                                sampler=optuna.samplers.TPESampler(seed=search.config.train.seed))
    if study.direction.name.lower() != search.direction:
        raise InputError(f"the study {search.name!r} in {search.storage} {study.direction.name.lower()}s, this "
                         f"search would {search.direction} {search.metric}: give another --name")
    write_json_atomic(search.folder / "search.json", search.describe())
    _fail_stale(study)
    return study


def _fail_stale(study) -> None:
    from optuna.trial import TrialState

    now = datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        run_dir = t.user_attrs.get("run_dir")
        alive = run_dir and run_owner(read_json(Path(run_dir) / "status.json")) is not None
        old = t.datetime_start is None or (now - t.datetime_start).total_seconds() > STALE_SECONDS
        if not alive and (old or run_dir):
            log.warning("trial %d was left running by a search that stopped; marked failed", t.number)
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)


class _TrialToken(CancelToken):
    """A trial's own stop (pruned, or done before the test split) that the user's cancel also stops."""

    def __init__(self, outer: CancelToken) -> None:
        super().__init__()
        self.outer = outer

    @property
    def cancelled(self) -> bool:
        return self._event.is_set() or self.outer.cancelled

    @property
    def pause_requested(self) -> bool:
        return self.outer.pause_requested

    def raise_if_cancelled(self) -> None:
        if self.cancelled:
            raise Cancelled()


class TrialEvents(Callbacks):
    """Reads a trial's events: each validation score goes to the pruner (a pruned trial stops at
    once); the run is stopped where it would test. Every event also goes on to ``forward``."""

    def __init__(self, trial, metric: str, maximize: bool, token: _TrialToken, forward: Callbacks | None) -> None:
        self.trial, self.metric, self.maximize, self.token, self.forward = trial, metric, maximize, token, forward
        self.best: float | None = None
        self.pruned = self.done = False

    def on_event(self, event: Event) -> None:
        if self.forward is not None:
            self.forward.on_event(event)
        if isinstance(event, EvalMetrics) and event.split == "validation" and self.metric in event.metrics:
            value = float(event.metrics[self.metric])
            if self.best is None or (value > self.best if self.maximize else value < self.best):
                self.best = value
            self.trial.report(value, event.step)
            if self.trial.should_prune():
                self.pruned = True
                self.token.cancel()
        elif isinstance(event, PhaseChanged) and event.phase == "testing" and not self.token.cancelled:
            self.done = True  # the test split is the winner's alone
            self.token.cancel()


def trial_config(search: Search, values: dict[str, Any], run_dir: Path) -> RunConfig:
    """A trial's settings: the user's, with the trial's values; validation alone decides, so no refit
    (it would train on the validation rows) and no export."""
    config = RunConfig.from_dict(search.config.to_dict())
    apply(config, values, search.space)
    config.train.refit = False
    config.train.save_minutes = 0.0  # checkpoints at evaluations only; a trial is not resumed
    config.run_dir, config.export_dir, config.quantize = str(run_dir), None, None
    # Text generation: the base model's answers are for the test report, which a trial never makes
    # (they would cost every trial minutes of generation on the test split).
    config.generation.base_eval = False
    return config


class _KillAtFirstStep(Callbacks):
    """Test hook (WORKBENCH_FAULT_KILL_TRIAL=N): the search's process dies with SIGKILL at trial N's first
    training step, as a machine that loses power would leave it (the trial RUNNING in the study)."""

    def on_event(self, event) -> None:
        if type(event).__name__ == "StepMetrics":
            import signal

            os.kill(os.getpid(), signal.SIGKILL)


def _with_fault(events: Callbacks, number: int) -> Callbacks:
    kill = os.environ.get("WORKBENCH_FAULT_KILL_TRIAL", "")
    if kill.strip().isdigit() and int(kill) == number:
        return CallbackList(events, _KillAtFirstStep())
    return events


def _trial(search: Search, trial, callbacks: Callbacks | None, cancel: CancelToken) -> float:
    """One trial: its run, stopped at the test split (or pruned); its best validation score."""
    import optuna

    from ..run.pipeline import run_training

    values = {r.name.split(".", 1)[1]: r.suggest(trial) for r in search.space}
    run_dir = search.folder / "trials" / f"trial-{trial.number:03d}"
    trial.set_user_attr("run_dir", str(run_dir))
    token = _TrialToken(cancel)
    events = TrialEvents(trial, search.metric, search.maximize, token, callbacks)
    began = time.monotonic()
    try:
        run_training(trial_config(search, values, run_dir), _with_fault(events, trial.number), token)
    except Cancelled:
        if not (events.pruned or events.done) or cancel.cancelled:
            raise
    finally:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # a trial is never resumed
    state = "pruned" if events.pruned else "complete"
    trial.set_user_attr("seconds", round(time.monotonic() - began, 1))
    write_json_atomic(run_dir / "trial.json", {"search": search.name, "number": trial.number, "state": state,
                                               "params": values, "metric": search.metric, "value": events.best,
                                               "defaults": bool(trial.user_attrs.get("defaults"))})
    if events.pruned:
        raise optuna.TrialPruned(f"{search.metric} {events.best} below the median at its step")
    if events.best is None:
        raise InputError("the trial's run reported no validation score (is there a validation split?)",
                         path=run_dir)
    return events.best


@dataclass
class SearchResult:
    name: str
    folder: str
    trials: int  # finished (complete or pruned), this search's and earlier ones'
    complete: int
    pruned: int
    failed: int
    best: dict[str, Any] | None  # best.json

    def summary(self) -> dict[str, Any]:
        return dict(vars(self))


def run_search(search: Search, callbacks: Callbacks | None = None, cancel: CancelToken = NEVER, pruner: Any = None,
               enqueue: list[dict[str, Any]] | tuple = (), on_trial=None) -> SearchResult:
    """Run trials until the study has ``search.trials`` finished ones (or the timeout), then write
    best.json. ``enqueue``: settings to try first (tests; a known good setting); ``on_trial``: called
    with each ended trial (number, state, value, params, run_dir) and the study."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    study = open_study(search, pruner)
    fresh = not study.get_trials(deepcopy=False)
    for params in enqueue:
        study.enqueue_trial(params, skip_if_exists=True)
    if fresh and search.defaults_first:  # after the caller's: a known good setting goes first
        study.enqueue_trial(default_trial(search), user_attrs={"defaults": True}, skip_if_exists=True)
    finished = (TrialState.COMPLETE, TrialState.PRUNED)

    def stop_when_cancelled(study, trial) -> None:
        if on_trial is not None:
            on_trial({"number": trial.number, "state": trial.state.name.lower(), "value": trial.value,
                      "params": trial.params, "run_dir": trial.user_attrs.get("run_dir"),
                      "defaults": bool(trial.user_attrs.get("defaults"))}, study)
        if cancel.cancelled:
            study.stop()

    if len(study.get_trials(deepcopy=False, states=finished)) < search.trials:
        study.optimize(lambda trial: _trial(search, trial, callbacks, cancel), timeout=search.timeout_s,
                       callbacks=[MaxTrialsCallback(search.trials, states=finished), stop_when_cancelled],
                       catch=(), gc_after_trial=True)
    cancel.raise_if_cancelled()
    return _result(search, study, optuna)


def _result(search: Search, study, optuna) -> SearchResult:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    count = {s: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    best = write_best(search, study) if count[TrialState.COMPLETE] else None
    return SearchResult(search.name, str(search.folder), count[TrialState.COMPLETE] + count[TrialState.PRUNED],
                        count[TrialState.COMPLETE], count[TrialState.PRUNED], count[TrialState.FAIL], best)


def best_config(search: Search, params: dict[str, Any]) -> RunConfig:
    """The user's settings with the best trial's values: what the final run trains with."""
    config = RunConfig.from_dict(search.config.to_dict())
    apply(config, params, search.space)
    return config


def write_best(search: Search, study) -> dict[str, Any]:
    t = study.best_trial
    best = {"search": search.name, "metric": search.metric, "direction": search.direction, "value": t.value,
            "trial": t.number, "params": t.params, "run_dir": t.user_attrs.get("run_dir"),
            "command": command_line(best_config(search, t.params))}
    earlier = read_json(search.folder / "best.json")
    if earlier.get("trial") == t.number and earlier.get("test"):
        best.update({k: earlier[k] for k in ("test", "final_run") if k in earlier})
    write_json_atomic(search.folder / "best.json", best)
    return best


def train_best(search: Search, callbacks: Callbacks | None = None, cancel: CancelToken = NEVER,
               export_dir: str | None = None):
    """The final run: the best settings trained as an ordinary run in the runs home (with its refit,
    test and export); its test score joins best.json. The test split is scored here, once."""
    from ..run.pipeline import run_training

    best = read_json(search.folder / "best.json")
    if not best.get("params") and best.get("trial") is None:
        raise InputError("this search has no best trial yet: run it first (workbench search DATA --trials N)",
                         path=search.folder)
    config = best_config(search, best.get("params") or {})
    config.run_dir, config.export_dir = None, export_dir
    result = run_training(config, callbacks, cancel)
    best.update({"test": result.metrics, "final_run": result.run_dir, "test_split": result.eval_split})
    write_json_atomic(search.folder / "best.json", best)
    return result


def estimate_search(search: Search, callbacks: Callbacks | None = None, cancel: CancelToken = NEVER) -> dict[str, Any]:
    """The preflight of one run of the user's settings, times the trials (pruning not counted)."""
    from ..run.preflight import estimate, rough_duration

    one = estimate(RunConfig.from_dict(search.config.to_dict()), callbacks, cancel)
    total = one.total_seconds * search.trials
    return {"run_seconds": one.total_seconds, "trials": search.trials, "total_seconds": total,
            "text": f"About {rough_duration(total)} for {search.trials} trials of about "
                    f"{rough_duration(one.total_seconds)} each on {one.device} (pruned trials end sooner)"}
