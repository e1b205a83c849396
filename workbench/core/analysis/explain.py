"""Why the model said what it said: per-token integrated gradients for text, a gradient saliency
map for images.

Integrated gradients (Sundararajan et al., 2017) on the word embeddings: the baseline is the same
sequence with every ordinary token replaced by the padding token (special tokens such as [CLS] and
[SEP] kept), the path integral is a midpoint Riemann sum of ``steps`` points, and a token's
attribution is the dot product of its embedding difference with the averaged gradient. By
completeness the attributions sum to logit(input) - logit(baseline) of the explained class, up to
the sum's discretisation error, which ``TextAttribution.delta`` reports.

A multi-label model (sigmoid outputs) is explained per label (``explain_labels``): the attributions of
one label's logit at a time, by default of every label the model decides for the text (its score
reaches its threshold from the export's workbench.json), or of the top label when it decides none.
Images likewise (``image_saliencies``): a saliency map of each decided label's logit, or of the
labels asked for, each with its score and threshold; a single-label image model's of its predicted
class (or the classes asked for).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class TextAttribution:
    tokens: list[str]
    offsets: list[tuple[int, int]]  # character span of each token in the text (0, 0 for special tokens)
    scores: list[float]  # attribution per token; > 0 pushes towards ``label``
    label: str
    target: int
    logit: float  # of the target class, for the input
    baseline_logit: float
    delta: float  # completeness gap: sum(scores) - (logit - baseline_logit)
    special: list[bool]
    score: float | None = None  # multi-label: the label's sigmoid score for the input
    decided: bool | None = None  # multi-label: whether the score reaches the label's threshold


def integrated_gradients(model, tokenizer, text: str, text_pair: str | None = None, target: int | None = None,
                         steps: int = 48, max_length: int = 128, batch: int = 16) -> TextAttribution:
    """Attributions of the ``target`` class's logit (default: the predicted class) to each token."""
    import torch

    model.eval()
    enc = tokenizer(text, text_pair, truncation=True, max_length=max_length, return_tensors="pt",
                    return_offsets_mapping=True, return_special_tokens_mask=True)
    offsets = [(int(start), int(end)) for start, end in enc.pop("offset_mapping")[0].tolist()]
    special = enc.pop("special_tokens_mask")[0].bool()
    ids = enc["input_ids"]
    extra = {k: v for k, v in enc.items() if k in ("attention_mask", "token_type_ids")}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    base_ids = torch.where(special, ids[0], torch.full_like(ids[0], pad))[None]
    emb = model.get_input_embeddings()
    with torch.no_grad():
        x, x0 = emb(ids).float(), emb(base_ids).float()
        logits = model(inputs_embeds=x, **extra).logits[0]
        if target is None:
            target = int(logits.argmax())
        base_logit = float(model(inputs_embeds=x0, **extra).logits[0, target])
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
    total = torch.zeros_like(x[0])
    for start in range(0, steps, batch):
        a = alphas[start:start + batch].view(-1, 1, 1)
        path = (x0 + a * (x - x0)).detach().requires_grad_(True)
        rep = {k: v.expand(len(a), -1) for k, v in extra.items()}
        out = model(inputs_embeds=path, **rep).logits[:, target].sum()
        (grad,) = torch.autograd.grad(out, path)
        total += grad.sum(0)
    scores = ((x[0] - x0[0]) * total / steps).sum(-1).detach().numpy().astype(float)
    logit = float(logits[target])
    id2label = getattr(model.config, "id2label", None) or {}
    return TextAttribution(tokenizer.convert_ids_to_tokens(ids[0].tolist()), offsets, scores.tolist(),
                           str(id2label.get(target, target)), target, logit, base_logit,
                           float(scores.sum() - (logit - base_logit)), special.tolist())


def attribution_html(att: TextAttribution, text: str) -> str:
    """The text with each token shaded: green where it supports the label, red where it speaks against."""
    import html

    peak = max((abs(s) for s, sp in zip(att.scores, att.special) if not sp), default=0.0) or 1.0
    out, pos = [], 0
    for (start, end), score, sp in zip(att.offsets, att.scores, att.special):
        if sp or end <= start or start < pos:
            continue
        out.append(html.escape(text[pos:start]))
        strength = min(1.0, abs(score) / peak)
        rgb = "40,160,70" if score > 0 else "210,60,50"
        out.append(f'<span style="background-color: rgba({rgb},{0.15 + 0.75 * strength:.2f})" '
                   f'title="{score:+.3f}">{html.escape(text[start:end])}</span>')
        pos = end
    out.append(html.escape(text[pos:]))
    return "".join(out)


def explain_text(model_dir: str, text: str, text_pair: str | None = None, steps: int = 48) -> TextAttribution:
    """Load the exported text classifier in ``model_dir`` and explain its prediction for ``text``."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    return integrated_gradients(model, tok, text, text_pair, steps=steps)


def label_targets(logits, names: list[str], thresholds: dict[str, float] | None = None,
                  labels: list[str] | None = None) -> list[int]:
    """The outputs to explain for one text's multi-label ``logits``: the ``labels`` asked for (by
    name), else each decided label (sigmoid score at or above its threshold, 0.5 without one), else
    the top one."""
    from ..errors import InputError
    from ..tasks.multilabel.thresholds import DEFAULT_THRESHOLD, sigmoid

    if labels:
        unknown = [x for x in labels if x not in names]
        if unknown:
            raise InputError(f"unknown label {unknown[0]!r}; the model's labels are {', '.join(names)}")
        return [names.index(x) for x in dict.fromkeys(labels)]
    scores = sigmoid(np.asarray(logits, np.float64))
    cut = np.array([(thresholds or {}).get(n, DEFAULT_THRESHOLD) for n in names])
    decided = [int(j) for j in np.flatnonzero(scores >= cut)]
    return decided or [int(np.argmax(scores))]


def explain_labels(model, tokenizer, text: str, names: list[str], thresholds: dict[str, float] | None = None,
                   labels: list[str] | None = None, steps: int = 48, max_length: int = 128) -> list[TextAttribution]:
    """Integrated gradients of each chosen label's logit (``label_targets``) of a multi-label text
    classifier, one attribution per label, with the label's score and whether it is decided."""
    import torch

    from ..tasks.multilabel.thresholds import DEFAULT_THRESHOLD, sigmoid

    model.eval()
    enc = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits[0].float().numpy()
    out = []
    for j in label_targets(logits, names, thresholds, labels):
        att = integrated_gradients(model, tokenizer, text, target=j, steps=steps, max_length=max_length)
        att.label, att.score = names[j], float(sigmoid(logits[j:j + 1])[0])
        att.decided = att.score >= (thresholds or {}).get(names[j], DEFAULT_THRESHOLD)
        out.append(att)
    return out


def explain_text_labels(model_dir: str, text: str, labels: list[str] | None = None,
                        steps: int = 48) -> list[TextAttribution]:
    """Load the exported multi-label text classifier in ``model_dir`` (its thresholds from workbench.json)
    and explain ``labels`` (default: the decided ones) for ``text``."""
    import json
    from pathlib import Path

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ..export.target import MARKER

    meta = json.loads((Path(model_dir) / MARKER).read_text(encoding="utf-8"))
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    names = list(meta.get("labels") or [model.config.id2label[i] for i in range(model.config.num_labels)])
    return explain_labels(model, tok, text, names, meta.get("thresholds"), labels, steps,
                          int(meta.get("max_length") or 128))


def image_saliency(model, pixels: np.ndarray, target: int | None = None, forward=None) -> tuple[np.ndarray, int]:
    """(saliency (H, W) in 0..1, target): |d logit / d pixel|, largest over colour channels, of one
    preprocessed image (1, 3, H, W); ``forward`` maps pixels to logits (default ``model(x)``)."""
    import torch

    model.eval()
    x = torch.as_tensor(pixels, dtype=torch.float32).clone().requires_grad_(True)
    out = forward(x) if forward is not None else model(x)
    logits = out.logits if hasattr(out, "logits") else out
    if target is None:
        target = int(logits[0].argmax())
    (grad,) = torch.autograd.grad(logits[0, target], x)
    sal = grad[0].abs().amax(0)
    # A light 5x5 box blur: single-pixel gradients are speckled; regions read better.
    sal = torch.nn.functional.avg_pool2d(sal[None, None], 5, stride=1, padding=2)[0, 0]
    sal = sal / sal.max().clamp(min=1e-12)
    return sal.detach().numpy(), target


@dataclass
class ImageSaliency:
    """Where an image model looked for one label (or class) of one image."""

    image: np.ndarray  # the image as the model saw it (resized, centre-cropped), uint8 (H, W, 3)
    saliency: np.ndarray  # (H, W) in 0..1: |d logit / d pixel| of the label, blurred a little
    label: str
    target: int  # the label's output
    score: float  # the label's sigmoid score (multi-label) or the class's softmax probability
    threshold: float | None = None  # multi-label: the label's threshold from workbench.json
    decided: bool | None = None  # multi-label: whether the score reaches the threshold

    @property
    def peak(self) -> tuple[int, int]:
        """(row, column) of the saliency's maximum, in the model's view of the image."""
        row, col = np.unravel_index(int(np.argmax(self.saliency)), self.saliency.shape)
        return int(row), int(col)


def _image_export(model_dir: str) -> tuple[Any, dict[str, Any], list[str], dict[str, float] | None]:
    """A Workbench image export's model, config, label names and (multi-label) thresholds."""
    import json
    from pathlib import Path

    from ..errors import InputError
    from ..export.target import MARKER
    from ..tasks.image.models import load_image_classifier
    from ..tasks.table import prediction_kind

    model, config = load_image_classifier(model_dir)
    names = [str(config["id2label"][str(i)]) for i in range(int(config["num_labels"]))]
    meta_file = Path(model_dir) / MARKER
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.is_file() else {}
    except (OSError, ValueError) as e:
        raise InputError(f"cannot be read ({e}); export the model again", path=meta_file) from None
    if not isinstance(meta, dict) or prediction_kind(meta.get("task")) != "labels":
        return model, config, names, None
    given = meta.get("thresholds") or {}
    bad = [k for k, v in given.items() if k not in names or isinstance(v, bool) or not isinstance(v, (int, float))
           or not 0 <= v <= 1] if isinstance(given, dict) else ["thresholds"]
    if bad:
        raise InputError(f"is damaged: its threshold for {bad[0]!r} is not a number from 0 to 1 of one of its labels; "
                         "export the model again", path=meta_file)
    return model, config, names, {k: float(v) for k, v in given.items()}


def image_saliencies(model_dir: str, path: str, labels: list[str] | None = None) -> list[ImageSaliency]:
    """The saliency of each explained label of a Workbench image export for one image file: the
    ``labels`` named, else (multi-label) every decided label, most confident first, or the top label
    when none is decided, else (one class per image) the predicted class."""
    import torch

    from ..errors import InputError
    from ..tasks.image.models import preprocess_images
    from ..tasks.multilabel.thresholds import DEFAULT_THRESHOLD, sigmoid

    model, config, names, thresholds = _image_export(model_dir)
    pre = config["preprocessing"]
    pixels = preprocess_images([path], pre)
    with torch.no_grad():
        logits = model(torch.as_tensor(pixels)).float().numpy()[0]
    if thresholds is not None:
        scores = sigmoid(logits)
        targets = label_targets(logits, names, thresholds, labels)
        if not labels:
            targets.sort(key=lambda j: -scores[j])
    else:
        scores = np.exp(logits - logits.max())
        scores /= scores.sum()
        unknown = [x for x in labels or [] if x not in names]
        if unknown:
            raise InputError(f"unknown label {unknown[0]!r}; the model's labels are {', '.join(names)}")
        targets = [names.index(x) for x in dict.fromkeys(labels)] if labels else [int(np.argmax(logits))]
    mean, std = np.asarray(pre["mean"], np.float32), np.asarray(pre["std"], np.float32)
    seen = np.clip((pixels[0].transpose(1, 2, 0) * std + mean) * 255, 0, 255).astype(np.uint8)
    out = []
    for j in targets:
        sal, _ = image_saliency(model, pixels, j)
        item = ImageSaliency(seen, sal, names[j], j, float(scores[j]))
        if thresholds is not None:
            item.threshold = thresholds.get(names[j], DEFAULT_THRESHOLD)
            item.decided = item.score >= item.threshold
        out.append(item)
    return out


def explain_image(model_dir: str, path: str, label: str | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """(the image as the model saw it, uint8 (H, W, 3); saliency (H, W); label) for an image file and
    a Workbench image export: of ``label``, else of the predicted class (multi-label: the most
    confident decided label; ``image_saliencies`` gives every decided one with scores and thresholds)."""
    first = image_saliencies(model_dir, path, [label] if label else None)[0]
    return first.image, first.saliency, first.label


def overlay(image: np.ndarray, saliency: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """uint8 (H, W, 3): the image with the saliency as a red-yellow heat map over it."""
    s = saliency[..., None].astype(np.float32)
    heat = np.concatenate([np.ones_like(s), s, np.zeros_like(s)], -1) * 255  # red (low) to yellow (high)
    weight = alpha * s
    return np.clip(image.astype(np.float32) * (1 - weight) + heat * weight, 0, 255).astype(np.uint8)
