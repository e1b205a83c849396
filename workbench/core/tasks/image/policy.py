"""Image defaults chosen from the data a user brings: the one place that decides the input size, the
augmentation and, when --epochs is not given, how long an image set trains.

The ImageNet recipe (resize to 256, centre crop 224, random resized crops down to a quarter of the
area, left-right flips, three epochs) suits photos of a few hundred pixels. On small images it
underfits: a 28-pixel digit upscaled 8x to 224 costs ~6x the compute of 96 pixels and is no more
accurate, a crop of a quarter of its area cuts most of the glyph away, and three epochs of a thousand
images are ~100 optimizer steps. So the images are measured first (sizes and colour modes from the
file headers: no decoding), and:

- input size: a packaged convolutional backbone (EfficientNet-Lite0, the small CNN) takes about 3x
  the median shorter side, rounded up to a multiple of 32, between 64 and its own size; a Hugging Face
  checkpoint or an earlier export keeps its size (a ViT's position embeddings fix it);
- augmentation: ``strong`` (the ImageNet recipe) unless the images are upscaled 2x or more, then
  ``mild``: the whole image (no centre-crop margin), crops of at least 70% of the area with a near-
  square aspect ratio, no flips (a mirrored digit or letter can be another class);
- epochs: enough passes for ~300 optimizer steps (3 to 15 epochs), with early stopping on the
  validation split after 3 evaluations without improvement.

Measured on scikit-learn's digits upscaled to 28x28 greyscale (1,000 training images; logistic
regression on frozen EfficientNet-Lite0 features): 0.930 / 0.942 / 0.936 / 0.914 test accuracy at
64 / 96 / 128 / 224 pixels, forward passes 14x / 6.4x / 2.4x / 1x as fast as at 224.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from . import transforms as image_transforms
from .transforms import resize_for

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def hf_preprocessing(folder: Path) -> tuple[int, tuple, tuple]:
    """Input size and normalisation from a Hugging Face preprocessor_config.json (ImageNet defaults)."""
    try:
        cfg = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cfg = {}
    size = 224
    for key in ("crop_size", "size"):
        v = cfg.get(key)
        if isinstance(v, int):
            size = v
            break
        if isinstance(v, dict) and (edge := v.get("height") or v.get("shortest_edge")):
            size = int(edge)
            break
    mean = tuple(cfg.get("image_mean") or IMAGENET_MEAN)
    std = tuple(cfg.get("image_std") or IMAGENET_STD)
    return size, mean, std


AUGMENTS = ("strong", "mild", "none")
# Random resized crop area and aspect-ratio ranges per augmentation: the photo recipe's, and a mild
# one that keeps most of a small object.
CROP_SCALE = {"strong": image_transforms.CROP_SCALE, "mild": (0.7, 1.0)}
CROP_RATIOS = {"strong": image_transforms.CROP_RATIOS, "mild": (0.9, 1.1)}
FLIP = {"strong": True, "mild": False, "none": False}

UPSCALE_FOR_SMALL = 3  # input size ~ this many times the median side of small images
MIN_INPUT, SIZE_STEP = 64, 32
MILD_UPSCALE = 2.0  # images enlarged this much or more get mild augmentation
GREY_SHARE = 0.5  # a set is called greyscale when at least this share of its files are
MEASURE_LIMIT = 400  # file headers read to measure a set (spread evenly over it)
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}

# Epochs when --epochs is not given: enough passes for about TARGET_STEPS optimizer steps.
TARGET_STEPS = 300
MIN_EPOCHS, MAX_EPOCHS = 3, 15
PATIENCE = 3  # evaluations (one per epoch) without improvement before stopping


@dataclass
class ImageStats:
    """What the file headers of a set of images say."""

    files: int  # images in the set
    measured: int  # headers read (MEASURE_LIMIT at most)
    median_width: int
    median_height: int
    median_side: int  # of the shorter sides
    grey_share: float  # files stored as greyscale (modes L, 1, I;16, ...)

    @property
    def greyscale(self) -> bool:
        return self.measured > 0 and self.grey_share >= GREY_SHARE

    def describe(self) -> str:
        if not self.measured:
            return "image sizes unknown (no header could be read)"
        grey = (f", {'all' if self.grey_share == 1 else f'{self.grey_share:.0%}'} greyscale" if self.grey_share else "")
        sampled = f" (measured on {self.measured:,} of {self.files:,} files)" if self.measured < self.files else ""
        return f"median {self.median_width}x{self.median_height} pixels{grey}{sampled}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_images(paths: Iterable[str | Path], limit: int = MEASURE_LIMIT) -> ImageStats:
    """Sizes and colour modes of up to ``limit`` files spread evenly over ``paths``, read from their
    headers (Pillow decodes nothing until asked). Unreadable files are skipped here: decoding reports them."""
    from PIL import Image

    paths = list(paths)
    step = max(1, math.ceil(len(paths) / limit)) if limit else 1
    widths, heights, sides, grey = [], [], [], 0
    for p in paths[::step][:limit]:
        try:
            with Image.open(p) as im:
                w, h = im.size
                mode = im.mode
                orientation = im.getexif().get(0x0112, 1) if hasattr(im, "getexif") else 1
        except Exception:  # noqa: BLE001 - any unreadable file: the decode step names it
            continue
        if orientation in (5, 6, 7, 8):  # EXIF rotation by 90 degrees: shown the other way round
            w, h = h, w
        widths.append(w)
        heights.append(h)
        sides.append(min(w, h))
        grey += mode in GREY_MODES or (mode == "P" and _grey_palette(p))

    def median(v: list[int]) -> int:
        return int(sorted(v)[len(v) // 2]) if v else 0

    n = len(sides)
    return ImageStats(len(paths), n, median(widths), median(heights), median(sides), round(grey / n, 3) if n else 0.0)


def _grey_palette(path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            pal = im.getpalette() or []
    except Exception:  # noqa: BLE001
        return False
    triples = [pal[i:i + 3] for i in range(0, len(pal) - 2, 3)]
    return bool(triples) and all(r == g == b for r, g, b in triples)


@dataclass
class ImagePolicy:
    """The preprocessing and augmentation a run uses, and why."""

    image_size: int
    resize_to: int  # the cached square's side; image_size < resize_to leaves a centre-crop margin
    augment: str  # strong | mild | none
    reasons: list[str] = field(default_factory=list)

    @property
    def crop_scale(self) -> tuple[float, float] | None:
        return CROP_SCALE.get(self.augment)

    @property
    def crop_ratios(self) -> tuple[float, float] | None:
        return CROP_RATIOS.get(self.augment)

    @property
    def flip(self) -> bool:
        return FLIP[self.augment]

    def random_crop(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """The training crops' area scale and aspect-ratio ranges; augment "none" cuts no random crops."""
        scale, ratios = self.crop_scale, self.crop_ratios
        if scale is None or ratios is None:
            raise ValueError(f"augmentation {self.augment!r} cuts no random crops")
        return scale, ratios

    def augmentation_text(self) -> str:
        if self.augment == "none":
            return "no augmentation (every epoch sees the same whole images)"
        lo, hi = CROP_SCALE[self.augment]
        return (f"{self.augment} augmentation: random crops of {lo:.0%}-{hi:.0%} of the area"
                + (", left-right flips" if self.flip else ", no flips"))

    def summary(self) -> str:
        fit = "centre crop" if self.resize_to > self.image_size else "whole image"
        return f"{self.image_size} px input ({fit}), {self.augmentation_text()}"

    def describe(self) -> str:
        return self.summary() + ". " + " ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "resize_to": self.resize_to, "augment": self.augment,
                "crop_scale": list(self.crop_scale) if self.crop_scale else None,
                "crop_ratios": [round(r, 4) for r in self.crop_ratios] if self.crop_ratios else None,
                "flip": self.flip, "reasons": list(self.reasons), "summary": self.summary()}


def choose_image_policy(stats: ImageStats | None, native_size: int, *, image_size: int | None = None,
                        augment: str | None = None, resizable: bool = True) -> ImagePolicy:
    """The input size and augmentation for images like ``stats`` on a backbone made for
    ``native_size`` pixels; ``image_size`` and ``augment`` are the user's (None: choose).
    ``resizable``: the backbone takes any input size (convolutional), so small images may get a
    smaller one."""
    reasons: list[str] = []
    side = stats.median_side if stats and stats.measured else 0
    if image_size:
        size = image_size
        reasons.append(f"Input size {size} px as set (--image-size).")
    elif side and resizable and UPSCALE_FOR_SMALL * side < native_size:
        size = min(native_size, max(MIN_INPUT, SIZE_STEP * math.ceil(UPSCALE_FOR_SMALL * side / SIZE_STEP)))
        reasons.append(f"The images are small (median shorter side {side} px), so the input is {size} px instead of "
                       f"the backbone's {native_size}: enlarging them further costs time "
                       f"(~{(native_size / size) ** 2:.0f}x) and adds no detail.")
    else:
        size = native_size
        if side and side < native_size and not resizable:
            reasons.append(f"Input size {size} px, the backbone's own (it cannot take another).")
    upscale = size / side if side else 1.0
    if augment:
        chosen = augment
        reasons.append(f"Augmentation {augment} as set (--augment).")
    elif upscale >= MILD_UPSCALE:
        chosen = "mild"
        reasons.append(f"The images are enlarged {upscale:.1f}x to fit the input, so training crops keep at least "
                       f"{CROP_SCALE['mild'][0]:.0%} of the image (a quarter-area crop can cut away most of a small "
                       "object), the whole image is used (no centre-crop margin) and nothing is mirrored (a mirrored "
                       "digit or letter can be another class); --augment strong restores the photo recipe.")
    else:
        chosen = "strong"
        reasons.append("Photo-sized images: the ImageNet recipe (resize, centre crop, random resized crops, flips).")
    if stats is not None and stats.greyscale:
        reasons.append("Greyscale images: the grey channel is copied to red, green and blue, as the pretrained "
                       "backbone expects colour.")
    # The photo recipe evaluates a centre crop inside a margin (resize to 256, crop 224); small or
    # mildly augmented images are used whole, their objects often reaching the edges.
    resize_to = resize_for(size) if chosen == "strong" else size
    return ImagePolicy(size, resize_to, chosen, reasons)


@dataclass
class EpochPlan:
    epochs: float
    patience: int | None
    reason: str


def image_epochs(train_rows: int, batch_size: int = 32, grad_accum: int = 1) -> EpochPlan:
    """Epochs (and early-stopping patience) for ``train_rows`` training images when --epochs is not
    given: about TARGET_STEPS optimizer steps, MIN_EPOCHS to MAX_EPOCHS passes."""
    per_epoch = max(1, math.ceil(max(train_rows, 1) / (batch_size * grad_accum)))
    epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(TARGET_STEPS / per_epoch)))
    if epochs <= MIN_EPOCHS:
        return EpochPlan(float(epochs), None, f"{epochs} epochs: {train_rows:,} training images give "
                         f"{per_epoch * epochs:,} optimizer steps in {epochs} passes")
    return EpochPlan(float(epochs), PATIENCE, f"up to {epochs} epochs (about {per_epoch * epochs:,} optimizer steps "
                     f"for {train_rows:,} training images), stopping early after {PATIENCE} epochs without "
                     "improvement on the validation split")


@dataclass
class PlannedDefaults:
    """What a run will choose for a set of images, in words: what was measured, what it will use, why."""

    measured: str
    uses: str
    why: str

    def text(self) -> str:
        return f"{self.measured} {self.uses} {self.why}".strip()


def planned_defaults(stats: ImageStats | None, train_rows: int, train, model_name: str | None) -> PlannedDefaults:
    """What a run will choose for these images, for the front ends to show before training: the
    input size and augmentation (and why), and the epochs when --epochs is not given. ``train`` is
    the run's TrainConfig; ``model_name`` its backbone (None or the text default: EfficientNet-Lite0)."""
    from ...backbones import DEFAULT_IMAGE_BACKBONE, image_model_spec
    from ...config import DEFAULT_MODEL

    name = model_name if model_name and model_name != DEFAULT_MODEL else DEFAULT_IMAGE_BACKBONE
    spec = image_model_spec(name)
    if spec is not None:
        native, resizable = spec.image_size, True
    else:  # a Hugging Face checkpoint or an earlier export: its own size
        folder = Path(name).expanduser()
        native, resizable = (hf_preprocessing(folder)[0] if folder.is_dir() else 224), False
    policy = choose_image_policy(stats, native, image_size=train.image_size, augment=train.augment,
                                 resizable=resizable)
    if train.epochs is not None:
        epochs = f"{train.epochs:g} epoch{'' if train.epochs == 1 else 's'}, as set."
    else:
        plan = image_epochs(train_rows, train.batch_size, train.grad_accum)
        epochs = plan.reason[0].upper() + plan.reason[1:] + "."
    measured = f"Images: {stats.describe()}." if stats is not None else ""
    return PlannedDefaults(measured, f"Training will use {policy.summary()}. {epochs}", " ".join(policy.reasons))
