"""ONNX for every task: exported with the model, checked against PyTorch, int8 measured against fp32."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from export_samples import train

from workbench.core.export.onnx_export import INT8_TOLERANCE, open_session, run_session

pytestmark = pytest.mark.precision  # run again with WORKBENCH_CPU_BF16=0 and =1 (.ci/run)


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

    from workbench.core.events import Callbacks, Warning_
    from workbench.core.export import onnx_export
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
    from workbench.core.export.quantize import prepare_eval_split

    return prepare_eval_split(folder.parent)


def test_a_failed_onnx_export_keeps_the_pytorch_model(tmp_path, tiny_bert, monkeypatch):
    from conftest import sentiment_rows, write_tsv

    from workbench.core.export import onnx_export

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


def _train_in_child(tmp_path, monkeypatch, task: str, tiny_bert):
    """Train with the app's setting (ONNX exported by a child process) while this process's own
    exporter fails: a checked model.onnx can then only come from the child."""
    from conftest import sentiment_rows, write_tsv
    from image_samples import write_class_folder

    from workbench.core.export import onnx_export

    def fail(*args, **kwargs):
        raise AssertionError("exported in the training process")

    monkeypatch.setattr(onnx_export, "in_child_process", True)
    monkeypatch.setattr(onnx_export, "export_onnx", fail)
    if task == "image-classification":
        folder = write_class_folder(tmp_path / "photos", n_per_class=6)
        return train(tmp_path, folder, "small-cnn", image_size=32, batch_size=8, max_steps=2)
    if task == "text-regression":
        rows = [(t, f"{(1.0 if lab == 'pos' else -1.0) + 0.1 * (i % 5):.2f}") for i, (t, lab) in
                enumerate(sentiment_rows(120))]
        data = write_tsv(tmp_path / "scores.tsv", rows, header=("text", "score"))
    else:
        data = write_tsv(tmp_path / "r.tsv", sentiment_rows(120))
    return train(tmp_path, data, str(tiny_bert), task=task, max_steps=2)


@pytest.mark.parametrize("task", ["text-classification",
                                  pytest.param("text-regression", marks=pytest.mark.slow),
                                  pytest.param("image-classification", marks=pytest.mark.slow)])
def test_the_app_exports_onnx_in_a_child_process(tmp_path, monkeypatch, tiny_bert, task):
    folder = _train_in_child(tmp_path, monkeypatch, task, tiny_bert)
    check = _check(folder)
    assert check["exported"] and check["rows"] > 0 and check["max_abs_diff"] < 1e-3, check
    assert check["split"] and (folder / "model.onnx").is_file()
    assert check["top1_agreement"] == (None if task == "text-regression" else 1.0)
    # The child's file is the model: ONNX Runtime gives the PyTorch model's outputs.
    from workbench.core.predict.predictor import Predictor

    if task != "image-classification":
        texts = ["a good film", "an awful plot"]
        onnx, torch = Predictor(folder, backend="onnx"), Predictor(folder, backend="torch", precision="fp32")
        assert np.allclose(onnx.text_logits(texts, None, 8), torch.text_logits(texts, None, 8), atol=1e-4)


def test_a_child_that_cannot_start_falls_back_to_exporting_in_process(tmp_path, monkeypatch, tiny_bert):
    import subprocess

    from conftest import sentiment_rows, write_tsv

    from workbench.core.export import onnx_export

    def no_process(*args, **kwargs):
        raise OSError("no processes left")

    monkeypatch.setattr(onnx_export, "in_child_process", True)
    monkeypatch.setattr(subprocess, "Popen", no_process)
    folder = train(tmp_path, write_tsv(tmp_path / "r.tsv", sentiment_rows(120)), str(tiny_bert), max_steps=2)
    check = _check(folder)
    assert check["exported"] and check["top1_agreement"] == 1.0


def test_the_app_turns_the_child_process_on_unless_told_not_to(qtbot, monkeypatch):
    from workbench.app.controller import TrainingController
    from workbench.core.export import onnx_export

    monkeypatch.setattr(onnx_export, "in_child_process", False)
    monkeypatch.setenv("WORKBENCH_ONNX_CHILD", "0")
    TrainingController()
    assert onnx_export.in_child_process is False
    monkeypatch.setenv("WORKBENCH_ONNX_CHILD", "1")
    TrainingController()
    assert onnx_export.in_child_process is True
