"""Text classification: one text column, one label column, one label per row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from ..cancel import NEVER, CancelToken
from ..config import DataConfig
from ..data.tabular import arrow_table
from ..data import (
    build_label_map,
    build_labeled,
    choose_columns,
    read_table,
    stratified_split,
    validate_classification,
)
from ..data.validation import SEVERITY_ORDER
from ..errors import InputError
from ..events import Callbacks, PhaseChanged, Progress
from ..labels import LabelMap
from .base import EncodedSplit, EvalResult, PreparedData, Task
from .reporting import per_class_table
from .tokenize import tokenize_columns


def _progress(callbacks: Callbacks, phase: str):
    return lambda done, total: callbacks.on_event(Progress(phase, done, total))


class TextClassification(Task):
    name = "text-classification"
    title = "Text classification"
    pipeline_tag = "text-classification"

    # ---- data -----------------------------------------------------------------------------------
    def _read(self, path: str, cfg: DataConfig, cache_dir: Path, callbacks, cancel, like=None):
        callbacks.on_event(PhaseChanged("reading", str(path)))
        table = read_table(
            path,
            delimiter=cfg.delimiter,
            has_header=cfg.has_header,
            cache_dir=cache_dir,
            progress=_progress(callbacks, "reading"),
            cancel=cancel,
        )
        if like is None:
            choice = choose_columns(table, cfg.text_column, cfg.label_column)
        else:
            # Validation and test files follow the training file's columns: by name when both have
            # a header with those names, else by position.
            train_table, train_choice = like
            def same(col):
                if table.format.has_header and col in table.columns:
                    return col
                return train_table.columns.index(col)
            choice = choose_columns(table, same(train_choice.text), same(train_choice.label))
        return table, choice, build_labeled(table, choice, cancel=cancel)

    def prepare_data(self, cfg, seed, cache_dir, callbacks, cancel=NEVER) -> PreparedData:
        train_table, choice, train = self._read(cfg.train, cfg, cache_dir / "train", callbacks, cancel)
        sources = {"train": (str(train_table.path), train_table.malformed)}
        splits = {"train": train}
        like = (train_table, choice)
        warnings = list(train_table.warnings)
        for name, path in (("validation", cfg.val), ("test", cfg.test)):
            if path:
                t, _, ds = self._read(path, cfg, cache_dir / name, callbacks, cancel, like=like)
                splits[name] = ds
                sources[name] = (str(t.path), t.malformed)
                warnings += t.warnings

        callbacks.on_event(PhaseChanged("validating"))
        if cfg.sample and cfg.sample < len(splits["train"]):
            _, splits["train"] = stratified_split(splits["train"], cfg.sample / len(splits["train"]), seed)
        # Held-out parts come out of the training file only when the user gave none.
        if "test" not in splits and "validation" not in splits and cfg.test_fraction > 0:
            splits["train"], splits["test"] = stratified_split(splits["train"], cfg.test_fraction, seed)
            sources["test"] = (sources["train"][0] + " (held out)", [])
        if "validation" not in splits and cfg.val_fraction > 0:
            splits["train"], splits["validation"] = stratified_split(splits["train"], cfg.val_fraction, seed + 1)
            sources["validation"] = (sources["train"][0] + " (held out)", [])
        report = validate_classification(
            {k: (self._validation_view(splits[k]), sources[k][0], sources[k][1]) for k in splits}, cancel=cancel
        )
        report.findings += [f for k in splits for f in self._text_findings(splits[k], sources[k][0], k)]
        report.findings.sort(key=lambda f: SEVERITY_ORDER.get(f.severity, 3))
        if report.errors:
            raise InputError(report.error_message())
        malformed = [(sources[k][0], p) for k in sources for p in sources[k][1]]
        if malformed and not cfg.skip_bad_rows:
            path, first = malformed[0]
            lines = ", ".join(str(p.line) for _, p in malformed[:10])
            raise InputError(
                f"{len(malformed)} malformed row(s) ({first.problem} at line {first.line}; lines {lines}"
                f"{', ...' if len(malformed) > 10 else ''}). Fix the file, or pass --skip-bad-rows to train without them.",
                path=path,
                line=first.line,
            )

        label_map = build_label_map(pc.unique(arrow_table(splits["train"], ["label"]).column("label")).to_pylist())
        # Rows whose label never occurs in training cannot be learned; the report names them and
        # they are left out of evaluation rather than silently counted as errors.
        for name in ("validation", "test"):
            if name in splits:
                ids = label_map.encode(arrow_table(splits[name], ["label"]).column("label").to_numpy(zero_copy_only=False))
                if (ids < 0).any():
                    splits[name] = splits[name].select(np.flatnonzero(ids >= 0))
                if len(splits[name]) == 0:
                    raise InputError(f"no {name} row has a label seen in training", path=sources[name][0])
        resolved = {
            "text_column": choice.text,
            "label_column": choice.label,
            "delimiter": train_table.format.delimiter,
            "has_header": train_table.format.has_header,
            "encoding": train_table.format.encoding,
            "sources": {k: v[0] for k, v in sources.items()},
            "rows": {k: len(v) for k, v in splits.items()},
            "labels": label_map.names,
            "warnings": warnings,
        }
        self.label_map = label_map
        return PreparedData(
            splits=splits,
            label_map=label_map,
            report=report,
            resolved=resolved,
            eval_split="test" if "test" in splits else "validation" if "validation" in splits else "train",
        )

    def _text_findings(self, ds, path: str, split: str) -> list:
        """Checks of the texts themselves that the per-row checks cannot make (pairs: each text alone)."""
        return []

    def _validation_view(self, ds):
        """The (row, text, label) rows the data checks look at; a subclass with more inputs joins them."""
        return ds

    @classmethod
    def sniff(cls, path: Path) -> float:
        return 0.5 if path.is_file() and path.suffix.lower() in (".tsv", ".csv", ".txt", ".tab") else 0.1

    def load_preprocessor(self, backbone_path: str):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(backbone_path)
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        return tok

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

        return AutoModelForSequenceClassification.from_pretrained(
            backbone_path,
            num_labels=len(data.label_map.names),
            id2label=data.label_map.id2label,
            label2id=data.label_map.label2id,
            ignore_mismatched_sizes=True,  # a backbone that already has a different head
        )

    def make_batch(self, split: EncodedSplit, rows: np.ndarray) -> dict[str, np.ndarray]:
        width = int(split.lengths[rows].max())
        ids = split.inputs["input_ids"].pad(rows, self.pad_id, width)
        batch = {"input_ids": ids, "attention_mask": (np.arange(width)[None, :] < split.lengths[rows][:, None]).astype(np.int64)}
        if "token_type_ids" in split.inputs:
            batch["token_type_ids"] = split.inputs["token_type_ids"].pad(rows, 0, width)
        batch["labels"] = split.labels[rows]
        return batch

    def loss(self, logits, labels):
        import torch.nn.functional as F

        return F.cross_entropy(logits.float(), labels)

    # ---- evaluation -----------------------------------------------------------------------------
    def evaluate(self, logits, split, loss, data) -> EvalResult:
        from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

        names = data.label_map.names
        gold = split.labels
        pred = logits.argmax(-1)
        ids = list(range(len(names)))
        rep = classification_report(gold, pred, labels=ids, target_names=names, output_dict=True, zero_division=0)
        metrics = {
            "accuracy": float(accuracy_score(gold, pred)),
            "macro_f1": float(f1_score(gold, pred, labels=ids, average="macro", zero_division=0)),
            "weighted_f1": float(f1_score(gold, pred, labels=ids, average="weighted", zero_division=0)),
            "macro_precision": float(rep["macro avg"]["precision"]),
            "macro_recall": float(rep["macro avg"]["recall"]),
            "loss": float(loss),
        }
        per_class = [
            {
                "label": n,
                "precision": float(rep[n]["precision"]),
                "recall": float(rep[n]["recall"]),
                "f1": float(rep[n]["f1-score"]),
                "support": int(rep[n]["support"]),
            }
            for n in names
        ]
        cm = confusion_matrix(gold, pred, labels=ids)
        return EvalResult(metrics, {"labels": names, "per_class": per_class, "confusion_matrix": cm.tolist(), "n": int(len(gold))})

    def write_predictions(self, path: Path, logits, split, data) -> None:
        names = data.label_map.names
        shifted = logits - logits.max(-1, keepdims=True)
        probs = np.exp(shifted)
        probs /= probs.sum(-1, keepdims=True)
        pred = probs.argmax(-1)
        row_ids = arrow_table(split.rows, ["row"]).column("row").to_numpy()
        texts = arrow_table(split.rows, ["text"]).column("text")
        # Sentence pairs carry a second text; predictions show both.
        seconds = arrow_table(split.rows, ["text_pair"]).column("text_pair") if "text_pair" in split.rows.column_names else None
        with open(path, "w", encoding="utf-8") as f:
            for start in range(0, len(pred), 5000):
                chunk = texts.slice(start, 5000).to_pylist()
                second = seconds.slice(start, 5000).to_pylist() if seconds is not None else None
                for j, text in enumerate(chunk):
                    i = start + j
                    f.write(json.dumps({
                        "row": int(row_ids[i]),
                        "text": text,
                        **({"text_pair": second[j]} if second is not None else {}),
                        "gold": names[split.labels[i]],
                        "predicted": names[pred[i]],
                        "confidence": round(float(probs[i, pred[i]]), 6),
                        "probabilities": {n: round(float(p), 6) for n, p in zip(names, probs[i])},
                    }, ensure_ascii=False) + "\n")

    def report_text(self, result: EvalResult) -> str:
        rep = result.report
        lines = per_class_table(rep["per_class"])
        m = result.metrics
        lines.append("")
        lines.append(f"accuracy {m['accuracy']:.4f}   macro F1 {m['macro_f1']:.4f}   weighted F1 {m['weighted_f1']:.4f}   n={rep['n']}")
        return "\n".join(lines)
