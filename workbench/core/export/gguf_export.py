"""GGUF (F16 or Q8_0) from a merged causal-LM export, and its check by reading it back.

``write_gguf`` turns a saved Hugging Face folder (config.json, safetensors, a BPE tokenizer with its chat
template) into one GGUF file that llama.cpp, Ollama and LM Studio load. It follows llama.cpp's
``convert_hf_to_gguf.py`` for the Llama family (Llama, SmolLM/SmolLM2, Mistral-style) and Qwen2: the same
metadata keys, tensor names, vocabulary ("gpt2" tokenizer model for byte-level BPE: tokens, token types,
merges, special ids, add-bos, chat template; "llama" for SentencePiece BPE with byte fallback, as Llama 2,
TinyLlama and Mistral have: the same plus byte tokens, scores in merge order and the space prefix), Q/K
rows permuted for llama.cpp's rope layout on Llama (Qwen2 uses the NeoX layout, unpermuted), F32 for norms,
biases and 1-D tensors, and Q8_0 for 2-D weights whose rows are a multiple of 32 (F16 otherwise). Tensors
are converted and written one at a time (the header goes first: its sizes are known in advance), so a 1.7B
model never sits in memory twice. The file is written under a temporary name and
renamed when complete.

``check_gguf`` loads the file back with transformers' GGUF loader (fp32, de-quantised), generates greedily
for a few chat prompts next to the PyTorch model and reports how many outputs agree, and the largest logit
difference; with ``llama_cpp`` importable (llama-cpp-python, an optional extra) it also runs the file there.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..atomic import replacing
from ..cancel import NEVER, CancelToken
from ..errors import InputError

log = logging.getLogger(__name__)

KINDS = ("f16", "q8_0")
# Hugging Face model_type -> llama.cpp architecture. Mistral is Llama to llama.cpp (as its converter does).
_ARCHS = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2"}
# The pre-tokenizer splits llama.cpp knows by name (its converter tells them apart by a hash of the
# tokenizer's output; here they are told apart by the tokenizer.json that says how the text is split).
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")  # a SentencePiece byte-fallback token
_SKIPPED = ("rotary_emb.inv_freq",)  # buffers some checkpoints carry; llama.cpp computes them


@dataclass
class _Tensor:
    """One tensor of the plan: where it is read from, its GGUF name and type, its shape after conversion."""

    hf_name: str
    file: Path
    name: str
    shape: tuple[int, ...]
    qtype: Any  # gguf.GGMLQuantizationType
    data: np.ndarray | None = None  # a tensor made here (rope factors), not read from the checkpoint


# --- the model's shape ----------------------------------------------------------------------------------

def _load_config(model_dir: Path):
    from transformers import AutoConfig

    if not (model_dir / "config.json").is_file():
        raise InputError("not a Hugging Face model folder (no config.json)", path=model_dir)
    try:
        config = AutoConfig.from_pretrained(model_dir)
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"cannot read the model's config: {e}", path=model_dir / "config.json") from e
    model_type = getattr(config, "model_type", "?")
    if model_type not in _ARCHS:
        name = (getattr(config, "architectures", None) or [model_type])[0]
        raise InputError(f"GGUF export supports Llama and Qwen2 models; {name} is not",
                         path=model_dir / "config.json")
    return config


def _rope(config) -> dict[str, Any]:
    """The rope settings, wherever this transformers version keeps them (``rope_parameters`` in 5.x,
    ``rope_theta`` and ``rope_scaling`` before)."""
    params = dict(getattr(config, "rope_parameters", None) or {})
    scaling = getattr(config, "rope_scaling", None)
    if isinstance(scaling, dict):
        params = {**scaling, **params}
    params.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
    params["rope_type"] = str(params.get("rope_type") or params.get("type") or "default").lower()
    return params


def _head_dim(config) -> int:
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


def _llama3_rope_factors(config, rope: dict[str, Any]) -> np.ndarray:
    """Llama 3's frequency-dependent rope scaling, as the ``rope_freqs`` tensor llama.cpp reads (its
    converter's formula)."""
    dim = _head_dim(config)
    base = float(rope["rope_theta"])
    factor = float(rope.get("factor", 8.0))
    low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    old_context = float(rope.get("original_max_position_embeddings", 8192))
    factors = []
    for freq in 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim)):
        wavelen = 2 * math.pi / freq
        if wavelen < old_context / high:
            factors.append(1.0)
        elif wavelen > old_context / low:
            factors.append(factor)
        else:
            smooth = (old_context / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(factors, np.float32)


def _write_hparams(writer, config, model_dir: Path) -> None:
    import gguf

    rope = _rope(config)
    # transformers' GGUF loader takes a file named exactly "mistral" for its Mistral class, which gguf-py
    # cannot map: such a file would not read back.
    writer.add_name(model_dir.name if model_dir.name != "mistral" else "mistral-model")
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(int(config.num_hidden_layers))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(int(config.num_attention_heads))
    writer.add_head_count_kv(int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads))
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(int(config.vocab_size))
    writer.add_rope_dimension_count(_head_dim(config))
    if rope["rope_type"] == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    elif rope["rope_type"] not in ("default", "llama3"):  # llama3: the rope_freqs tensor carries it
        raise InputError(f"GGUF export does not support rope scaling {rope['rope_type']!r}",
                         path=model_dir / "config.json")


# --- the tokenizer --------------------------------------------------------------------------------------

def _pre_tokenizer(spec: dict[str, Any] | None) -> str:
    """llama.cpp's name for how this byte-level tokenizer splits text before BPE."""
    steps = (spec or {}).get("pretokenizers") if (spec or {}).get("type") == "Sequence" else [spec or {}]
    types = [s.get("type") for s in steps or []]
    patterns = [(s.get("pattern") or {}).get("Regex") for s in steps or [] if s.get("type") == "Split"]
    if types == ["ByteLevel"] and steps and steps[0].get("use_regex", True):
        return "gpt-2"
    if types == ["Digits", "ByteLevel"] and steps and steps[0].get("individual_digits"):
        return "smollm"
    if patterns == [_QWEN2_SPLIT]:
        return "qwen2"
    if patterns == [_LLAMA3_SPLIT]:
        return "llama-bpe"
    log.warning("GGUF export: unrecognised pre-tokenizer %s; llama.cpp will split text its default way", types)
    return "default"


def _looks_special(token: str) -> bool:
    # llama.cpp's converter: added tokens that look like control tokens are control tokens.
    return (token in ("<pad>", "<mask>") or (token.startswith("<|") and token.endswith("|>"))
            or (token.startswith("<start_of_") and token.endswith(">")))


def _vocab(tokenizer, n_vocab: int) -> tuple[list[str], list[int]]:
    """Tokens and their llama.cpp types, ids 0..n_vocab-1; ids the tokenizer lacks are ``[PADn]`` (unused),
    as llama.cpp pads a vocabulary smaller than the embedding matrix."""
    import gguf

    reverse = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []
    for i in range(n_vocab):
        token = reverse.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif token in added:
            if i in decoder and not decoder[i].normalized:
                token = tokenizer.decode(tokenizer.encode(token, add_special_tokens=False))
            special = (i in decoder and decoder[i].special) or _looks_special(token)
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def _tokenizer_kind(spec: dict[str, Any]) -> str | None:
    """llama.cpp's tokenizer model for this tokenizer.json: "gpt2" (byte-level BPE: GPT-2, Llama 3, Qwen2,
    SmolLM), "llama" (SentencePiece BPE with byte fallback, as Llama 2, TinyLlama and Mistral have: "▁" for
    a space, unknown bytes as ``<0xNN>`` tokens), or None for one it cannot write."""
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        return None
    shape = "".join(json.dumps(spec.get(k), ensure_ascii=False) for k in ("pre_tokenizer", "decoder", "normalizer"))
    if "ByteLevel" in shape:
        return "gpt2"
    if model.get("byte_fallback") and "\u2581" in shape:
        return "llama"
    return None


def _load_tokenizer(model_dir: Path, config):
    from transformers import AutoTokenizer

    spec_path = model_dir / "tokenizer.json"
    if not spec_path.is_file():
        raise InputError("GGUF export needs a fast tokenizer (tokenizer.json)", path=model_dir)
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    model = spec.get("model") or {}
    kind = _tokenizer_kind(spec)
    if kind is None:
        raise InputError("GGUF export writes byte-level BPE tokenizers (GPT-2 style, as Llama 3, Qwen2 and "
                         "SmolLM have) and SentencePiece BPE ones with byte fallback (as Llama 2 and Mistral "
                         f"have); this one is {model.get('type')} without either", path=spec_path)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if len(tokenizer) > int(config.vocab_size):
        raise InputError(f"the tokenizer has {len(tokenizer)} tokens but the model only "
                         f"{config.vocab_size} embeddings", path=spec_path)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    pre = _pre_tokenizer(spec.get("pre_tokenizer")) if kind == "gpt2" else "default"
    return tokenizer, merges, pre, kind


def _merge_scores(tokens: list[str], merges: list[str]) -> list[float]:
    """SentencePiece-style scores for llama.cpp's "llama" tokenizer, which merges the adjacent pair whose
    joined token scores highest: a merged token scores minus the rank of the first merge that makes it, so
    llama.cpp merges in the order the BPE merges list (the order transformers applies). Tokens no merge
    makes (characters, bytes, specials) come after, by id."""
    rank: dict[str, int] = {}
    for r, merge in enumerate(merges):
        left, _, right = merge.partition(" ")
        rank.setdefault(left + right, r)
    return [float(-rank[t]) if t in rank else float(-(len(merges) + i)) for i, t in enumerate(tokens)]


def _adds_space_prefix(tokenizer) -> bool:
    """Whether the tokenizer reads "a" as "▁a" (SentencePiece's dummy prefix), as llama.cpp's
    ``add_space_prefix`` says."""
    ids = tokenizer("a", add_special_tokens=False)["input_ids"]
    return bool(ids) and str(tokenizer.convert_ids_to_tokens(ids[0])).startswith("\u2581")


def _adds(tokenizer) -> tuple[bool, bool]:
    """(adds BOS, adds EOS) when the tokenizer encodes plain text with its special tokens."""
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    add_bos = bos is not None and full[:1] == [bos] and bare[:1] != [bos]
    add_eos = eos is not None and full[-1:] == [eos] and bare[-1:] != [eos]
    return add_bos, add_eos


def _write_tokenizer(writer, model_dir: Path, config) -> None:
    import gguf

    tokenizer, merges, pre, kind = _load_tokenizer(model_dir, config)
    tokens, types = _vocab(tokenizer, int(config.vocab_size))
    writer.add_tokenizer_model(kind)
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    if kind == "llama":  # SentencePiece: byte tokens typed as bytes, scores that order the merges
        unk = tokenizer.unk_token_id
        types = [gguf.TokenType.BYTE if ty == gguf.TokenType.NORMAL and _BYTE_TOKEN.fullmatch(t)
                 else gguf.TokenType.UNKNOWN if i == unk else ty for i, (t, ty) in enumerate(zip(tokens, types))]
        writer.add_token_scores(_merge_scores(tokens, merges))
        writer.add_add_space_prefix(_adds_space_prefix(tokenizer))
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    ids = {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "unk": tokenizer.unk_token_id,
           "pad": tokenizer.pad_token_id}
    for kind in ("bos", "eos", "pad"):  # the config's ids where the tokenizer names none
        if ids[kind] is None and isinstance(getattr(config, f"{kind}_token_id", None), int):
            ids[kind] = getattr(config, f"{kind}_token_id")
    for kind, token_id in ids.items():
        if token_id is not None:
            getattr(writer, f"add_{kind}_token_id")(int(token_id))
    add_bos, add_eos = _adds(tokenizer)
    writer.add_add_bos_token(add_bos)
    writer.add_add_eos_token(add_eos)
    template = tokenizer.chat_template
    if isinstance(template, dict):  # named templates: the default one is the chat template
        template = template.get("default") or next(iter(template.values()), None)
    if isinstance(template, str) and template:
        writer.add_chat_template(template)


# --- the tensors ----------------------------------------------------------------------------------------

def _checkpoint_files(model_dir: Path) -> list[Path]:
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise InputError("no safetensors weights in the model folder (save it with safe_serialization)",
                         path=model_dir)
    return files


def _qtype(name: str, shape: tuple[int, ...], kind: str):
    """llama.cpp's choice: F32 for norms, biases and 1-D tensors; else Q8_0 where rows split into 32-value
    blocks (with ``q8_0``), F16 otherwise."""
    import gguf

    T = gguf.GGMLQuantizationType
    if len(shape) <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight"):
        return T.F32
    if kind == "q8_0" and shape[-1] % gguf.GGML_QUANT_SIZES[T.Q8_0][0] == 0:
        return T.Q8_0
    return T.F16


def _plan(model_dir: Path, config, kind: str) -> list[_Tensor]:
    """Every tensor to write, in checkpoint order, with its GGUF name, shape and type."""
    import gguf
    from safetensors import safe_open

    arch = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2}[_ARCHS[config.model_type]]
    names = gguf.get_tensor_name_map(arch, int(config.num_hidden_layers))
    tied = bool(getattr(config, "tie_word_embeddings", False))
    plan: list[_Tensor] = []
    for file in _checkpoint_files(model_dir):
        with safe_open(str(file), framework="pt") as f:
            for hf_name in f.keys():
                if hf_name.endswith(_SKIPPED) or (tied and hf_name == "lm_head.weight"):
                    continue
                name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
                if name is None:
                    raise InputError(f"GGUF export cannot place the tensor {hf_name!r} of this "
                                     f"{config.model_type} model", path=file)
                shape = tuple(int(n) for n in f.get_slice(hf_name).get_shape())
                plan.append(_Tensor(hf_name, file, name, shape, _qtype(name, shape, kind)))
    if not any(t.name == "token_embd.weight" for t in plan):
        raise InputError("the checkpoint has no token embeddings (model.embed_tokens.weight)", path=model_dir)
    if not tied and not any(t.name == "output.weight" for t in plan):
        raise InputError("the config says the output layer is not tied to the embeddings, but the "
                         "checkpoint has no lm_head.weight", path=model_dir / "config.json")
    rope = _rope(config)
    if _ARCHS[config.model_type] == "llama" and rope["rope_type"] == "llama3":
        factors = _llama3_rope_factors(config, rope)
        plan.append(_Tensor("", model_dir, gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight",
                            factors.shape, gguf.GGMLQuantizationType.F32, factors))
    return plan


def _permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's Q/K row order (its rope rotates interleaved pairs; Hugging Face's rotates halves)."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _convert(t: _Tensor, raw: np.ndarray, config) -> np.ndarray:
    """The bytes (or values) to write for one tensor: permuted where llama.cpp wants, then typed."""
    import gguf

    if _ARCHS[config.model_type] == "llama" and ".attn_q." in t.name:
        raw = _permute(raw, int(config.num_attention_heads))
    elif _ARCHS[config.model_type] == "llama" and ".attn_k." in t.name:
        raw = _permute(raw, int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads))
    T = gguf.GGMLQuantizationType
    if t.qtype == T.F32:
        return np.ascontiguousarray(raw, np.float32)
    if t.qtype == T.F16:
        return np.ascontiguousarray(raw, np.float16)
    return gguf.quants.quantize(np.ascontiguousarray(raw, np.float32), t.qtype)


def _nbytes(t: _Tensor) -> tuple[tuple[int, ...], Any, int]:
    """(shape, numpy dtype, byte count) as the tensor's entry in the header declares it."""
    import gguf

    T = gguf.GGMLQuantizationType
    if t.qtype == T.F32:
        return t.shape, np.float32, 4 * math.prod(t.shape)
    if t.qtype == T.F16:
        return t.shape, np.float16, 2 * math.prod(t.shape)
    byte_shape = gguf.quants.quant_shape_to_byte_shape(t.shape, t.qtype)
    return byte_shape, np.uint8, math.prod(byte_shape)


def _tensors(plan: list[_Tensor]) -> Iterator[tuple[_Tensor, np.ndarray]]:
    """Each tensor of the plan in fp32, one checkpoint file open at a time (the plan is in file order;
    bf16 checkpoints go through torch, which numpy cannot read)."""
    from safetensors import safe_open

    for file, group in itertools.groupby(plan, key=lambda t: t.file):
        tensors = list(group)
        if tensors[0].data is not None:  # made here (rope factors): one per group, no file behind it
            for t in tensors:
                if t.data is not None:
                    yield t, t.data
            continue
        with safe_open(str(file), framework="pt") as f:
            for t in tensors:
                yield t, f.get_tensor(t.hf_name).float().numpy()


# --- the file -------------------------------------------------------------------------------------------

def write_gguf(model_dir: str | Path, out_path: str | Path, kind: str = "f16",
               progress: Callable[[int, int], None] | None = None, cancel: CancelToken = NEVER) -> Path:
    """Write the causal LM saved in ``model_dir`` as one GGUF file at ``out_path`` (``kind``: "f16" or
    "q8_0"); ``progress(done, total)`` counts tensors written. The file appears only when complete: an
    error or cancel leaves whatever was at ``out_path`` before. InputError for a model it cannot write."""
    import gguf

    model_dir, out_path = Path(model_dir), Path(out_path)
    if kind not in KINDS:
        raise InputError(f"GGUF kind must be one of {', '.join(KINDS)}, not {kind!r}")
    config = _load_config(model_dir)
    plan = _plan(model_dir, config, kind)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(out_path) as tmp:
        writer = gguf.GGUFWriter(tmp, _ARCHS[config.model_type])
        try:
            _write_hparams(writer, config, model_dir)
            writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if kind == "q8_0" else gguf.LlamaFileType.MOSTLY_F16)
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
            _write_tokenizer(writer, model_dir, config)
            for t in plan:
                shape, dtype, nbytes = _nbytes(t)
                writer.add_tensor_info(t.name, shape, np.dtype(dtype), nbytes, raw_dtype=t.qtype)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            for done, (t, raw) in enumerate(_tensors(plan), start=1):
                cancel.raise_if_cancelled()
                writer.write_tensor_data(_convert(t, raw, config))
                if progress is not None:
                    progress(done, len(plan))
        finally:
            writer.close()
    log.info("GGUF %s written: %s (%d tensors)", kind, out_path, len(plan))
    return out_path


# --- the check ------------------------------------------------------------------------------------------

def _render(tokenizer, prompt: str) -> str:
    """The prompt as the model sees it in a chat: the template with the generation prompt (the text
    itself for a tokenizer without a template)."""
    if not getattr(tokenizer, "chat_template", None):
        return prompt
    return str(tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True))


def _greedy(model, ids: list[int], max_new_tokens: int, eos: Any, pad: int | None) -> list[int]:
    import torch

    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, eos_token_id=eos,
                             pad_token_id=pad, top_p=None, top_k=None, temperature=None)
    return [int(i) for i in out[0, len(ids):]]


def _max_logit_diff(reference, other, ids: list[int]) -> float:
    import torch

    with torch.no_grad():
        a = reference(torch.tensor([ids])).logits.float()
        b = other(torch.tensor([ids])).logits.float()
    return float((a - b).abs().max())


def _check_llama_cpp(gguf_path: Path, rendered: list[str], expected: list[str], max_new_tokens: int) -> dict:
    """The same prompts through llama.cpp (llama-cpp-python), compared as text with PyTorch's outputs."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf_path), n_ctx=2048, verbose=False, seed=0)
    same = 0
    examples = []
    for text, want in zip(rendered, expected):
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        got = llm.create_completion(ids, max_tokens=max_new_tokens, temperature=0.0, top_k=1)
        output = got["choices"][0]["text"]
        same += output.strip() == want.strip()
        examples.append({"llama_cpp": output, "pytorch": want})
    return {"loader": "llama.cpp", "prompts": len(rendered), "same_output": same,
            "identical": same == len(rendered), "examples": examples}


def check_gguf(gguf_path: str | Path, model_dir: str | Path, prompts: list[str],
               max_new_tokens: int = 16) -> dict:
    """Read ``gguf_path`` back with transformers (fp32) and compare it with the PyTorch model in
    ``model_dir``: greedy outputs on ``prompts`` (each rendered with the chat template, the GGUF's own
    tokenizer for the GGUF model), and the largest logit difference on the first prompt (both models
    given the same ids). With llama-cpp-python importable, also the outputs of llama.cpp."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path, model_dir = Path(gguf_path), Path(model_dir)
    if not prompts:
        raise InputError("the GGUF check needs at least one prompt")
    ref_tok = AutoTokenizer.from_pretrained(model_dir)
    ref = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    kw = {"gguf_file": gguf_path.name}
    gguf_tok = AutoTokenizer.from_pretrained(gguf_path.parent, **kw)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kw).eval()
    eos, pad = ref.generation_config.eos_token_id or ref_tok.eos_token_id, ref_tok.pad_token_id
    pad = pad if pad is not None else (eos[0] if isinstance(eos, list) else eos)
    result: dict[str, Any] = {"loader": "transformers", "prompts": len(prompts), "same_output": 0,
                              "same_tokens": 0, "examples": []}
    rendered, expected = [], []
    for i, prompt in enumerate(prompts):
        text = _render(ref_tok, prompt)
        ids = ref_tok(text, add_special_tokens=False)["input_ids"]
        gguf_ids = gguf_tok(text, add_special_tokens=False)["input_ids"]
        if i == 0:
            result["max_abs_logit_diff"] = _max_logit_diff(ref, loaded, ids)
        want = _greedy(ref, ids, max_new_tokens, eos, pad)
        got = _greedy(loaded, gguf_ids, max_new_tokens, eos, pad)
        want_text = str(ref_tok.decode(want, skip_special_tokens=True))
        got_text = str(gguf_tok.decode(got, skip_special_tokens=True))
        result["same_tokens"] += ids == gguf_ids
        result["same_output"] += want == got
        result["examples"].append({"prompt": prompt, "pytorch": want_text, "gguf": got_text, "same": want == got})
        rendered.append(text)
        expected.append(want_text)
    result["identical"] = result["same_output"] == len(prompts)
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return result
    try:
        result["llama_cpp"] = _check_llama_cpp(gguf_path, rendered, expected, max_new_tokens)
    except Exception as e:  # an optional second opinion: its failure is reported, not raised
        result["llama_cpp"] = {"loader": "llama.cpp", "error": f"{type(e).__name__}: {e}"}
    return result
