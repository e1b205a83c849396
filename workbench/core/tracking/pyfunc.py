"""A Workbench export as an MLflow pyfunc model: ``mlflow.pyfunc.load_model(uri).predict(df)`` answers
what ``workbench predict`` answers, through the same Predictor (the export travels as the model's
artifact). MLflow logs this file as the model's code ("models from code": no pickled objects), so
its imports are absolute; imported only where mlflow is (it subclasses its PythonModel).

A text-generation export answers prompts instead, through GenerationPredictor: a DataFrame with a
``prompt`` column (a user turn's text) and/or a ``messages`` column (OpenAI-style turns; a final
assistant turn is left out, as `workbench predict` does), one answer per row in an ``output`` column;
``params`` (max_new_tokens, temperature, top_p, seed) override the export's decoding settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.models
import mlflow.pyfunc

EXPORT = "export"  # the artifact's name: the Workbench export folder
GENERATION_PARAMS = ("max_new_tokens", "temperature", "top_p", "seed")  # the settings a request may change


class WorkbenchModel(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined]
    """Input: a DataFrame with the text column the model was trained on (or one column; a second
    text column for sentence pairs; image paths for image tasks; a sentence per row for tagging).
    Output: label and score per row (classes), score (values), or space-separated tokens and tags.
    A text-generation export: ``prompt`` and/or ``messages`` in, ``output`` (the answer) out."""

    def load_context(self, context) -> None:
        from workbench.core.predict.generation import GenerationPredictor, is_generation_export
        from workbench.core.predict.predictor import Predictor

        export = context.artifacts[EXPORT]
        self.generator = GenerationPredictor(export) if is_generation_export(export) else None
        self.predictor = None if self.generator is not None else Predictor(export)

    def predict(self, context, model_input, params: dict[str, Any] | None = None):
        import pandas as pd

        if self.generator is not None:
            return pd.DataFrame({"output": generate_answers(self.generator, model_input, params)})
        p = self.predictor
        assert p is not None, "load_context loads a Predictor for every export but a text-generation one"
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

    from workbench.core.predict.generation import is_generation_export
    from workbench.core.predict.loading import KINDS
    from workbench.core.predict.predictor import read_meta
    from workbench.core.tasks.table import TASKS

    if is_generation_export(export_dir):
        return generation_signature(export_dir)
    meta = read_meta(export_dir)
    columns: list[Any] = [ColSpec("string", name) for name in input_columns(meta, TASKS[meta["task"]].modality)]
    inputs = Schema(columns)
    kind = KINDS[meta["task"]]
    outputs: list[Any] = {"tags": [ColSpec("string", "tokens"), ColSpec("string", "tags")],
                          "values": [ColSpec("double", "score")]}.get(kind, [ColSpec("string", "label"),
                                                                            ColSpec("double", "score")])
    return ModelSignature(inputs=inputs, outputs=Schema(outputs))


def generation_signature(export_dir: Path):
    """A text-generation model's signature: a prompt or messages in, the answer out, and the decoding
    settings as params (their defaults the export's)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import Array, Object, Property

    from workbench.core.predict.generation import read_generation_meta
    from workbench.core.tasks.generation.generate import GenerationSettings

    folder = Path(export_dir)
    settings = GenerationSettings.from_dict(read_generation_meta(folder).get("generation"), path=folder)
    turn = Object([Property("role", "string"), Property("content", "string")])
    inputs = Schema([ColSpec("string", "prompt", required=False), ColSpec(Array(turn), "messages", required=False)])
    kinds = {"max_new_tokens": "long", "seed": "long", "temperature": "double", "top_p": "double"}
    params = ParamSchema([ParamSpec(name, kinds[name], getattr(settings, name)) for name in GENERATION_PARAMS])
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec("string", "output")]), params=params)


def _conversation(row: Any, index: int) -> list[dict[str, str]]:
    """One input row (a prompt string, a list of turns, or a record with either) as the conversation to
    answer; InputError naming the row when it has none."""
    from workbench.core.errors import InputError
    from workbench.core.predict.generation import record_messages

    if isinstance(row, str):
        record: Any = {"prompt": row}
    elif isinstance(row, dict):
        record = {k: _plain(v) for k, v in row.items() if v is not None and not _missing(v)}
    else:
        record = {"messages": _plain(row)}
    if "messages" in record and "prompt" in record:
        record.pop("prompt")  # both given: the conversation has the prompt's context too
    try:
        return record_messages(record)[1]
    except ValueError as e:
        raise InputError(f"input row {index}: {e}") from None


def _plain(value: Any) -> Any:
    """numpy arrays (what pandas and MLflow's schema checks make of lists) as lists, to any depth."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _missing(value: Any) -> bool:
    return isinstance(value, float) and value != value  # NaN: a DataFrame cell with no value


def generate_answers(generator: Any, model_input: Any, params: dict[str, Any] | None = None) -> list[str]:
    """The answers of a GenerationPredictor to ``model_input``: a DataFrame (``prompt`` and/or
    ``messages`` columns, else its first column), a list of prompts or conversations, or one of them."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        if {"prompt", "messages"} & set(model_input.columns):
            rows: list[Any] = [{k: v for k, v in r.items() if k in ("prompt", "messages")}
                               for r in model_input.to_dict("records")]
        else:
            rows = list(model_input.iloc[:, 0])
    elif isinstance(model_input, pd.Series):
        rows = list(model_input)
    elif isinstance(model_input, (str, dict)) or (isinstance(model_input, list) and model_input
                                                 and isinstance(model_input[0], dict) and "role" in model_input[0]):
        rows = [model_input]  # one prompt, one record, or one conversation
    else:
        rows = list(model_input)
    conversations = [_conversation(r, i) for i, r in enumerate(rows)]
    changes = {k: v for k, v in (params or {}).items() if k in GENERATION_PARAMS and v is not None}
    settings = generator.settings.updated(**changes) if changes else None
    return generator.generate_batch(conversations, settings)


mlflow.models.set_model(WorkbenchModel())  # what MLflow takes from this file when it loads the model
