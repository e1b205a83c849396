"""GGUF export: written from a merged causal-LM folder, read back by transformers' own GGUF loader.

The tiny random Llama's weights are scaled up (x4) so that its logits spread and attention is sharp: then a
wrong Q/K row order (llama.cpp's rope layout) moves the logits by ~2 where the F16 export moves them by
~0.002, and the greedy comparison means something.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("gguf")

from workbench.core.errors import InputError  # noqa: E402
from workbench.core.export import gguf_export  # noqa: E402
from workbench.core.export.gguf_export import check_gguf, write_gguf  # noqa: E402

PROMPTS = ["What is the capital of France?", "Hello", "List the entities: John lives in London."]
CHATML_TEXT = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
               "Translate to French: good morning 42!<|im_end|>\n<|im_start|>assistant\nBonjour.<|im_end|>\n")


def _scaled_copy(source: Path, folder: Path, model_cls, config=None, scale: float = 4.0) -> Path:
    """``source``'s tokenizer beside a model (``source``'s, or a fresh one of ``config``) whose matrices
    are ``scale`` times larger and whose biases are random."""
    import torch

    shutil.copytree(source, folder)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    torch.manual_seed(1)
    model = model_cls(config) if config is not None else model_cls.from_pretrained(source)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)
            elif p.dim() == 2:
                p.mul_(scale)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def sharp_llama(tiny_llama_dir, tmp_path_factory) -> Path:
    from transformers import LlamaForCausalLM

    return _scaled_copy(tiny_llama_dir, tmp_path_factory.mktemp("gguf") / "llama", LlamaForCausalLM)


@pytest.fixture(scope="module")
def f16_file(sharp_llama, tmp_path_factory) -> Path:
    return write_gguf(sharp_llama, tmp_path_factory.mktemp("gguf-f16") / "model.f16.gguf", kind="f16")


def _logit_spread(model_dir: Path) -> float:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        return float(model(torch.arange(5, 25)[None]).logits.abs().max())


def test_f16_reads_back_with_the_same_greedy_output(f16_file, sharp_llama):
    assert _logit_spread(sharp_llama) > 2.5  # logits that differ between tokens: the comparison means something
    result = check_gguf(f16_file, sharp_llama, PROMPTS, max_new_tokens=16)
    assert result["loader"] == "transformers" and result["prompts"] == 3
    assert result["same_output"] == 3 and result["identical"] is True, result["examples"]
    assert result["same_tokens"] == 3
    assert result["max_abs_logit_diff"] < 1e-2
    assert all(e["pytorch"] == e["gguf"] and e["pytorch"] for e in result["examples"])


def test_the_check_catches_a_wrong_qk_layout(sharp_llama, tmp_path, monkeypatch):
    # Without llama.cpp's row permutation transformers' loader un-permutes rows that were never permuted.
    monkeypatch.setattr(gguf_export, "_permute", lambda weights, n_head: weights)
    bad = write_gguf(sharp_llama, tmp_path / "bad.gguf", kind="f16")
    result = check_gguf(bad, sharp_llama, PROMPTS[:1], max_new_tokens=8)
    assert result["max_abs_logit_diff"] > 0.5


def test_q8_0_reads_back_within_quantisation_error(sharp_llama, f16_file, tmp_path):
    import gguf

    path = write_gguf(sharp_llama, tmp_path / "model.q8_0.gguf", kind="q8_0")
    assert path.stat().st_size < 0.7 * f16_file.stat().st_size
    reader = gguf.GGUFReader(path)
    types = {t.name: t.tensor_type for t in reader.tensors}
    T = gguf.GGMLQuantizationType
    assert types["blk.0.attn_q.weight"] == T.Q8_0 and types["token_embd.weight"] == T.Q8_0
    assert types["output.weight"] == T.Q8_0
    assert types["blk.0.attn_norm.weight"] == T.F32 and types["output_norm.weight"] == T.F32
    result = check_gguf(path, sharp_llama, PROMPTS, max_new_tokens=8)
    assert result["prompts"] == 3 and result["same_tokens"] == 3
    assert 0 < result["max_abs_logit_diff"] < 0.25


def test_metadata_and_tensor_types(f16_file, sharp_llama):
    import gguf
    from transformers import AutoTokenizer

    reader = gguf.GGUFReader(f16_file)

    def value(key):
        return reader.fields[key].contents()

    assert value("general.architecture") == "llama"
    assert value("llama.context_length") == 256 and value("llama.embedding_length") == 64
    assert value("llama.block_count") == 2 and value("llama.feed_forward_length") == 128
    assert value("llama.attention.head_count") == 4 and value("llama.attention.head_count_kv") == 2
    assert value("llama.rope.dimension_count") == 16 and value("llama.rope.freq_base") == pytest.approx(10000.0)
    assert value("llama.attention.layer_norm_rms_epsilon") == pytest.approx(1e-6)
    assert value("llama.vocab_size") == 400
    tok = AutoTokenizer.from_pretrained(sharp_llama)
    assert value("tokenizer.ggml.model") == "gpt2" and value("tokenizer.ggml.pre") == "gpt-2"
    tokens = value("tokenizer.ggml.tokens")
    assert len(tokens) == 400 and tokens[tok.eos_token_id] == "<|im_end|>"
    assert value("tokenizer.ggml.token_type")[tok.eos_token_id] == gguf.TokenType.CONTROL
    assert len(value("tokenizer.ggml.merges")) > 0
    assert value("tokenizer.ggml.eos_token_id") == tok.eos_token_id
    assert value("tokenizer.ggml.bos_token_id") == tok.bos_token_id
    assert value("tokenizer.ggml.padding_token_id") == tok.pad_token_id
    assert value("tokenizer.ggml.add_bos_token") is False  # the ChatML template writes its own markers
    assert value("tokenizer.chat_template") == tok.chat_template
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["blk.1.ffn_down.weight"] == gguf.GGMLQuantizationType.F16
    assert types["blk.1.ffn_norm.weight"] == gguf.GGMLQuantizationType.F32
    assert len(types) == 2 + 2 * 9 + 1  # embeddings, final norm, output; 9 per block


def test_gguf_tokenizer_round_trips_chatml(f16_file, sharp_llama):
    from transformers import AutoTokenizer

    ref = AutoTokenizer.from_pretrained(sharp_llama)
    loaded = AutoTokenizer.from_pretrained(f16_file.parent, gguf_file=f16_file.name)
    want = ref(CHATML_TEXT, add_special_tokens=False)["input_ids"]
    assert loaded(CHATML_TEXT, add_special_tokens=False)["input_ids"] == want
    assert loaded(CHATML_TEXT)["input_ids"] == ref(CHATML_TEXT)["input_ids"]  # no BOS added by either
    assert loaded.decode(want) == CHATML_TEXT
    assert loaded.eos_token == "<|im_end|>" and loaded.pad_token == "<|endoftext|>"
    messages = [{"role": "user", "content": "Hi"}]
    assert (loaded.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            == ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


def test_tied_embeddings_write_no_output_tensor(tiny_llama_dir, tmp_path):
    import gguf
    from transformers import AutoConfig, LlamaForCausalLM

    config = AutoConfig.from_pretrained(tiny_llama_dir)
    config.tie_word_embeddings = True
    folder = _scaled_copy(tiny_llama_dir, tmp_path / "tied", LlamaForCausalLM, config)
    path = write_gguf(folder, tmp_path / "tied.gguf", kind="f16")
    assert "output.weight" not in {t.name for t in gguf.GGUFReader(path).tensors}
    result = check_gguf(path, folder, PROMPTS[:2], max_new_tokens=8)
    assert result["max_abs_logit_diff"] < 1e-2 and result["identical"], result["examples"]


def test_qwen2_with_attention_biases(tiny_llama_dir, tmp_path):
    import gguf
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=400, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True)
    folder = _scaled_copy(tiny_llama_dir, tmp_path / "qwen2", Qwen2ForCausalLM, config)
    path = write_gguf(folder, tmp_path / "qwen2.gguf", kind="q8_0")
    reader = gguf.GGUFReader(path)
    assert reader.fields["general.architecture"].contents() == "qwen2"
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["blk.0.attn_q.bias"] == gguf.GGMLQuantizationType.F32
    f16 = write_gguf(folder, tmp_path / "qwen2.f16.gguf", kind="f16")
    result = check_gguf(f16, folder, PROMPTS, max_new_tokens=8)
    assert result["max_abs_logit_diff"] < 1e-2 and result["identical"], result["examples"]


def test_mistral_is_written_as_llama(tiny_llama_dir, tmp_path):
    import gguf
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(vocab_size=400, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                           bos_token_id=1, eos_token_id=2, pad_token_id=0, sliding_window=None)
    folder = _scaled_copy(tiny_llama_dir, tmp_path / "mistral", MistralForCausalLM, config)
    path = write_gguf(folder, tmp_path / "mistral.gguf", kind="f16")
    assert gguf.GGUFReader(path).fields["general.architecture"].contents() == "llama"
    result = check_gguf(path, folder, PROMPTS[:2], max_new_tokens=8)
    assert result["max_abs_logit_diff"] < 1e-2 and result["identical"], result["examples"]


SPM_PROMPTS = ["What is the capital of France?", "Grüße aus Köln, 東京 and ½ are bytes here",
               "  two leading spaces\nand a newline"]


def test_sentencepiece_llama_reads_back_with_the_same_tokens_and_output(tiny_spm_llama_dir, tmp_path):
    # Llama 2 / TinyLlama / Mistral's tokenizer: "▁" for spaces, unknown characters as <0xNN> byte tokens.
    import gguf
    from transformers import AutoTokenizer, LlamaForCausalLM

    folder = _scaled_copy(tiny_spm_llama_dir, tmp_path / "spm", LlamaForCausalLM)
    path = write_gguf(folder, tmp_path / "spm.gguf", kind="f16")
    reader = gguf.GGUFReader(path)

    def value(key):
        return reader.fields[key].contents()

    ref = AutoTokenizer.from_pretrained(folder)
    tokens, types = value("tokenizer.ggml.tokens"), value("tokenizer.ggml.token_type")
    scores = value("tokenizer.ggml.scores")
    assert value("tokenizer.ggml.model") == "llama" and value("tokenizer.ggml.add_space_prefix") is True
    assert value("tokenizer.ggml.add_bos_token") is True and value("tokenizer.ggml.bos_token_id") == ref.bos_token_id
    assert types[ref.unk_token_id] == gguf.TokenType.UNKNOWN and types[ref.eos_token_id] == gguf.TokenType.CONTROL
    assert types[tokens.index("<0x0A>")] == gguf.TokenType.BYTE and tokens.count("<0x0A>") == 1
    merges = value("tokenizer.ggml.merges")
    first, second = ("".join(m.split(" ")) for m in merges[:2])  # llama.cpp merges by score: in the merges' order
    assert scores[tokens.index(first)] > scores[tokens.index(second)] > scores[tokens.index("<0x0A>")]

    loaded = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    for text in SPM_PROMPTS:
        assert loaded(text)["input_ids"] == ref(text)["input_ids"], text  # BOS, the space prefix, byte fallback
        ids = ref(text, add_special_tokens=False)["input_ids"]
        assert loaded.decode(ids) == ref.decode(ids) == text.removeprefix(" ")  # the prefix space's removal
    assert "<0x" in " ".join(ref.convert_ids_to_tokens(ref(SPM_PROMPTS[1])["input_ids"]))  # bytes were needed
    result = check_gguf(path, folder, SPM_PROMPTS, max_new_tokens=8)
    assert result["same_tokens"] == 3 and result["identical"], result["examples"]
    assert result["max_abs_logit_diff"] < 1e-2


def test_a_tokenizer_it_cannot_write_is_a_clear_input_error(tiny_llama_dir, tmp_path):
    import json

    folder = tmp_path / "wordpiece"
    shutil.copytree(tiny_llama_dir, folder)
    spec = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    spec["model"] = {"type": "WordPiece", "vocab": {}}
    spec["pre_tokenizer"] = spec["decoder"] = None
    (folder / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    with pytest.raises(InputError, match="this one is WordPiece without either") as e:
        write_gguf(folder, tmp_path / "out" / "model.gguf")
    assert "tokenizer.json" in str(e.value)
    assert not (tmp_path / "out" / "model.gguf").exists()


def test_gpt2_is_a_clear_input_error(tiny_gpt2_dir, tmp_path):
    with pytest.raises(InputError, match="GGUF export supports Llama and Qwen2 models; GPT2LMHeadModel is not"):
        write_gguf(tiny_gpt2_dir, tmp_path / "gpt2.gguf")
    assert list(tmp_path.iterdir()) == []


def test_bad_kind_and_missing_folder(sharp_llama, tmp_path):
    with pytest.raises(InputError, match="f16, q8_0"):
        write_gguf(sharp_llama, tmp_path / "x.gguf", kind="q4_0")
    with pytest.raises(InputError, match="no config.json"):
        write_gguf(tmp_path / "nowhere", tmp_path / "x.gguf")


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_write_leaves_no_file(sharp_llama, tmp_path, stop):
    target = tmp_path / "model.gguf"

    def progress(done, total):
        assert 0 < done <= total
        if done == 3:
            raise stop("stopped")

    with pytest.raises(stop):
        write_gguf(sharp_llama, target, kind="q8_0", progress=progress)
    assert os.listdir(tmp_path) == []  # neither the target nor a temporary beside it
    # An existing file stays as it was.
    target.write_bytes(b"old")
    with pytest.raises(stop):
        write_gguf(sharp_llama, target, kind="f16", progress=progress)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["model.gguf"]


def test_progress_counts_every_tensor(sharp_llama, tmp_path):
    seen: list[tuple[int, int]] = []
    write_gguf(sharp_llama, tmp_path / "m.gguf", kind="f16", progress=lambda d, t: seen.append((d, t)))
    assert [d for d, _ in seen] == list(range(1, 22)) and {t for _, t in seen} == {21}


def test_llama3_rope_scaling_writes_llama_cpp_rope_factors(tiny_llama_dir, tmp_path):
    # Llama 3.x scales rope frequencies per dimension; llama.cpp reads that as the rope_freqs tensor,
    # whose factors divide the base frequencies into the ones transformers uses.
    import gguf
    import numpy as np
    from transformers import AutoConfig, LlamaForCausalLM
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = AutoConfig.from_pretrained(tiny_llama_dir)
    config.rope_parameters = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                              "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    folder = _scaled_copy(tiny_llama_dir, tmp_path / "llama3", LlamaForCausalLM, config, scale=1.0)
    path = write_gguf(folder, tmp_path / "llama3.gguf", kind="f16")
    tensors = {t.name: t for t in gguf.GGUFReader(path).tensors}
    factors = np.asarray(tensors["rope_freqs.weight"].data, np.float64)
    config = AutoConfig.from_pretrained(folder)
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config)
    base = 1.0 / (10000.0 ** (np.arange(0, 16, 2) / 16))
    np.testing.assert_allclose(base / factors, scaled.double().numpy(), rtol=1e-5)
    assert factors.min() == pytest.approx(1.0) and factors.max() == pytest.approx(8.0)
    assert ((factors > 1.01) & (factors < 7.99)).any()  # the smoothed band between them is exercised too
