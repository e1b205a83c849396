"""What a search varies, over which ranges: keyed by training method and data modality (text
generation by task: a causal LM's fine-tuning wants other ranges), the learning rate centred on the
task table's rate for the method (core/tasks/table.py). LoRA's rank and alpha are searched only for
the adapter methods. A setting the user fixed (a flag given) is not searched."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import RunConfig
from ..errors import InputError
from ..tasks.table import METHODS, TEXT_GENERATION


@dataclass(frozen=True)
class Range:
    name: str  # a RunConfig field: train.<name> or model.<name>
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    integer: bool = False
    choices: tuple[Any, ...] = ()

    def suggest(self, trial) -> Any:
        key = self.name.split(".", 1)[1]
        if self.choices:
            return trial.suggest_categorical(key, list(self.choices))
        if self.integer:
            return trial.suggest_int(key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(key, self.low, self.high, log=self.log)


# Epochs and batch sizes per (modality, trains the backbone?): a frozen backbone trains a head only,
# which wants more passes and bigger batches; image runs stop early on their own.
_EPOCHS = {("text", True): (1, 5), ("text", False): (2, 10), ("image", True): (3, 15), ("image", False): (3, 20)}
_BATCHES = {("text", True): (8, 16, 32), ("text", False): (16, 32, 64), ("image", True): (16, 32, 64),
            ("image", False): (32, 64, 128)}
LR_SPAN = 10.0  # the learning rate goes from the table's rate / 10 to x 10 (log scale)


@dataclass(frozen=True)
class TaskRanges:
    """A task's own ranges where the modality's do not fit it."""

    lr_span: tuple[float, float]  # the learning rate from the table's rate / [0] to x [1] (log scale)
    epochs: tuple[int, int]
    batches: tuple[int, ...]
    warmup: tuple[float, float]
    weight_decay: tuple[float, float]
    lora_ranks: tuple[int, ...]
    lora_alphas: tuple[int, ...]


# Supervised fine-tuning of a causal LM (text generation): its answers overfit within a few epochs
# (TRL and LLaMA-Factory train 1 to 3), its rows are long (smaller batches), a rate 10x the default
# unsettles full fine-tuning of a pretrained LM (so 5x up, 10x down: 5e-6..2.5e-4 full,
# 2e-5..1e-3 LoRA, the range LoRA recipes use), and LoRA on every projection wants a larger rank.
TASK_RANGES = {
    TEXT_GENERATION: TaskRanges(lr_span=(10.0, 5.0), epochs=(1, 4), batches=(4, 8, 16), warmup=(0.0, 0.1),
                                  weight_decay=(0.0, 0.1), lora_ranks=(8, 16, 32, 64), lora_alphas=(16, 32, 64, 128)),
}


def search_space(method: str, modality: str, base_lr: float, task: str | None = None) -> list[Range]:
    spec = METHODS[method]
    if task in TASK_RANGES:
        if spec.frozen_backbone:
            raise InputError(f"{task} has no new head to train on a frozen backbone: search with --method full, "
                             "lora or adalora")
        return _task_space(TASK_RANGES[task], spec.uses_adapters, base_lr)
    trains_backbone = not spec.frozen_backbone
    low_epochs, high_epochs = _EPOCHS[(modality, trains_backbone)]
    space = [
        Range("train.lr", base_lr / LR_SPAN, min(0.5, base_lr * LR_SPAN), log=True),
        Range("train.epochs", low_epochs, high_epochs, integer=True),
        Range("train.batch_size", choices=_BATCHES[(modality, trains_backbone)]),
        Range("train.warmup_ratio", 0.0, 0.2),
        Range("train.weight_decay", 0.0, 0.1),
    ]
    if spec.uses_adapters:
        space += [Range("model.lora_rank", choices=(4, 8, 16, 32)), Range("model.lora_alpha", choices=(8, 16, 32, 64))]
    return space


def _task_space(r: TaskRanges, adapters: bool, base_lr: float) -> list[Range]:
    space = [
        Range("train.lr", base_lr / r.lr_span[0], min(0.5, base_lr * r.lr_span[1]), log=True),
        Range("train.epochs", r.epochs[0], r.epochs[1], integer=True),
        Range("train.batch_size", choices=r.batches),
        Range("train.warmup_ratio", *r.warmup),
        Range("train.weight_decay", *r.weight_decay),
    ]
    if adapters:
        space += [Range("model.lora_rank", choices=r.lora_ranks), Range("model.lora_alpha", choices=r.lora_alphas)]
    return space


def apply(config: RunConfig, values: dict[str, Any], space: list[Range]) -> None:
    """Set a trial's values (named as the trial names them) on ``config``."""
    for r in space:
        section, key = r.name.split(".", 1)
        if key in values:
            value = values[key]
            setattr(getattr(config, section), key, float(value) if key == "epochs" else value)
