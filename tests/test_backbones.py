"""The backbone catalog, and one short run on the real all-MiniLM-L6-v2 weights."""

from __future__ import annotations

import json

import pytest

from workbench.core.backbones import offline_backbones, resolve_backbone
from workbench.core.errors import BackboneError


def test_default_backbone_comes_from_its_package():
    b = resolve_backbone(None)
    assert b.name == "all-MiniLM-L6-v2" and b.source == "package"
    assert b.architecture == "BertModel" and b.num_layers == 6 and b.hidden_size == 384
    assert 22_000_000 < b.num_parameters < 23_500_000
    assert resolve_backbone("sentence-transformers/all-MiniLM-L6-v2").path == b.path
    assert any(o.name == "all-MiniLM-L6-v2" for o in offline_backbones())


def test_local_folder(tiny_model_dir):
    b = resolve_backbone(str(tiny_model_dir))
    assert b.source == "local" and b.num_parameters and b.num_parameters < 200_000


def test_bad_names_give_one_clear_error(tmp_path):
    with pytest.raises(BackboneError, match="does not exist"):
        resolve_backbone(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackboneError, match="no config.json"):
        resolve_backbone(str(tmp_path / "empty"))
    with pytest.raises(BackboneError, match="offline.*all-MiniLM-L6-v2"):
        resolve_backbone("bert-base-uncased")  # conftest sets HF_HUB_OFFLINE=1


@pytest.mark.slow
def test_short_run_with_real_minilm(sentiment_tsv, tmp_path, runs_home):
    from transformers import pipeline

    from workbench.core.config import DataConfig, RunConfig, TrainConfig
    from workbench.core.run.pipeline import run_training

    cfg = RunConfig(
        data=DataConfig(train=str(sentiment_tsv)),
        train=TrainConfig(epochs=1, batch_size=16, max_length=32, lr=1e-4),
        export_dir=str(tmp_path / "minilm-export"),
    )
    result = run_training(cfg)
    assert result.backbone["name"] == "all-MiniLM-L6-v2"
    assert result.backbone["parameters"] > 22_000_000
    # Real pretrained features separate the two word lists after one short epoch.
    assert result.metrics["accuracy"] >= 0.75, result.metrics
    preds = [json.loads(l) for l in open(f"{result.run_dir}/predictions.jsonl")]
    clf = pipeline("text-classification", model=cfg.export_dir, device="cpu")
    assert [o["label"] for o in clf([p["text"] for p in preds], truncation=True)] == [p["predicted"] for p in preds]
