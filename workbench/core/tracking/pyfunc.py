"""A Workbench export as an MLflow pyfunc model: ``mlflow.pyfunc.load_model(uri).predict(df)`` answers
what ``workbench predict`` answers, through the same Predictor (the export travels as the model's
artifact). MLflow logs this file as the model's code ("models from code": no pickled objects), so
its imports are absolute; imported only where mlflow is (it subclasses its PythonModel)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.models
import mlflow.pyfunc

EXPORT = "export"  # the artifact's name: the Workbench export folder


class WorkbenchModel(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined]
    """Input: a DataFrame with the text column the model was trained on (or one column; a second
    text column for sentence pairs; image paths for image tasks; a sentence per row for tagging).
    Output: label and score per row (classes), score (values), or space-separated tokens and tags."""

    def load_context(self, context) -> None:
        from workbench.core.predict.predictor import Predictor

        self.predictor = Predictor(context.artifacts[EXPORT])

    def predict(self, context, model_input, params: dict[str, Any] | None = None):
        import pandas as pd

        p = self.predictor
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        columns = input_columns(p.meta, p.modality)
        first = frame[columns[0]] if columns[0] in frame.columns else frame.iloc[:, 0]
        if p.pairs:
            second = frame[columns[1]] if columns[1] in frame.columns else frame.iloc[:, 1]
            inputs: list[Any] = [[str(a), str(b)] for a, b in zip(first, second)]
        else:
            inputs = [str(x) for x in first]
        answers = p.predict(inputs)
        if p.kind == "tags":
            return pd.DataFrame({"tokens": [" ".join(a["tokens"]) for a in answers],
                                 "tags": [" ".join(a["tags"]) for a in answers]})
        if p.kind == "values":
            return pd.DataFrame({"score": [a["score"] for a in answers]})
        return pd.DataFrame({"label": [a["label"] for a in answers], "score": [a["score"] for a in answers]})


def input_columns(meta: dict[str, Any], modality: str) -> list[str]:
    """The input columns, named as in the training data (``text``, ``image`` where it had none)."""
    if modality == "image":
        return ["image"]
    inputs = meta.get("inputs") or {}
    text = inputs.get("text_column")
    columns = [text if isinstance(text, str) and not text.isdigit() else "text"]
    if inputs.get("text_pair_column"):
        pair = str(inputs["text_pair_column"])
        columns.append(pair if not pair.isdigit() else "text_pair")
    return columns


def signature(export_dir: Path):
    """The model's signature, from the export's workbench.json: its input and output columns."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from workbench.core.predict.loading import KINDS
    from workbench.core.predict.predictor import read_meta
    from workbench.core.tasks.table import TASKS

    meta = read_meta(export_dir)
    columns: list[Any] = [ColSpec("string", name) for name in input_columns(meta, TASKS[meta["task"]].modality)]
    inputs = Schema(columns)
    kind = KINDS[meta["task"]]
    outputs: list[Any] = {"tags": [ColSpec("string", "tokens"), ColSpec("string", "tags")],
                          "values": [ColSpec("double", "score")]}.get(kind, [ColSpec("string", "label"),
                                                                            ColSpec("double", "score")])
    return ModelSignature(inputs=inputs, outputs=Schema(outputs))


mlflow.models.set_model(WorkbenchModel())  # what MLflow takes from this file when it loads the model
