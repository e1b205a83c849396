"""The table of tasks and training methods: every fact about a task or a method that some other part
of Workbench needs, written once, as plain frozen dataclasses (like transformers' ``SUPPORTED_TASKS``).

Importing it imports no torch, transformers, datasets or task module, so a front end can list tasks,
word its pickers and choose its views without paying for them. Code outside ``core/tasks`` looks a
task or a method up here (or asks the Task object) instead of comparing names.

Names others read (kept stable):

    METHODS: dict[str, MethodSpec]      full, frozen, lora, adalora, qlora (in picker order; a task
                                        takes the methods its TaskSpec.lr names: qlora is generation's)
    TASKS: dict[str, TaskSpec]          registration order (it breaks --task auto's ties)
    task_spec(name) -> TaskSpec         aliases resolved; InputError naming the choices
    method_spec(name) -> MethodSpec     InputError naming the choices
    applicable_methods(hf_backbone, pretrained, task) -> names of the methods that apply to a backbone
    check_method(task, method)          InputError where a task does not take a method
    default_lr(task, method) -> float   the learning rate when --lr is not given (the run asks
                                        ``Task.default_lr(config)``, which an image task refines by backbone)
    spec_or_none(task) -> TaskSpec | None   for names read from files (an export, an old run)
    prediction_kind(task), modality_of(task), first_task_of(modality), task_run_by(command)
    trainable_task_names(), resolve_name(name), ALIASES
    method_help(), lr_help(), lr_text(value)   --method's and --lr's help, a rate as people write it
    DEFAULT_TASK, DEFAULT_METHOD, FROZEN_METHOD, ANALYSES (LABEL_ISSUES, CALIBRATION, EXPLANATIONS,
    RUN_DIFF, BASELINE), REGRESSION_METRICS, TAGGING_METRICS, MASKED_LM_METRICS, MULTILABEL_METRICS

A TaskSpec's ``evaluate_view`` and ``try_it_view`` name the app's classes as "module:Class" strings,
so the core stays free of Qt; None means the app's fallback (the plain-text report, no "Try it").
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError
from ..metrics import CLASSIFICATION, LOSS, Metric

# ---- training methods ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MethodSpec:
    name: str  # the value of --method and of config.json's model.method
    title: str  # in a run's log line: "LoRA r=8, alpha=16 on query,value: ..."
    menu_title: str  # in a front end's method picker
    help: str  # what it trains, for --method's help
    uses_adapters: bool  # low-rank adapters (peft) plus the head; merged into a plain model on export
    hf_only: bool  # applies only to Hugging Face transformer backbones (not Workbench's own image models)
    frozen_backbone: bool = False  # only the new head trains
    adaptive_rank: bool = False  # adapter ranks re-allocated by importance during training (AdaLoRA)
    quantized_base: bool = False  # the frozen base loads in 4 bits (bitsandbytes NF4): QLoRA


METHODS: dict[str, MethodSpec] = {m.name: m for m in (
    MethodSpec("full", "full fine-tuning", "Full fine-tuning", "every weight", uses_adapters=False, hf_only=False),
    MethodSpec("frozen", "frozen backbone (head only)", "New head only (frozen backbone)", "only the new head",
               uses_adapters=False, hf_only=False, frozen_backbone=True),
    MethodSpec("lora", "LoRA", "LoRA adapters", "low-rank adapters and the head", uses_adapters=True, hf_only=True),
    MethodSpec("adalora", "AdaLoRA", "AdaLoRA adapters",
               "low-rank adapters whose ranks are re-allocated by importance during training, and the head",
               uses_adapters=True, hf_only=True, adaptive_rank=True),
    MethodSpec("qlora", "QLoRA", "QLoRA adapters (4-bit base)",
               "low-rank adapters on the base model loaded in 4 bits (NF4, bitsandbytes): about a quarter of "
               "LoRA's weight memory; text generation only",
               uses_adapters=True, hf_only=True, quantized_base=True),
)}
DEFAULT_METHOD = "full"
FROZEN_METHOD = "frozen"  # what the old --freeze-backbone flag (and config key) means

# Learning rates. A whole network takes a small step; only a head, or low-rank adapters and a head,
# take a larger one (LoRA papers use 5e-4 to 1e-3 where full fine-tuning uses 2e-5 to 5e-5).
_TEXT_LR = {"full": 5e-5, "frozen": 1e-3, "lora": 5e-4, "adalora": 5e-4}
# EfficientNet-Lite0 (the default image backbone): convolutions and batch norm take a larger step
# than a transformer. Image tasks refine this by backbone (ImageClassification.default_lr).
_IMAGE_LR = {**_TEXT_LR, "full": 5e-4}
# Supervised fine-tuning of a causal LM: TRL and LLaMA-Factory default to 2e-5 (full) and 2e-4
# (LoRA); a small model (SmolLM2-135M) takes a little more. "frozen" has no head to train: refused.
# QLoRA takes LoRA's rate (the QLoRA paper's 2e-4 for small models).
_GENERATION_LR = {"full": 5e-5, "frozen": 1e-3, "lora": 2e-4, "adalora": 2e-4, "qlora": 2e-4}

# ---- analyses -----------------------------------------------------------------------------------

LABEL_ISSUES = "label_issues"  # out-of-sample probable label errors (core/analysis/label_issues.py)
CALIBRATION = "calibration"  # ECE, reliability bins, a fitted temperature (core/analysis/calibration.py)
EXPLANATIONS = "explanations"  # attributions of a prediction (core/analysis/explain.py)
RUN_DIFF = "run_diff"  # two runs compared row by row (core/analysis/compare.py)
BASELINE = "baseline"  # a quick model on the frozen backbone's features beside the fine-tuned one
ANALYSES = (LABEL_ISSUES, CALIBRATION, EXPLANATIONS, RUN_DIFF, BASELINE)

# ---- metrics (plain data: core/metrics.py) ------------------------------------------------------

REGRESSION_METRICS = (
    Metric("mse", "MSE", greater_is_better=False, bounded=False, plot=True, headline=True),
    Metric("rmse", "RMSE", greater_is_better=False, bounded=False),
    Metric("mae", "MAE", greater_is_better=False, bounded=False, headline=True),
    Metric("pearson", "Pearson", plot=True, headline=True),
    Metric("spearman", "Spearman", headline=True),
    Metric("r2", "R²", bounded=False),
    LOSS,
)
TAGGING_METRICS = (
    Metric("f1", "Entity F1", plot=True, headline=True),
    Metric("precision", "Entity precision", headline=True),
    Metric("recall", "Entity recall", headline=True),
    Metric("macro_f1", "Macro F1 (entity types)"),
    Metric("accuracy", "Token accuracy", plot=True, headline=True),
    LOSS,
)
MASKED_LM_METRICS = (
    Metric("perplexity", "Perplexity", greater_is_better=False, bounded=False, plot=True, headline=True),
    Metric("accuracy", "Masked-token accuracy", plot=False, headline=True),
    Metric("loss", "Masked-LM loss", greater_is_better=False, bounded=False, headline=True),
)

# Several labels per example, sigmoid outputs: the headline figures are at each label's threshold
# tuned on validation (core/tasks/multilabel); the report also gives them at a global 0.5.
MULTILABEL_METRICS = (
    Metric("micro_f1", "Micro F1", plot=True, headline=True),
    Metric("macro_f1", "Macro F1", plot=True, headline=True),
    Metric("subset_accuracy", "Exact-match accuracy", headline=True),
    Metric("hamming_loss", "Hamming loss", greater_is_better=False),
    Metric("lrap", "Label-ranking average precision"),
    LOSS,
)

# Text generation: the validation loss and perplexity of the answer tokens live; the scores of the
# generated answers (core/tasks/generation/scoring.py) come with the final test, beside the base model's.
GENERATION_METRICS = (
    Metric("loss", "Validation loss (answer tokens)", greater_is_better=False, bounded=False, plot=True,
           headline=True),
    # Perplexity runs to the hundreds where loss and accuracy stay near 0..4: off the shared live plot.
    Metric("perplexity", "Perplexity", greater_is_better=False, bounded=False, headline=True),
    Metric("accuracy", "Answer-token accuracy", plot=True),
)

# ---- tasks --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskSpec:
    name: str  # --task, config.json's task, an export's workbench.json
    title: str  # in a front end's task picker
    heading: str  # what messages call it ("Detected task: ..."): the Task class's ``title``
    task_class: str  # "module:Class", imported only when used
    modality: str  # what its data and backbones are: "text" or "image"
    row_unit: str  # what one example is, in messages: rows, sentences, images
    prediction: str | None  # what predict/serve/batch return ("kind"): classes, tags, values; None: no predictor
    auto_model: str  # the transformers AutoModel class its model loads as
    pipeline_tag: str  # transformers.pipeline's task for the export
    metrics: tuple[Metric, ...]
    default_metric: str  # picks the best checkpoint unless --metric says otherwise
    lr: dict[str, float]  # method name -> learning rate when --lr is not given
    analyses: frozenset[str] = frozenset()  # of ANALYSES
    own_command: str | None = None  # run by this command (`workbench adapt`), not picked for `train` or --task auto
    aliases: tuple[str, ...] = ()  # other names --task accepts
    readers: tuple[str, ...] = ()  # "module:function" of the readers of its data files
    evaluate_view: str | None = None  # "module:Class" of the app's Evaluate view of its runs
    try_it_view: str | None = None  # "module:Class" of the app's "Try it" box for its models
    num_outputs: int | None = None  # model outputs fixed by the task (1 for a value); None: one per class

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metrics)

    def supports(self, analysis: str) -> bool:
        return analysis in self.analyses


TEXT_GENERATION = "text-generation"  # the one task whose data is conversations (JSON): front ends branch on it
_CLASSES_VIEW = "workbench.app.evaluation.classification:ClassificationView"
_TEXT_TRY_IT = "workbench.app.evaluation.try_it:TryItBox"
_TEXT_CLASSIFIER_ANALYSES = frozenset({LABEL_ISSUES, CALIBRATION, EXPLANATIONS, RUN_DIFF})

TASKS: dict[str, TaskSpec] = {t.name: t for t in (
    TaskSpec("text-classification", "Text classification", "Text classification",
             "workbench.core.tasks.text_classification:TextClassification", "text", "rows", "classes",
             "AutoModelForSequenceClassification", "text-classification", CLASSIFICATION, "macro_f1", _TEXT_LR,
             _TEXT_CLASSIFIER_ANALYSES, aliases=("classification", "text"),
             readers=("workbench.core.data.tabular:read_table",),
             evaluate_view=_CLASSES_VIEW, try_it_view=_TEXT_TRY_IT),
    TaskSpec("token-classification", "Token tagging (entities, parts of speech)", "Token classification",
             "workbench.core.tasks.token_classification:TokenClassification", "text", "sentences", "tags",
             "AutoModelForTokenClassification", "token-classification", TAGGING_METRICS, "f1", _TEXT_LR,
             frozenset({RUN_DIFF}), aliases=("tagging", "ner", "pos"),
             readers=("workbench.core.data.conll:read_tagged",),
             evaluate_view="workbench.app.views.tagging:TaggingView",
             try_it_view="workbench.app.views.tagging:TagTryIt"),
    TaskSpec("text-pair-classification", "Sentence pairs", "Sentence-pair classification",
             "workbench.core.tasks.text_pair:TextPairClassification", "text", "rows", "classes",
             "AutoModelForSequenceClassification", "text-classification", CLASSIFICATION, "macro_f1", _TEXT_LR,
             _TEXT_CLASSIFIER_ANALYSES, aliases=("pairs",),
             readers=("workbench.core.data.tabular:read_table", "workbench.core.data.pairs:build_text_dataset"),
             evaluate_view=_CLASSES_VIEW, try_it_view=_TEXT_TRY_IT),  # the views show both texts of a pair
    TaskSpec("text-regression", "Scores (regression)", "Text regression",
             "workbench.core.tasks.regression:TextRegression", "text", "rows", "values",
             "AutoModelForSequenceClassification", "text-classification", REGRESSION_METRICS, "mse", _TEXT_LR,
             frozenset({RUN_DIFF}), aliases=("regression",),
             readers=("workbench.core.data.tabular:read_table", "workbench.core.data.pairs:build_text_dataset"),
             evaluate_view="workbench.app.views.regression:RegressionView",
             try_it_view="workbench.app.views.regression:ScoreTryIt", num_outputs=1),
    TaskSpec("image-classification", "Image classification", "Image classification",
             "workbench.core.tasks.image.classification:ImageClassification", "image", "images", "classes",
             "AutoModelForImageClassification", "image-classification", CLASSIFICATION, "macro_f1", _IMAGE_LR,
             _TEXT_CLASSIFIER_ANALYSES | {BASELINE},
             readers=("workbench.core.data.images:scan_image_folders",),
             evaluate_view="workbench.app.views.images:ImageClassificationView",
             try_it_view="workbench.app.views.images:ImageTryIt"),
    # Before text-multilabel: a table of image paths given with --label-separator or --label-columns is
    # sure of both tasks (text-multilabel's sniff_settings), and --task auto keeps the first of a tie.
    TaskSpec("image-multilabel", "Images, several labels each", "Multi-label image classification",
             "workbench.core.tasks.multilabel.images:ImageMultiLabel", "image", "images", "labels",
             "AutoModelForImageClassification", "image-classification", MULTILABEL_METRICS, "micro_f1", _IMAGE_LR,
             _TEXT_CLASSIFIER_ANALYSES, aliases=("multilabel-images", "multi-label-images"),
             readers=("workbench.core.data.tabular:read_table",
                      "workbench.core.tasks.multilabel.images:locate_images"),
             evaluate_view="workbench.app.views.multilabel:MultiLabelView",
             try_it_view="workbench.app.views.multilabel:MultiLabelImageTryIt"),
    TaskSpec("text-multilabel", "Text, several labels per row", "Multi-label text classification",
             "workbench.core.tasks.multilabel.text:TextMultiLabel", "text", "rows", "labels",
             "AutoModelForSequenceClassification", "text-classification", MULTILABEL_METRICS, "micro_f1", _TEXT_LR,
             _TEXT_CLASSIFIER_ANALYSES, aliases=("multilabel", "multi-label"),
             readers=("workbench.core.data.tabular:read_table",),
             evaluate_view="workbench.app.views.multilabel:MultiLabelView",
             try_it_view="workbench.app.views.multilabel:MultiLabelTryIt"),
    TaskSpec(TEXT_GENERATION, "Text generation (answers, chat)", "Text generation",
             "workbench.core.tasks.generation.task:TextGeneration", "text", "examples", "text",
             "AutoModelForCausalLM", "text-generation", GENERATION_METRICS, "loss", _GENERATION_LR,
             frozenset({RUN_DIFF}), aliases=("generation", "sft", "chat"),
             readers=("workbench.core.tasks.generation.conversations:read_conversations",),
             evaluate_view="workbench.app.views.generation:GenerationView",
             try_it_view="workbench.app.views.generation:ChatTryIt"),
    TaskSpec("masked-lm", "Masked-LM adaptation (unlabelled text)", "Masked-language-model adaptation",
             "workbench.core.tasks.masked_lm:MaskedLanguageModeling", "text", "rows", None,
             "AutoModelForMaskedLM", "fill-mask", MASKED_LM_METRICS, "loss", _TEXT_LR,
             own_command="adapt",
             readers=("workbench.core.tasks.masked_lm:_read_lines", "workbench.core.data.conll:read_tagged",
                      "workbench.core.data.tabular:read_table")),
)}
DEFAULT_TASK = "text-classification"  # --task auto without data; runs written before runs recorded a task
ALIASES: dict[str, str] = {alias: t.name for t in TASKS.values() for alias in t.aliases}


def trainable_task_names() -> list[str]:
    """The tasks `workbench train` (and --task auto) picks from, in registration order."""
    return [name for name, t in TASKS.items() if t.own_command is None]


def resolve_name(name: str) -> str:
    """A task name with aliases resolved and case folded (unknown names come back as given, folded)."""
    key = name.lower()
    return ALIASES.get(key, key)


def task_spec(name: str) -> TaskSpec:
    spec = TASKS.get(resolve_name(name))
    if spec is None:
        raise InputError(f"unknown task {name!r}; choose one of: {', '.join(['auto', *trainable_task_names()])}")
    return spec


def spec_or_none(name: str | None) -> TaskSpec | None:
    """The spec of a task name read from a file (an export's marker, an old run), None if unknown."""
    return TASKS.get(resolve_name(name)) if isinstance(name, str) else None


def task_run_by(command: str) -> str:
    """The task that ``workbench COMMAND`` runs (``adapt``: masked-LM adaptation)."""
    return next(name for name, t in TASKS.items() if t.own_command == command)


def first_task_of(modality: str) -> str | None:
    """The first registered task whose data is of ``modality`` ("image"), for guessing an unmarked model's task."""
    return next((name for name, t in TASKS.items() if t.modality == modality), None)


def modality_of(task: str | None) -> str:
    """What a task's data is ("text", "image"); text for a task this version does not know."""
    spec = spec_or_none(task)
    return spec.modality if spec else "text"


def prediction_kind(task: str | None) -> str | None:
    """What a model of ``task`` predicts (classes, tags, values); None: it cannot predict (or is unknown)."""
    spec = spec_or_none(task)
    return spec.prediction if spec else None


def method_spec(name: str) -> MethodSpec:
    spec = METHODS.get(name)
    if spec is None:
        raise InputError(f"unknown --method {name!r}; choose one of: {', '.join(METHODS)}")
    return spec


def applicable_methods(hf_backbone: bool, pretrained: bool = True, task: str | None = None) -> tuple[str, ...]:
    """The methods a backbone can train with: adapters need a Hugging Face transformer, a frozen
    backbone needs pretrained weights (the image task refuses the rest when a run starts), and a task
    takes the methods its learning-rate table names (None: the methods every task takes)."""
    takes = task_spec(task).lr if task else _TEXT_LR
    return tuple(m.name for m in METHODS.values()
                 if m.name in takes and (hf_backbone or not m.hf_only) and (pretrained or not m.frozen_backbone))


def check_method(task: str, method: str) -> None:
    """InputError where ``task`` does not take ``method`` (QLoRA outside text generation)."""
    spec, mspec = task_spec(task), method_spec(method)
    if mspec.name not in spec.lr:
        takers = [t.heading.lower() for t in TASKS.values() if mspec.name in t.lr]
        raise InputError(f"--method {mspec.name} ({mspec.title}) applies to {', '.join(takers) or 'no task'}, "
                         f"not to {spec.heading.lower()}; choose one of {', '.join(m for m in METHODS if m in spec.lr)}")


def default_lr(task: str, method: str) -> float:
    """The peak learning rate of a ``task`` run under ``method`` when --lr is not given (an image task
    may refine it by backbone: Task.default_lr)."""
    check_method(task, method)
    return task_spec(task).lr[method_spec(method).name]


def lr_text(value: float) -> str:
    """A learning rate as people write it: 5e-5, 0.001."""
    return f"{value:g}".replace("e-0", "e-")


def method_help() -> str:
    """--method's help: each method and what it trains."""
    parts = [f"{m.name} ({m.help}{', default' if m.name == DEFAULT_METHOD else ''})" for m in METHODS.values()]
    larger = [m.name for m in METHODS.values() if _TEXT_LR.get(m.name, 0.0) > _TEXT_LR[DEFAULT_METHOD]]
    return f"what trains: {', '.join(parts)}; {', '.join(larger)} take a larger default --lr"


def lr_help() -> str:
    """--lr's help: the defaults per method (text tasks; image tasks choose theirs by backbone)."""
    by_value: dict[float, list[str]] = {}
    for name, lr in _TEXT_LR.items():
        by_value.setdefault(lr, []).append(name)
    shown = ", ".join(f"{'/'.join(names)} {lr_text(lr)}" for lr, names in by_value.items())
    return f"peak learning rate (default: the task's for the method; text: {shown}; images: by backbone)"

