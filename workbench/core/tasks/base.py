"""The Task abstraction: everything that differs between task types, behind one interface.

A task reads and validates its data, encodes it, builds its model head, turns rows into tensors,
computes its loss and metrics, and writes its predictions. The training loop knows none of that.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..cancel import NEVER, CancelToken
from ..config import DataConfig
from ..events import Callbacks
from ..labels import LabelMap
from ..training.batching import RaggedColumn


@dataclass
class PreparedData:
    """Validated, split, labelled data, before tokenization."""

    splits: dict[str, Any]  # "train", "validation", "test" -> datasets.Dataset
    label_map: LabelMap | None
    report: Any  # ValidationReport
    resolved: dict[str, Any] = field(default_factory=dict)  # columns, formats, sources: written to config.json
    eval_split: str = "test"  # the split the final report is computed on


@dataclass
class EncodedSplit:
    name: str
    rows: Any  # datasets.Dataset of the original rows (row, text, label, ...) for predictions
    inputs: dict[str, RaggedColumn]  # token columns, e.g. input_ids, token_type_ids
    labels: np.ndarray
    lengths: np.ndarray
    truncated: int = 0  # rows that reached max_length and were cut

    def __len__(self) -> int:
        return len(self.lengths)


@dataclass
class EvalResult:
    metrics: dict[str, float]  # flat numbers: accuracy, macro_f1, loss, ...
    report: dict[str, Any]  # everything else: per-class table, confusion matrix, labels


class Task(ABC):
    name: ClassVar[str]
    title: ClassVar[str]
    pipeline_tag: ClassVar[str]
    greater_is_better: ClassVar[dict[str, bool]] = {}

    @abstractmethod
    def prepare_data(
        self, cfg: DataConfig, seed: int, cache_dir: Path, callbacks: Callbacks, cancel: CancelToken = NEVER
    ) -> PreparedData: ...

    @abstractmethod
    def encode(self, name: str, rows, tokenizer, max_length: int, cache_dir: Path, callbacks: Callbacks,
               cancel: CancelToken = NEVER) -> EncodedSplit: ...

    @abstractmethod
    def build_model(self, backbone_path: str, data: PreparedData): ...

    @abstractmethod
    def make_batch(self, split: EncodedSplit, rows: np.ndarray, pad_id: int) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def loss(self, logits, labels): ...

    @abstractmethod
    def evaluate(self, logits: np.ndarray, split: EncodedSplit, loss: float, data: PreparedData) -> EvalResult: ...

    @abstractmethod
    def write_predictions(self, path: Path, logits: np.ndarray, split: EncodedSplit, data: PreparedData) -> None: ...

    @abstractmethod
    def report_text(self, result: EvalResult) -> str: ...
