"""The model card of an image-model export, which says how to load what was written (the ONNX file
and its check are every task's: workbench/core/export/onnx_export.py)."""

from __future__ import annotations

import json
from typing import Any

from ...escaping import md_cell, md_code, md_fence, one_line


def image_model_card(*, task_title: str, backbone: str, data: dict[str, Any], hyper: dict[str, Any],
                     metrics: dict[str, float], report_table: str, eval_split: str, preprocessing: dict[str, Any],
                     hugging_face: bool, frozen: bool, use: str | None = None) -> str:
    """``use``: the card's "Use" section (after its heading), in place of a classifier's (a multi-label
    model decides its labels at thresholds, which top-1 loading and the ONNX note below do not)."""
    rows = "\n".join(f"| {md_cell(str(k))} | {md_cell(str(v))} |" for k, v in hyper.items())
    sources = "\n".join(f"- {md_cell(k)}: {md_code(str(v))} ({data.get('rows', {}).get(k, '?')} images)"
                        for k, v in data.get("sources", {}).items())
    mets = ", ".join(f"{md_cell(k)} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
    size, resize = preprocessing["image_size"], preprocessing["resize_to"]
    header = "library_name: transformers\n" if hugging_face else ""
    if hugging_face:
        load = """```python
from transformers import pipeline
clf = pipeline("image-classification", model="path/to/this/folder")
clf("photo.jpg")  # [{"label": ..., "score": ...}, ...]
```"""
    else:
        load = """This is not a transformers model: `config.json` names a Workbench architecture. Rebuild it with
Workbench's loader (weights from `model.safetensors`, labels from `config.json`):

```python
from workbench.core.tasks.image.models import classify_images, load_image_classifier
classify_images("path/to/this/folder", ["photo.jpg"])  # [[{"label": ..., "score": ...}, ...]]
model, config = load_image_classifier("path/to/this/folder")  # a torch.nn.Module in eval mode
```"""
    return f"""---
{header}pipeline_tag: image-classification
base_model: {json.dumps(one_line(backbone), ensure_ascii=False)}
tags:
- workbench
- image-classification
---

# {task_title} model trained with Workbench

{'Head trained on the frozen' if frozen else 'Fine-tuned from'} {md_code(backbone)}.

## Data
{sources}

Labels: {', '.join(md_code(str(l)) for l in data.get('labels', []))}.

## Preprocessing
Shorter side resized to {resize} pixels (bicubic), centre crop of {size}x{size}, RGB scaled to [0, 1], then
normalised with mean {preprocessing['mean']} and std {preprocessing['std']}. `preprocessor_config.json` is a
transformers `BitImageProcessor` doing exactly this. Training used random resized crops and horizontal flips.

## Hyper-parameters
| setting | value |
|---|---|
{rows}

## Results on the {md_cell(eval_split)} split
{mets}

{md_fence(report_table)}

## Use
{use or _classifier_use(load, size)}
"""


def _classifier_use(load: str, size: int) -> str:
    return f"""{load}

### ONNX
`model.onnx` takes `pixel_values` (N, 3, {size}, {size}) float32, preprocessed as above, and returns `logits`
(N, classes). `onnx_check.json` records how often ONNX Runtime and PyTorch agreed on the top class.

```python
import numpy as np, onnxruntime as ort
from transformers import AutoImageProcessor
pixels = AutoImageProcessor.from_pretrained("path/to/this/folder")(images, return_tensors="np")["pixel_values"]
logits = ort.InferenceSession("path/to/this/folder/model.onnx").run(None, {{"pixel_values": pixels.astype(np.float32)}})[0]
```"""
