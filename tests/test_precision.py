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
from workbench.core.run.pipeline import run_training

pytestmark = pytest.mark.precision  # run again with WORKBENCH_CPU_BF16=0 and =1 (.ci/run)

CPU = torch.device("cpu")


@pytest.mark.parametrize("units, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_picks_bf16_only_where_the_cpu_has_bf16_units(monkeypatch, units, expected):
    monkeypatch.setattr(device_mod, "cpu_bf16_units", lambda: (units, "faked"))
    precision, why = device_mod.choose_precision("auto", CPU)
    assert precision == expected and "faked" in why


def test_images_keep_fp32_under_auto_where_bf16_measured_no_faster(monkeypatch):
    from workbench.core.tasks.image.classification import ImageClassification
    from workbench.core.tasks.text_classification import TextClassification

    monkeypatch.setenv("WORKBENCH_CPU_BF16", "1")
    precision, why = device_mod.choose_precision("auto", CPU, ImageClassification.cpu_bf16_not_worth)
    assert precision == "fp32" and "no faster" in why
    assert device_mod.choose_precision("auto", CPU, TextClassification.cpu_bf16_not_worth)[0] == "bf16"
    assert device_mod.choose_precision("bf16", CPU, ImageClassification.cpu_bf16_not_worth)[0] == "bf16"


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


def test_the_environment_switch_overrides_the_cpu_check(monkeypatch, caplog):
    """WORKBENCH_CPU_BF16=1|0 decides on any CPU (tests, and users who want one or the other)."""
    monkeypatch.setenv("WORKBENCH_CPU_BF16", "1")
    assert device_mod.cpu_bf16_units() == (True, "WORKBENCH_CPU_BF16=1")
    assert device_mod.choose_precision("auto", CPU) == ("bf16", "auto: WORKBENCH_CPU_BF16=1")
    monkeypatch.setenv("WORKBENCH_CPU_BF16", "0")
    assert device_mod.choose_precision("auto", CPU) == ("fp32", "auto: WORKBENCH_CPU_BF16=0")
    assert device_mod.choose_precision("bf16", CPU)[0] == "bf16"  # an explicit --precision still wins
    monkeypatch.setenv("WORKBENCH_CPU_BF16", "yes")
    units, why = device_mod.cpu_bf16_units()
    assert "WORKBENCH_CPU_BF16" not in why and "is not 0 or 1; ignored" in caplog.text


def test_a_tiny_model_trains_under_cpu_bf16_and_reports_in_fp32(tmp_path, tiny_model_dir, monkeypatch):
    """bf16 trains (every training forward under autocast, weights fp32); the test split is scored in
    fp32, as the export runs, then once more in bf16 to see whether bf16 would change any label."""
    from safetensors import safe_open

    from workbench.core.training import loop as loop_mod

    casts = []
    real = loop_mod.TrainingLoop.autocast

    def spy(self, precision=None):
        ctx = real(self, precision)
        casts.append((torch.is_grad_enabled(), precision or self.precision, type(ctx).__name__))
        return ctx

    monkeypatch.setattr(loop_mod.TrainingLoop, "autocast", spy)
    monkeypatch.setenv("WORKBENCH_CPU_BF16", "1")  # as on a CPU with bf16 units, whatever this one has
    result = run_training(_config(tmp_path, tiny_model_dir, "auto"))
    run = tmp_path / "run-auto"
    resolved = json.loads((run / "config.json").read_text())["resolved"]
    assert resolved["precision"] == "bf16" and "WORKBENCH_CPU_BF16=1" in resolved["precision_reason"]
    training = {c for c in casts if c[0]}
    assert training == {(True, "bf16", "autocast")}  # every training forward ran under torch.autocast
    assert (False, "fp32", "nullcontext") in casts  # the test split, for the report
    assert casts[-1] == (False, "bf16", "autocast")  # the bf16 check, after the report's pass
    with safe_open(str(run / "model" / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}  # master weights stay fp32
    assert result.metrics["accuracy"] >= 0.9, result.metrics  # it learnt the separable task
    report = json.loads((run / "report.json").read_text())["precision"]
    assert report["training"] == "bf16" and report["report"] == "fp32"
    check = report["bf16_check"]
    assert check["ran"] and check["split"] == "test" and check["items"] == 40 and check["changed"] >= 0
    meta = json.loads((run / "model" / "workbench.json").read_text())["precision"]
    assert meta["bf16_check"] == check and meta["report"] == "fp32"


@pytest.mark.parametrize("units", ["0", "1"])
def test_a_report_of_a_bf16_trained_model_is_what_its_export_gives(tmp_path, tiny_model_dir, monkeypatch, units):
    """Trained in bf16 (forced, or under auto where the CPU has bf16 units) or in fp32: the report's test
    metrics and predictions.jsonl are those of the exported model reloaded in transformers' pipeline
    and in ONNX Runtime, to 1e-4."""
    from sklearn.metrics import accuracy_score, f1_score
    from transformers import pipeline

    from workbench.core.predict.predictor import Predictor
    from workbench.core.tasks.scoring import softmax

    monkeypatch.setenv("WORKBENCH_CPU_BF16", units)
    result = run_training(_config(tmp_path, tiny_model_dir, "auto"))
    run = Path(result.run_dir)
    assert json.loads((run / "report.json").read_text())["precision"]["training"] == ("bf16" if units == "1" else "fp32")
    preds = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    gold = [p["gold"] for p in preds]
    texts = [p["text"] for p in preds]
    clf = pipeline("text-classification", model=str(run / "model"), device="cpu")
    out = clf(texts, truncation=True, batch_size=8)
    assert [o["label"] for o in out] == [p["predicted"] for p in preds]
    assert [o["score"] for o in out] == pytest.approx([p["confidence"] for p in preds], abs=1e-4)
    onnx = Predictor(run / "model", backend="onnx")
    probs = softmax(onnx.text_logits(texts, None, 8))
    labels = [onnx.labels[i] for i in probs.argmax(-1)]
    assert labels == [p["predicted"] for p in preds]
    assert probs.max(-1) == pytest.approx([p["confidence"] for p in preds], abs=1e-4)
    for predicted in ([o["label"] for o in out], labels):
        assert accuracy_score(gold, predicted) == pytest.approx(result.metrics["accuracy"], abs=1e-4)
        assert f1_score(gold, predicted, average="macro") == pytest.approx(result.metrics["macro_f1"], abs=1e-4)


def test_a_bf16_trained_regression_reports_what_onnx_runtime_gives(tmp_path, tiny_model_dir, monkeypatch):
    """A tiny random regression model's outputs collapse to a few values in bf16: the report must
    still be the fp32 export's (Pearson from ONNX Runtime equals the report's)."""
    from workbench.core.predict.predictor import Predictor

    monkeypatch.setenv("WORKBENCH_CPU_BF16", "1")
    rows = [(t, f"{(1.0 if lab == 'pos' else -1.0) + 0.1 * (i % 5):.2f}") for i, (t, lab) in
            enumerate(sentiment_rows(200, seed=4))]
    train = write_tsv(tmp_path / "scores.tsv", rows[:160], header=("text", "score"))
    test = write_tsv(tmp_path / "scores-test.tsv", rows[160:], header=("text", "score"))
    cfg = RunConfig(task="text-regression", data=DataConfig(train=str(train), test=str(test), val_fraction=0.0),
                    model=ModelConfig(name=str(tiny_model_dir)),
                    train=TrainConfig(max_steps=8, batch_size=16, lr=3e-3, max_length=32, seed=1),
                    run_dir=str(tmp_path / "run"))
    result = run_training(cfg)
    run = Path(result.run_dir)
    report = json.loads((run / "report.json").read_text())["precision"]
    assert report["training"] == "bf16" and "bf16_check" not in report  # values, not labels: nothing to check
    preds = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    onnx = Predictor(run / "model", backend="onnx").predict([p["text"] for p in preds])
    got = np.array([a["score"] for a in onnx])
    gold = np.array([p["gold"] for p in preds])
    assert got == pytest.approx([p["predicted"] for p in preds], abs=1e-4)
    assert np.corrcoef(gold, got)[0, 1] == pytest.approx(result.metrics["pearson"], abs=1e-4)


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

    from workbench.core.tasks.image.models import ImageClassifier

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


def _with_check(export: Path, folder: Path, check: dict | None) -> Path:
    """A copy of ``export`` whose workbench.json records ``check`` as its bf16 check at export time."""
    import shutil

    shutil.copytree(export, folder)
    meta = json.loads((folder / "workbench.json").read_text())
    meta["precision"] = {"training": "bf16", "report": "fp32", **({"bf16_check": check} if check else {})}
    (folder / "workbench.json").write_text(json.dumps(meta))
    return folder


def test_prediction_gives_the_report_numbers_unless_bf16_was_checked_or_asked_for(text_export, image_export, tmp_path,
                                                                                   monkeypatch, capsys):
    """`workbench predict|serve --backend torch`: auto is fp32 (the report's numbers) unless the CPU has
    bf16 units and the export's own check found that bf16 changes none of its test labels; a forced
    bf16 runs bf16 anywhere; ONNX Runtime (fp32) refuses a forced bf16 with a message."""
    from workbench.cli.main import main
    from workbench.core.predict.predictor import Predictor

    casts = []
    real = torch.autocast

    def spy(*args, **kwargs):
        casts.append(kwargs.get("dtype"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "autocast", spy)
    texts = ["good great wonderful film", "awful boring dismal plot", "a film"]
    clean = _with_check(text_export, tmp_path / "checked", {"ran": True, "split": "test", "items": 40, "changed": 0})
    changed = _with_check(text_export, tmp_path / "changed", {"ran": True, "split": "test", "items": 40, "changed": 2})
    unchecked = _with_check(text_export, tmp_path / "unchecked", None)
    monkeypatch.setenv("WORKBENCH_CPU_BF16", "0")
    plain = Predictor(clean, backend="torch")
    assert plain.precision == "fp32" and "WORKBENCH_CPU_BF16=0" in plain.precision_reason
    fp32 = plain.predict(texts)
    assert not casts
    monkeypatch.setenv("WORKBENCH_CPU_BF16", "1")
    p = Predictor(changed, backend="torch")
    assert p.precision == "fp32" and "bf16 changed 2 of 40 test labels" in p.precision_reason
    p = Predictor(unchecked, backend="torch")
    assert p.precision == "fp32" and "not checked in bf16" in p.precision_reason
    p = Predictor(clean, backend="torch")
    assert p.precision == "bf16" and "changed none of 40 test labels" in p.describe()["precision_reason"]
    casts.clear()
    answers = p.predict(texts)
    assert casts and set(casts) == {torch.bfloat16}
    assert [a["label"] for a in answers] == [a["label"] for a in fp32]
    assert [a["score"] for a in answers] == pytest.approx([a["score"] for a in fp32], abs=0.03)
    from image_samples import coloured

    images = []
    for i, colour in enumerate([(200, 30, 30), (30, 30, 200)]):
        images.append(tmp_path / f"{i}.png")
        coloured(colour, seed=i).save(images[-1])
    monkeypatch.setenv("WORKBENCH_CPU_BF16", "0")  # asked for: bf16 even without units (slower, says so)
    for export, inputs in ((text_export, texts), (image_export, images)):
        p = Predictor(export, backend="torch", precision="bf16")
        assert p.precision == "bf16" and "slower than fp32 here" in p.precision_reason
        casts.clear()
        answers = p.predict(inputs)
        assert casts and set(casts) == {torch.bfloat16} and len(answers) == len(inputs)
    assert Predictor(clean).precision == "fp32"  # ONNX Runtime, whatever the CPU
    assert Predictor(clean, backend="torch", precision="fp32").precision == "fp32"

    monkeypatch.setenv("WORKBENCH_CPU_BF16", "1")
    src = tmp_path / "in.tsv"
    src.write_text("text\ngood great wonderful film\n")
    assert main(["predict", str(clean), str(src), "--backend", "torch", "-q"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["precision"] == "bf16" and "changed none" in summary["precision_reason"]
    assert main(["predict", str(unchecked), str(src), "--backend", "torch", "--overwrite", "-q"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["precision"] == "fp32"
    code = main(["predict", str(text_export), str(src), "--precision", "bf16", "--overwrite", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "--precision bf16 runs the PyTorch model: add --backend torch" in err


def test_the_bf16_check_counts_words_for_tagging_and_images(tmp_path, monkeypatch):
    """Tagging checks one label per word (as the report scores them), images one per image."""
    from image_samples import write_class_folder
    from text_tasks_helpers import ALL_WORDS, build_tiny_bert, ner_sentences, write_conll

    monkeypatch.setenv("WORKBENCH_CPU_BF16", "1")
    sentences = ner_sentences(60)
    train = write_conll(tmp_path / "ner.conll", sentences[:40])
    test = write_conll(tmp_path / "ner-test.conll", sentences[40:])
    bert = build_tiny_bert(tmp_path / "bert", ALL_WORDS)
    cfg = RunConfig(data=DataConfig(train=str(train), test=str(test), val_fraction=0.0),
                    model=ModelConfig(name=str(bert)),
                    train=TrainConfig(max_steps=4, batch_size=8, lr=3e-3, max_length=32, seed=1),
                    run_dir=str(tmp_path / "ner-run"))
    result = run_training(cfg)
    check = json.loads((Path(result.run_dir) / "report.json").read_text())["precision"]["bf16_check"]
    assert check["ran"] and check["items"] == sum(len(s) for s in sentences[40:]), check
    root = write_class_folder(tmp_path / "photos" / "train", 6)
    write_class_folder(tmp_path / "photos" / "test", 3, seed=2)
    cfg = RunConfig(data=DataConfig(train=str(root.parent)), model=ModelConfig(name="small-cnn"),
                    train=TrainConfig(max_steps=2, batch_size=4, image_size=32, seed=0),
                    run_dir=str(tmp_path / "image-run"))
    result = run_training(cfg)
    check = json.loads((Path(result.run_dir) / "report.json").read_text())["precision"]["bf16_check"]
    assert check["ran"] and check["items"] == 6, check


@pytest.mark.parametrize("amx, expected", [(True, "bf16"), (False, "fp32")])
def test_generation_keeps_fp32_under_auto_on_a_bf16_cpu_without_amx(monkeypatch, amx, expected):
    from workbench.core.tasks.generation.task import TextGeneration
    from workbench.core.tasks.text_classification import TextClassification

    monkeypatch.delenv("WORKBENCH_CPU_BF16", raising=False)
    monkeypatch.setattr(device_mod, "cpu_bf16_units", lambda: (True, "faked AVX512-BF16"))
    monkeypatch.setattr(device_mod, "cpu_has_amx", lambda: amx)
    generation = (TextGeneration.cpu_bf16_not_worth, TextGeneration.cpu_bf16_needs_amx)
    precision, why = device_mod.choose_precision("auto", CPU, *generation)
    assert precision == expected and ("without AMX" in why) == (not amx)
    assert device_mod.choose_precision("auto", CPU, TextClassification.cpu_bf16_not_worth,
                                       TextClassification.cpu_bf16_needs_amx)[0] == "bf16"
    assert device_mod.choose_precision("bf16", CPU, *generation)[0] == "bf16"  # asked for: given
    monkeypatch.setenv("WORKBENCH_CPU_BF16", "1")  # the override says bf16, and means it
    assert device_mod.choose_precision("auto", CPU, *generation)[0] == "bf16"
