"""The Task abstraction: everything that differs between task types, behind one interface.

A task reads and validates its data, loads its preprocessor (a tokenizer, an image processor),
encodes the data, builds its model head, turns rows into arrays, computes its loss and metrics,
writes its predictions and exports its model. The training loop and the run orchestration
(``workbench.core.run.pipeline``) know none of that.

Adding a task: describe it in ``workbench/core/tasks/table.py`` (a TaskSpec in ``TASKS``), subclass
``Task`` with ``spec = TASKS[its name]``, implement the abstract methods and give it a ``sniff`` so
``--task auto`` can pick it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..cancel import NEVER, CancelToken
from ..config import DEFAULT_EPOCHS, DataConfig
from ..events import Callbacks
from ..labels import LabelMap
from ..metrics import CLASSIFICATION, Metric
from .table import BASELINE, CALIBRATION, TaskSpec, default_lr, method_spec

# Model types whose position ids are offset by the padding index (RoBERTa and its descendants).
_OFFSET_POSITIONS = frozenset({"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "longformer",
                               "mpnet", "ibert", "roberta-prelayernorm", "luke", "xmod", "bart", "mbart"})


@dataclass
class PreparedData:
    """Validated, split, labelled data, before encoding."""

    splits: dict[str, Any]  # "train", "validation", "test" -> datasets.Dataset
    label_map: LabelMap | None
    report: Any  # ValidationReport (has .findings, .errors, .to_dict())
    resolved: dict[str, Any] = field(default_factory=dict)  # columns, formats, sources, labels, warnings
    eval_split: str = "test"  # the split the final report is computed on

    def require_label_map(self) -> LabelMap:
        """``label_map``, for a task that has classes or tags (all but masked-LM, whose data has none)."""
        if self.label_map is None:
            raise ValueError("this data has no label map")
        return self.label_map


@dataclass
class DataPreview:
    """What a task read of its training file, for a front end's data view (the app's Data page).

    ``prepare_data`` sets it as soon as the file is read, so it is there even when a later check
    refuses the data: the user sees the rows the message is about."""

    path: Path
    rows: Any  # pyarrow.Table: ``columns`` plus "__line__" (the file line each row starts on), file order
    columns: list[str]
    n_rows: int  # rows (or sentences) in the file; ``rows`` may hold only the first PREVIEW_ROWS
    unit: str = "rows"  # what one row is, for counts: "rows", "sentences"
    description: str = ""  # e.g. "14,041 sentences, 203,621 tokens (CoNLL, tags from the last column)"
    malformed: list = field(default_factory=list)  # RowProblem: rows left out for a bad shape
    table: Any = None  # the workbench.core.data.Table of a delimited file (its format, columns), else None
    counts_title: str = "Classes"  # what the validation report's class counts count ("Tags" for tagging)


PREVIEW_ROWS = 100_000  # rows a preview keeps in memory; the file may hold more


def table_preview(table) -> DataPreview:
    """The preview of a delimited file: every column, as read."""
    import pyarrow as pa

    from ..data.tabular import LINE_COLUMN, arrow_table

    rows = arrow_table(table.dataset, [*table.columns, LINE_COLUMN], limit=min(table.n_rows, PREVIEW_ROWS))
    # Copied into memory: the memory-mapped file it came from lives in a run's scratch folder.
    rows = pa.table(rows.to_pydict(), schema=rows.schema)
    return DataPreview(Path(table.path), rows, list(table.columns), table.n_rows, malformed=list(table.malformed),
                       table=table)


def table_format(table) -> dict[str, Any]:
    """How a delimited file was read, for config.json's "resolved": its delimiter, header and encoding."""
    f = table.format
    return {"delimiter": f.delimiter, "has_header": f.has_header, "encoding": f.encoding}


@dataclass
class EncodedSplit:
    name: str
    rows: Any  # datasets.Dataset of the original rows (row, text, label, ...) for predictions
    inputs: dict[str, Any]  # task-specific arrays, e.g. RaggedColumn token ids
    labels: np.ndarray
    lengths: np.ndarray  # per-row cost, for length grouping and sorted inference (all ones for fixed-size inputs)
    truncated: int = 0  # rows cut at max_length

    def __len__(self) -> int:
        return len(self.lengths)


@dataclass
class EvalResult:
    metrics: dict[str, float]  # flat numbers: accuracy, macro_f1, loss, ...
    report: dict[str, Any]  # everything else: per-class table, confusion matrix, labels


class Task(ABC):
    # The task's row of workbench/core/tasks/table.py. A subclass sets it; ``__init_subclass__`` then
    # copies the facts below from it, so each is written once (in the table).
    spec: ClassVar[TaskSpec]
    name: ClassVar[str]
    title: ClassVar[str]  # spec.heading
    pipeline_tag: ClassVar[str]
    # The metrics ``evaluate`` returns, in display order, with their titles and direction: every
    # front end reads them from here (see workbench/core/metrics.py).
    metrics: ClassVar[tuple[Metric, ...]] = CLASSIFICATION
    default_metric: ClassVar[str] = "macro_f1"  # picks the best checkpoint unless --metric says otherwise
    modality: ClassVar[str] = "text"  # what its data and backbones are: "text" or "image"
    row_unit: ClassVar[str] = "rows"  # what one example of its data is, in messages: rows, sentences, images
    # Derived from ``metrics`` for every subclass (``__init_subclass__``); not declared by hand.
    metric_names: ClassVar[tuple[str, ...]] = tuple(m.name for m in CLASSIFICATION)
    greater_is_better: ClassVar[dict[str, bool]] = {m.name: m.greater_is_better for m in CLASSIFICATION}
    # The loss averages over tokens, not rows (tagging): length-grouped batches then balance tokens.
    token_level_loss: ClassVar[bool] = False
    # One class per row from softmax logits: the run reports calibration (ECE, reliability bins) and
    # fits a temperature on the validation split (workbench/core/analysis/calibration.py).
    calibrated: ClassVar[bool] = False
    # A quick model trained on the frozen backbone's features (workbench/core/tasks/image/baseline.py), reported
    # beside the fine-tuned one so that a user sees when fine-tuning did not pay.
    frozen_baseline: ClassVar[bool] = False
    # Length-grouped batches unless --group-by-length/--no-group-by-length says otherwise (and
    # except for adapter methods: ``groups_by_length``).
    group_by_length_default: ClassVar[bool] = True
    # Whether the loop may train a batch as several micro-batches of similar length (``loss`` is a
    # mean over ``loss_units``, so the parts' losses weigh back to the batch's exactly). Not for
    # models whose batch statistics matter (batch norm).
    split_batches_by_length: ClassVar[bool] = True
    # Whether the loop makes the next training batch in a background thread while the model trains
    # on this one: for batches that cost real time to make (image augmentation), in the same order
    # (the same random crops) as without it.
    prefetch_batches: ClassVar[bool] = False
    # ONNX export (workbench/core/export/onnx_export.py): logits per token rather than per row; whether the
    # outputs are classes (top-1 agreement is checked) or values; the metric an int8 model is judged by.
    per_token_outputs: ClassVar[bool] = False
    has_classes: ClassVar[bool] = True
    quantize_metric: ClassVar[str | None] = None  # None: ``default_metric``
    # Why ``--precision auto`` keeps fp32 on a CPU with bf16 units for this task (measured: bf16 no
    # faster, or less accurate); None: bf16 pays there (core/device.py choose_precision).
    cpu_bf16_not_worth: ClassVar[str | None] = None
    # The same where bf16 pays only on a CPU with AMX matrix units, not with AVX512-BF16 alone.
    cpu_bf16_needs_amx: ClassVar[str | None] = None
    # Decisions tuned on the validation split's outputs before the final test (a multi-label task's
    # per-label thresholds): the run calls ``tune_on_validation`` with the logits of a model that did
    # not train on those rows (after a refit, the first pass's).
    tunes_on_validation: ClassVar[bool] = False
    # Evaluate the untrained model too, for a before/after comparison (masked-LM adaptation).
    evaluate_before_training: ClassVar[bool] = False
    # The model gets a new head (a classifier) that trains beside LoRA adapters; False for a task that
    # keeps the backbone's own output layer (text generation's language-model head).
    head_is_new: ClassVar[bool] = True
    # Whether the export adds model.onnx (checked against PyTorch); text generation writes GGUF instead.
    onnx_export: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "spec" in cls.__dict__:
            cls._take_spec(cls.spec)
        cls.metric_names = tuple(m.name for m in cls.metrics)
        cls.greater_is_better = {m.name: m.greater_is_better for m in cls.metrics}
        if cls.quantize_metric is None or cls.quantize_metric not in cls.metric_names:
            cls.quantize_metric = cls.default_metric
        if cls.default_metric not in cls.metric_names:
            raise TypeError(f"{cls.__name__}.default_metric {cls.default_metric!r} is not one of its metrics")

    @classmethod
    def _take_spec(cls, spec: TaskSpec) -> None:
        cls.name, cls.title, cls.pipeline_tag = spec.name, spec.heading, spec.pipeline_tag
        cls.metrics, cls.default_metric = spec.metrics, spec.default_metric
        cls.modality, cls.row_unit = spec.modality, spec.row_unit
        cls.calibrated, cls.frozen_baseline = spec.supports(CALIBRATION), spec.supports(BASELINE)

    def metric_specs(self) -> tuple[Metric, ...]:
        """The metrics of this run, once ``prepare_data`` has seen the data (a task may retitle them,
        e.g. part-of-speech tags have no entities); the class's declaration before that."""
        return self.metrics

    def loss_units(self, labels: np.ndarray) -> int:
        """How many items ``loss`` averages over in a batch with these (host) labels: rows here."""
        return len(labels)

    @classmethod
    def sniff(cls, path: Path) -> float:
        """How well DATA at ``path`` fits this task, 0 (not at all) to 1 (certainly); for --task auto."""
        return 0.0

    @classmethod
    def sniff_settings(cls, data: DataConfig) -> float:
        """How surely the data settings alone choose this task for --task auto (options only it reads,
        such as multi-label's --label-columns), 0 to 1; 0: they say nothing."""
        return 0.0

    @classmethod
    def groups_by_length(cls, method: str | None = None) -> bool:
        """Whether a run without --group-by-length/--no-group-by-length trains length-grouped batches.

        Not for LoRA/AdaLoRA: a few adapter weights at a 10x learning rate follow each batch's
        make-up: batches of one length are batches of one kind of row (SST-2's short phrases, its
        long sentences). On SST-2 (4,000 rows, 1 epoch, seeds 42-44, benchmarks/bench_methods.py)
        grouped batches scored 0.690, 0.726, 0.636 and random ones 0.751, 0.771, 0.767 (Trainer +
        peft: 0.758, 0.749, 0.748); grouping only 4 batches' worth of rows at a time still scored
        0.693, 0.698. Random batches go through the CPU as micro-batches of similar length, so they
        stay 1.7x the Trainer's speed (grouped: 2.7x)."""
        return cls.group_by_length_default and not (method and method_spec(method).uses_adapters)

    def configure(self, config) -> None:
        """Called once with the whole RunConfig before ``prepare_data``: a task reads its own settings
        here (an image size, a frozen backbone) and may pin defaults it owns so config.json records them."""

    def default_lr(self, config) -> float:
        """The learning rate a run of ``config`` takes when --lr is not given: the table's for the task
        and method (an image task refines it by backbone)."""
        return default_lr(self.name, config.model.method)

    def default_epochs(self, train_rows: int, config) -> tuple[float, int | None, str]:
        """(epochs, early-stopping patience or None, why) when --epochs is not given; the run
        pins them in config.json."""
        return DEFAULT_EPOCHS, None, f"{DEFAULT_EPOCHS:g} epochs, the default"

    def resolve_backbone(self, name: str | None):
        """The BackboneInfo for ``--model NAME``."""
        from ..backbones import resolve_backbone

        return resolve_backbone(name)

    @abstractmethod
    def prepare_data(
        self, cfg: DataConfig, seed: int, cache_dir: Path, callbacks: Callbacks, cancel: CancelToken = NEVER
    ) -> PreparedData: ...

    # Set by ``prepare_data`` once it has read the training file (see DataPreview).
    _preview: DataPreview | None = None
    # Whether a data view may let the user pick the text and label columns and check the file again
    # with ``workbench.core.data`` (one text, one label); other tasks' columns come from their reader.
    data_view_column_choice: ClassVar[bool] = False

    def data_preview(self) -> DataPreview | None:
        """What ``prepare_data`` read of the training file, even when a check then failed; None when
        it could not read the file at all."""
        return self._preview

    def describe_data(self, data: PreparedData) -> str:
        """A sentence about the prepared data for a data view, beyond rows and columns (entity types
        and tag scheme for tagging); empty when there is nothing to add."""
        return ""

    @abstractmethod
    def load_preprocessor(self, backbone_path: str):
        """The tokenizer (or image processor) saved beside the model on export."""

    def position_limit(self, backbone_path: str, preprocessor) -> int | None:
        """The most tokens per example the backbone accepts (None: no fixed limit, or not a text model).
        A longer --max-length would index past the position embeddings mid-run."""
        import json

        try:
            cfg = json.loads((Path(backbone_path) / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            cfg = {}
        limit = None
        positions = cfg.get("max_position_embeddings") if isinstance(cfg, dict) else None
        absolute = cfg.get("position_embedding_type", "absolute") == "absolute" and cfg.get("position_biased_input", True)
        if isinstance(positions, int) and positions > 0 and absolute:
            limit = positions
            if cfg.get("model_type") in _OFFSET_POSITIONS and isinstance(cfg.get("pad_token_id"), int):
                limit -= cfg["pad_token_id"] + 1  # RoBERTa-style position ids start after the padding index
        tok_max = getattr(preprocessor, "model_max_length", None)
        if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:  # tokenizers without a limit say 1e30
            limit = min(limit, tok_max) if limit else tok_max
        return limit

    @abstractmethod
    def encode(self, name: str, rows, preprocessor, max_length: int, cache_dir: Path, callbacks: Callbacks,
               cancel: CancelToken = NEVER) -> EncodedSplit: ...

    @abstractmethod
    def build_model(self, backbone_path: str, data: PreparedData): ...

    @abstractmethod
    def make_batch(self, split: EncodedSplit, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Model inputs for ``rows`` of ``split`` as numpy arrays, plus "labels"."""

    def loop_batch(self, split: EncodedSplit, rows: np.ndarray) -> dict[str, np.ndarray]:
        """What the training loop feeds ``forward`` (training and evaluation): ``make_batch``'s inputs,
        or cheaper ones with the same outputs (a frozen backbone's cached features). Everything else
        (the ONNX export, embeddings, explanations) takes ``make_batch``'s model inputs."""
        return self.make_batch(split, rows)

    def forward(self, model, batch: dict):
        return model(**batch).logits

    def use_model(self, model, device) -> None:
        """The model this task's batches will be fed to, on ``device`` (the training loop tells it
        before training or evaluating): a task may compute inputs with it (a frozen backbone's cached
        features)."""

    def generating_seconds(self, model, split: EncodedSplit, rows: dict[str, int], eval_split: str,
                           evaluations: int) -> float:
        """Preflight: the seconds a run of ``rows`` (split -> rows of the whole set) spends generating
        text beside training and its scoring passes, timed on ``split``'s sampled rows (a generation
        task's answers); 0 for the others."""
        return 0.0

    def backbone_epochs(self) -> int | None:
        """With inputs cached from the model (``loop_batch``): how many epochs still compute them;
        later ones are cheap. None when nothing is cached (the preflight estimate)."""
        return None

    def reset_views(self) -> None:
        """Replay the cached inputs from the first epoch's (the preflight times cached epochs)."""

    def inference_model(self, model):
        """What evaluation runs: ``model`` itself, or a faster copy with the same outputs in eval mode
        (batch norms folded into convolutions)."""
        return model

    @abstractmethod
    def loss(self, logits, labels): ...

    def kept_outputs(self, logits, labels):
        """What evaluation keeps of a batch's outputs for ``evaluate`` (one row each, first axis):
        the logits themselves, unless they are too large to keep for every row (masked-LM)."""
        return logits

    @abstractmethod
    def evaluate(self, logits: np.ndarray, split: EncodedSplit, loss: float, data: PreparedData) -> EvalResult: ...

    def predicted_classes(self, logits: np.ndarray, split: EncodedSplit) -> np.ndarray | None:
        """The class a user is told for each row (or word) from evaluation's logits; None where the
        outputs are not classes (values, masked-LM losses). For the bf16 check at export time."""
        if not self.has_classes or getattr(logits, "ndim", 0) != 2:
            return None
        return np.asarray(logits).argmax(-1)

    @abstractmethod
    def write_predictions(self, path: Path, logits: np.ndarray, split: EncodedSplit, data: PreparedData) -> None: ...

    @abstractmethod
    def report_text(self, result: EvalResult) -> str: ...

    def save_model(self, model, preprocessor, folder: Path, max_length: int) -> None:
        """Write the model and its preprocessor in the format `transformers.pipeline` loads."""
        model.save_pretrained(folder, safe_serialization=True)
        if hasattr(preprocessor, "model_max_length"):
            # The pipeline then truncates like training did when called with truncation=True.
            preprocessor.model_max_length = max_length
        preprocessor.save_pretrained(folder)

    @contextmanager
    def export_state(self, model):
        """The model with the weights exactly as exported (regression folds its target scale in); every
        file of the export (safetensors, ONNX) is written inside this."""
        yield model

    def onnx_example(self, split: EncodedSplit) -> dict[str, np.ndarray]:
        """A small batch of model inputs (no labels) for tracing the ONNX export."""
        batch = self.make_batch(split, np.arange(min(len(split), 2)))
        batch.pop("labels", None)
        return batch

    def lora_targets(self, model) -> list[str] | None:
        """The modules LoRA adapts when --lora-targets is not given; None: peft's default for the model
        type (attention projections)."""
        return None

    def before_training(self, model, splits: dict[str, EncodedSplit], folder: Path, resumed: bool,
                        main: bool = True) -> None:
        """Work on the untrained model before its first step, on every rank of a run (``main``: the one
        that writes the run; text generation: the base model's answers on the test split, kept in
        ``folder`` for a resumed run)."""

    def after_validation(self, step: int, epoch: float) -> None:
        """Called after each validation pass, with the model ``use_model`` named (text generation: the
        live samples)."""

    def score_with_model(self, model, split: EncodedSplit, result: EvalResult) -> EvalResult:
        """The final report's ``result`` on ``split``, completed with what needs the model itself rather
        than its logits (text generation: answers generated and scored); ``result`` by default."""
        return result

    def write_extra_exports(self, folder: Path, meta: dict[str, Any], callbacks: Callbacks,
                            cancel: CancelToken = NEVER) -> None:
        """Files a task adds to its export folder (being written) instead of ONNX (text generation: GGUF),
        with what it records of them in ``meta`` (workbench.json)."""

    def tune_on_validation(self, logits: np.ndarray, split: EncodedSplit) -> None:
        """Fit what ``tunes_on_validation`` promises on ``split``'s (validation) ``logits``."""

    def export_meta(self) -> dict[str, Any]:
        """Facts of the trained model that the export's ``workbench.json`` carries beyond the common ones
        (a multi-label task's tuned thresholds), read by predict, serve and the app; none by default."""
        return {}

    def decision_thresholds(self) -> np.ndarray | None:
        """Per-output thresholds on sigmoid scores that decide the predicted labels (multi-label), or
        None. When given, the ONNX export adds an output ``labels`` (1 where the score reaches the
        threshold) beside ``logits``, so ONNX Runtime alone gives the decided labels."""
        return None

    def onnx_outputs_as_logits(self, outputs: np.ndarray) -> np.ndarray:
        """The exported model's outputs as ``evaluate`` takes logits (the same, unless the export
        rescales them, as regression does)."""
        return outputs

    def model_card(self, *, task_title: str, pipeline_tag: str, backbone: str, data: dict[str, Any],
                   hyper: dict[str, Any], metrics: dict[str, float], report_table: str, eval_split: str) -> str:
        """The export's README.md (see ``workbench.core.export.model.model_card``)."""
        from ..export.model import model_card

        return model_card(task_title=task_title, pipeline_tag=pipeline_tag, backbone=backbone, data=data, hyper=hyper,
                          metrics=metrics, report_table=report_table, eval_split=eval_split)
