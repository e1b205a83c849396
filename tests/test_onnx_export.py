"""ONNX for every task: exported with the model, checked against PyTorch, int8 measured against fp32."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from export_samples import train

from workbench.core.onnx_export import INT8_TOLERANCE, open_session, run_session


def _check(folder: Path) -> dict:
    return json.loads((folder / "onnx_check.json").read_text())


@pytest.mark.parametrize("name", ["text_export", "pair_export", "regression_export", "tagging_export", "image_export"])
def test_every_task_exports_a_checked_onnx_model(name, request):
    folder = request.getfixturevalue(name)
    check = _check(folder)
    assert check["exported"] and check["file"] == "model.onnx" and (folder / "model.onnx").is_file()
    assert check["rows"] > 0 and check["max_abs_diff"] < 1e-3
    if name == "regression_export":
        assert check["top1_agreement"] is None  # one output: no top class
    else:
        assert check["top1_agreement"] == 1.0
    if name == "tagging_export":
        assert check["tokens"] > check["rows"]  # compared token by token, padding left out
    files = json.loads((folder / "workbench.json").read_text())["files"]
    assert {"model.onnx", "onnx_check.json"} <= set(files)  # an --overwrite later may replace them


def test_text_onnx_has_dynamic_batch_and_sequence_axes(text_export):
    from transformers import AutoTokenizer

    session = open_session(text_export / "model.onnx")
    shapes = {i.name: i.shape for i in session.get_inputs()}
    assert shapes["input_ids"] == ["batch", "sequence"] and shapes["attention_mask"] == ["batch", "sequence"]
    tok = AutoTokenizer.from_pretrained(text_export)
    # Batch sizes and lengths never seen when tracing.
    for texts in (["good"], ["the movie was good and great", "bad", "awful boring plot and a dismal ending"] * 3):
        enc = tok(texts, padding=True, return_tensors="np")
        logits = run_session(session, dict(enc))
        assert logits.shape == (len(texts), 2)


def test_regression_onnx_outputs_the_users_units(regression_export):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(regression_export)
    enc = tok(["good great film", "awful bad plot"], padding=True, return_tensors="np")
    onnx = run_session(open_session(regression_export / "model.onnx"), dict(enc))[:, 0]
    import torch

    model = AutoModelForSequenceClassification.from_pretrained(regression_export).eval()
    with torch.no_grad():
        saved = model(**{k: torch.from_numpy(v) for k, v in enc.items()}).logits[:, 0].numpy()
    np.testing.assert_allclose(onnx, saved, atol=1e-4)  # both in the training data's units


@pytest.mark.parametrize("name", ["text_export", "regression_export", "tagging_export", "image_export"])
def test_int8_is_written_and_measured_against_fp32(name, request):
    folder = request.getfixturevalue(name)
    int8 = _check(folder)["int8"]
    assert int8["written"] and (folder / "model.int8.onnx").is_file()
    assert int8["metric"] == {"regression_export": "pearson", "tagging_export": "f1"}.get(name, int8["metric"])
    assert set(int8["metrics"]) == {"fp32", "int8"} and int8["rows"] > 0
    assert int8["fp32"] == int8["metrics"]["fp32"][int8["metric"]]
    assert int8["delta"] == pytest.approx(int8["int8"] - int8["fp32"])
    assert int8["flagged"] == (int8["delta"] < -INT8_TOLERANCE)
    assert int8["size_bytes"]["int8"] > 0 and int8["size_bytes"]["fp32"] > 0
    assert int8["latency_ms_per_example"]["int8"] > 0
    # The fp32 ONNX model scores what PyTorch scored in the run's report.
    report = json.loads((folder.parent / "report.json").read_text())["metrics"]
    assert int8["fp32"] == pytest.approx(report[int8["metric"]], abs=1e-4)


def test_an_int8_model_that_loses_too_much_is_flagged(text_export, monkeypatch, tmp_path):
    """With a quantizer that breaks the model, the loss is flagged (a warning and "flagged": true)."""
    import shutil

    from workbench.core import onnx_export
    from workbench.core.events import Callbacks, Warning_
    from workbench.core.tasks import get_task

    def broken(source, target):  # the fp32 graph with its classifier's weights zeroed: always one class
        import onnx
        from onnx import numpy_helper

        m = onnx.load(str(source))
        for init in m.graph.initializer:
            if "classifier" in init.name:
                init.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(init)), init.name))
        onnx.save(m, str(target))
        return target

    monkeypatch.setattr(onnx_export, "quantize_int8", broken)
    folder = tmp_path / "model"
    shutil.copytree(text_export, folder)
    task, data, split = _eval_split(text_export, get_task("text-classification"))
    seen = []

    class Record(Callbacks):
        def on_event(self, event):
            seen.append(event)

    out = onnx_export.quantize_and_compare(task, folder, split, data, callbacks=Record())
    assert out["flagged"] and out["delta"] < -INT8_TOLERANCE
    assert any(isinstance(e, Warning_) and "int8" in e.message and "tolerance" in e.message for e in seen)


def _eval_split(folder: Path, task):
    """The run's evaluation split, prepared again from its config (as the Export page's int8 does)."""
    from workbench.core.quantize import prepare_eval_split

    return prepare_eval_split(folder.parent)


def test_a_failed_onnx_export_keeps_the_pytorch_model(tmp_path, tiny_bert, monkeypatch):
    from conftest import sentiment_rows, write_tsv

    from workbench.core import onnx_export

    def fail(*args, **kwargs):
        raise RuntimeError("this architecture cannot be traced")

    monkeypatch.setattr(onnx_export, "export_onnx", fail)
    data = write_tsv(tmp_path / "r.tsv", sentiment_rows(120))
    folder = train(tmp_path, data, str(tiny_bert), max_steps=2)
    check = _check(folder)
    assert check == {"exported": False, "error": "RuntimeError: this architecture cannot be traced"}
    assert (folder / "model.safetensors").is_file() and not (folder / "model.onnx").exists()
    status = json.loads((folder.parent / "status.json").read_text())
    assert status["state"] == "finished"
