"""Training methods: what of a model fine-tuning trains.

    full      every weight
    frozen    only the new head; the pretrained backbone keeps its weights (and, in eval mode, its
              batch-norm statistics; no dropout)
    lora      low-rank adapters on the attention projections, plus the head (the peft library)
    adalora   LoRA whose ranks are re-allocated during training by importance (peft's AdaLoRA)

``apply_method`` turns the model a task built into the one the loop trains and returns a
``TrainingMethod`` that the loop and the export call back: AdaLoRA's rank allocation after each
optimizer step and its orthogonality penalty, and at the end the adapters merged into a plain model.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ModelConfig
from ..errors import InputError
from ..tasks.table import DEFAULT_TASK, METHODS, method_spec, spec_or_none, task_spec

log = logging.getLogger(__name__)


# Attention projections by the names architectures peft has no default for give them, tried in
# order: the first pair (or single fused projection) found in the model is used.
_FALLBACK_TARGETS = (("query", "value"), ("q_lin", "v_lin"), ("q_proj", "v_proj"), ("q", "v"), ("qkv",),
                     ("query_key_value",), ("c_attn",), ("Wqkv",))


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameters; tensors shared between modules count once."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


def head_module_names(model) -> list[str]:
    """The top-level modules of a transformers task model that are not its pretrained backbone and
    hold weights: the new head (``classifier``; DistilBERT's ``pre_classifier`` too)."""
    prefix = getattr(model, "base_model_prefix", None)
    if not prefix or getattr(model, prefix, None) is None:
        raise InputError(f"cannot tell the backbone of {type(model).__name__} from its head; use --method full")
    return [name for name, child in model.named_children()
            if name != prefix and any(True for _ in child.parameters())]


def default_targets(model) -> list[str]:
    """The modules LoRA adapts when --lora-targets is not given: peft's own default for the model
    type (BERT-family query and value, DeBERTa query_proj and value_proj, ...), else the attention
    projections found by name."""
    import torch
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in DEFAULTS:
        return list(DEFAULTS[model_type])
    leaves = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    for names in _FALLBACK_TARGETS:
        if all(n in leaves for n in names):
            return list(names)
    raise InputError(f"no attention projections to put LoRA adapters on were found in {type(model).__name__} "
                     f"(model type {model_type!r}); name the modules with --lora-targets, or use --method full "
                     "or frozen")


@dataclass
class TrainingMethod:
    """The method applied to one model: what it trains and what the loop and export do for it."""

    name: str
    trainable: int
    total: int
    targets: list[str] = field(default_factory=list)
    head: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    _adalora: Any = None  # peft's AdaLoraModel, for rank allocation
    _orth_weight: float = 0.0

    @property
    def uses_adapters(self) -> bool:
        spec = METHODS.get(self.name)
        return spec is not None and spec.uses_adapters

    def describe(self) -> str:
        share = f"{self.trainable / self.total:.2%}" if self.total else "?"
        spec = METHODS.get(self.name)
        what = spec.title if spec else self.name
        if self.uses_adapters:
            what += f" r={self.settings['r']}, alpha={self.settings['alpha']:g} on {','.join(self.targets)}"
        return f"{what}: {self.trainable:,} of {self.total:,} parameters trained ({share})"

    def summary(self) -> dict[str, Any]:
        return {"method": self.name, "trainable_parameters": self.trainable, "total_parameters": self.total,
                **({"lora": {**self.settings, "targets": self.targets, "head": self.head}} if self.uses_adapters else {})}

    # ---- loop hooks ---------------------------------------------------------------------------
    def regularization(self, model):
        """AdaLoRA's orthogonality penalty on its P and Q factors (what peft adds to a model-computed
        loss; Workbench computes its losses itself). None for the other methods."""
        if self._adalora is None or self._orth_weight <= 0:
            return None
        import torch

        terms = []
        for n, p in model.named_parameters():
            if p.requires_grad and ("lora_A" in n or "lora_B" in n):
                cov = p @ p.T if "lora_A" in n else p.T @ p
                terms.append(torch.norm(cov - torch.eye(*cov.shape, device=cov.device, dtype=cov.dtype), p="fro"))
        return self._orth_weight * torch.stack(terms).mean() if terms else None

    def after_optimizer_step(self, step: int) -> None:
        """AdaLoRA: prune and re-allocate ranks from this step's gradients (before they are cleared)."""
        if self._adalora is not None:
            self._adalora.update_and_allocate(step)

    # ---- export -------------------------------------------------------------------------------
    def save_adapter(self, model, folder: Path, base: str) -> None:
        """The adapter alone, as peft writes it: ``PeftModel.from_pretrained(base_model, folder)``
        rebuilds the fine-tuned model (the head travels with it as a module to save)."""
        model.save_pretrained(str(folder), safe_serialization=True)
        cfg_path = folder / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        cfg["base_model_name_or_path"] = base  # the backbone, not a temporary path
        cfg_path.write_text(json.dumps(cfg, indent=2), encoding="utf-8")

    def merged(self, model):
        """A plain transformers model with the adapters folded into its weights (the model itself
        for full and frozen): what `transformers.pipeline` loads."""
        if not self.uses_adapters:
            return model
        if method_spec(self.name).quantized_base:
            return _merged_into_full_precision(model)
        return model.merge_and_unload()


def apply_method(model, cfg: ModelConfig, total_steps: int | None = None, *, targets: list[str] | None = None,
                 new_head: bool = True) -> tuple[Any, TrainingMethod]:
    """The model to train under ``cfg.method`` (wrapped by peft for lora/adalora) and its method.
    ``targets``: the task's default LoRA targets (None: peft's for the model type); ``new_head``: whether
    the model's head is new and trains beside the adapters (not a language model's own head)."""
    spec = method_spec(cfg.method)
    if spec.uses_adapters:
        return _with_adapters(model, cfg, total_steps, targets, new_head)
    head = freeze_backbone(model) if spec.frozen_backbone else []
    trainable, total = count_parameters(model)
    return model, TrainingMethod(spec.name, trainable, total, head=head)


def freeze_backbone(model) -> list[str]:
    """Leave only the head trainable; the backbone stays in eval mode while the model trains (the
    loop calls model.train()): batch-norm statistics do not drift and no dropout runs in it."""
    if hasattr(model, "freeze_backbone") and not hasattr(model, "base_model_prefix"):
        model.freeze_backbone()  # Workbench's own image models know their backbone
        return ["head"]
    head = head_module_names(model)
    for name, p in model.named_parameters():
        p.requires_grad_(name.split(".", 1)[0] in head)
    base = getattr(model, model.base_model_prefix)

    def keep_eval(module, args) -> None:  # returns None: a pre-hook's return value replaces the inputs
        base.eval()

    model.register_forward_pre_hook(keep_eval)
    return head


def _with_adapters(model, cfg: ModelConfig, total_steps: int | None, task_targets: list[str] | None = None,
                   new_head: bool = True):
    from peft import AdaLoraConfig, LoraConfig, get_peft_model

    if not hasattr(model, "base_model_prefix"):
        raise InputError(f"--method {cfg.method} applies to Hugging Face transformer backbones; "
                         f"{type(model).__name__} is not one: use --method full or frozen")
    head = head_module_names(model) if new_head else []
    targets = ([t.strip() for t in cfg.lora_targets] if cfg.lora_targets
               else list(task_targets) if task_targets else default_targets(model))
    leaves = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in targets if t not in leaves]
    if missing:
        raise InputError(f"--lora-targets: {type(model).__name__} has no module named {', '.join(missing)}; "
                         f"its linear layers are named {', '.join(sorted(_linear_names(model))[:20])}")
    settings: dict[str, Any] = {"r": cfg.lora_rank, "alpha": float(cfg.lora_alpha), "dropout": float(cfg.lora_dropout)}
    common: dict[str, Any] = dict(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                  target_modules=targets, modules_to_save=head)
    adalora = None
    peft_cfg: LoraConfig  # an AdaLoraConfig is one
    adaptive = method_spec(cfg.method).adaptive_rank
    if method_spec(cfg.method).quantized_base:
        from peft import prepare_model_for_kbit_training

        # fp32 norms and embeddings, inputs that carry gradients; gradient checkpointing as the task set it
        checkpointing = (model.is_activation_checkpointing if hasattr(type(model), "is_activation_checkpointing")
                         else getattr(model, "is_gradient_checkpointing", False))  # transformers 5 renamed it
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=bool(checkpointing))
        settings["quantization"] = "nf4"
    if adaptive:
        total = max(int(total_steps or 0), 10)
        # Ranks start at 1.5x the target and are pruned between the first 10% and the last 20% of the
        # steps (the AdaLoRA paper's schedule, scaled to the run).
        tinit, tfinal = max(1, total // 10), max(1, total // 5)
        peft_cfg = AdaLoraConfig(init_r=max(cfg.lora_rank, round(1.5 * cfg.lora_rank)), target_r=cfg.lora_rank,
                                 tinit=tinit, tfinal=tfinal, deltaT=max(1, total // 50), total_step=total,
                                 **{k: v for k, v in common.items() if k != "r"})
        settings.update(init_r=peft_cfg.init_r, total_step=total)
    else:
        peft_cfg = LoraConfig(**common)
    with warnings.catch_warnings():  # peft reads a transformers attribute that is being renamed
        warnings.simplefilter("ignore", FutureWarning)
        wrapped = get_peft_model(model, peft_cfg)
    if adaptive:
        adalora = wrapped.base_model
    trainable, total = count_parameters(wrapped)
    method = TrainingMethod(cfg.method, trainable, total, targets=targets, head=head, settings=settings,
                            _adalora=adalora, _orth_weight=getattr(peft_cfg, "orth_reg_weight", 0.0))
    return wrapped, method


def _merged_into_full_precision(model):
    """QLoRA's export: the adapters trained on the 4-bit base, folded into the base model loaded again
    at full precision (as the QLoRA paper's and peft's recipes do), so the export needs no bitsandbytes
    and loses no precision to a second quantization."""
    import copy

    import torch
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    base = model.get_base_model()
    full = type(base).from_pretrained(base.config._name_or_path, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        wrapped = get_peft_model(full, copy.deepcopy(model.peft_config[model.active_adapter]))
    set_peft_model_state_dict(wrapped, {k: v.detach().to("cpu", torch.float32)
                                        for k, v in get_peft_model_state_dict(model).items()})
    return wrapped.merge_and_unload()


def _linear_names(model) -> set[str]:
    import torch

    return {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def estimate_method(task_name: str, backbone, cfg: ModelConfig, num_labels: int = 2) -> TrainingMethod:
    """What ``cfg.method`` would train on ``backbone`` (a BackboneInfo) for ``task_name``, without
    loading any weights (the model is built on torch's meta device): for a front end's settings page."""
    import torch

    with torch.device("meta"):
        if backbone.source in ("package", "builtin") and backbone.model_type in ("efficientnet-lite0", "small-cnn"):
            from ..tasks.image.models import ImageClassifier

            model = ImageClassifier(backbone.model_type, num_labels)
        else:
            import transformers

            spec = spec_or_none(task_name) or task_spec(DEFAULT_TASK)  # "auto" before the data is read
            auto = getattr(transformers, spec.auto_model)
            labels = spec.num_outputs or num_labels
            model = auto.from_config(transformers.AutoConfig.from_pretrained(backbone.path, num_labels=labels))
    return apply_method(model, cfg, total_steps=100)[1]
