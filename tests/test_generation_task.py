"""Text generation end to end on a tiny Llama: answer-only loss, batches that change nothing, exact
resume, the base model scored first, live samples, and an export that `pipeline` loads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_resume import PauseAt, status, step_losses

from workbench.core.cancel import CancelToken
from workbench.core.config import DataConfig, GenerationConfig, ModelConfig, RunConfig, TrainConfig
from workbench.core.errors import Paused
from workbench.core.events import Callbacks
from workbench.core.run.directory import read_metrics
from workbench.core.run.pipeline import resume_training, run_training

CAPITALS = [("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Germany", "Berlin"), ("Japan", "Tokyo"),
            ("Egypt", "Cairo"), ("Peru", "Lima"), ("Kenya", "Nairobi"), ("Chile", "Santiago"), ("Cuba", "Havana")]


def write_chat(path: Path, n: int = 80) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            country, capital = CAPITALS[i % len(CAPITALS)]
            messages = [{"role": "system", "content": "Answer briefly."},
                        {"role": "user", "content": f"What is the capital of {country}? ({i})"},
                        {"role": "assistant", "content": f"{capital}."}]
            f.write(json.dumps({"messages": messages}) + "\n")
    return path


def gen_config(data: Path, model_dir: Path, run_dir: Path | None = None, method: str = "full", **train) -> RunConfig:
    opts = dict(epochs=4, batch_size=8, lr=3e-3, max_length=64, seed=3, save_minutes=0, refit=False)
    opts.update(train)
    return RunConfig(task="text-generation", data=DataConfig(train=str(data)),
                     model=ModelConfig(name=str(model_dir), method=method), train=TrainConfig(**opts),
                     generation=GenerationConfig(max_new_tokens=8, live_samples=2, eval_limit=8),
                     run_dir=str(run_dir) if run_dir else None)


def _task(model_dir: Path, **generation):
    from workbench.core.tasks.generation.task import TextGeneration

    task = TextGeneration()
    task.configure(RunConfig(task="text-generation", model=ModelConfig(name=str(model_dir)),
                             generation=GenerationConfig(**generation)))
    tok = task.load_preprocessor(str(model_dir))
    return task, tok


def _encoded(task, tok, data: Path, tmp_path: Path, max_length: int = 64):
    from workbench.core.tasks.generation.conversations import read_conversations
    from workbench.core.tasks.generation.splits import to_dataset

    rows = to_dataset(read_conversations(data).examples)
    return task.encode("train", rows, tok, max_length, tmp_path, Callbacks())


def test_only_answer_tokens_carry_loss(tiny_llama_dir, tmp_path):
    task, tok = _task(tiny_llama_dir)
    split = _encoded(task, tok, write_chat(tmp_path / "chat.jsonl", 6), tmp_path)
    batch = task.make_batch(split, np.arange(len(split)))
    for r in range(len(split)):
        targets = batch["labels"][r]
        scored = targets[targets != -100]
        assert tok.decode(scored) == CAPITALS[r][1] + ".<|im_end|>"
        # The position before each scored token predicts it: the inputs shifted by one.
        at = np.flatnonzero(batch["loss_positions"][r])
        assert np.array_equal(batch["input_ids"][r][at + 1], scored)
    everything, tok2 = _task(tiny_llama_dir, train_on="all")
    split_all = _encoded(everything, tok2, tmp_path / "chat.jsonl", tmp_path / "all")
    assert split_all.inputs["loss_mask"].row(0) == [1] * int(split_all.lengths[0])


def test_a_padded_batch_gives_the_loss_of_its_rows_one_by_one(tiny_llama_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    task, tok = _task(tiny_llama_dir)
    split = _encoded(task, tok, write_chat(tmp_path / "chat.jsonl", 12), tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()

    def loss_of(rows):
        batch = {k: torch.from_numpy(v) for k, v in task.make_batch(split, np.asarray(rows)).items()}
        labels = batch.pop("labels")
        with torch.no_grad():
            return float(task.loss(task.forward(model, batch), labels)), task.loss_units(labels.numpy())

    together, units = loss_of(range(12))
    alone = [loss_of([r]) for r in range(12)]
    assert units == sum(n for _, n in alone)
    assert together == pytest.approx(sum(loss * n for loss, n in alone) / units, rel=1e-5)
    # The output layer on the answer positions alone gives the full model's logits there.
    batch = {k: torch.from_numpy(v) for k, v in task.make_batch(split, np.arange(4)).items()}
    labels = batch.pop("labels")
    with torch.no_grad():
        full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        picked = task.forward(model, dict(batch))
    assert torch.allclose(full[batch["loss_positions"]], picked, atol=1e-5)
    assert task.loss_units(labels.numpy()) == int(batch["loss_positions"].sum())


def test_a_run_scores_base_and_fine_tuned_answers_and_exports_for_pipeline(tiny_llama_dir, tmp_path, runs_home):
    from transformers import pipeline

    data = write_chat(tmp_path / "chat.jsonl", 120)
    result = run_training(gen_config(data, tiny_llama_dir, epochs=10, lr=5e-3))
    run = Path(result.run_dir)
    report = json.loads((run / "report.json").read_text())
    gen = report["generation"]
    assert gen["base_metrics"] is not None and gen["examples"] == 8
    assert gen["metrics"]["exact_match"] >= 0.75 > gen["base_metrics"]["exact_match"]  # it learnt the capitals
    assert report["metrics"]["perplexity"] == pytest.approx(np.exp(report["metrics"]["loss"]))
    lines = [json.loads(x) for x in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 8 and all(x["output"] is not None and x["base_output"] is not None for x in lines)
    assert all(x["messages"][-1]["role"] == "user" for x in lines)
    events = read_metrics(run)
    samples = [e for e in events if e["event"] == "GenerationSamples"]
    assert samples and samples[0]["step"] == 0 and len(samples[0]["samples"]) == 2
    assert (run / "base_answers.json").is_file()

    meta = json.loads((run / "model" / "workbench.json").read_text())
    assert meta["task"] == "text-generation" and meta["generation"]["max_new_tokens"] == 8
    assert not (run / "model" / "model.onnx").exists()
    chat = pipeline("text-generation", model=str(run / "model"))
    first = lines[0]
    answer = chat(first["messages"], max_new_tokens=8, do_sample=False)[0]["generated_text"][-1]["content"]
    assert answer.strip() == first["output"]


def test_lora_trains_adapters_only_and_exports_a_merged_model(tiny_llama_dir, tmp_path, runs_home):
    data = write_chat(tmp_path / "chat.jsonl", 40)
    result = run_training(gen_config(data, tiny_llama_dir, method="lora", epochs=1, lr=1e-2))
    meta = json.loads((Path(result.run_dir) / "model" / "workbench.json").read_text())
    assert meta["lora"]["head"] == [] and "q_proj" in meta["lora"]["targets"]
    assert meta["merge_check"]["max_abs_diff"] < 1e-3
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(Path(result.run_dir) / "model")  # a plain model, adapters merged


def test_pause_then_resume_is_bit_exact(tiny_llama_dir, tmp_path, runs_home):
    data = write_chat(tmp_path / "chat.jsonl", 48)
    ref = run_training(gen_config(data, tiny_llama_dir, tmp_path / "reference", epochs=2, save_steps=3))
    run_dir = tmp_path / "paused"
    cancel = CancelToken()
    with pytest.raises(Paused):
        run_training(gen_config(data, tiny_llama_dir, run_dir, epochs=2, save_steps=3), PauseAt(cancel, 4), cancel)
    assert status(run_dir)["state"] == "paused"
    result = resume_training(run_dir)
    assert step_losses(run_dir) == step_losses(ref.run_dir)
    assert result.metrics == ref.metrics
