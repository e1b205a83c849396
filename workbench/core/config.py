"""Run configuration as typed dataclasses grouped by concern, validated early, read from and
written to JSON. ``RUN/config.json`` holds the resolved config; ``workbench train --config`` reads it
back so a run made in the app can be repeated headless."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError
from .tasks.table import DEFAULT_METHOD, FROZEN_METHOD
from .tasks.table import METHODS as METHOD_SPECS

DEFAULT_MODEL = "all-MiniLM-L6-v2"
DEFAULT_EPOCHS = 3.0  # when --epochs is not given (image tasks choose from their data: Task.default_epochs)

# Settings that are real numbers, with the flag that sets each (for messages).
_FLOAT_FLAGS = {"epochs": "--epochs", "lr": "--lr", "weight_decay": "--weight-decay", "warmup_ratio": "--warmup-ratio",
                "max_grad_norm": "--max-grad-norm", "save_minutes": "--save-minutes"}
LABEL_SEPARATORS = ("|", ",", ";")  # what a multi-label column may separate its labels with
_DATA_FLOAT_FLAGS = {"val_fraction": "--val-fraction", "test_fraction": "--test-fraction"}


@dataclass
class DataConfig:
    train: str = ""
    val: str | None = None
    test: str | None = None
    text_column: str | None = None  # a name, or a 0-based position written as digits
    label_column: str | None = None
    # Multi-label: the label column's separator ("|", "," or ";"; None: detected), or one 0/1 column per
    # label instead of a label column (header names or 0-based positions).
    label_separator: str | None = None
    label_columns: list[str] | None = None
    text_pair_column: str | None = None  # sentence pairs: the second text (default: guessed from the header)
    tag_column: str | None = None  # tagging: CoNLL 0-based tag column (default: last); CoNLL-U upos (default) or xpos
    tag_scheme: str = "auto"  # tagging: auto (IOB2 for span tags), iob2, iobes, io, or none (tags as written)
    delimiter: str | None = None  # None: sniffed
    has_header: bool | None = None  # None: detected
    val_fraction: float = 0.1  # held out of train when no --val is given
    test_fraction: float = 0.1  # held out of train when neither --val nor --test is given
    sample: int | None = None  # keep a stratified random sample of N rows of the training file
    skip_bad_rows: bool = False  # otherwise malformed rows stop the run before training

    def problems(self) -> list[str]:
        out = []
        if self.label_separator is not None and self.label_separator not in LABEL_SEPARATORS:
            out.append(f"--label-separator must be one of {', '.join(map(repr, LABEL_SEPARATORS))}, "
                       f"got {self.label_separator!r}")
        if self.label_columns is not None:
            names = self.label_columns
            if not names or not all(isinstance(n, str) and n.strip() for n in names):
                out.append("--label-columns must name at least one column, e.g. billing,bug,feature")
            elif len(set(names)) != len(names):
                out.append(f"--label-columns names a column twice: {','.join(names)}")
            if self.label_column is not None:
                out.append("--label-columns (0/1 columns, one per label) and --label-column (one column of label "
                           "lists) contradict each other; give one")
            if self.label_separator is not None:
                out.append("--label-separator applies to one column of label lists, not to --label-columns")
        return out


TRACKERS = ("tensorboard", "mlflow")  # what --report-to accepts (core/tracking logs to each)
METHODS = tuple(METHOD_SPECS)  # what --method accepts (core/tasks/table.py describes each)


@dataclass
class ModelConfig:
    name: str = DEFAULT_MODEL
    # What fine-tuning trains: every weight (full), only the new head on a frozen backbone (frozen),
    # or small low-rank adapters plus the head (lora, adalora: the peft library).
    method: str = DEFAULT_METHOD
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_targets: list[str] | None = None  # module names adapters go on; None: the architecture's defaults
    export_adapter: bool = False  # lora/adalora: also save the adapter alone (RUN/model/adapter)

    @property
    def uses_adapters(self) -> bool:
        spec = METHOD_SPECS.get(self.method)
        return spec is not None and spec.uses_adapters

    def problems(self) -> list[str]:
        out = []
        if self.method not in METHODS:
            out.append(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not 1 <= self.lora_rank <= 1024:
            out.append(f"--lora-rank must be between 1 and 1024, got {self.lora_rank}")
        if not (isinstance(self.lora_alpha, (int, float)) and math.isfinite(self.lora_alpha) and self.lora_alpha > 0):
            out.append(f"--lora-alpha must be a positive number, got {self.lora_alpha}")
        if not (isinstance(self.lora_dropout, (int, float)) and 0 <= self.lora_dropout < 1):
            out.append(f"--lora-dropout must be in [0, 1), got {self.lora_dropout}")
        if self.lora_targets is not None and (not self.lora_targets or not all(
                isinstance(t, str) and t.strip() for t in self.lora_targets)):
            out.append("--lora-targets must name at least one module, e.g. query,value")
        if self.export_adapter and not self.uses_adapters:
            adapters = " or ".join(m.name for m in METHOD_SPECS.values() if m.uses_adapters)
            out.append(f"--export-adapter needs --method {adapters}")
        return out

    @staticmethod
    def upgrade(values: dict[str, Any]) -> dict[str, Any]:
        """Settings of configs written before ``method`` existed: freeze_backbone became method=frozen."""
        values = dict(values)
        if values.pop("freeze_backbone", False) and values.get("method", DEFAULT_METHOD) == DEFAULT_METHOD:
            values["method"] = FROZEN_METHOD
        return values


@dataclass
class TrainConfig:
    # Passes over the training data. None: auto, resolved once the data is read and pinned in
    # config.json: DEFAULT_EPOCHS, or for image sets enough for ~300 optimizer steps with early stopping
    # (workbench/core/tasks/image/policy.py).
    epochs: float | None = None
    batch_size: int = 32
    # Peak learning rate. None: the task's default for the method (core/tasks/table.py default_lr),
    # resolved by the run and pinned in config.json.
    lr: float | None = None
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    max_length: int = 128
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # auto (bf16/fp16 on GPU, fp32 on CPU) | fp32 | bf16 | fp16
    eval_steps: int | None = None  # also evaluate every N optimizer steps
    eval_batch_size: int | None = None  # default: 2 x batch_size
    early_stopping_patience: int | None = None  # evaluations without improvement before stopping
    metric: str | None = None  # chooses the best checkpoint and drives early stopping; None: the task's default
    # Batches of rows of similar length (less padding, faster on a CPU) or random ones; None: the
    # task's default (grouped for sequence-level tasks, random for token tagging).
    group_by_length: bool | None = None
    max_steps: int | None = None  # stop after this many optimizer steps (quick trials, tests)
    image_size: int | None = None  # image tasks: pixels per side fed to the model; None: chosen from the data
    augment: str | None = None  # image tasks: strong | mild | none; None: chosen from the data (image_policy.py)
    # Image tasks with a frozen backbone: its outputs are computed once per image and view and cached
    # (workbench/core/tasks/image/feature_cache.py): view 0 the centre crop, the others augmented crops. 0: no cache.
    feature_views: int = 1
    # Image tasks, Workbench's own backbones: keep the pretrained batch-norm statistics while the weights
    # train ("frozen") or re-estimate them from each batch ("update"; None is update).
    batch_norm: str | None = None
    # Checkpoints (RUN/checkpoints) for --resume: every this many minutes of training (0: off), every
    # save_steps optimizer steps, and at each evaluation. Removed when the run finishes unless kept.
    save_minutes: float = 10.0
    save_steps: int | None = None
    keep_checkpoints: bool = False
    # Without a validation file, train the final model again on the training and held-out rows for
    # the number of epochs the hold-out chose (workbench/core/run/refit.py). None: auto, on for small sets.
    refit: bool | None = None
    # Masked-LM adaptation (workbench adapt): the share of tokens (or words) masked, and whether
    # whole words are masked with all their sub-words.
    mlm_probability: float = 0.15
    whole_word_mask: bool = False
    # Processes that train the run together (DistributedDataParallel, one per GPU or CPU share):
    # `workbench train --num-processes N` starts them through torch.distributed.run. Each takes
    # batch_size rows of every step, so the effective batch is batch_size x N x grad_accum.
    num_processes: int = 1
    # torch.compile the model for training (GPUs; batches are padded to a few widths so it does not
    # compile again for every batch).
    compile: bool = False


@dataclass
class GenerationConfig:
    """Text generation (--task text-generation): what carries loss, how answers are decoded when the
    run scores the test split and shows live samples, and which GGUF files the export adds."""

    train_on: str = "assistant"  # assistant: loss on the answers (and their end-of-turn) only; all: every token
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    live_samples: int = 3  # fixed validation prompts answered at each evaluation (0: none)
    base_eval: bool = True  # score the base model on the test split first, the same way
    eval_limit: int | None = 300  # test examples generated for the report (None: all)
    gguf: list[str] = field(default_factory=list)  # "f16", "q8_0": GGUF files written beside the export
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, ~30% slower

    def problems(self) -> list[str]:
        out = []
        if self.train_on not in ("assistant", "all"):
            out.append(f"--train-on must be assistant or all, got {self.train_on!r}")
        if not 1 <= self.max_new_tokens <= 8192:
            out.append(f"--max-new-tokens must be between 1 and 8192, got {self.max_new_tokens}")
        if not (isinstance(self.temperature, (int, float)) and 0 <= self.temperature <= 5):
            out.append(f"--temperature must be between 0 and 5, got {self.temperature}")
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            out.append(f"--top-p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.live_samples <= 20:
            out.append(f"--live-samples must be between 0 and 20, got {self.live_samples}")
        if self.eval_limit is not None and self.eval_limit < 1:
            out.append(f"--eval-limit must be at least 1, got {self.eval_limit}")
        if unknown := [k for k in self.gguf if k not in GGUF_KINDS]:
            out.append(f"--gguf takes {' and/or '.join(GGUF_KINDS)} (comma-separated), got {', '.join(map(str, unknown))}")
        return out


GGUF_KINDS = ("f16", "q8_0")


@dataclass
class RunConfig:
    task: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    run_dir: str | None = None  # None: a new folder under the runs home
    export_dir: str | None = None
    overwrite_export: bool = False  # replace an earlier Workbench export in export_dir (never other files)
    name: str | None = None
    quantize: str | None = None  # "int8": also write model.int8.onnx, measured against fp32 (onnx_export.py)
    # Experiment trackers the run also logs to (core/tracking): tensorboard (RUN/tensorboard), mlflow.
    report_to: list[str] = field(default_factory=list)
    mlflow_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else a local store under the runs home

    def validate(self) -> None:
        t = self.train
        problems = []
        if not self.data.train:
            problems.append("no training data given")
        for section, flag_fields in (("train", _FLOAT_FLAGS), ("data", _DATA_FLOAT_FLAGS)):
            for name, flag in flag_fields.items():
                value = getattr(getattr(self, section), name)
                if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
                    problems.append(f"{flag} must be a finite number, got {value}")
        if problems:  # nan compares false with everything: the range checks below would let it through
            raise InputError("; ".join(problems))
        if t.max_steps is not None and t.max_steps < 1:
            problems.append(f"--max-steps must be at least 1, got {t.max_steps}")
        if t.early_stopping_patience is not None and t.early_stopping_patience < 1:
            problems.append(f"--early-stopping must be at least 1 evaluation, got {t.early_stopping_patience}")
        if t.weight_decay < 0:
            problems.append(f"--weight-decay must not be negative, got {t.weight_decay}")
        if t.max_grad_norm < 0:
            problems.append(f"--max-grad-norm must not be negative (0 turns clipping off), got {t.max_grad_norm}")
        if not 0 <= t.seed < 2**32:
            problems.append(f"--seed must be between 0 and 4294967295, got {t.seed}")
        if t.save_minutes < 0:
            problems.append(f"--save-minutes must not be negative (0 turns timed checkpoints off), got {t.save_minutes}")
        if t.save_steps is not None and t.save_steps < 1:
            problems.append(f"--save-steps must be at least 1, got {t.save_steps}")
        if t.eval_batch_size is not None and t.eval_batch_size < 1:
            problems.append(f"eval_batch_size must be at least 1, got {t.eval_batch_size}")
        if t.epochs is not None and t.epochs <= 0:
            problems.append(f"--epochs must be positive, got {t.epochs}")
        if t.batch_size < 1:
            problems.append(f"--batch-size must be at least 1, got {t.batch_size}")
        if t.lr is not None and not 0 < t.lr < 1:
            problems.append(f"--lr must be between 0 and 1, got {t.lr}")
        if t.max_length < 8:
            problems.append(f"--max-length must be at least 8, got {t.max_length}")
        if not isinstance(t.num_processes, int) or not 1 <= t.num_processes <= 1024:
            problems.append(f"--num-processes must be between 1 and 1024, got {t.num_processes}")
        if t.grad_accum < 1:
            problems.append(f"--grad-accum must be at least 1, got {t.grad_accum}")
        if not 0 <= t.warmup_ratio < 1:
            problems.append(f"--warmup-ratio must be in [0, 1), got {t.warmup_ratio}")
        if t.precision not in ("auto", "fp32", "bf16", "fp16"):
            problems.append(f"--precision must be auto, fp32, bf16 or fp16, got {t.precision!r}")
        if t.image_size is not None and not 16 <= t.image_size <= 1024:
            problems.append(f"--image-size must be between 16 and 1024 pixels, got {t.image_size}")
        if t.augment not in (None, "strong", "mild", "none"):
            problems.append(f"--augment must be strong, mild or none, got {t.augment!r}")
        if t.batch_norm not in (None, "frozen", "update"):
            problems.append(f"--batch-norm must be frozen or update, got {t.batch_norm!r}")
        if not 0 <= t.feature_views <= 64:
            problems.append(f"--feature-views must be between 0 and 64, got {t.feature_views}")
        if t.eval_steps is not None and t.eval_steps < 1:
            problems.append(f"--eval-steps must be at least 1, got {t.eval_steps}")
        for name in ("val_fraction", "test_fraction"):
            v = getattr(self.data, name)
            if not 0 <= v < 0.9:
                problems.append(f"{name} must be in [0, 0.9), got {v}")
        if self.quantize not in (None, "int8"):
            problems.append(f"--quantize must be int8, got {self.quantize!r}")
        if self.data.sample is not None and self.data.sample < 10:
            problems.append(f"--sample must be at least 10 rows, got {self.data.sample}")
        if not 0 < t.mlm_probability < 1:
            problems.append(f"mlm_probability must be between 0 and 1, got {t.mlm_probability}")
        problems += self.data.problems() + self.model.problems() + self.generation.problems()
        trackers = self.report_to if isinstance(self.report_to, list) else [self.report_to]
        if unknown := [t for t in trackers if t not in TRACKERS]:
            problems.append(f"--report-to takes {' and/or '.join(TRACKERS)} (comma-separated), got "
                            f"{', '.join(map(str, unknown))}")
        if problems:
            raise InputError("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        def build(kind, values):
            known = {f.name for f in dataclasses.fields(kind)}
            unknown = set(values) - known
            if unknown:
                raise InputError(f"unknown setting(s) {', '.join(sorted(unknown))} in {kind.__name__}")
            return kind(**values)

        d = dict(d)
        return cls(
            data=build(DataConfig, d.pop("data", {})),
            model=build(ModelConfig, ModelConfig.upgrade(d.pop("model", {}))),
            train=build(TrainConfig, d.pop("train", {})),
            generation=build(GenerationConfig, d.pop("generation", {})),
            **{k: v for k, v in d.items() if k in {"task", "run_dir", "export_dir", "overwrite_export", "name",
                                                  "quantize", "report_to", "mlflow_uri"}},
        )

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        p = Path(path)
        if p.is_dir():
            p = p / "config.json"
        try:
            raw = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError("config file not found", path=p) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"not a readable JSON config ({e})", path=p) from None
        if not isinstance(raw, dict):
            raise InputError("a config must be a JSON object", path=p)
        raw.pop("resolved", None)  # what the engine found at run time; informative only
        try:
            cfg = cls.from_dict(raw)
        except TypeError as e:
            raise InputError(f"invalid config ({e})", path=p) from None
        # A loaded config describes a run to repeat: the repeat gets its own run directory and
        # does not overwrite the first run's export.
        cfg.run_dir = None
        cfg.export_dir = None
        cfg.overwrite_export = False
        return cfg
