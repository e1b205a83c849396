"""Text classification: one text column, one label column, one label per row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from ..cancel import NEVER
from ..config import DataConfig
from ..data import build_label_map, build_labeled, choose_columns, read_table, validate_classification
from ..data.prepare import eval_split_of, hold_out, keep_known_labels, matching_column, sample_train
from ..data.tabular import arrow_table
from ..data.validation import SEVERITY_ORDER
from ..errors import InputError
from ..events import Callbacks, PhaseChanged, Progress
from .base import EncodedSplit, EvalResult, PreparedData, Task, table_format, table_preview
from .scoring import classification_result, classification_text, scored_row, softmax
from .table import TASKS
from .tokenize import tokenize_columns


def _progress(callbacks: Callbacks, phase: str):
    return lambda done, total: callbacks.on_event(Progress(phase, done, total))


class TokenizedText(Task):
    """A task whose rows are one text (or a pair) tokenized into input ids: its tokenizer and padded
    batches (classification, sentence pairs, regression)."""

    pad_id = 0

    def load_preprocessor(self, backbone_path: str):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(backbone_path)
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        return tok

    def make_batch(self, split: EncodedSplit, rows: np.ndarray) -> dict[str, np.ndarray]:
        width = int(split.lengths[rows].max())
        ids = split.inputs["input_ids"].pad(rows, self.pad_id, width)
        batch = {"input_ids": ids, "attention_mask": (np.arange(width)[None, :] < split.lengths[rows][:, None]).astype(np.int64)}
        if "token_type_ids" in split.inputs:
            batch["token_type_ids"] = split.inputs["token_type_ids"].pad(rows, 0, width)
        batch["labels"] = split.labels[rows]
        return batch


class TextClassification(TokenizedText):
    spec = TASKS["text-classification"]
    data_view_column_choice = True

    # ---- data -----------------------------------------------------------------------------------
    def _read(self, path: str, cfg: DataConfig, cache_dir: Path, callbacks, cancel, like=None):
        """(table, columns, dataset of row/text/label) for one file; ``like`` = (training table, its
        columns) for a validation or test file, which then follows the training file's columns."""
        table = self._read_table(path, cfg, cache_dir, callbacks, cancel, first=like is None)
        if like is None:
            choice = choose_columns(table, cfg.text_column, cfg.label_column)
        else:
            train_table, train_choice = like
            choice = choose_columns(table, matching_column(table, train_table, train_choice.text),
                                    matching_column(table, train_table, train_choice.label))
        return table, choice, build_labeled(table, choice, cancel=cancel)

    def _read_table(self, path, cfg: DataConfig, cache_dir: Path, callbacks, cancel, first: bool):
        callbacks.on_event(PhaseChanged("reading", str(path)))
        table = read_table(path, delimiter=cfg.delimiter, has_header=cfg.has_header, cache_dir=cache_dir,
                           progress=_progress(callbacks, "reading"), cancel=cancel)
        if first:
            self._preview = table_preview(table)  # before any check can refuse the file
        return table

    def prepare_data(self, cfg, seed, cache_dir, callbacks, cancel=NEVER) -> PreparedData:
        train_table, cols, train = self._read(cfg.train, cfg, cache_dir / "train", callbacks, cancel)
        self.columns = cols
        splits = {"train": train}
        sources = {"train": str(train_table.path)}
        malformed = {"train": train_table.malformed}
        warnings = list(train_table.warnings)
        for name, path in (("validation", cfg.val), ("test", cfg.test)):
            if path:
                t, _, ds = self._read(path, cfg, cache_dir / name, callbacks, cancel, like=(train_table, cols))
                splits[name], sources[name], malformed[name] = ds, str(t.path), t.malformed
                warnings += t.warnings

        callbacks.on_event(PhaseChanged("validating"))
        sample_train(splits, cfg, seed, stratify=True)
        hold_out(splits, sources, cfg, seed, stratify=True)
        report = validate_classification(
            {k: (self._validation_view(splits[k]), sources[k], malformed.get(k, [])) for k in splits}, cancel=cancel
        )
        report.findings += [f for k in splits for f in self._text_findings(splits[k], sources[k], k)]
        report.findings.sort(key=lambda f: SEVERITY_ORDER.get(f.severity, 3))
        if report.errors:
            raise InputError(report.error_message())
        bad = [(sources[k], p) for k in malformed for p in malformed[k]]
        if bad and not cfg.skip_bad_rows:
            path, first = bad[0]
            lines = ", ".join(str(p.line) for _, p in bad[:10])
            raise InputError(
                f"{len(bad)} malformed row(s) ({first.problem} at line {first.line}; lines {lines}"
                f"{', ...' if len(bad) > 10 else ''}). Fix the file, or pass --skip-bad-rows to train without them.",
                path=path,
                line=first.line,
            )

        label_map = build_label_map(pc.unique(arrow_table(splits["train"], ["label"]).column("label")).to_pylist())
        keep_known_labels(splits, sources, label_map)
        resolved = {
            "text_column": cols.text,
            **({"text_pair_column": cols.pair} if getattr(cols, "pair", None) else {}),
            "label_column": cols.label,
            **table_format(train_table),
            "sources": sources,
            "rows": {k: len(v) for k, v in splits.items()},
            "labels": label_map.names,
            "warnings": warnings,
        }
        self.label_map = label_map
        return PreparedData(splits=splits, label_map=label_map, report=report, resolved=resolved,
                            eval_split=eval_split_of(splits))

    def _text_findings(self, ds, path: str, split: str) -> list:
        """Checks of the texts themselves that the per-row checks cannot make (pairs: each text alone)."""
        return []

    def _validation_view(self, ds):
        """The (row, text, label) rows the data checks look at; a subclass with more inputs joins them."""
        return ds

    @classmethod
    def sniff(cls, path: Path) -> float:
        return 0.5 if path.is_file() and path.suffix.lower() in (".tsv", ".csv", ".txt", ".tab") else 0.1

    def encode(self, name, rows, tokenizer, max_length, cache_dir, callbacks, cancel=NEVER) -> EncodedSplit:
        callbacks.on_event(PhaseChanged("tokenizing", name))
        inputs, lengths = tokenize_columns(
            arrow_table(rows, ["text"]).column("text"), tokenizer, max_length, cache_dir / f"{name}-tokens.arrow", callbacks, cancel
        )
        labels = self._labels(rows)
        return EncodedSplit(name, rows, inputs, labels, lengths, truncated=int((lengths >= max_length).sum()))

    def _labels(self, rows) -> np.ndarray:
        return self.label_map.encode(arrow_table(rows, ["label"]).column("label").to_numpy(zero_copy_only=False))

    # ---- model ----------------------------------------------------------------------------------
    def build_model(self, backbone_path: str, data: PreparedData):
        from transformers import AutoModelForSequenceClassification

        label_map = data.require_label_map()
        return AutoModelForSequenceClassification.from_pretrained(
            backbone_path,
            num_labels=len(label_map.names),
            id2label=label_map.id2label,
            label2id=label_map.label2id,
            ignore_mismatched_sizes=True,  # a backbone that already has a different head
        )

    def loss(self, logits, labels):
        import torch.nn.functional as F

        return F.cross_entropy(logits.float(), labels)

    # ---- evaluation -----------------------------------------------------------------------------
    def evaluate(self, logits, split, loss, data) -> EvalResult:
        return classification_result(split.labels, logits.argmax(-1), data.label_map.names, loss)

    def write_predictions(self, path: Path, logits, split, data) -> None:
        names = data.label_map.names
        probs = softmax(logits)
        row_ids = arrow_table(split.rows, ["row"]).column("row").to_numpy()
        texts = arrow_table(split.rows, ["text"]).column("text")
        # Sentence pairs carry a second text; predictions show both.
        seconds = arrow_table(split.rows, ["text_pair"]).column("text_pair") if "text_pair" in split.rows.column_names else None
        with open(path, "w", encoding="utf-8") as f:
            for start in range(0, len(probs), 5000):
                chunk = texts.slice(start, 5000).to_pylist()
                second = seconds.slice(start, 5000).to_pylist() if seconds is not None else None
                for j, text in enumerate(chunk):
                    i = start + j
                    f.write(json.dumps({
                        "row": int(row_ids[i]),
                        "text": text,
                        **({"text_pair": second[j]} if second is not None else {}),
                        **scored_row(names, split.labels[i], probs[i]),
                    }, ensure_ascii=False) + "\n")

    def report_text(self, result: EvalResult) -> str:
        return classification_text(result)
