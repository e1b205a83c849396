"""The parts of an image-model export that text models do not have: the ONNX file, its check with
ONNX Runtime against PyTorch, and the model card that says how to load what was written."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .escaping import md_cell, md_code, md_fence, one_line


def export_onnx(model, path: Path, image_size: int) -> Path:
    """Write ``model`` as ONNX: input ``pixel_values`` (N, 3, size, size) float32, output ``logits``;
    the batch dimension is dynamic."""
    import torch

    class LogitsOnly(torch.nn.Module):
        # Hugging Face models return an output object; ONNX wants plain tensors.
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, pixel_values):
            out = self.inner(pixel_values=pixel_values)
            return out.logits if hasattr(out, "logits") else out

    wrapped = LogitsOnly(model).eval()
    example = torch.zeros(1, 3, image_size, image_size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer notes about Python ints in shape arithmetic
        # The TorchScript exporter: the dynamo one needs onnxscript and gains nothing for CNNs.
        torch.onnx.export(wrapped, (example,), str(path), dynamo=False, input_names=["pixel_values"],
                          output_names=["logits"], dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=17)
    return path


def check_onnx(path: Path, model, batches: Iterable[np.ndarray]) -> dict[str, Any]:
    """Run the ONNX file with ONNX Runtime and the PyTorch model on the same pixels; compare top-1."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    n = agree = 0
    max_diff = 0.0
    model.eval()
    with torch.inference_mode():
        for pixels in batches:
            ours = model(pixel_values=torch.from_numpy(pixels))
            ours = (ours.logits if hasattr(ours, "logits") else ours).float().numpy()
            theirs = session.run(["logits"], {"pixel_values": pixels})[0]
            n += len(pixels)
            agree += int((ours.argmax(-1) == theirs.argmax(-1)).sum())
            max_diff = max(max_diff, float(np.abs(ours - theirs).max()))
    return {"images": n, "top1_agreement": agree / n if n else 1.0, "max_abs_diff": max_diff,
            "onnxruntime": ort.__version__}


def image_model_card(*, task_title: str, backbone: str, data: dict[str, Any], hyper: dict[str, Any],
                     metrics: dict[str, float], report_table: str, eval_split: str, preprocessing: dict[str, Any],
                     hugging_face: bool, frozen: bool) -> str:
    rows = "\n".join(f"| {md_cell(str(k))} | {md_cell(str(v))} |" for k, v in hyper.items())
    sources = "\n".join(f"- {md_cell(k)}: {md_code(str(v))} ({data.get('rows', {}).get(k, '?')} images)"
                        for k, v in data.get("sources", {}).items())
    mets = ", ".join(f"{md_cell(k)} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
    size, resize = preprocessing["image_size"], preprocessing["resize_to"]
    header = "library_name: transformers\n" if hugging_face else ""
    if hugging_face:
        use = """```python
from transformers import pipeline
clf = pipeline("image-classification", model="path/to/this/folder")
clf("photo.jpg")  # [{"label": ..., "score": ...}, ...]
```"""
    else:
        use = """This is not a transformers model: `config.json` names a Workbench architecture. Rebuild it with
Workbench's loader (weights from `model.safetensors`, labels from `config.json`):

```python
from workbench.core.image_models import classify_images, load_image_classifier
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
{use}

### ONNX
`model.onnx` takes `pixel_values` (N, 3, {size}, {size}) float32, preprocessed as above, and returns `logits`
(N, classes). `onnx_check.json` records how often ONNX Runtime and PyTorch agreed on the top class.

```python
import numpy as np, onnxruntime as ort
from transformers import AutoImageProcessor
pixels = AutoImageProcessor.from_pretrained("path/to/this/folder")(images, return_tensors="np")["pixel_values"]
logits = ort.InferenceSession("path/to/this/folder/model.onnx").run(None, {{"pixel_values": pixels.astype(np.float32)}})[0]
```
"""
