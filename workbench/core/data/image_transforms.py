"""Pixels for the model from cached images: seeded augmentation for training, a deterministic centre
crop for evaluation, and the normalisation both share.

The cache holds each image once as a ``resize_to`` x ``resize_to`` uint8 square (shorter side resized,
centre cropped). Evaluation takes the centre ``image_size`` crop of it, which is the ImageNet
evaluation convention (resize to 256, crop 224); training takes a random resized crop and a random
horizontal flip of it. Exports carry the same preprocessing as a Hugging Face image processor.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

CROP_RATIO = 0.875  # image_size / resize_to (224 / 256)
RESAMPLE_BICUBIC = 3  # PIL.Image.Resampling.BICUBIC, as Hugging Face processors store it
# The photo recipe's random resized crop area range (workbench/core/image_policy.py chooses between
# it and milder ones). torchvision's default lower bound is 0.08, made for 90-epoch ImageNet
# schedules; a few epochs of fine-tuning learn more from crops that keep most of the object.
CROP_SCALE = (0.25, 1.0)
CROP_RATIOS = (3 / 4, 4 / 3)


def resize_for(image_size: int) -> int:
    return int(round(image_size / CROP_RATIO))


@dataclass
class ImagePreprocessing:
    """How an image becomes model input; saved beside the model as ``preprocessor_config.json``."""

    image_size: int
    resize_to: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: int = RESAMPLE_BICUBIC

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    def hf_processor(self):
        """The same steps as a transformers image processor (shorter side to ``resize_to``, centre crop,
        rescale, normalise), so `pipeline("image-classification")` sees what evaluation saw."""
        from transformers import BitImageProcessor

        return BitImageProcessor(
            do_resize=True, size={"shortest_edge": self.resize_to}, resample=self.resample,
            do_center_crop=True, crop_size={"height": self.image_size, "width": self.image_size},
            do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
            image_mean=list(self.mean), image_std=list(self.std), do_convert_rgb=True,
        )

    def save_pretrained(self, folder: str | Path) -> None:
        self.hf_processor().save_pretrained(folder)


def center_crops(images: np.ndarray, index: np.ndarray, size: int) -> np.ndarray:
    """uint8 (B, size, size, 3) centre crops of cached squares ``images[index]``."""
    side = images.shape[1]
    off = (side - size) // 2
    return np.ascontiguousarray(images[index, off:off + size, off:off + size])


def random_resized_crops(images: np.ndarray, index: np.ndarray, size: int, rng: np.random.Generator,
                         flip: bool = True, scale: tuple[float, float] = CROP_SCALE,
                         ratios: tuple[float, float] = CROP_RATIOS) -> np.ndarray:
    """uint8 (B, size, size, 3): a random crop (a share of the area drawn from ``scale``, an aspect
    ratio from ``ratios``) of each cached square, resized to ``size``, flipped left-right half of the
    time when ``flip``."""
    from PIL import Image

    side = images.shape[1]
    out = np.empty((len(index), size, size, 3), np.uint8)
    log_lo, log_hi = math.log(ratios[0]), math.log(ratios[1])
    for j, i in enumerate(index):
        box = (0, 0, side, side)
        for _ in range(10):
            area = side * side * rng.uniform(*scale)
            aspect = math.exp(rng.uniform(log_lo, log_hi))
            w, h = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if 0 < w <= side and 0 < h <= side:
                x, y = int(rng.integers(0, side - w + 1)), int(rng.integers(0, side - h + 1))
                box = (x, y, x + w, y + h)
                break
        im = Image.fromarray(np.asarray(images[i])).resize((size, size), Image.Resampling.BILINEAR, box=box)
        if flip and rng.random() < 0.5:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out[j] = np.asarray(im)
    return out


def to_pixels(batch: np.ndarray, mean, std) -> np.ndarray:
    """uint8 (B, H, W, 3) -> float32 (B, 3, H, W), (x / 255 - mean) / std."""
    scale = np.float32(1 / 255) / np.asarray(std, np.float32)
    shift = np.asarray(mean, np.float32) / np.asarray(std, np.float32)
    x = batch.astype(np.float32) * scale - shift
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
