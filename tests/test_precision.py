"""Precision: bf16 autocast on CPUs with bf16 units (auto), fp32 elsewhere; fp32 master weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import sentiment_rows, write_tsv
from workbench.core import device as device_mod
from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from workbench.core.errors import InputError
from workbench.core.run import run_training

CPU = torch.device("cpu")


@pytest.mark.parametrize("units, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_picks_bf16_only_where_the_cpu_has_bf16_units(monkeypatch, units, expected):
    monkeypatch.setattr(device_mod, "cpu_bf16_units", lambda: (units, "faked"))
    precision, why = device_mod.choose_precision("auto", CPU)
    assert precision == expected and "faked" in why


def test_forced_precisions_on_the_cpu(monkeypatch):
    monkeypatch.setattr(device_mod, "cpu_bf16_units", lambda: (False, "faked"))
    assert device_mod.choose_precision("bf16", CPU)[0] == "bf16"
    assert device_mod.choose_precision("fp32", CPU)[0] == "fp32"
    with pytest.raises(InputError, match="fp16 needs a GPU"):
        device_mod.choose_precision("fp16", CPU)


def test_the_real_check_answers():
    units, why = device_mod.cpu_bf16_units()
    assert isinstance(units, bool) and why


def _config(tmp_path, model_dir, precision):
    train = write_tsv(tmp_path / "train.tsv", sentiment_rows(160, seed=1))
    test = write_tsv(tmp_path / "test.tsv", sentiment_rows(40, seed=2))
    return RunConfig(data=DataConfig(train=str(train), test=str(test), val_fraction=0.0),
                     model=ModelConfig(name=str(model_dir)),
                     train=TrainConfig(epochs=3, batch_size=16, lr=3e-3, max_length=32, seed=1, precision=precision),
                     run_dir=str(tmp_path / f"run-{precision}"))


def test_a_tiny_model_trains_under_cpu_bf16_with_fp32_weights(tmp_path, tiny_model_dir, monkeypatch):
    from safetensors import safe_open

    from workbench.core.training import loop as loop_mod

    casts = []
    real = loop_mod.TrainingLoop.autocast

    def spy(self):
        ctx = real(self)
        casts.append(type(ctx).__name__)
        return ctx

    monkeypatch.setattr(loop_mod.TrainingLoop, "autocast", spy)
    monkeypatch.setattr(device_mod, "cpu_bf16_units", lambda: (True, "faked bf16 units"))
    result = run_training(_config(tmp_path, tiny_model_dir, "auto"))
    run = tmp_path / "run-auto"
    resolved = json.loads((run / "config.json").read_text())["resolved"]
    assert resolved["precision"] == "bf16" and "faked bf16 units" in resolved["precision_reason"]
    assert casts and set(casts) == {"autocast"}  # every forward ran under torch.autocast
    with safe_open(str(run / "model" / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}  # master weights stay fp32
    assert result.metrics["accuracy"] >= 0.9, result.metrics  # it learnt the separable task


def test_bf16_evaluation_matches_fp32(tiny_model_dir, tmp_path):
    """The same weights evaluated under CPU bf16 autocast and in fp32 agree within bf16's precision."""
    from workbench.core.tasks import get_task
    from workbench.core.training.loop import TrainingLoop

    cfg = _config(tmp_path, tiny_model_dir, "fp32")
    task = get_task("text-classification", cfg.data.train)
    task.configure(cfg)
    data = task.prepare_data(cfg.data, 1, tmp_path / "cache", device_mod_callbacks())
    tok = task.load_preprocessor(str(tiny_model_dir))
    test = task.encode("test", data.splits["test"], tok, 32, tmp_path / "cache", device_mod_callbacks())
    torch.manual_seed(0)
    model = task.build_model(str(tiny_model_dir), data)
    logits = {}
    for precision in ("fp32", "bf16"):
        loop = TrainingLoop(model, task, data, test, None, cfg.train, CPU, precision, device_mod_callbacks())
        logits[precision], _ = loop.predict(test)
    assert np.abs(logits["fp32"] - logits["bf16"]).max() < 0.05
    agree = (logits["fp32"].argmax(-1) == logits["bf16"].argmax(-1)).mean()
    margin = np.abs(logits["fp32"][:, 0] - logits["fp32"][:, 1])
    assert agree == 1.0 or (agree >= 0.95 and margin.min() < 0.05)


def device_mod_callbacks():
    from workbench.core.events import Callbacks

    return Callbacks()


@pytest.mark.parametrize("device_pixels", ["0", "1"])
def test_images_train_under_cpu_bf16_with_channels_last_convolutions(tmp_path, runs_home, monkeypatch, device_pixels):
    """Convolutions under bf16 autocast take channels-last input, the crops cut on the host or (as on
    GPUs) on the device outside autocast; the weights stay fp32 and the model learns."""
    from image_samples import write_class_folder
    from safetensors import safe_open

    from workbench.core.image_models import ImageClassifier

    monkeypatch.setenv("WORKBENCH_DEVICE_PIXELS", device_pixels)
    seen = []
    real = ImageClassifier.forward

    def spy(self, pixel_values=None, features=None):
        if pixel_values is not None and torch.is_grad_enabled():
            seen.append((pixel_values.dtype, pixel_values.is_contiguous(memory_format=torch.channels_last),
                         torch.is_autocast_enabled("cpu")))
        return real(self, pixel_values=pixel_values, features=features)

    monkeypatch.setattr(ImageClassifier, "forward", spy)
    root = tmp_path / "photos"
    write_class_folder(root / "train", 16)
    write_class_folder(root / "test", 6, seed=2)
    cfg = RunConfig(data=DataConfig(train=str(root)), model=ModelConfig(name="small-cnn"),
                    train=TrainConfig(epochs=4, batch_size=8, lr=3e-3, warmup_ratio=0.0, image_size=32, seed=0,
                                      precision="bf16"))
    result = run_training(cfg)
    assert seen and set(seen) == {(torch.float32, True, True)}  # fp32 pixels, NHWC, under bf16 autocast
    assert result.metrics["accuracy"] >= 0.9, result.metrics
    with safe_open(str(Path(result.run_dir) / "model" / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys() if not k.endswith("num_batches_tracked")} == {torch.float32}


def test_prediction_autocasts_to_bf16_only_where_the_cpu_has_units(text_export, image_export, tmp_path, monkeypatch,
                                                                     capsys):
    """`workbench predict|serve --backend torch`: auto follows the CPU check as training does, bf16
    answers match fp32's, and ONNX Runtime (fp32) refuses a forced bf16 with a message."""
    from workbench.cli import main
    from workbench.core.predict.predictor import Predictor

    casts = []
    real = torch.autocast

    def spy(*args, **kwargs):
        casts.append(kwargs.get("dtype"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "autocast", spy)
    texts = ["good great wonderful film", "awful boring dismal plot", "a film"]
    monkeypatch.setattr(device_mod, "cpu_bf16_units", lambda: (False, "faked: no units"))
    plain = Predictor(text_export, backend="torch")
    assert plain.precision == "fp32" and "faked: no units" in plain.precision_reason
    fp32 = plain.predict(texts)
    assert not casts
    monkeypatch.setattr(device_mod, "cpu_bf16_units", lambda: (True, "faked bf16 units"))
    from image_samples import coloured

    images = []
    for i, colour in enumerate([(200, 30, 30), (30, 30, 200)]):
        images.append(tmp_path / f"{i}.png")
        coloured(colour, seed=i).save(images[-1])
    for export, inputs in ((text_export, texts), (image_export, images)):
        p = Predictor(export, backend="torch")
        assert p.precision == "bf16" and p.describe()["precision"] == "bf16"
        casts.clear()
        answers = p.predict(inputs)
        assert casts and set(casts) == {torch.bfloat16} and len(answers) == len(inputs)
        if export == text_export:
            assert [a["label"] for a in answers] == [a["label"] for a in fp32]
            assert [a["score"] for a in answers] == pytest.approx([a["score"] for a in fp32], abs=0.03)
    assert Predictor(text_export).precision == "fp32"  # ONNX Runtime, whatever the CPU
    assert Predictor(text_export, backend="torch", precision="fp32").precision == "fp32"

    src = tmp_path / "in.tsv"
    src.write_text("text\ngood great wonderful film\n")
    assert main(["predict", str(text_export), str(src), "--backend", "torch", "-q"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["precision"] == "bf16"
    code = main(["predict", str(text_export), str(src), "--precision", "bf16", "--overwrite", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "--precision bf16 runs the PyTorch model: add --backend torch" in err
