"""Crops cut on the model's device (GPUs; WORKBENCH_DEVICE_PIXELS=1 forces it on the CPU here): the
same draws and nearly the same pixels as the CPU path, and a run that trains, evaluates and exports
through it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from image_samples import write_class_folder

from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from workbench.core.run.pipeline import run_training
from workbench.core.tasks.image.transforms import (
    center_boxes,
    center_crops,
    device_pixels,
    random_boxes,
    random_resized_crops,
    to_pixels,
    wants_device_pixels,
)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _squares(n: int = 10, side: int = 64) -> np.ndarray:
    """Smooth gradients (bilinear samplers agree on them) that differ per image and channel."""
    yy, xx = np.mgrid[0:side, 0:side]
    return np.stack([np.stack([(xx * 3 + 9 * i) % 256, (yy * 2 + 5 * i) % 256, (xx + yy + 7 * i) % 256], -1)
                     for i in range(n)]).astype(np.uint8)


def _on_device(images, index, boxes, flips, size):
    return device_pixels(torch.from_numpy(images[index]), torch.from_numpy(boxes), torch.from_numpy(flips),
                         size, MEAN, STD).numpy()


def test_a_centre_box_gives_the_cpu_paths_pixels_exactly():
    images, index = _squares(), np.array([3, 1, 4, 1, 5, 9])
    expected = to_pixels(center_crops(images, index, 56), MEAN, STD)
    got = _on_device(images, index, center_boxes(64, len(index), 56), np.zeros(len(index), bool), 56)
    assert got.shape == expected.shape == (6, 3, 56, 56)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_random_crops_take_the_cpu_paths_draws_and_nearly_its_pixels():
    images, index = _squares(), np.array([2, 7, 1, 8, 2, 8, 1, 8])
    pil = random_resized_crops(images, index, 48, np.random.default_rng(5))
    boxes, flips = random_boxes(64, len(index), np.random.default_rng(5))
    assert flips.any() and not flips.all() and (boxes[:, 2] - boxes[:, 0] < 64).any()
    got = _on_device(images, index, boxes, flips, 48)
    difference = np.abs(got - to_pixels(pil, MEAN, STD)) * np.asarray(STD).reshape(1, 3, 1, 1) * 255
    # PIL blurs a crop it shrinks and rounds on its own; one grey level of 255 at most, nearly never.
    assert difference.mean() < 0.5 and np.percentile(difference, 99) <= 1.01
    # A flip is the mirror image of the same box.
    unflipped = _on_device(images, index, boxes, np.zeros(len(index), bool), 48)
    np.testing.assert_allclose(got[flips], unflipped[flips][..., ::-1], atol=1e-5)


def test_device_pixels_by_device_and_by_flag(monkeypatch):
    monkeypatch.delenv("WORKBENCH_DEVICE_PIXELS", raising=False)
    assert wants_device_pixels(torch.device("cuda", 0)) and not wants_device_pixels(torch.device("cpu"))
    monkeypatch.setenv("WORKBENCH_DEVICE_PIXELS", "1")
    assert wants_device_pixels(torch.device("cpu"))
    monkeypatch.setenv("WORKBENCH_DEVICE_PIXELS", "0")
    assert not wants_device_pixels(torch.device("cuda", 0))


def test_a_run_trains_evaluates_and_exports_with_crops_cut_on_the_device(tmp_path, runs_home, monkeypatch):
    from workbench.core.tasks.image.classification import ImageClassification
    from workbench.core.tasks.image.models import classify_images

    monkeypatch.setenv("WORKBENCH_DEVICE_PIXELS", "1")
    batches = []
    original = ImageClassification.loop_batch

    def recorded(self, split, rows):
        batch = original(self, split, rows)
        batches.append((split.name, batch))
        return batch

    monkeypatch.setattr(ImageClassification, "loop_batch", recorded)
    root = tmp_path / "photos"
    write_class_folder(root / "train", 16)
    write_class_folder(root / "test", 6, seed=2)
    cfg = RunConfig(data=DataConfig(train=str(root)), model=ModelConfig(name="small-cnn"),
                    train=TrainConfig(epochs=4, batch_size=8, lr=3e-3, warmup_ratio=0.0, image_size=32, seed=0))
    result = run_training(cfg)
    assert result.metrics["accuracy"] >= 0.9  # red vs blue; a broken crop path scores ~0.5

    train = [b for name, b in batches if name == "train"]
    assert train and all(b["images"].dtype == np.uint8 and "pixel_values" not in b for b in train)
    assert any(b["flips"].any() for b in train)  # augmented: random boxes and flips
    test = [b for name, b in batches if name == "test"]
    assert test and not any(b["flips"].any() for b in test)  # evaluation: the centre crop
    # Evaluation's centre crops on the device are the export loader's pixels: the same predictions.
    run = Path(result.run_dir)
    preds = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    top = classify_images(run / "model", [p["path"] for p in preds], top_k=1)
    assert [t[0]["label"] for t in top] == [p["predicted"] for p in preds]
    assert [t[0]["score"] for t in top] == pytest.approx([p["confidence"] for p in preds], abs=2e-3)
