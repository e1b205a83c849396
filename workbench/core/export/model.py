"""Export a fine-tuned model as a self-describing Hugging Face folder.

The folder holds safetensors weights, the tokenizer, a config whose id2label/label2id carry the
user's label names, and a model card. It is written beside the target and moved into place, so an
interrupted export never leaves a half-written folder under the target's name.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable

from ..atomic import replacing
from ..cancel import NEVER, CancelToken
from ..errors import InputError, write_failure
from ..escaping import md_cell, md_code, md_fence, one_line
from ..processes import pid_alive
from .target import MARKER, ExportLock, inspect_target

# Temporary folders beside a target: ".NAME.writing-PID-XXXX" (being written) and ".NAME.old-PID-XXXX"
# (the export being replaced, for the instant of the swap). The pid lets a later export clean up
# after a process that was killed half way.
_TEMP = re.compile(r"\.(?P<name>.+)\.(?P<kind>writing|old)-(?P<pid>\d+)-[^/]*\Z")


def sweep_stale_temporaries(parent: Path) -> None:
    """Remove the temporary folders a killed export left in ``parent``; an export that was being
    replaced when its process died is put back first."""
    try:
        entries = [p for p in parent.iterdir() if p.name.startswith(".") and p.is_dir()]
    except OSError:
        return
    for p in entries:
        m = _TEMP.match(p.name)
        if not m or pid_alive(int(m["pid"])):
            continue
        if m["kind"] == "old":
            kept, target = p / "x", parent / m["name"]
            if kept.is_dir() and not target.exists():
                try:
                    os.replace(kept, target)
                except OSError:
                    continue  # leave it for the user rather than lose it
        shutil.rmtree(p, ignore_errors=True)


def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _normal_permissions(folder: Path) -> None:
    """mkdtemp makes 0700 folders (and some writers 0600 files); an export is an ordinary folder."""
    mask = _umask()
    os.chmod(folder, 0o777 & ~mask)
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o777 & ~mask)
        for f in files:
            os.chmod(os.path.join(root, f), 0o666 & ~mask)


def _atomic_folder(target: Path, write: Callable[[Path], object], cancel: CancelToken = NEVER) -> Path:
    """Write a folder with ``write`` beside ``target``, then move it into place (replacing what is
    there, which the caller has checked may be replaced). Never a moment with a partial folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temporaries(target.parent)
    try:
        with replacing(target, folder=True) as tmp:
            write(tmp)
            _normal_permissions(tmp)
            cancel.raise_if_cancelled()  # Ctrl+C during the export: nothing replaced, nothing left behind
    except BaseException as e:
        failure = write_failure(e, target, permission_too=True)
        if failure is not None:
            raise failure from e
        raise
    return target


def _drop_auto_map(folder: Path) -> None:
    """The source model's ``auto_map`` points at Python files the export does not ship; loaders
    would look for them (or ask to trust remote code). The weights load with the standard classes."""
    for name in ("config.json", "tokenizer_config.json", "preprocessor_config.json"):
        path = folder / name
        if not path.is_file():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "auto_map" in data:
            del data["auto_map"]
            path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def export_model(task, model, preprocessor, target: str | Path, card: str, meta: dict[str, Any], max_length: int,
                 cancel: CancelToken = NEVER, onnx: Callable[[Path], Any] | None = None,
                 extra: Callable[[Path], None] | None = None) -> Path:
    """Write the model folder a run keeps (RUN/model). ``workbench.json`` lists the files, so a later
    export into the same place knows exactly what it may replace. ``onnx(folder)`` adds the ONNX
    files (see ``onnx_export.export_with_onnx``) once the PyTorch model is written; ``extra(folder)``
    adds files of its own (a LoRA run's adapter)."""
    def write(folder: Path) -> None:
        task.save_model(model, preprocessor, folder, max_length)
        if extra is not None:
            extra(folder)
        _drop_auto_map(folder)
        if onnx is not None:
            onnx(folder)
        (folder / "README.md").write_text(card, encoding="utf-8")
        files = sorted(p.name for p in folder.iterdir()) + [MARKER]
        (folder / MARKER).write_text(json.dumps({**meta, "files": sorted(set(files))}, indent=2, ensure_ascii=False),
                                     encoding="utf-8")

    return _atomic_folder(Path(target).expanduser().resolve(), write, cancel)


def copy_export(source: Path, target: str | Path, *, overwrite: bool = False,
                data_paths: Iterable[str | Path | None] = (), run_dir: str | Path | None = None,
                cancel: CancelToken = NEVER, lock: ExportLock | None = None) -> Path:
    """A copy of an already written export (RUN/model to --export DIR, or the app's Export page).

    The target is checked again here (it may have changed since the run started) and locked for the
    copy unless the caller holds the lock already."""
    check = inspect_target(target, overwrite=overwrite, data_paths=data_paths, run_dir=run_dir)
    if check.problem:
        raise InputError(f"export target {check.problem}", path=check.path)
    own_lock = None
    if lock is None or not lock.held:
        own_lock = lock = ExportLock(check.path).acquire()
    try:
        return _atomic_folder(check.path, lambda folder: shutil.copytree(source, folder, dirs_exist_ok=True), cancel)
    finally:
        if own_lock is not None:
            own_lock.release()


def _columns_line(data: dict[str, Any]) -> str:
    """Which parts of the data the model learnt from, for whichever task made it."""
    parts = []
    if data.get("text_column") is not None:
        parts.append(f"Text column {md_code(data['text_column'])}")
    if data.get("text_pair_column"):
        parts.append(f"second text column {md_code(data['text_pair_column'])} (pairs encoded together)")
    if data.get("label_column") is not None:
        parts.append(f"label column {md_code(data['label_column'])}")
    if data.get("format"):
        parts.append(f"{md_cell(data['format'].upper())} file, tag column {md_code(str(data.get('tag_column')))}, "
                     f"tag scheme {md_cell(str(data.get('tag_scheme')))}")
    line = (", ".join(parts) + ".") if parts else ""
    if data.get("labels"):
        line += f"\nLabels: {', '.join(md_code(str(l)) for l in data['labels'])}."
    if data.get("target"):
        t = data["target"]
        line += f"\nTarget: mean {t['mean']:.4g}, std {t['std']:.4g}, range {t['min']:.4g} to {t['max']:.4g}."
    return line


def model_card(*, task_title: str, pipeline_tag: str, backbone: str, data: dict[str, Any], hyper: dict[str, Any],
               metrics: dict[str, float], report_table: str, eval_split: str, usage: str | None = None) -> str:
    """The export's README.md. ``usage``: how to call the model (a task's own words; default: a
    `transformers.pipeline` call for one text or a pair of texts)."""
    rows = "\n".join(f"| {md_cell(str(k))} | {md_cell(str(v))} |" for k, v in hyper.items())
    sources = "\n".join(f"- {md_cell(k)}: {md_code(str(v))} ({data.get('rows', {}).get(k, '?')} rows)"
                        for k, v in data.get("sources", {}).items())
    mets = ", ".join(f"{md_cell(k)} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
    # JSON strings are valid YAML scalars: a backbone name with a colon or a quote stays one value.
    return f"""---
library_name: transformers
pipeline_tag: {pipeline_tag}
base_model: {json.dumps(one_line(backbone), ensure_ascii=False)}
tags:
- workbench
---

# {task_title} model fine-tuned with Workbench

Fine-tuned from {md_code(backbone)}.

## Data
{sources}

{_columns_line(data)}

## Hyper-parameters
| setting | value |
|---|---|
{rows}

## Results on the {md_cell(eval_split)} split
{mets}

{md_fence(report_table)}

## Use
{usage or _usage(pipeline_tag, data)}
"""


def _usage(pipeline_tag: str, data: dict[str, Any]) -> str:
    """How to call an exported text model with `transformers.pipeline` (one text, or a pair)."""
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
