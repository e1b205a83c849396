"""Experiment tracking: a run's metrics, settings, report and model logged to the trackers people
already use, with the trackers' own libraries (imported only when asked for).

    --report-to tensorboard   RUN/tensorboard/: scalars, the config as hparams, the confusion matrix and
                              calibration curve as images, the text report (tensorboard.py)
    --report-to mlflow        params, metrics by step, tags, artifacts and the export as a logged pyfunc
                              model, in MLflow's local store under the runs home, or --mlflow-uri /
                              $MLFLOW_TRACKING_URI (mlflow_log.py)

Both read the run's events as the dicts metrics.jsonl holds (records.py), so a live run (live.py,
attached by run_training on rank 0) and a finished run logged afterwards (backfill.py, `workbench
track RUN`) log the same things. A tracker that fails warns once and is dropped: it never fails a run.
"""

from __future__ import annotations

from ..errors import InputError

INSTALL_HINT = 'pip install "workbench[track]"'


def need(module: str, purpose: str):
    """Import a tracker's library, or InputError naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise InputError(f"{purpose} needs the {module.split('.')[0]} package, which is not installed ({e}); "
                         f"install it with: {INSTALL_HINT}") from None
