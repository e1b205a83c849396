"""Which Model-page settings follow a newly opened dataset and which the user's own choice keeps.

A setting the app chose (a default, the task's metric, the sample's quick-trial epochs) is chosen
again for each dataset, as a fresh start would; one the user changed is kept where it still applies
(a text length does not apply to images, nor an image size to texts), and the Model page names it.
"The user changed it" means: its value differs from the one the app last chose (``AppState.auto``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..core.config import ModelConfig, RunConfig, TrainConfig
from ..core.tasks.table import DEFAULT_METHOD, METHODS, TASKS
from .widgets.spinboxes import format_lr

_REFIT = {None: "automatic", True: "refit on all rows", False: "best on the validation rows"}


def _or(none: str, fmt: Callable[[Any], str]) -> Callable[[Any], str]:
    return lambda v: none if v is None else fmt(v)


@dataclass(frozen=True)
class Setting:
    key: str  # "train.epochs": the section of the RunConfig and the field
    title: str  # how the "Kept from before" line names it
    text: Callable[[Any], str] = str  # how it names the value
    modality: str | None = None  # "text" or "image": applies only to that kind of data
    adapters: bool = False  # applies only while the method trains adapters (LoRA's settings)


SETTINGS: tuple[Setting, ...] = (
    Setting("model.method", "method", lambda v: METHODS[v].menu_title if v in METHODS else str(v)),
    Setting("train.epochs", "epochs", _or("automatic", lambda v: f"{v:g}")),
    Setting("train.lr", "learning rate", _or("automatic", format_lr)),
    Setting("train.batch_size", "batch size"),
    Setting("train.max_length", "max length", lambda v: f"{v} tokens", modality="text"),
    Setting("train.image_size", "image size", _or("automatic", lambda v: f"{v} px"), modality="image"),
    Setting("train.feature_views", "cached views", str, modality="image"),
    Setting("train.augment", "augmentation", _or("automatic", str), modality="image"),
    Setting("model.lora_rank", "LoRA rank", adapters=True),
    Setting("model.lora_alpha", "LoRA alpha", lambda v: f"{v:g}", adapters=True),
    Setting("model.lora_dropout", "LoRA dropout", lambda v: f"{v:g}", adapters=True),
    Setting("model.lora_targets", "LoRA layers", _or("default", ",".join), adapters=True),
    Setting("train.warmup_ratio", "warm-up", lambda v: f"{v * 100:g}%"),
    Setting("train.weight_decay", "weight decay", lambda v: f"{v:g}"),
    Setting("train.grad_accum", "grad accumulation"),
    Setting("train.seed", "seed"),
    Setting("train.eval_steps", "evaluate", _or("each epoch", lambda v: f"every {v} steps")),
    Setting("train.early_stopping_patience", "early stopping", _or("off", lambda v: f"{v} evaluations")),
    Setting("train.metric", "best model by"),  # named by the task's own title of the metric
    Setting("train.refit", "final model", lambda v: _REFIT.get(v, str(v))),
    Setting("train.max_steps", "stop after", _or("no limit", lambda v: f"{v} steps")),
    Setting("train.precision", "precision"),
)
BY_KEY = {s.key: s for s in SETTINGS}
# `workbench --sample`: settings that train the bundled sample in a few minutes on a laptop CPU.
QUICK_TRIAL: dict[str, Any] = {"train.epochs": 1.0, "train.max_length": 64}


def get(config: RunConfig, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(config, section), name)


def assign(config: RunConfig, key: str, value: Any) -> None:
    section, name = key.split(".")
    setattr(getattr(config, section), name, value)


def values(config: RunConfig) -> dict[str, Any]:
    """The settings' current values (lists copied, so a later edit does not change a snapshot)."""
    return {s.key: _copy(get(config, s.key)) for s in SETTINGS}


def defaults() -> dict[str, Any]:
    return values(RunConfig(model=ModelConfig(), train=TrainConfig()))


def changed_by_user(config: RunConfig, auto: dict[str, Any]) -> dict[str, Any]:
    """The settings whose values differ from those the app chose."""
    return {k: v for k, v in values(config).items() if v != auto.get(k)}


def applies(key: str, value: Any, task: str, method: str) -> bool:
    """Whether a setting the user chose still means something for a run of ``task`` with ``method``."""
    s = BY_KEY[key]
    spec = TASKS.get(task)
    if s.modality is not None and spec is not None and spec.modality != s.modality:
        return False
    if s.adapters and not METHODS.get(method, METHODS[DEFAULT_METHOD]).uses_adapters:
        return False
    if key == "train.metric" and spec is not None:
        return value in spec.metric_names
    return True


def describe(key: str, value: Any, task: str) -> str:
    """'learning rate 3e-4': a setting and its value, as the Model page names them."""
    s = BY_KEY[key]
    spec = TASKS.get(task)
    if key == "train.metric" and spec is not None:
        return f"{s.title} {next((m.title for m in spec.metrics if m.name == value), value)}"
    return f"{s.title} {s.text(value)}"


def rederive(config: RunConfig, auto: dict[str, Any], task: str,
             quick_trial: bool = False) -> tuple[dict[str, Any], dict[str, str]]:
    """Set ``config``'s settings as a fresh start on data of ``task`` would, except those the user
    changed that still apply; returns (the values the app chose, {key: description} of those kept)."""
    user = changed_by_user(config, auto)
    chosen = defaults()
    if quick_trial:
        chosen.update(QUICK_TRIAL)
    method = user.get("model.method", chosen["model.method"])
    kept = {k: v for k, v in user.items() if applies(k, v, task, method)}
    for key, value in {**chosen, **kept}.items():
        assign(config, key, _copy(value))
    return chosen, {k: describe(k, v, task) for k, v in kept.items()}


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value
