"""Multi-label text classification: one text column and a label column of separated lists
("billing|bug"; separator |, , or ; detected, or --label-separator), or one 0/1 column per label
(--label-columns); sigmoid outputs, binary cross-entropy, a threshold per label."""

from __future__ import annotations

import json
from pathlib import Path

from ...cancel import NEVER
from ...config import DataConfig
from ...data import choose_columns, read_table, validate_classification
from ...data.prepare import eval_split_of, hold_out, matching_column, sample_train
from ...data.sniffing import CLASS_NAMES, norm_name, sample_table
from ...data.tabular import arrow_table
from ...errors import InputError
from ...events import PhaseChanged
from ...labels import LabelMap
from ..base import EncodedSplit, PreparedData, table_format, table_preview
from ..table import TASKS
from ..text_classification import TokenizedText, _progress
from ..tokenize import tokenize_columns
from .data import (
    LabelSource,
    build_label_sets,
    list_source,
    matching_source,
    one_hot_source,
    refuse_malformed,
    train_label_map,
    with_label_sets,
)
from .labels import detect_separator, multi_hot
from .outputs import MultiLabelOutputs

SNIFF_SCORE = 0.85  # above a plain label column (0.5) and a score column (0.7): lists are unmistakable
LIST_NAMES = CLASS_NAMES | {"tags", "classes", "categories", "topics", "genres"}  # columns that hold label lists


class TextMultiLabel(MultiLabelOutputs, TokenizedText):
    spec = TASKS["text-multilabel"]

    @classmethod
    def sniff(cls, path: Path) -> float:
        """A column of separated label lists beside the texts (not the longest column: that is the text)."""
        sample = sample_table(path)
        if sample is None or sample.width < 2:
            return 0.0
        columns = list(range(sample.width))
        longest = max(columns, key=lambda j: sum(len(v) for v in sample.column(j)))
        named = [j for j in columns if sample.header and norm_name(sample.header[j]) in LIST_NAMES]
        candidates = [j for j in (named or columns) if j != longest]
        return SNIFF_SCORE if any(detect_separator(sample.column(j)) for j in candidates) else 0.0

    @classmethod
    def sniff_settings(cls, data: DataConfig) -> float:
        """0/1 label columns or a label separator are asked for only of multi-label data."""
        return 1.0 if data.label_columns or data.label_separator else 0.0

    # ---- data -----------------------------------------------------------------------------------
    def _read(self, path: str, cfg: DataConfig, cache_dir: Path, callbacks, cancel, like=None):
        """(table, text column, label source, dataset) of one file; ``like`` = (training table, its text
        column, its label source) for a validation or test file, which follows the training file."""
        callbacks.on_event(PhaseChanged("reading", str(path)))
        table = read_table(path, delimiter=cfg.delimiter, has_header=cfg.has_header, cache_dir=cache_dir,
                           progress=_progress(callbacks, "reading"), cancel=cancel)
        if like is None:
            self._preview = table_preview(table)  # before any check can refuse the file
            self._preview.counts_title = "Labels"
            text, source = self._columns(table, cfg)
        else:
            train_table, train_text, train_source = like
            text = matching_column(table, train_table, train_text)
            source = matching_source(table, train_table, train_source)
        return table, text, source, build_label_sets(table, text, source, cancel=cancel)

    def _columns(self, table, cfg: DataConfig) -> tuple[str, LabelSource]:
        """The text column and where the labels are: --label-columns, else one column of lists."""
        if cfg.label_columns:
            source = one_hot_source(table, list(cfg.label_columns))
            other = next((c for c in source.columns if c != cfg.text_column), None)  # the choice's label column
            text = choose_columns(table, cfg.text_column, other).text
            if text in source.columns:
                raise InputError(f"the text column '{text}' is also one of --label-columns; choose the text column "
                                 "with --text-column", path=table.path)
            return text, source
        choice = choose_columns(table, cfg.text_column, cfg.label_column)
        return choice.text, list_source(table, choice.label, cfg.label_separator)

    def prepare_data(self, cfg, seed, cache_dir, callbacks, cancel=NEVER) -> PreparedData:
        train_table, text, source, train = self._read(cfg.train, cfg, cache_dir / "train", callbacks, cancel)
        splits, sources = {"train": train}, {"train": str(train_table.path)}
        malformed, warnings = {"train": train_table.malformed}, list(train_table.warnings)
        for name, path in (("validation", cfg.val), ("test", cfg.test)):
            if path:
                t, _, _, ds = self._read(path, cfg, cache_dir / name, callbacks, cancel, like=(train_table, text, source))
                splits[name], sources[name], malformed[name] = ds, str(t.path), t.malformed
                warnings += t.warnings
        callbacks.on_event(PhaseChanged("validating"))
        sample_train(splits, cfg, seed, stratify=False)  # label sets do not stratify: random parts
        hold_out(splits, sources, cfg, seed, stratify=False)
        report = validate_classification({k: (splits[k], sources[k], malformed.get(k, [])) for k in splits},
                                         cancel=cancel)
        report = with_label_sets(report, splits, sources)
        if report.errors:
            raise InputError(report.error_message())
        refuse_malformed(malformed, sources, cfg)
        label_map = train_label_map(splits["train"])
        self.label_map: LabelMap = label_map
        self.set_labels(label_map.names, source.separator)
        resolved = {"text_column": text, **source.resolved(), **table_format(train_table), "sources": sources,
                    "rows": {k: len(v) for k, v in splits.items()}, "labels": label_map.names, "warnings": warnings}
        return PreparedData(splits=splits, label_map=label_map, report=report, resolved=resolved,
                            eval_split=eval_split_of(splits))

    def describe_data(self, data: PreparedData) -> str:
        sep = data.resolved.get("label_separator")
        columns = data.resolved.get("label_columns")
        where = f"0/1 columns {', '.join(columns)}" if columns else f"lists separated by '{sep}'"
        return f"{len(data.require_label_map())} labels ({where})"

    def encode(self, name, rows, tokenizer, max_length, cache_dir, callbacks, cancel=NEVER) -> EncodedSplit:
        callbacks.on_event(PhaseChanged("tokenizing", name))
        inputs, lengths = tokenize_columns(arrow_table(rows, ["text"]).column("text"), tokenizer, max_length,
                                           cache_dir / f"{name}-tokens.arrow", callbacks, cancel)
        labels = multi_hot(arrow_table(rows, ["labels"]).column("labels").to_pylist(), self.label_names)
        return EncodedSplit(name, rows, inputs, labels, lengths, truncated=int((lengths >= max_length).sum()))

    # ---- model ----------------------------------------------------------------------------------
    def build_model(self, backbone_path: str, data: PreparedData):
        from transformers import AutoModelForSequenceClassification

        label_map = data.require_label_map()
        return AutoModelForSequenceClassification.from_pretrained(
            backbone_path, num_labels=len(label_map.names), id2label=label_map.id2label,
            label2id=label_map.label2id, problem_type="multi_label_classification",
            ignore_mismatched_sizes=True)  # a backbone that already has a different head

    # ---- predictions ----------------------------------------------------------------------------
    def write_predictions(self, path: Path, logits, split, data) -> None:
        row_ids = arrow_table(split.rows, ["row"]).column("row").to_numpy()
        texts = arrow_table(split.rows, ["text"]).column("text")
        with open(path, "w", encoding="utf-8") as f:
            for start in range(0, len(row_ids), 5000):
                end = min(start + 5000, len(row_ids))
                scored = self.scored_rows(logits[start:end], split.labels[start:end])
                for j, (text, fields) in enumerate(zip(texts.slice(start, end - start).to_pylist(), scored)):
                    f.write(json.dumps({"row": int(row_ids[start + j]), "text": text, **fields},
                                       ensure_ascii=False) + "\n")

