"""A finished tiny run for the pack/unpack tests (CLI, core and the Runs page). Import the fixture."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import sentiment_rows, write_tsv


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model_dir) -> Path:
    """A finished tiny run whose training file lives in its own folder (tests may delete it)."""
    import os

    from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from workbench.core.run.pipeline import run_training

    tmp = tmp_path_factory.mktemp("pack-run")
    data = write_tsv(tmp / "reviews.tsv", sentiment_rows(120))
    cfg = RunConfig(data=DataConfig(train=str(data)), model=ModelConfig(name=str(tiny_model_dir)),
                    train=TrainConfig(epochs=1, batch_size=16, lr=3e-3, max_length=32, max_steps=3),
                    run_dir=str(tmp / "run"))
    old = os.environ.get("WORKBENCH_HOME")
    os.environ["WORKBENCH_HOME"] = str(tmp / "home")
    try:
        run_training(cfg)
    finally:
        os.environ.pop("WORKBENCH_HOME") if old is None else os.environ.__setitem__("WORKBENCH_HOME", old)
    return tmp / "run"
