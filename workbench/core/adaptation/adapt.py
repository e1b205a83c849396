"""Domain adaptation: continue a backbone's masked-language-model pretraining on the user's own
unlabelled texts, then fine-tune on it (Gururangan et al. 2020, "Don't Stop Pretraining").

    result = run_adaptation(adaptation_config("tweets.csv", "all-MiniLM-L6-v2"), callbacks, cancel)
    adapted_summary(result)["backbone_dir"]   # a folder --model accepts

A run like any other (``workbench.core.run.pipeline``) of the masked-LM task (tasks/masked_lm.py): a run
directory with live curves, checkpoints and --resume. Its model folder (RUN/model, or a copy in
``export_dir``) is the adapted backbone; each one is remembered (core/adaptation/adapted.py) so that the backbone
catalog lists it as "M adapted on FILE".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..cancel import NEVER, CancelToken
from ..config import DataConfig, ModelConfig, RunConfig, TrainConfig
from ..events import Callbacks
from .adapted import TASK, remember

__all__ = ["TASK", "adapt_then_train", "adaptation_config", "adapted_summary", "backbone_dir", "remember",
           "run_adaptation"]

HELD_OUT_FRACTION = 0.05


def adaptation_config(texts: str, model: str, *, text_column: str | None = None, train: TrainConfig | None = None,
                      run_dir: str | None = None, output: str | None = None, overwrite: bool = False) -> RunConfig:
    """The run that adapts ``model`` to ``texts`` (5% held out for the before/after loss)."""
    return RunConfig(task=TASK, data=DataConfig(train=texts, text_column=text_column, val_fraction=HELD_OUT_FRACTION,
                                                test_fraction=0.0),
                     model=ModelConfig(name=model), train=train or TrainConfig(), run_dir=run_dir, export_dir=output,
                     overwrite_export=overwrite)


def run_adaptation(config: RunConfig, callbacks: Callbacks | None = None, cancel: CancelToken = NEVER):
    from ..run.pipeline import run_training

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


def adapt_then_train(adapt: RunConfig, train: RunConfig, callbacks: Callbacks | None = None,
                     cancel: CancelToken = NEVER):
    """Two stages, each a run of its own: adapt ``train``'s backbone to ``adapt``'s texts, then
    fine-tune the adapted backbone as ``train`` says. Returns the fine-tuning's RunResult; a cancel
    stops either stage."""
    from ..events import StageStarted
    from ..run.pipeline import run_training

    callbacks = callbacks or Callbacks()
    adapt.model.name = train.model.name
    callbacks.on_event(StageStarted(1, 2, "Adapting the backbone to your texts", adapt.run_dir or ""))
    adapted = run_adaptation(adapt, callbacks, cancel)
    train.model.name = backbone_dir(adapted)
    callbacks.on_event(StageStarted(2, 2, "Fine-tuning the adapted backbone", train.run_dir or ""))
    return run_training(train, callbacks, cancel)
