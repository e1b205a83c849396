"""Text generation: supervised fine-tuning of a causal language model on conversations.

Each example is a conversation (conversations.py reads every format into one); the chat template
renders it and only the answer tokens carry loss (template.py). The model's output layer runs on
those positions alone: with a 49k-token vocabulary most of a small model's compute is there, and the
prompt's positions need none of it. Validation measures the answer tokens' loss and perplexity live;
a few fixed validation prompts are answered at each evaluation (``GenerationSamples``). The final
report generates answers for the test split and scores them (scoring.py), beside the base model's
answers to the same prompts, generated before training.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ...cancel import NEVER, CancelToken
from ...config import DEFAULT_MODEL, DataConfig
from ...errors import InputError
from ...events import Callbacks, GenerationSamples, PhaseChanged, Progress, Warning_
from ..base import EncodedSplit, EvalResult, PreparedData, Task
from ..table import TASKS, method_spec
from .session import GenerationSession
from .splits import conversation_splits

IGNORE = -100
# (module, distribution) of the generation extra (pyproject's [generation]): scores and GGUF files.
_NEEDS = (("sacrebleu", "sacrebleu"), ("rouge_score", "rouge-score"), ("gguf", "gguf"))


class TextGeneration(Task):
    spec = TASKS["text-generation"]
    token_level_loss = True
    has_classes = False
    head_is_new = False
    onnx_export = False
    # Measured on an AVX512-BF16 CPU without AMX (SmolLM2-135M, LoRA, docs/BENCHMARKS.md): fp32 trained 5% faster,
    # peaked 1.1 GB lower (autocast keeps bf16 copies of the weights) and reached a lower eval loss.
    cpu_bf16_needs_amx = "bf16 trains a language model no faster than fp32 without AMX (measured), so fp32"

    def __init__(self) -> None:
        self.callbacks: Callbacks = Callbacks()
        self.cancel: CancelToken = NEVER
        self.settings: Any = None  # GenerationConfig
        self.seed = 42
        self.session = GenerationSession()
        self.pad_id = 0
        self.sources: dict[str, str] = {}
        self.quantize_on: str | None = None  # QLoRA: the device the 4-bit base loads onto

    def configure(self, config) -> None:
        from ...config import GenerationConfig

        missing = [dist for module, dist in _NEEDS if importlib.util.find_spec(module) is None]
        if missing:  # said before anything runs, not when the test answers are scored after training
            raise InputError(f"text generation needs the {', '.join(missing)} package(s), which are not installed: "
                             "pip install 'workbench[generation]' (or pip install " + " ".join(missing) + ")")
        if config.model.method == "frozen":
            raise InputError("text generation has no new head to train on a frozen backbone; use --method full, "
                             "lora or adalora")
        if config.model.name == DEFAULT_MODEL:  # the classification default cannot generate: take the generative one
            from .backbones import DEFAULT_GENERATION_BACKBONE

            config.model.name = DEFAULT_GENERATION_BACKBONE
        self.settings = config.generation if isinstance(config.generation, GenerationConfig) else GenerationConfig()
        self.seed = config.train.seed
        self.quantize_on = _qlora_device(config) if method_spec(config.model.method).quantized_base else None

    def resolve_backbone(self, name: str | None):
        from .backbones import DEFAULT_GENERATION_BACKBONE, progress_events, resolve_generation_backbone

        return resolve_generation_backbone(name or DEFAULT_GENERATION_BACKBONE, progress=progress_events(self.callbacks))

    @classmethod
    def sniff(cls, path: Path) -> float:
        from .conversations import sniff_conversations

        try:
            return sniff_conversations(path)
        except Exception:  # a file this task cannot read is simply not its data
            return 0.0

    # ---- data -----------------------------------------------------------------------------------
    def prepare_data(self, cfg: DataConfig, seed: int, cache_dir: Path, callbacks: Callbacks,
                     cancel=NEVER) -> PreparedData:
        self.callbacks, self.cancel = callbacks, cancel
        callbacks.on_event(PhaseChanged("reading", str(cfg.train)))
        data = conversation_splits(cfg, seed, cache_dir)
        self._preview = data.resolved.pop("_preview", None)
        self.sources = dict(data.resolved.get("sources", {}))
        return data

    def describe_data(self, data: PreparedData) -> str:
        r = data.resolved
        return f"{r.get('turns', 0):,} turns in {r.get('examples', 0):,} examples"

    # ---- encoding -------------------------------------------------------------------------------
    def load_preprocessor(self, backbone_path: str):
        from transformers import AutoTokenizer

        from .template import ensure_chat_template, stop_token_note

        tok = AutoTokenizer.from_pretrained(backbone_path)
        for note in (ensure_chat_template(tok), stop_token_note(tok)):
            if note:
                self.callbacks.on_event(Warning_(note))
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        self.session.tokenizer = tok
        return tok

    def encode(self, name, rows, tokenizer, max_length, cache_dir, callbacks, cancel=NEVER) -> EncodedSplit:
        import pyarrow as pa

        from .template import encode_conversation

        callbacks.on_event(PhaseChanged("tokenizing", name))
        train_on = self.settings.train_on if self.settings else "assistant"
        ids, masks, cut, keep = [], [], [], []
        messages = rows["messages"]
        lines = rows["line"]
        for i, raw in enumerate(messages):
            try:
                enc = encode_conversation(tokenizer, json.loads(raw), max_length, train_on=train_on)
            except InputError as e:  # the template refused this conversation: name the example
                raise InputError(f"the {name} example on line {lines[i]}: {e}", path=self.sources.get(name)) from None
            if any(enc.loss_mask[1:]):  # position 0 predicts nothing: a loss token must come after it
                ids.append(enc.input_ids)
                masks.append([int(b) for b in enc.loss_mask])
                cut.append(enc.truncated_tokens)
                keep.append(i)
            if i % 256 == 0:
                cancel.raise_if_cancelled()
                callbacks.on_event(Progress("tokenizing", i, len(messages)))
        self._warn_truncation(name, len(messages), cut, len(messages) - len(keep), max_length)
        if not keep:
            raise InputError(f"no {name} example keeps any answer token within --max-length {max_length}")
        if len(keep) < len(messages):
            rows = rows.select(keep)
        inputs = {"input_ids": RaggedIds(pa.array(ids, pa.list_(pa.int32()))),
                  "loss_mask": RaggedIds(pa.array(masks, pa.list_(pa.int8())))}
        lengths = np.array([len(x) for x in ids], dtype=np.int64)
        return EncodedSplit(name, rows, inputs, np.zeros(len(ids), np.int64), lengths,
                            truncated=int(sum(1 for c in cut if c)))

    def _warn_truncation(self, name: str, total: int, cut: list[int], dropped: int, max_length: int) -> None:
        longer = [c for c in cut if c]
        if longer:
            self.callbacks.on_event(Warning_(
                f"{len(longer):,} of {total:,} {name} examples are longer than --max-length {max_length} tokens "
                f"(by up to {max(longer):,} tokens): their ends are cut; --max-length {max_length + max(longer)} "
                "keeps them whole"))
        if dropped:
            self.callbacks.on_event(Warning_(
                f"{dropped:,} {name} examples are left out: no answer token is left within --max-length {max_length}"))

    def make_batch(self, split: EncodedSplit, rows: np.ndarray) -> dict[str, np.ndarray]:
        lengths = split.lengths[rows]
        width = int(lengths.max())
        ids = split.inputs["input_ids"].pad(rows, self.pad_id, width)
        loss = split.inputs["loss_mask"].pad(rows, 0, width).astype(bool)
        # Position t predicts token t + 1: it carries loss when that token does.
        positions = np.zeros_like(loss)
        positions[:, :-1] = loss[:, 1:]
        labels = np.full_like(ids, IGNORE)
        labels[:, :-1] = np.where(loss[:, 1:], ids[:, 1:], IGNORE)
        attention = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
        return {"input_ids": ids, "attention_mask": attention, "loss_positions": positions, "labels": labels}

    def loss_units(self, labels: np.ndarray) -> int:
        return int((labels != IGNORE).sum())

    # ---- model ----------------------------------------------------------------------------------
    def build_model(self, backbone_path: str, data: PreparedData):
        from transformers import AutoConfig, AutoModelForCausalLM

        from .backbones import is_causal_lm_config

        config = AutoConfig.from_pretrained(backbone_path)
        if getattr(config, "is_encoder_decoder", False) or not is_causal_lm_config(config.to_dict()):
            raise InputError(f"{backbone_path} is not a causal language model (its architecture is "
                             f"{', '.join(getattr(config, 'architectures', None) or ['?'])}); text generation needs a "
                             "decoder such as SmolLM2, Qwen2.5 or Llama")
        if self.quantize_on is not None:
            from .quantized import load_4bit

            model = load_4bit(backbone_path, self.quantize_on)
        else:
            model = AutoModelForCausalLM.from_pretrained(backbone_path, dtype="float32")
        if getattr(self.settings, "gradient_checkpointing", False):
            model.gradient_checkpointing_enable()
        return model

    def lora_targets(self, model) -> list[str] | None:
        from .backbones import lora_target_modules

        return lora_target_modules(model) or None

    def use_model(self, model, device) -> None:
        self.session.model, self.session.device = model, device

    def forward(self, model, batch: dict):
        positions = batch.pop("loss_positions")
        parts = _decoder_and_head(model)
        if parts is None:
            return model(**batch).logits[positions]
        decoder, head = parts
        hidden = decoder(**batch).last_hidden_state
        return head(hidden[positions])

    def loss(self, logits, labels):
        import torch.nn.functional as F

        return F.cross_entropy(logits.float(), labels[labels != IGNORE])

    def predicted_classes(self, logits, split):
        return None

    def kept_outputs(self, logits, labels):
        from ..masked_lm import token_losses_per_row

        return token_losses_per_row(logits, labels)

    # ---- evaluation -----------------------------------------------------------------------------
    def evaluate(self, logits, split, loss, data) -> EvalResult:
        sums = np.asarray(logits, dtype=np.float64).sum(0) if len(logits) else np.zeros(3)
        nll, count, correct = (float(x) for x in sums)
        mean = nll / count if count else float("nan")
        metrics = {"loss": mean, "perplexity": math.exp(min(mean, 700)) if count else float("nan"),
                   "accuracy": correct / count if count else float("nan")}
        return EvalResult(metrics, {"examples": int(len(split)), "answer_tokens": int(count)})

    def before_training(self, model, splits, folder: Path, resumed: bool, main: bool = True) -> None:
        self.session.configure(self.settings, self.seed, self.callbacks, self.cancel)
        self.session.choose(splits)
        self.session.base_answers(model, folder, resumed, write=main)

    def after_validation(self, step: int, epoch: float) -> None:
        samples = self.session.live_samples()
        if samples:
            self.callbacks.on_event(GenerationSamples(step, epoch, tuple(samples)))

    def generating_seconds(self, model, split, rows, eval_split, evaluations) -> float:
        self.session.configure(self.settings, self.seed, self.callbacks, self.cancel)
        return self.session.seconds_to_answer(model, split, rows, eval_split, evaluations)

    def score_with_model(self, model, split, result) -> EvalResult:
        return self.session.score(model, split, result)

    def report_text(self, result: EvalResult) -> str:
        from .report import report_text

        return report_text(result)

    def write_predictions(self, path: Path, logits, split, data) -> None:
        self.session.write_predictions(path, logits, split)

    # ---- export ---------------------------------------------------------------------------------
    def save_model(self, model, preprocessor, folder: Path, max_length: int) -> None:
        from .export import save_generation_model

        save_generation_model(model, preprocessor, folder, self.session.settings())

    def export_meta(self) -> dict[str, Any]:
        return {"generation": self.session.settings().to_dict(),
                "train_on": self.settings.train_on if self.settings else "assistant"}

    def write_extra_exports(self, folder: Path, meta: dict[str, Any], callbacks: Callbacks,
                            cancel: CancelToken = NEVER) -> None:
        from .export import write_gguf_files

        kinds = list(self.settings.gguf) if self.settings else []
        if kinds:
            meta["gguf"] = write_gguf_files(folder, kinds, callbacks, cancel)

    def model_card(self, *, task_title, pipeline_tag, backbone, data, hyper, metrics, report_table, eval_split) -> str:
        from .report import model_card

        return model_card(backbone=backbone, data=data, hyper=hyper, report_table=report_table, eval_split=eval_split,
                          train_on=self.settings.train_on if self.settings else "assistant")


class RaggedIds:
    """A RaggedColumn that pads to int64 (token ids, 0/1 masks)."""

    def __init__(self, array) -> None:
        from ...data.ragged import RaggedColumn

        self._col = RaggedColumn(array)
        self.lengths = self._col.lengths

    def __len__(self) -> int:
        return len(self._col)

    def pad(self, rows: np.ndarray, pad_value: int, width: int, dtype=np.int64) -> np.ndarray:
        return self._col.pad(rows, pad_value, width, dtype)

    def row(self, i: int) -> list[int]:
        s, n = int(self._col.starts[i]), int(self._col.lengths[i])
        return [int(x) for x in self._col.values[s:s + n]]


def _decoder_and_head(model):
    """(decoder, output layer) of a causal LM (through a peft wrapper), so the output layer runs on the
    answer positions alone; None where that is not safe (a DistributedDataParallel or compiled wrapper,
    whose hooks must see the whole call; logits that are scaled or capped after the head)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    prefix = getattr(inner, "base_model_prefix", None)
    decoder = getattr(inner, prefix, None) if prefix else None
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    config = getattr(inner, "config", None)
    if decoder is None or head is None or decoder is inner:
        return None
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return None
    return decoder, head


def _qlora_device(config) -> str:
    """Where QLoRA's 4-bit base loads: bitsandbytes quantizes on CUDA (fast) and on the CPU (its
    PyTorch kernels: it runs, slower than LoRA); not on Apple's MPS, and one process only."""
    from ...device import resolve_device

    if importlib.util.find_spec("bitsandbytes") is None:
        raise InputError("--method qlora needs the bitsandbytes package, which is not installed: "
                         "pip install 'workbench[qlora]' (or pip install bitsandbytes)")
    if config.train.num_processes > 1:
        raise InputError("--method qlora trains in one process; drop --num-processes, or use --method lora")
    device = resolve_device(config.train.device)
    if device.type not in ("cuda", "cpu"):
        raise InputError(f"--method qlora needs a CUDA GPU or the CPU (bitsandbytes has no {device.type} kernels); "
                         "use --device cpu or --method lora")
    return str(device)
