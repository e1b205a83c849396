"""Domain adaptation: continue a backbone's masked-language-model pretraining on the user's own
unlabelled texts, then fine-tune on it (Gururangan et al. 2020, "Don't Stop Pretraining").

    result = run_adaptation(adaptation_config("tweets.csv", "all-MiniLM-L6-v2"), callbacks, cancel)
    adapted_summary(result)["backbone_dir"]   # a folder --model accepts

A run like any other (``workbench.core.run``) of the masked-LM task (tasks/masked_lm.py): a run
directory with live curves, checkpoints and --resume. Its model folder (RUN/model, or a copy in
``export_dir``) is the adapted backbone; each one is remembered so that the backbone catalog lists it
as "M adapted on FILE".
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .cancel import NEVER, CancelToken
from .config import DataConfig, ModelConfig, RunConfig, TrainConfig
from .events import Callbacks
from .export_target import MARKER

TASK = "masked-lm"
HELD_OUT_FRACTION = 0.05


def adaptation_config(texts: str, model: str, *, text_column: str | None = None, train: TrainConfig | None = None,
                      run_dir: str | None = None, output: str | None = None, overwrite: bool = False) -> RunConfig:
    """The run that adapts ``model`` to ``texts`` (5% held out for the before/after loss)."""
    return RunConfig(task=TASK, data=DataConfig(train=texts, text_column=text_column, val_fraction=HELD_OUT_FRACTION,
                                                test_fraction=0.0),
                     model=ModelConfig(name=model), train=train or TrainConfig(), run_dir=run_dir, export_dir=output,
                     overwrite_export=overwrite)


def run_adaptation(config: RunConfig, callbacks: Callbacks | None = None, cancel: CancelToken = NEVER):
    from .run import run_training

    result = run_training(config, callbacks, cancel)
    remember(backbone_dir(result))
    return result


def backbone_dir(result) -> str:
    """Where the adapted backbone of a finished adaptation run is: its --output copy, else RUN/model."""
    return result.export_dir or str(Path(result.run_dir) / "model")


def adapted_summary(result) -> dict[str, Any]:
    """The JSON line `workbench adapt` ends with."""
    before, after = result.metrics_before or {}, result.metrics
    return {"task": TASK, "backbone_dir": backbone_dir(result), "run_dir": result.run_dir,
            "perplexity_before": before.get("perplexity"), "perplexity_after": after.get("perplexity"),
            "loss_before": before.get("loss"), "loss_after": after.get("loss"),
            "accuracy_before": before.get("accuracy"), "accuracy_after": after.get("accuracy"),
            "samples_per_second": round(result.samples_per_second, 2), "train_seconds": round(result.train_seconds, 2),
            "backbone": result.backbone, "export_error": str(result.export_error) if result.export_error else None}


# ---------------------------------------------------------------------------- the catalog's memory
def _registry() -> Path:
    from .rundir import runs_home

    return runs_home().parent / "adapted-backbones.json"


def adapted_info(folder: str | Path) -> dict[str, Any] | None:
    """What a folder's Workbench marker says of an adapted backbone (None: it is not one)."""
    try:
        meta = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("task") == TASK else None


def adapted_name(meta: dict[str, Any]) -> str:
    source = Path(str(meta.get("trained_on") or "texts")).name
    return f"{meta.get('backbone', 'backbone')} adapted on {source}"


def remember(folder: str | Path) -> None:
    """Add an adapted backbone to the list the catalog reads (written atomically; best effort: a
    read-only home only means the catalog does not list it)."""
    from .rundir import write_json_atomic

    path = _registry()
    known = [p for p in remembered() if p != str(Path(folder).resolve())]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, [str(Path(folder).resolve()), *known])
    except OSError:
        pass


def remembered() -> list[str]:
    """Adapted backbone folders that still exist, newest first."""
    try:
        paths = json.loads(_registry().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [p for p in paths if isinstance(p, str) and os.path.isdir(p) and adapted_info(p) is not None]
