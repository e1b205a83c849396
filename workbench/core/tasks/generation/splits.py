"""The conversations of a run's files as train / validation / test datasets, checked.

Each row keeps its file line, the conversation as JSON, the last user turn (``prompt``) and the
answer (``reference``: the last assistant turn), so reports and predictions name the example.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...config import DataConfig
from ...data.prepare import hold_out, sample_train
from ...data.validation import ValidationReport
from ...errors import InputError
from ..base import DataPreview, PreparedData


def _read(path: str, cfg: DataConfig, cache_dir: Path):
    from .conversations import read_conversations

    return read_conversations(Path(path), input_column=cfg.text_column, target_column=cfg.label_column,
                              delimiter=cfg.delimiter, has_header=cfg.has_header, skip_bad=cfg.skip_bad_rows,
                              cache_dir=cache_dir)


def _last(messages: list[dict[str, str]], role: str) -> str:
    return next((m["content"] for m in reversed(messages) if m.get("role") == role), "")


def to_dataset(examples) -> Any:
    """One row per example: row (position in its file), line, messages (JSON), prompt, reference."""
    import datasets

    return datasets.Dataset.from_dict({
        "row": list(range(len(examples))),
        "line": [int(e.line) for e in examples],
        "messages": [json.dumps(e.messages, ensure_ascii=False) for e in examples],
        "prompt": [_last(e.messages, "user") for e in examples],
        "reference": [_last(e.messages, "assistant") for e in examples],
    })


def examples_of(ds) -> list:
    """The Example records of a dataset made by ``to_dataset`` (after hold-out and sampling)."""
    from .conversations import Example

    return [Example(messages=json.loads(m), line=int(line)) for m, line in zip(ds["messages"], ds["line"])]


def conversation_splits(cfg: DataConfig, seed: int, cache_dir: Path) -> PreparedData:
    """The run's splits: the training file, --val and --test files where given, else held-out parts."""
    from .conversations import conversation_findings

    read = _read(cfg.train, cfg, cache_dir / "train")
    if not read.examples:
        raise InputError("holds no conversation to train on", path=cfg.train)
    splits: dict[str, Any] = {"train": to_dataset(read.examples)}
    sources: dict[str, str] = {"train": str(cfg.train)}
    warnings = list(read.warnings)
    for name, path in (("validation", cfg.val), ("test", cfg.test)):
        if path:
            other = _read(path, cfg, cache_dir / name)
            if not other.examples:
                raise InputError(f"holds no conversation for the {name} split", path=path)
            splits[name], sources[name] = to_dataset(other.examples), str(path)
            warnings += other.warnings
    sample_train(splits, cfg, seed, stratify=False)
    hold_out(splits, sources, cfg, seed, stratify=False)
    findings = conversation_findings({k: examples_of(v) for k, v in splits.items()},
                                     {k: sources.get(k) for k in splits})
    report = ValidationReport(findings=findings, class_counts={}, n_rows={k: len(v) for k, v in splits.items()},
                              paths=dict(sources))
    if report.errors:
        raise InputError(report.error_message())
    eval_split = "test" if "test" in splits else "validation" if "validation" in splits else "train"
    resolved = {
        "format": read.format, "format_title": read.format_title, "sources": sources,
        "rows": {k: len(v) for k, v in splits.items()}, "warnings": warnings,
        "examples": len(read.examples), "turns": sum(len(e.messages) for e in read.examples),
        "text_column": cfg.text_column, "label_column": cfg.label_column,
        "_preview": _preview(Path(cfg.train), read),
    }
    return PreparedData(splits=splits, label_map=None, report=report, resolved=resolved, eval_split=eval_split)


def _preview(path: Path, read) -> DataPreview:
    """The Data page's table: one row per example (its last user turn and answer, the turns it has)."""
    import pyarrow as pa

    from ...data.tabular import LINE_COLUMN

    shown = read.examples[:100_000]
    rows = pa.table({
        "prompt": [_last(e.messages, "user") for e in shown],
        "answer": [_last(e.messages, "assistant") for e in shown],
        "turns": [len(e.messages) for e in shown],
        LINE_COLUMN: [int(e.line) for e in shown],
    })
    return DataPreview(path, rows, ["prompt", "answer", "turns"], len(read.examples), unit="examples",
                       description=f"{len(read.examples):,} examples, {read.format_title}",
                       counts_title="Examples")
