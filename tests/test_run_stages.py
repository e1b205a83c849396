"""The run's stages (workbench/core/run/stages.py): what prepare pins, what a measurement leaves
alone, and that a library call of run_training takes the table's learning rate for its method."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import sentiment_rows, write_tsv

from workbench.core.cancel import NEVER
from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from workbench.core.events import Callbacks, PhaseChanged, TaskReady, Warning_
from workbench.core.run.pipeline import run_training
from workbench.core.run.stages import check, prepare
from workbench.core.tasks.table import default_lr


class Recorder(Callbacks):
    def __init__(self):
        self.events = []

    def on_event(self, event):
        self.events.append(event)


def _config(tmp_path: Path, model_dir: Path, method: str = "full", **train) -> RunConfig:
    data = write_tsv(tmp_path / "reviews.tsv", sentiment_rows(80))
    test = write_tsv(tmp_path / "test.tsv", sentiment_rows(20, seed=2))
    settings = {"batch_size": 16, "max_length": 32, "seed": 1, "save_minutes": 0, **train}
    return RunConfig(data=DataConfig(train=str(data), test=str(test)), model=ModelConfig(name=str(model_dir), method=method),
                     train=TrainConfig(**settings), run_dir=str(tmp_path / "run"))


@pytest.mark.parametrize("method", ["full", "lora"])
def test_prepare_pins_the_tables_learning_rate_for_the_method(tmp_path, tiny_model_dir, method):
    checked = check(_config(tmp_path, tiny_model_dir, method))
    assert checked.config.train.lr is None
    prepared = prepare(checked, tmp_path / "cache", Callbacks(), NEVER)
    assert prepared.config.train.lr == default_lr("text-classification", method)
    assert prepared.config.train.lr == {"full": 5e-5, "lora": 5e-4}[method]


def test_a_given_learning_rate_is_kept(tmp_path, tiny_model_dir):
    prepared = prepare(check(_config(tmp_path, tiny_model_dir, "lora", lr=2e-3)), tmp_path / "cache", Callbacks(),
                       NEVER)
    assert prepared.config.train.lr == 2e-3


def test_prepare_as_a_measurement_writes_nothing_and_announces_no_choice(tmp_path, tiny_model_dir):
    seen = Recorder()
    prepared = prepare(check(_config(tmp_path, tiny_model_dir)), tmp_path / "cache", seen, NEVER)
    assert prepared.config.train.epochs is not None and prepared.epochs_reason  # chosen all the same
    assert prepared.rows["train"] + prepared.rows.get("validation", 0) == 80 and prepared.rows["test"] == 20
    assert not [e for e in seen.events if isinstance(e, (TaskReady, Warning_))]
    assert not [e for e in seen.events if isinstance(e, PhaseChanged) and e.phase in ("epochs", "planning")]
    assert not (tmp_path / "run").exists()


def test_a_library_run_with_lora_and_no_lr_trains_at_the_tables_rate(tmp_path, tiny_model_dir):
    config = _config(tmp_path, tiny_model_dir, "lora", epochs=1, max_steps=2, refit=False)
    assert config.train.lr is None
    result = run_training(config)
    saved = json.loads((Path(result.run_dir) / "config.json").read_text())
    assert saved["train"]["lr"] == 5e-4 == default_lr("text-classification", "lora")
    assert saved["model"]["method"] == "lora"
    # The config.json of a run repeats it: read back, it is complete.
    assert RunConfig.from_dict({k: v for k, v in saved.items() if k != "resolved"}).train.lr == 5e-4

