"""Pixels for the model from cached images: seeded augmentation for training, a deterministic centre
crop for evaluation, and the normalisation both share.

The cache holds each image once as a ``resize_to`` x ``resize_to`` uint8 square (shorter side resized,
centre cropped). Evaluation takes the centre ``image_size`` crop of it, which is the ImageNet
evaluation convention (resize to 256, crop 224); training takes a random resized crop and a random
horizontal flip of it. Exports carry the same preprocessing as a Hugging Face image processor.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

CROP_RATIO = 0.875  # image_size / resize_to (224 / 256)
RESAMPLE_BICUBIC = 3  # PIL.Image.Resampling.BICUBIC, as Hugging Face processors store it
# The photo recipe's random resized crop area range (workbench/core/tasks/image/policy.py chooses between
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


def random_boxes(side: int, n: int, rng: np.random.Generator, flip: bool = True,
                 scale: tuple[float, float] = CROP_SCALE,
                 ratios: tuple[float, float] = CROP_RATIOS) -> tuple[np.ndarray, np.ndarray]:
    """The random resized crops' draws for ``n`` cached ``side`` x ``side`` squares: float32 (n, 4)
    boxes (left, top, right, bottom in pixels; a share of the area drawn from ``scale``, an aspect
    ratio from ``ratios``) and bool (n,) left-right flips, half of them when ``flip``. The draws are
    made in one order whoever cuts the crops (PIL here, the GPU in ``device_pixels``)."""
    boxes = np.empty((n, 4), np.float32)
    flips = np.zeros(n, bool)
    log_lo, log_hi = math.log(ratios[0]), math.log(ratios[1])
    for j in range(n):
        box = (0, 0, side, side)
        for _ in range(10):
            area = side * side * rng.uniform(*scale)
            aspect = math.exp(rng.uniform(log_lo, log_hi))
            w, h = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if 0 < w <= side and 0 < h <= side:
                x, y = int(rng.integers(0, side - w + 1)), int(rng.integers(0, side - h + 1))
                box = (x, y, x + w, y + h)
                break
        boxes[j] = box
        flips[j] = flip and rng.random() < 0.5
    return boxes, flips


def center_boxes(side: int, n: int, size: int) -> np.ndarray:
    """float32 (n, 4) boxes of ``center_crops``' centre ``size`` crop of ``side`` squares."""
    off = (side - size) // 2
    return np.tile(np.asarray([off, off, off + size, off + size], np.float32), (n, 1))


def random_resized_crops(images: np.ndarray, index: np.ndarray, size: int, rng: np.random.Generator,
                         flip: bool = True, scale: tuple[float, float] = CROP_SCALE,
                         ratios: tuple[float, float] = CROP_RATIOS) -> np.ndarray:
    """uint8 (B, size, size, 3): a random crop of each cached square (``random_boxes``), resized to
    ``size``, flipped left-right half of the time when ``flip``."""
    from PIL import Image

    boxes, flips = random_boxes(images.shape[1], len(index), rng, flip, scale, ratios)
    out = np.empty((len(index), size, size, 3), np.uint8)
    for j, i in enumerate(index):
        left, top, right, bottom = (int(v) for v in boxes[j])
        box = (left, top, right, bottom)
        im = Image.fromarray(np.asarray(images[i])).resize((size, size), Image.Resampling.BILINEAR, box=box)
        if flips[j]:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out[j] = np.asarray(im)
    return out


def to_pixels(batch: np.ndarray, mean, std) -> np.ndarray:
    """uint8 (B, H, W, 3) -> float32 (B, 3, H, W), (x / 255 - mean) / std."""
    scale = np.float32(1 / 255) / np.asarray(std, np.float32)
    shift = np.asarray(mean, np.float32) / np.asarray(std, np.float32)
    x = batch.astype(np.float32) * scale - shift
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def wants_device_pixels(device) -> bool:
    """Whether the training loop's crops are cut on ``device`` (``device_pixels``): on GPUs, where the
    host would otherwise not keep up. WORKBENCH_DEVICE_PIXELS=1 or 0 forces it (tests, benchmarks)."""
    forced = os.environ.get("WORKBENCH_DEVICE_PIXELS", "")
    if forced in ("0", "1"):
        return forced == "1"
    return getattr(device, "type", str(device)) == "cuda"


def device_pixels(images, boxes, flips, size: int, mean, std):
    """``to_pixels`` of crops cut on the model's device: ``images`` uint8 (B, S, S, 3) cached squares,
    ``boxes`` (B, 4) and ``flips`` (B,) as ``random_boxes`` draws them -> float32 (B, 3, size, size).

    On a GPU the host then only gathers uint8 squares (a quarter of float pixels' bytes to copy) and
    the crops, resizing, flips and normalisation take the GPU a fraction of a millisecond, where PIL
    takes a CPU core ~2 ms an image: a few hundred images a second, less than a GPU trains on. The
    crop is one affine map per image, sampled bilinearly; a centre box samples the cached pixels
    themselves (``center_crops``). Unlike PIL it does not blur before shrinking a crop larger than
    ``size`` (at most S / size = 1.14x here), so the pixels differ slightly from the CPU path's."""
    import torch
    import torch.nn.functional as F

    x = images.permute(0, 3, 1, 2).float()
    side = x.shape[-1]
    boxes = boxes.float()
    # Normalised coordinates (align_corners=False): -1 and +1 are the outer edges of the square.
    left, top, right, bottom = (2 * boxes / side - 1).unbind(1)
    sign = 1 - 2 * flips.float()  # a flip samples the box from right to left
    theta = torch.zeros(len(x), 2, 3, device=x.device)
    theta[:, 0, 0] = sign * (right - left) / 2
    theta[:, 0, 2] = (left + right) / 2
    theta[:, 1, 1] = (bottom - top) / 2
    theta[:, 1, 2] = (top + bottom) / 2
    grid = F.affine_grid(theta, [len(x), 3, size, size], align_corners=False)
    crops = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    crops = crops.round_().clamp_(0, 255)  # uint8 values, as the CPU path's crops are
    scale = torch.tensor([1 / (255 * s) for s in std], device=x.device).view(1, 3, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(mean, std)], device=x.device).view(1, 3, 1, 1)
    return crops * scale - shift
