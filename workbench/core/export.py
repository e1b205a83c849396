"""Export a fine-tuned model as a self-describing Hugging Face folder.

The folder holds safetensors weights, the tokenizer, a config whose id2label/label2id carry the
user's label names, and a model card. It is written beside the target and moved into place, so an
interrupted export never leaves a half-written folder under the target's name.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .errors import InputError


def _atomic_folder(target: Path, write) -> Path:
    target = target.expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise InputError("export target exists and is not a folder", path=target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.writing-", dir=target.parent))
    try:
        write(tmp)
        if target.exists():
            # Swap: old aside, new in place, old removed. Never a moment with a partial folder.
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "x")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def export_model(task, model, preprocessor, target: str | Path, card: str, meta: dict[str, Any], max_length: int) -> Path:
    def write(folder: Path) -> None:
        task.save_model(model, preprocessor, folder, max_length)
        (folder / "README.md").write_text(card, encoding="utf-8")
        (folder / "workbench.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")

    return _atomic_folder(Path(target), write)


def copy_export(source: Path, target: str | Path) -> Path:
    """A second copy of an already written export (the run's model folder to --export DIR)."""
    return _atomic_folder(Path(target), lambda folder: shutil.copytree(source, folder, dirs_exist_ok=True))


def _columns_line(data: dict[str, Any]) -> str:
    """Which parts of the data the model learnt from, for whichever task made it."""
    parts = []
    if data.get("text_column") is not None:
        parts.append(f"Text column `{data['text_column']}`")
    if data.get("text_pair_column"):
        parts.append(f"second text column `{data['text_pair_column']}` (pairs encoded together)")
    if data.get("label_column") is not None:
        parts.append(f"label column `{data['label_column']}`")
    if data.get("format"):
        parts.append(f"{data['format'].upper()} file, tag column `{data.get('tag_column')}`, tag scheme "
                     f"{data.get('tag_scheme')}")
    line = (", ".join(parts) + ".") if parts else ""
    if data.get("labels"):
        line += f"\nLabels: {', '.join(f'`{l}`' for l in data['labels'])}."
    if data.get("target"):
        t = data["target"]
        line += f"\nTarget: mean {t['mean']:.4g}, std {t['std']:.4g}, range {t['min']:.4g} to {t['max']:.4g}."
    return line


def model_card(*, task_title: str, pipeline_tag: str, backbone: str, data: dict[str, Any], hyper: dict[str, Any],
               metrics: dict[str, float], report_table: str, eval_split: str) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in hyper.items())
    sources = "\n".join(f"- {k}: `{v}` ({data.get('rows', {}).get(k, '?')} rows)" for k, v in data.get("sources", {}).items())
    mets = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
    return f"""---
library_name: transformers
pipeline_tag: {pipeline_tag}
base_model: {backbone}
tags:
- workbench
---

# {task_title} model fine-tuned with Workbench

Fine-tuned from `{backbone}`.

## Data
{sources}

{_columns_line(data)}

## Hyper-parameters
| setting | value |
|---|---|
{rows}

## Results on the {eval_split} split
{mets}

```
{report_table}
```

## Use
{_usage(pipeline_tag, data)}
"""


def _usage(pipeline_tag: str, data: dict[str, Any]) -> str:
    """How to call the exported model with `transformers.pipeline`, for the task that made it."""
    if pipeline_tag == "token-classification":
        return """```python
from transformers import pipeline
tagger = pipeline("token-classification", model="path/to/this/folder", aggregation_strategy="simple")
tagger("John Smith lives in Berlin")  # entity groups named by your tags (IOB2 tags group cleanly)
```
Training labelled the first sub-word of each word; `aggregation_strategy="first"` reads words the same way."""
    kwargs = ', function_to_apply="none"' if data.get("target") else ""
    call = ('clf({"text": "first text", "text_pair": "second text"}, truncation=True)' if data.get("text_pair_column")
            else 'clf("some text", truncation=True)')
    note = " The output `score` is the predicted value in the training data's units." if data.get("target") else ""
    return f"""```python
from transformers import pipeline
clf = pipeline("{pipeline_tag}", model="path/to/this/folder"{kwargs})
{call}
```
The tokenizer's `model_max_length` is set to the training max length, so `truncation=True` cuts
inputs as training did.{note}"""
