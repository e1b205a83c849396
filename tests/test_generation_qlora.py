"""QLoRA on a tiny Llama, on the CPU (bitsandbytes' PyTorch kernels): adapters train over a 4-bit
base, the export is the full-precision base with the adapters folded in, and a paused run resumes
bit-exact. Refusals name what is wrong: another task, no bitsandbytes, several processes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from test_generation_task import gen_config, write_chat
from test_resume import PauseAt, status, step_losses

from workbench.core.cancel import CancelToken
from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from workbench.core.errors import InputError, Paused
from workbench.core.run.pipeline import resume_training, run_training

needs_bnb = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes not installed")


@needs_bnb
def test_qlora_trains_adapters_on_a_4bit_base_and_exports_full_precision(tiny_llama_dir, tmp_path, runs_home):
    import torch
    from transformers import AutoModelForCausalLM

    data = write_chat(tmp_path / "chat.jsonl", 40)
    result = run_training(gen_config(data, tiny_llama_dir, method="qlora", epochs=2, lr=1e-2))
    run = Path(result.run_dir)
    meta = json.loads((run / "model" / "workbench.json").read_text())
    assert meta["method"] == "qlora" and meta["lora"]["quantization"] == "nf4"
    assert "q_proj" in meta["lora"]["targets"] and meta["lora"]["head"] == []
    assert meta["merge_check"]["base"].startswith("full precision")
    losses = [e["loss"] for e in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
              if e["event"] == "StepMetrics"]
    assert losses[-1] < losses[0]  # it learns through the 4-bit base

    exported = json.loads((run / "model" / "config.json").read_text())
    assert "quantization_config" not in exported  # loads without bitsandbytes
    merged = AutoModelForCausalLM.from_pretrained(run / "model")
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    q_merged = merged.model.layers[0].self_attn.q_proj.weight
    q_base = base.model.layers[0].self_attn.q_proj.weight
    assert q_merged.dtype == torch.float32 and not torch.equal(q_merged, q_base)  # adapters folded in
    # not adapted, not re-quantized: the full-precision base's own
    assert torch.equal(merged.model.embed_tokens.weight, base.model.embed_tokens.weight)


@needs_bnb
def test_qlora_gradients_reach_every_layer_after_answering_in_eval_mode(tiny_llama_dir):
    # The base model answers (eval mode, no gradients) before training: on AVX512-BF16 CPUs that
    # once switched bitsandbytes to a kernel with no backward, and the first layer's adapters got none.
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from workbench.core.tasks.generation.quantized import load_4bit

    model = prepare_model_for_kbit_training(load_4bit(str(tiny_llama_dir), "cpu"), use_gradient_checkpointing=False)
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    ids = torch.randint(0, model.config.vocab_size, (2, 12))
    model.eval()
    with torch.inference_mode():
        model(input_ids=ids)
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    first = model.base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"].weight.grad
    assert first is not None and float(first.abs().sum()) > 0


@needs_bnb
def test_qlora_pause_then_resume_is_bit_exact(tiny_llama_dir, tmp_path, runs_home):
    data = write_chat(tmp_path / "chat.jsonl", 32)
    opts = dict(method="qlora", epochs=2, save_steps=2, lr=1e-2)
    ref = run_training(gen_config(data, tiny_llama_dir, tmp_path / "reference", **opts))
    run_dir = tmp_path / "paused"
    cancel = CancelToken()
    with pytest.raises(Paused):
        run_training(gen_config(data, tiny_llama_dir, run_dir, **opts), PauseAt(cancel, 3), cancel)
    assert status(run_dir)["state"] == "paused"
    # the checkpoint keeps the adapters only: the 4-bit base loads again from the backbone
    from safetensors import safe_open

    step = sorted((run_dir / "checkpoints").glob("step-*"))[-1]
    with safe_open(str(step / "model.safetensors"), "pt") as f:
        assert f.keys() and all("lora_" in k for k in f.keys())
    result = resume_training(run_dir)
    assert step_losses(run_dir) == step_losses(ref.run_dir)
    assert result.metrics == ref.metrics


def test_qlora_is_refused_by_other_tasks(tmp_path, runs_home):
    data = tmp_path / "d.tsv"
    data.write_text("text\tlabel\n" + "".join(f"row {i}\t{i % 2}\n" for i in range(20)))
    config = RunConfig(task="text-classification", data=DataConfig(train=str(data)),
                       model=ModelConfig(method="qlora"), train=TrainConfig(epochs=1))
    with pytest.raises(InputError, match="--method qlora .* applies to text generation, not to text classification"):
        run_training(config)


def test_qlora_names_what_it_needs(tiny_llama_dir, tmp_path, runs_home, monkeypatch):
    data = write_chat(tmp_path / "chat.jsonl", 16)
    config = gen_config(data, tiny_llama_dir, method="qlora", num_processes=2)
    if importlib.util.find_spec("bitsandbytes") is not None:
        with pytest.raises(InputError, match="--method qlora trains in one process"):
            run_training(config)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(InputError, match=r"--method qlora needs the bitsandbytes package.*workbench\[qlora\]"):
        run_training(gen_config(data, tiny_llama_dir, method="qlora"))
