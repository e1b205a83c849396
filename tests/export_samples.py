"""Tiny trained exports of every task, trained once per test session, for the ONNX, predict and serve
tests. Import the fixtures into a test module to use them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import NEGATIVE, NEUTRAL, POSITIVE, sentiment_rows, write_tsv
from image_samples import write_class_folder
from text_tasks_helpers import ALL_WORDS, build_tiny_bert, ner_sentences, write_conll

from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig

WORDS = sorted(set(ALL_WORDS + POSITIVE + NEGATIVE + NEUTRAL))


def train(tmp: Path, data: Path, model: str, task: str = "auto", quantize: str | None = None, **opts) -> Path:
    """Train in ``tmp`` and return the run's model folder (RUN/model)."""
    from workbench.core.run.pipeline import run_training

    settings = dict(epochs=4, batch_size=16, lr=3e-3, max_length=32, seed=1)
    settings.update(opts)
    cfg = RunConfig(task=task, data=DataConfig(train=str(data)), model=ModelConfig(name=model),
                    train=TrainConfig(**settings), run_dir=str(tmp / "run"), quantize=quantize)
    old = os.environ.get("WORKBENCH_HOME")
    os.environ["WORKBENCH_HOME"] = str(tmp / "home")  # the runs home must not be the user's
    try:
        result = run_training(cfg)
    finally:
        if old is None:
            os.environ.pop("WORKBENCH_HOME", None)
        else:
            os.environ["WORKBENCH_HOME"] = old
    return Path(result.run_dir) / "model"


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("bert"), WORDS)


@pytest.fixture(scope="session")
def text_export(tmp_path_factory, tiny_bert) -> Path:
    """Sentiment classification (pos/neg), with model.int8.onnx."""
    tmp = tmp_path_factory.mktemp("text-export")
    data = write_tsv(tmp / "reviews.tsv", sentiment_rows(240))
    return train(tmp, data, str(tiny_bert), quantize="int8", max_steps=24, lr=5e-3)


@pytest.fixture(scope="session")
def pair_export(tmp_path_factory, tiny_bert) -> Path:
    tmp = tmp_path_factory.mktemp("pair-export")
    rows = [(a, b, "yes" if "good" in b else "no") for a, b in
            (((" ".join(t.split()[:3])), t) for t, _ in sentiment_rows(200, seed=3))]
    data = write_tsv(tmp / "pairs.tsv", rows, header=("sentence1", "sentence2", "label"))
    return train(tmp, data, str(tiny_bert), task="text-pair-classification", max_steps=6)


@pytest.fixture(scope="session")
def regression_export(tmp_path_factory, tiny_bert) -> Path:
    tmp = tmp_path_factory.mktemp("regression-export")
    rows = [(t, f"{(1.0 if lab == 'pos' else -1.0) + 0.1 * (i % 5):.2f}") for i, (t, lab) in enumerate(sentiment_rows(200))]
    data = write_tsv(tmp / "scores.tsv", rows, header=("text", "score"))
    return train(tmp, data, str(tiny_bert), task="text-regression", quantize="int8", max_steps=8)


@pytest.fixture(scope="session")
def tagging_export(tmp_path_factory, tiny_bert) -> Path:
    tmp = tmp_path_factory.mktemp("tagging-export")
    data = write_conll(tmp / "ner.conll", ner_sentences(160))
    return train(tmp, data, str(tiny_bert), quantize="int8", max_steps=12)


@pytest.fixture(scope="session")
def image_export(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("image-export")
    folder = write_class_folder(tmp / "photos", n_per_class=10)
    return train(tmp, folder, "small-cnn", image_size=32, batch_size=8, lr=2e-3, epochs=3, quantize="int8")
