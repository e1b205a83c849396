"""Training methods: full, frozen (head only), LoRA and AdaLoRA (peft), their export and resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import sentiment_rows, write_tsv
from test_resume import PauseAt, step_losses
from text_tasks_helpers import tiny_text_model  # noqa: F401 - a fixture

from workbench.core.cancel import CancelToken
from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from workbench.core.errors import InputError, Paused
from workbench.core.labels import build_label_map
from workbench.core.run.pipeline import resume_training, run_training
from workbench.core.tasks.base import PreparedData
from workbench.core.training.methods import apply_method, count_parameters


def _config(data, model_dir, run_dir=None, **model) -> RunConfig:
    return RunConfig(data=DataConfig(train=str(data)), model=ModelConfig(name=str(model_dir), **model),
                     train=TrainConfig(epochs=2, batch_size=16, lr=1e-2, max_length=32, seed=5, save_minutes=0),
                     run_dir=str(run_dir) if run_dir else None)


@pytest.fixture()
def data(tmp_path):
    return write_tsv(tmp_path / "reviews.tsv", sentiment_rows(160))


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def _classifier(model_dir, labels=("neg", "pos")):
    from workbench.core.tasks.text_classification import TextClassification

    return TextClassification().build_model(str(model_dir), PreparedData({}, build_label_map(list(labels)), None))


def test_lora_trains_only_the_adapters_and_the_head(tiny_model_dir):
    model, method = apply_method(_classifier(tiny_model_dir), ModelConfig(method="lora", lora_rank=4))
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "modules_to_save" in n for n in trainable)
    # BERT's default targets (peft's table): query and value of each of the 2 layers, 32 wide, rank 4;
    # the head: a 32 x 2 linear layer with its bias.
    assert method.targets == ["query", "value"] and method.head == ["classifier"]
    assert method.trainable == sum(trainable.values()) == 2 * 2 * 4 * (32 + 32) + (32 * 2 + 2)
    assert method.total == count_parameters(model)[1] and method.trainable < method.total / 5
    assert f"{method.trainable:,} of {method.total:,} parameters trained" in method.describe()


def test_lora_targets_and_settings_are_checked(tiny_model_dir):
    with pytest.raises(InputError, match="no module named nope"):
        apply_method(_classifier(tiny_model_dir), ModelConfig(method="lora", lora_targets=["nope"]))
    model, method = apply_method(_classifier(tiny_model_dir), ModelConfig(method="lora", lora_targets=["dense"]))
    assert method.targets == ["dense"] and method.trainable > 66
    for bad, message in ((dict(method="lorax"), "--method must be one of"), (dict(lora_rank=0), "--lora-rank"),
                         (dict(lora_dropout=1.5), "--lora-dropout"), (dict(export_adapter=True), "--export-adapter")):
        cfg = _config("x.tsv", tiny_model_dir, **bad)
        with pytest.raises(InputError, match=message):
            cfg.validate()


def test_old_configs_with_freeze_backbone_load_as_frozen(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"task": "image-classification", "data": {"train": "photos"},
                                "model": {"name": "efficientnet-lite0", "freeze_backbone": True}}))
    assert RunConfig.load(path).model.method == "frozen"
    assert "freeze_backbone" not in RunConfig.load(path).to_dict()["model"]


def test_frozen_leaves_the_backbone_unchanged(data, tiny_model_dir, runs_home):
    result = run_training(_config(data, tiny_model_dir, method="frozen"))
    assert result.method == "frozen"
    trained, original = _weights(Path(result.run_dir) / "model"), _weights(tiny_model_dir)
    backbone = {k: v for k, v in trained.items() if k.startswith("bert.")}
    assert len(backbone) == len(original)
    for key, value in backbone.items():
        assert np.array_equal(value.numpy(), original[key.removeprefix("bert.")].numpy()), key
    assert result.trainable_parameters == 32 * 2 + 2
    assert result.summary()["trainable_parameters"] == 66 and result.summary()["method"] == "frozen"


def test_lora_export_is_merged_and_its_adapter_reloads_with_peft(data, tiny_model_dir, runs_home):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    result = run_training(_config(data, tiny_model_dir, method="lora", export_adapter=True))
    model_dir = Path(result.run_dir) / "model"
    meta = json.loads((model_dir / "workbench.json").read_text())
    assert meta["method"] == "lora" and meta["trainable_parameters"] == result.trainable_parameters
    assert meta["merge_check"]["max_abs_diff"] < 1e-4 and "adapter" in meta["files"]
    merged = _weights(model_dir)
    assert not any("lora" in k for k in merged)  # a plain model: the adapters are folded in
    query = "bert.encoder.layer.0.attention.self.query.weight"
    assert not np.allclose(merged[query].numpy(), _weights(tiny_model_dir)[query[5:]].numpy())  # they learnt

    # The merged export predicts what the trained (in-memory) model predicted on the test rows.
    preds = [json.loads(line) for line in (Path(result.run_dir) / "predictions.jsonl").read_text().splitlines()]
    clf = pipeline("text-classification", model=str(model_dir), top_k=None)
    for p, out in zip(preds, clf([p["text"] for p in preds], truncation=True)):
        scores = {o["label"]: o["score"] for o in out}
        for label, prob in p["probabilities"].items():
            assert scores[label] == pytest.approx(prob, abs=1e-4)

    # The adapter alone, on the original backbone, is the same model.
    adapter = model_dir / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_model_dir)
    base = AutoModelForSequenceClassification.from_pretrained(str(tiny_model_dir), num_labels=2)
    rebuilt = PeftModel.from_pretrained(base, str(adapter)).eval()
    plain = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    tok = AutoTokenizer.from_pretrained(str(adapter))
    batch = tok([p["text"] for p in preds[:8]], padding=True, return_tensors="pt")
    with torch.inference_mode():
        assert torch.allclose(rebuilt(**batch).logits, plain(**batch).logits, atol=1e-5)


@pytest.mark.slow
def test_lora_run_pauses_and_resumes_exactly(data, tiny_model_dir, tmp_path, runs_home):
    reference = run_training(_config(data, tiny_model_dir, tmp_path / "reference", method="lora"))
    run_dir = tmp_path / "paused"
    cfg = _config(data, tiny_model_dir, run_dir, method="lora")
    cfg.train.save_steps = 3
    cancel = CancelToken()
    with pytest.raises(Paused):
        run_training(cfg, PauseAt(cancel, 5), cancel)
    result = resume_training(run_dir)
    assert step_losses(run_dir) == step_losses(reference.run_dir)
    assert result.metrics == reference.metrics and result.method == "lora"


@pytest.mark.parametrize("method", ["lora", "adalora", "frozen"])
@pytest.mark.parametrize("task", ["token-classification", "text-pair-classification", "text-regression"])
def test_every_text_task_takes_every_method(task, method, tiny_text_model):  # noqa: F811 - the fixture
    import torch

    from workbench.core.tasks import get_task

    t = get_task(task)
    if task == "token-classification":
        data = PreparedData({}, build_label_map(["O", "B-PER", "I-PER"]), None)
    elif task == "text-regression":
        t.columns = type("Columns", (), {"label": "score"})()
        data = PreparedData({}, None, None)
    else:
        data = PreparedData({}, build_label_map(["same", "different"]), None)
    model, applied = apply_method(t.build_model(str(tiny_text_model), data), ModelConfig(method=method), 50)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "classifier" in n for n in trainable), trainable
    assert 0 < applied.trainable < applied.total / 5
    out = model(input_ids=torch.tensor([[2, 10, 11, 3]]), attention_mask=torch.ones(1, 4, dtype=torch.long)).logits
    assert out.shape[-1] == (1 if task == "text-regression" else len(data.label_map))


@pytest.mark.slow
def test_cli_method_flags_and_json_line(data, tiny_model_dir, tmp_path):
    from test_cli import wb

    p = wb(["train", data, "--model", tiny_model_dir, "--method", "lora", "--lora-rank", 4, "--lora-targets",
            "query,key,value", "--epochs", 1, "--max-length", 32, "--export-adapter"], tmp_path / "home")
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["method"] == "lora" and summary["trainable_parameters"] == 3 * 2 * 4 * 64 + 66
    config = json.loads((Path(summary["run_dir"]) / "config.json").read_text())
    assert config["model"]["lora_targets"] == ["query", "key", "value"] and config["train"]["lr"] == 5e-4
    assert (Path(summary["run_dir"]) / "model" / "adapter" / "adapter_model.safetensors").is_file()

    bad = wb(["train", data, "--model", tiny_model_dir, "--method", "lora", "--freeze-backbone"], tmp_path / "home")
    assert bad.returncode == 2 and "--freeze-backbone means --method frozen" in bad.stderr
    bad = wb(["train", data, "--model", tiny_model_dir, "--export-adapter"], tmp_path / "home")
    assert bad.returncode == 2 and "--export-adapter needs --method lora" in bad.stderr


def test_adalora_allocates_ranks_and_exports_a_plain_model(data, tiny_model_dir, runs_home):
    from transformers import AutoModelForSequenceClassification

    cfg = _config(data, tiny_model_dir, method="adalora", lora_rank=2)
    result = run_training(cfg)
    meta = json.loads((Path(result.run_dir) / "model" / "workbench.json").read_text())
    assert meta["method"] == "adalora" and meta["lora"]["init_r"] == 3 and meta["lora"]["total_step"] == 18
    assert meta["merge_check"]["max_abs_diff"] < 1e-4
    AutoModelForSequenceClassification.from_pretrained(str(Path(result.run_dir) / "model"))


@pytest.mark.parametrize("method, grouped", [("full", True), ("frozen", True), ("lora", False), ("adalora", False)])
def test_adapter_methods_default_to_random_batches(data, tiny_model_dir, method, grouped):
    # LoRA at its 10x learning rate followed length-grouped batches' make-up: SST-2 lost 6 points.
    from workbench.core.run.stages import check
    from workbench.core.tasks.token_classification import TokenClassification

    config, task, _ = check(_config(data, tiny_model_dir, method=method))
    assert config.train.group_by_length is grouped
    assert TokenClassification.groups_by_length(method) is False  # tagging trains random batches anyway
    explicit = _config(data, tiny_model_dir, method=method)
    explicit.train.group_by_length = True
    assert check(explicit)[0].train.group_by_length is True
