"""What a multi-label task does with its model's outputs, whatever its inputs: a mixin placed before
the input task in the bases (``class TextMultiLabel(MultiLabelOutputs, TokenizedText)``; an image
variant mixes it into the image classification task the same way).

One sigmoid output per label, binary cross-entropy on multi-hot float targets, a threshold per label
tuned on the validation split, metrics and report, the export's thresholds and the model card's
table of them."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ...escaping import md_cell
from ..base import EncodedSplit, EvalResult, PreparedData
from .labels import ONE_HOT_SEPARATOR, decided_labels
from .scoring import multilabel_result, multilabel_text, thresholds_note
from .thresholds import MIN_POSITIVES, Thresholds, decide, sigmoid, tune


def labels_usage(path: str, pipeline_tag: str, example: str = '["Type your text here"], truncation=True') -> str:
    """Python that decides a multi-label export's labels with transformers' pipeline: sigmoid scores
    for every label (not the softmax top class the pipeline gives by default), then the thresholds."""
    return (f"import json\nfrom transformers import pipeline\n"
            f"model = pipeline({pipeline_tag!r}, model={path!r}, function_to_apply='sigmoid', top_k=None)\n"
            f"thresholds = json.load(open({(path + '/workbench.json')!r}))['thresholds']\n"
            f"scores = model({example})[0]  # a list of inputs gives a list of score lists\n"
            "print([s['label'] for s in scores if s['score'] >= thresholds[s['label']]])")


class MultiLabelOutputs:
    # Read by the run (core/run/stages.py): tune_on_validation is called before the final test.
    tunes_on_validation: ClassVar[bool] = True
    # Random batches: a label set follows a text's length (CoNLL's short datelines are LOC, its long
    # sentences PER/ORG), so length-grouped batches are batches of one label mix and the sigmoid
    # outputs follow each batch's make-up. benchmarks/bench_multilabel.py, seed 42: micro-F1 at 0.5
    # 0.8510 grouped, 0.8601 random (the Trainer 0.8549), at half the speed (still 2.6x the Trainer's).
    group_by_length_default: ClassVar[bool] = False
    label_names: list[str]
    label_separator: str = ONE_HOT_SEPARATOR  # the training file's, for predict's output column
    _thresholds: Thresholds | None = None

    def set_labels(self, names: list[str], separator: str) -> None:
        """The labels the model outputs, in order, and how the training file separated them; the
        thresholds start at 0.5 (tuned at the end of training)."""
        self.label_names, self.label_separator = list(names), separator
        self._thresholds = None

    @property
    def thresholds(self) -> Thresholds:
        if self._thresholds is None or len(self._thresholds.values) != len(self.label_names):
            self._thresholds = Thresholds.default(len(self.label_names))
        return self._thresholds

    # ---- training ---------------------------------------------------------------------------------
    def loss(self, logits, labels):
        """Binary cross-entropy averaged over rows and labels: every row weighs the same (the labels per
        row are fixed), so a mean over ``loss_units`` rows splits into micro-batches exactly."""
        import torch.nn.functional as F

        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())

    # ---- decisions ----------------------------------------------------------------------------------
    def tune_on_validation(self, logits: np.ndarray, split: EncodedSplit) -> None:
        """Each label's threshold with the best F1 on the validation rows (0.5 where a label has fewer
        than MIN_POSITIVES positives there)."""
        self._thresholds = tune(sigmoid(logits), split.labels, MIN_POSITIVES)

    def decide(self, logits: np.ndarray) -> np.ndarray:
        """The decided labels (bool, rows x labels) at the current thresholds."""
        return decide(sigmoid(logits), self.thresholds.values)

    def predicted_classes(self, logits: np.ndarray, split: EncodedSplit) -> np.ndarray | None:
        """For the bf16 check: the decided 0/1 labels (it counts the cells that change)."""
        if getattr(logits, "ndim", 0) != 2:
            return None
        return self.decide(logits).astype(np.int8)

    def decision_thresholds(self) -> np.ndarray | None:
        return self.thresholds.values.copy()

    def export_meta(self) -> dict[str, Any]:
        t = self.thresholds
        return {"thresholds": t.as_dict(self.label_names), "thresholds_fallback": t.fallback(self.label_names),
                "label_separator": self.label_separator}

    # ---- evaluation ---------------------------------------------------------------------------------
    def evaluate(self, logits: np.ndarray, split: EncodedSplit, loss: float, data: PreparedData) -> EvalResult:
        # During training the thresholds are still 0.5 (they are tuned once, after training, on the
        # validation outputs), so the validation metrics that pick the best checkpoint are those of a
        # fixed 0.5: no tuning on the rows being scored. The final test uses the tuned thresholds.
        result = multilabel_result(split.labels, sigmoid(logits), data.require_label_map().names, self.thresholds,
                                   loss)
        # Without a test split the report is on validation: the very rows the thresholds were tuned on.
        result.report["tuned_on_this_split"] = self.thresholds.any_tuned and split.name == "validation"
        return result

    def report_text(self, result: EvalResult) -> str:
        return multilabel_text(result)

    def scored_rows(self, logits: np.ndarray, gold: np.ndarray) -> list[dict[str, Any]]:
        """Per row (``gold``: its multi-hot labels): its labels, the decided ones, every label's score
        and whether the decided set is exactly right, as predictions.jsonl holds them."""
        names = self.label_names
        scores = sigmoid(logits)
        decided = decide(scores, self.thresholds.values)
        gold = np.asarray(gold) > 0.5
        return [{"labels": g, "predicted": p, "scores": {n: round(float(s), 6) for n, s in zip(names, row)},
                 "correct": bool(np.array_equal(gold[i], decided[i]))}
                for i, (g, p, row) in enumerate(zip(decided_labels(gold, names), decided_labels(decided, names),
                                                    scores))]

    # ---- export -------------------------------------------------------------------------------------
    def model_card(self, *, task_title: str, pipeline_tag: str, backbone: str, data: dict[str, Any],
                   hyper: dict[str, Any], metrics: dict[str, float], report_table: str, eval_split: str) -> str:
        """The common card with each label's threshold and whether it was tuned."""
        from ...export.model import model_card

        card = model_card(task_title=task_title, pipeline_tag=pipeline_tag, backbone=backbone, data=data,
                          hyper=hyper, metrics=metrics, report_table=report_table, eval_split=eval_split,
                          usage=f"```python\n{labels_usage('path/to/this/folder', pipeline_tag)}\n```\n"
                                "Every label's sigmoid score, then the labels that reach their tuned thresholds "
                                "(`workbench predict` and `workbench serve` decide the same way).")
        return card + "\n" + self.thresholds_section() + "\n"

    def thresholds_section(self) -> str:
        t = self.thresholds
        rows = "\n".join(f"| {md_cell(n)} | {v:.4f} | {'tuned on validation' if tuned else 'global 0.5'} |"
                         for n, v, tuned in zip(self.label_names, t.values, t.tuned))
        note = thresholds_note(self.label_names, t.fallback(self.label_names), t.any_tuned)
        return (f"## Decision thresholds\nA label is predicted where its sigmoid score reaches its threshold "
                f"(`workbench.json` holds them under \"thresholds\").\n\n| label | threshold | source |\n"
                f"|---|---|---|\n{rows}\n\n{md_cell(note)}")
