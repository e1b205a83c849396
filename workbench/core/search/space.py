"""What a search varies, over which ranges: keyed by training method and data modality, the learning
rate centred on the task table's rate for the method (core/tasks/table.py). LoRA's rank and alpha are
searched only for the adapter methods. A setting the user fixed (a flag given) is not searched."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import RunConfig
from ..tasks.table import METHODS


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


def search_space(method: str, modality: str, base_lr: float) -> list[Range]:
    spec = METHODS[method]
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


def apply(config: RunConfig, values: dict[str, Any], space: list[Range]) -> None:
    """Set a trial's values (named as the trial names them) on ``config``."""
    for r in space:
        section, key = r.name.split(".", 1)
        if key in values:
            value = values[key]
            setattr(getattr(config, section), key, float(value) if key == "epochs" else value)
