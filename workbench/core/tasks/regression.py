"""Text regression: predict a number (a rating, a similarity score) from a text or a pair of texts.

The model is a sequence-classification head with one output (``problem_type="regression"``). It
trains on standardised targets, (y - mean) / std with the training set's mean and std, so the
learning rate that suits classification suits any target scale; the export folds that scaling back
into the head's last linear layer, so the saved model (and `pipeline("text-classification",
function_to_apply="none")`) outputs numbers in the user's own units.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from ..cancel import NEVER
from ..data import read_table
from ..data.pairs import build_text_dataset
from ..data.prepare import eval_split_of, hold_out, sample_train
from ..data.sniffing import score_column
from ..data.tabular import arrow_table
from ..data.validation import Finding, ValidationReport, blank_pair_findings, hash_strings
from ..errors import InputError
from ..events import PhaseChanged
from .base import EncodedSplit, EvalResult, PreparedData, table_format, table_preview
from .table import TASKS
from .text_classification import TokenizedText, _progress
from .text_pair import text_columns, wide_sample
from .tokenize import tokenize_columns

MAX_LINES = 50


class TextRegression(TokenizedText):
    spec = TASKS["text-regression"]

    @classmethod
    def sniff(cls, path: Path) -> float:
        sample = wide_sample(path, 2)
        return 0.7 if sample is not None and score_column(sample) is not None else 0.0

    # ---- data -----------------------------------------------------------------------------------
    def _read(self, path, cfg, cache_dir, callbacks, cancel, like=None):
        callbacks.on_event(PhaseChanged("reading", str(path)))
        table = read_table(path, delimiter=cfg.delimiter, has_header=cfg.has_header, cache_dir=cache_dir,
                           progress=_progress(callbacks, "reading"), cancel=cancel)
        if like is None:
            self._preview = table_preview(table)  # before any check can refuse the file
        cols = text_columns(table, cfg, like, pair_required=False, numeric_label=True)
        ds, problems = build_text_dataset(table, cols, numeric=True, skip_bad=cfg.skip_bad_rows, cancel=cancel)
        return table, cols, ds, problems

    def prepare_data(self, cfg, seed, cache_dir, callbacks, cancel=NEVER) -> PreparedData:
        train_table, cols, train, bad = self._read(cfg.train, cfg, cache_dir / "train", callbacks, cancel)
        self.columns = cols
        splits = {"train": train}
        sources = {"train": str(train_table.path)}
        problems = {"train": list(train_table.malformed) + bad}
        warnings = list(train_table.warnings)
        for name, path in (("validation", cfg.val), ("test", cfg.test)):
            if path:
                t, _, ds, bad = self._read(path, cfg, cache_dir / name, callbacks, cancel, like=(train_table, cols))
                splits[name], sources[name], problems[name] = ds, str(t.path), list(t.malformed) + bad
                warnings += t.warnings

        callbacks.on_event(PhaseChanged("validating"))
        malformed = [(sources[k], p) for k in problems for p in problems[k] if "fields" in p.problem]
        if malformed and not cfg.skip_bad_rows:
            path, first = malformed[0]
            raise InputError(f"{len(malformed)} malformed row(s) ({first.problem}); fix the file, or pass "
                             "--skip-bad-rows to train without them", path=path, line=first.line)
        sample_train(splits, cfg, seed, stratify=False)
        hold_out(splits, sources, cfg, seed, stratify=False)

        report = self._validate(splits, sources, problems, cancel)
        if report.errors:
            raise InputError(report.error_message())
        y = arrow_table(splits["train"], ["label"]).column("label").to_numpy()
        self.mean, self.std = float(y.mean()), float(y.std()) or 1.0
        resolved = {
            "text_column": cols.text,
            "text_pair_column": cols.pair,
            "label_column": cols.label,
            **table_format(train_table),
            "sources": sources,
            "rows": {k: len(v) for k, v in splits.items()},
            "target": {"mean": self.mean, "std": self.std, "min": float(y.min()), "max": float(y.max())},
            "warnings": warnings,
        }
        return PreparedData(splits=splits, label_map=None, report=report, resolved=resolved,
                            eval_split=eval_split_of(splits))

    def _validate(self, splits, sources, problems, cancel) -> ValidationReport:
        findings: list[Finding] = []
        hashes = {}
        for name, ds in splits.items():
            cancel.raise_if_cancelled()
            path = sources[name]
            t = arrow_table(ds, ["row", "text", "label"] + (["text_pair"] if self.columns.pair else []))
            rows = t.column("row").to_numpy()
            text = t.column("text")
            if self.columns.pair:
                text = pc.binary_join_element_wise(text, t.column("text_pair"), "\x1f")
            if len(rows) == 0:
                findings.append(Finding("error", "no_rows", f"{path}: has no rows to use", [], 0, path, name))
                continue
            skipped = [p for p in problems.get(name, []) if "fields" not in p.problem]
            if skipped:
                findings.append(Finding("warning", "bad_labels",
                                        f"{path}: {len(skipped):,} row(s) without a numeric label were left out "
                                        f"(line {skipped[0].line}: {skipped[0].problem})",
                                        [p.line for p in skipped[:MAX_LINES]], len(skipped), path, name))
            if self.columns.pair:
                findings += blank_pair_findings(ds, path, name, (self.columns.text, self.columns.pair))
            blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(t.column("text"))), 0).to_numpy(zero_copy_only=False)
            if blank.all() and not self.columns.pair:
                findings.append(Finding("error", "all_texts_empty", f"{path}: every row's text is empty or blank: "
                                        "there is nothing to learn from (is the text column right? choose it with "
                                        "--text-column)", rows[:MAX_LINES].tolist(), len(rows), path, name))
            elif blank.any() and not self.columns.pair:
                findings.append(Finding("warning", "empty_text", f"{path}: {int(blank.sum()):,} row(s) have an empty text",
                                        rows[blank][:MAX_LINES].tolist(), int(blank.sum()), path, name))
            hashes[name] = (hash_strings(text), rows)
            if name == "train":
                y = t.column("label").to_numpy()
                if len(y) < 2 or np.all(y == y[0]):
                    findings.append(Finding("error", "constant_target",
                                            f"{path}: every training row has the same score ({y[0]:g}); "
                                            "there is nothing to learn", [], len(y), path, name))
        if "train" in hashes:
            train_h = np.unique(hashes["train"][0])
            for name, (h, rows) in hashes.items():
                if name == "train":
                    continue
                overlap = np.isin(h, train_h)
                if overlap.any():
                    findings.append(Finding("warning", "train_test_overlap",
                                            f"{sources[name]}: {int(overlap.sum()):,} row(s) have the same text as a "
                                            "training row; scores on them overstate how well the model generalises",
                                            rows[overlap][:MAX_LINES].tolist(), int(overlap.sum()), sources[name], name))
        findings.sort(key=lambda f: {"error": 0, "warning": 1}.get(f.severity, 2))
        return ValidationReport(findings, {}, {k: len(v) for k, v in splits.items()}, dict(sources))

    # ---- encoding and model ---------------------------------------------------------------------
    def encode(self, name, rows, tokenizer, max_length, cache_dir, callbacks, cancel=NEVER) -> EncodedSplit:
        callbacks.on_event(PhaseChanged("tokenizing", name))
        cols = ["text"] + (["text_pair"] if "text_pair" in rows.column_names else [])
        t = arrow_table(rows, cols + ["label"])
        inputs, lengths = tokenize_columns(t.column("text"), tokenizer, max_length, cache_dir / f"{name}-tokens.arrow",
                                           callbacks, cancel, pairs=t.column("text_pair") if len(cols) == 2 else None)
        y = t.column("label").to_numpy()
        inputs["gold"] = y  # in the user's units, for metrics and predictions
        return EncodedSplit(name, rows, inputs, ((y - self.mean) / self.std).astype(np.float32), lengths,
                            truncated=int((lengths >= max_length).sum()))

    def build_model(self, backbone_path: str, data: PreparedData):
        from transformers import AutoModelForSequenceClassification

        name = self.columns.label or "score"
        return AutoModelForSequenceClassification.from_pretrained(
            backbone_path, num_labels=1, problem_type="regression", id2label={0: name}, label2id={name: 0},
            ignore_mismatched_sizes=True,
        )

    def loss(self, logits, labels):
        import torch.nn.functional as F

        return F.mse_loss(logits.float().squeeze(-1), labels.float())

    def predictions(self, logits: np.ndarray) -> np.ndarray:
        """Model outputs (standardised) in the user's units."""
        return logits.reshape(len(logits), -1)[:, 0].astype(np.float64) * self.std + self.mean

    # ---- evaluation -----------------------------------------------------------------------------
    def evaluate(self, logits, split, loss, data) -> EvalResult:
        return EvalResult(*regression_metrics(split.inputs["gold"], self.predictions(logits), loss))

    def write_predictions(self, path: Path, logits, split, data) -> None:
        pred = self.predictions(logits)
        t = arrow_table(split.rows, [c for c in ("row", "text", "text_pair") if c in split.rows.column_names])
        with open(path, "w", encoding="utf-8") as f:
            for start in range(0, len(pred), 5000):
                chunk = t.slice(start, 5000).to_pylist()
                for j, r in enumerate(chunk):
                    i = start + j
                    r["gold"] = float(split.inputs["gold"][i])
                    r["predicted"] = round(float(pred[i]), 6)
                    r["error"] = round(float(pred[i] - split.inputs["gold"][i]), 6)
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")

    def report_text(self, result: EvalResult) -> str:
        m, r = result.metrics, result.report
        return (f"n={r['n']}   MSE {m['mse']:.4f}   RMSE {m['rmse']:.4f}   MAE {m['mae']:.4f}\n"
                f"Pearson {m['pearson']:.4f}   Spearman {m['spearman']:.4f}   R² {m['r2']:.4f}\n"
                f"gold mean {r['gold']['mean']:.4g} (std {r['gold']['std']:.4g}), "
                f"predicted mean {r['predicted']['mean']:.4g} (std {r['predicted']['std']:.4g})")

    # ---- export ---------------------------------------------------------------------------------
    has_classes = False
    quantize_metric = "pearson"  # bounded, so "one point" means the same whatever the target's scale

    @contextmanager
    def export_state(self, model):
        """The head's last layer scaled to the user's units while the export is written, then put back."""
        import torch

        head = _output_layer(model)
        saved = head.weight.detach().clone(), head.bias.detach().clone()
        with torch.no_grad():
            head.weight.mul_(self.std)
            head.bias.mul_(self.std).add_(self.mean)
        try:
            yield model
        finally:
            with torch.no_grad():
                head.weight.copy_(saved[0])
                head.bias.copy_(saved[1])

    def save_model(self, model, preprocessor, folder: Path, max_length: int) -> None:
        with self.export_state(model):
            super().save_model(model, preprocessor, folder, max_length)

    def onnx_outputs_as_logits(self, outputs: np.ndarray) -> np.ndarray:
        return (outputs.astype(np.float64) - self.mean) / self.std  # back to the standardised scale


def _output_layer(model):
    """The last linear layer with one output: the regression head's projection."""
    import torch

    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == 1 and m.bias is not None]
    if not layers:
        raise RuntimeError(f"{type(model).__name__} has no one-output linear layer to fold the target scale into")
    return layers[-1]


def regression_metrics(gold: np.ndarray, pred: np.ndarray, loss: float) -> tuple[dict, dict]:
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    gold = np.asarray(gold, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    mse = float(mean_squared_error(gold, pred))
    # Correlation is undefined when either side is constant (an untrained model can predict one
    # value); it is reported as 0, no linear relation, so best-checkpoint comparisons stay defined.
    varied = len(gold) > 1 and np.ptp(gold) > 0 and np.ptp(pred) > 0
    metrics = {
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "mae": float(mean_absolute_error(gold, pred)),
        "pearson": float(pearsonr(gold, pred)[0]) if varied else 0.0,
        "spearman": float(spearmanr(gold, pred)[0]) if varied else 0.0,
        "r2": float(r2_score(gold, pred)) if len(gold) > 1 else 0.0,
        "loss": float(loss),
    }
    def describe(a: np.ndarray) -> dict[str, float]:
        return {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()), "max": float(a.max())}

    report = {"n": int(len(gold)), "gold": describe(gold), "predicted": describe(pred)}
    return metrics, report
