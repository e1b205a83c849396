"""MLflow: one MLflow run per Workbench run, with MlflowClient (no global active run, so two runs of
the app may log at once): params and tags once the run has resolved its settings, metrics by step
(batched), the report, the confusion matrix and config.json as artifacts (a text-generation run's live
samples too, as samples/step-N.md), and the export as a logged pyfunc model with its signature. The
MLflow run id is kept in RUN/tracking.json: a resumed run goes on logging into it, and `workbench
track` does not log a run twice."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from ..atomic import write_json_atomic
from ..home import runs_home
from . import need
from .images import report_images
from .records import flat_params, read_json, run_tags, samples_text, scalars

TRACKING_FILE = "tracking.json"
EXPERIMENT = "workbench"  # $MLFLOW_EXPERIMENT_NAME overrides it
# Metrics are sent in batches: at each evaluation (the training clock is stopped then) and, in a long
# stretch without one, every minute; per step, or every few seconds, a store's writes inside training
# cost a fast run on 2 cores several percent of its speed (benchmarks/bench_tracking.py).
_FLUSH_SECONDS = 60.0
_FLUENT = threading.Lock()  # mlflow.pyfunc.log_model uses MLflow's global tracking URI and active run
STATUS = {"Finished": "FINISHED", "Failed": "FAILED", "Cancelled": "KILLED", "Paused": "KILLED"}


def local_store() -> Path:
    return runs_home() / "mlflow"


def tracking_uri(explicit: str | None = None) -> str:
    """--mlflow-uri, else $MLFLOW_TRACKING_URI, else a SQLite store under the runs home (no server)."""
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{local_store() / 'mlflow.db'}"


class MlflowTracker:
    name = "mlflow"

    def __init__(self, run_dir: Path, uri: str | None = None) -> None:
        # Workbench works offline: no usage reports from MLflow, no progress bars on the run's terminal.
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        need("mlflow", "--report-to mlflow")
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial tables..."
        from mlflow import MlflowClient

        self.run_dir, self.uri = run_dir, tracking_uri(uri)
        if self.uri.startswith("sqlite:///") and not uri and not os.environ.get("MLFLOW_TRACKING_URI"):
            local_store().mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(self.uri)
        self.run_id: str | None = None
        self.task = ""
        self.pending: list[Any] = []
        self.logged_settings = False
        self.sent = time.monotonic()
        self.model_uri: str | None = None
        self.began: int | None = None  # the run's first and latest event (ms): a run logged afterwards keeps them
        self.ended: int | None = None
        # The store and the experiment now, before training: a fresh SQLite store creates its tables
        # (seconds), which inside the first logged step would show as slower training.
        self.experiment_id = self._experiment()

    def _start(self) -> str:
        """The MLflow run: this run's earlier one (a resumed run), or a new one."""
        if self.run_id is not None:
            return self.run_id
        known = read_json(self.run_dir / TRACKING_FILE).get("mlflow") or {}
        if known.get("uri") == self.uri and known.get("run_id"):
            self.run_id = str(known["run_id"])
            self.client.update_run(self.run_id, status="RUNNING")
            return self.run_id
        run = self.client.create_run(self.experiment_id, run_name=self.run_dir.name, start_time=self.began,
                                     tags={"workbench.run_dir": str(self.run_dir)})
        self.run_id = run.info.run_id
        write_json_atomic(self.run_dir / TRACKING_FILE, {"mlflow": {"uri": self.uri, "run_id": self.run_id}})
        return self.run_id

    def _experiment(self) -> str:
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        local = self.uri == tracking_uri() and not os.environ.get("MLFLOW_TRACKING_URI")
        location = (local_store() / "artifacts").as_uri() if local else None  # not MLflow's ./mlruns in the cwd
        return self.client.create_experiment(name, artifact_location=location)

    def record(self, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        kind = record.get("event")
        if kind == "TaskReady":
            self.task = str(record.get("task") or "")
        elif kind == "PhaseChanged" and record.get("phase") in ("model_ready", "training") and not self.logged_settings:
            # The model is built and config.json holds every resolved setting: the MLflow run and its
            # params are made now, before the training clock starts (the store's first writes take a while).
            self._settings()
            self.logged_settings = True
        stamp = int(float(record.get("time") or time.time()) * 1000)
        self.began = self.began or stamp
        self.ended = stamp
        self.pending += [Metric(tag, value, stamp, step) for tag, step, value in scalars(record)]
        samples = samples_text(record)
        if samples is not None:  # text generation's live samples: one Markdown file per evaluation
            self.client.log_text(self._start(), samples[1], f"samples/step-{samples[0]:06d}.md")
        if self.pending and (kind == "EvalMetrics" or time.monotonic() - self.sent > _FLUSH_SECONDS):
            self.flush()

    def _settings(self) -> None:
        from mlflow.entities import Param, RunTag

        config = read_json(self.run_dir / "config.json")
        params = [Param(k, str(v)[:6000]) for k, v in flat_params(config).items()]
        tags = [RunTag(k, v) for k, v in run_tags(config, self.task).items() if v]
        run_id = self._start()
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per call
            self.client.log_batch(run_id, params=params[start:start + 100], tags=tags if not start else [])

    def flush(self) -> None:
        if not self.pending:
            return
        run_id = self._start()
        for start in range(0, len(self.pending), 1000):
            self.client.log_batch(run_id, metrics=self.pending[start:start + 1000])
        self.pending = []
        self.sent = time.monotonic()

    def finish(self, record: dict[str, Any]) -> None:
        kind = str(record.get("event"))
        self.record(record)  # its time
        if self.run_id is None and kind != "Finished":
            return  # stopped before training: nothing was logged, no MLflow run is made
        self.flush()
        run_id = self._start()
        if kind == "Finished":
            self._settings()
            self._artifacts(run_id)
            self._model(run_id)
        self.client.set_terminated(run_id, status=STATUS.get(kind, "FINISHED"), end_time=self.ended)
        self.run_id = None

    def _artifacts(self, run_id: str) -> None:
        for name in ("report.json", "report.txt", "config.json"):
            if (self.run_dir / name).is_file():
                self.client.log_artifact(run_id, str(self.run_dir / name), "report")
        for name, image in report_images(read_json(self.run_dir / "report.json")).items():
            self.client.log_image(run_id, image, f"report/{name}.png")

    def _model(self, run_id: str) -> None:
        """RUN/model as a pyfunc model with its signature (`mlflow models serve` serves it)."""
        export = self.run_dir / "model"
        if not (export / "workbench.json").is_file():
            return
        import inspect
        import warnings

        import mlflow

        where = "name" if "name" in inspect.signature(mlflow.pyfunc.log_model).parameters else "artifact_path"
        quiet = logging.getLogger("mlflow")
        with _FLUENT, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no input example": a Workbench model's inputs are its signature
            from . import pyfunc

            previous, level = mlflow.get_tracking_uri(), quiet.level
            mlflow.set_tracking_uri(self.uri)
            quiet.setLevel(logging.ERROR)
            try:
                with mlflow.start_run(run_id=run_id):
                    info = mlflow.pyfunc.log_model(**{where: "model"}, python_model=pyfunc.__file__,
                                                   artifacts={pyfunc.EXPORT: str(export)},
                                                   signature=pyfunc.signature(export), pip_requirements=_requirements())
            finally:
                mlflow.set_tracking_uri(previous)
                quiet.setLevel(level)
        self.model_uri = info.model_uri
        write_json_atomic(self.run_dir / TRACKING_FILE, {"mlflow": {"uri": self.uri, "run_id": run_id,
                                                                    "model_uri": self.model_uri}})

    def close(self) -> None:
        """The run's process ends without an ending event (an error before training, a kill)."""
        if self.run_id is not None:
            self.flush()
            self.client.set_terminated(self.run_id, status="KILLED")
            self.run_id = None


def _requirements() -> list[str]:
    """What loading the model needs, pinned as installed here (MLflow would otherwise load the model
    in a subprocess to infer them: slow)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for package in ("workbench", "torch", "transformers", "onnxruntime", "numpy", "pandas"):
        try:
            out.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return out
