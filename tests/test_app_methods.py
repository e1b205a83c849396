"""Desktop app: the training method (full, frozen, LoRA, AdaLoRA) on the Model page, and a run that adapts
the backbone to the user's texts first (two stages, each with its curves, cancellable in either)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from app_support import APP_MARKS, aloop, load, use_tiny_model, wait_task, window  # noqa: F401 - fixtures
from conftest import sentiment_rows, write_tsv
from test_app_training import _start, _status

pytestmark = [*APP_MARKS, pytest.mark.timeout(600)]


def _imported_beforehand() -> None:
    """What the app's warm-up imports, imported now: on a loaded machine the window's warm-up would
    otherwise outlast the fixture's wait for it."""
    import importlib

    from workbench.app import warmup

    for name in warmup.MODULES:
        importlib.import_module(name)


_imported_beforehand()


def test_method_choice_sets_the_config_and_shows_what_trains(qtbot, window, sentiment_tsv, tiny_model_dir):
    load(qtbot, window, sentiment_tsv)
    use_tiny_model(qtbot, window, tiny_model_dir)
    page = window.model_page
    cfg = window.state.config
    page.restore_defaults()  # the learning rate is the default, so a method's suggestion may replace it
    wait_task(qtbot, page.refresh_suggestions())
    assert not page.lora_rank.isVisibleTo(page) and (cfg.train.lr, page.lr.value()) == (None, 5e-5)
    page.method.setCurrentIndex(page.method.findData("lora"))
    assert cfg.model.method == "lora" and page.lora_rank.isVisibleTo(page) and page.lora_targets.isVisibleTo(page)
    wait_task(qtbot, page.refresh_suggestions())
    assert (cfg.train.lr, page.lr.value()) == (None, 5e-4)  # adapters take a larger step
    page.lora_rank.setValue(4)
    wait_task(qtbot, page.refresh_trainable())
    # query and value of 2 layers, 32 wide, rank 4; and the 32 x 2 head.
    assert page.trainable.text().startswith(f"Trains {2 * 2 * 4 * 64 + 66:,} of") and cfg.model.lora_rank == 4
    page.lora_targets.setText("query, key")
    page.lora_targets.editingFinished.emit()
    assert cfg.model.lora_targets == ["query", "key"]
    page.method.setCurrentIndex(page.method.findData("frozen"))
    wait_task(qtbot, page.refresh_trainable())
    assert page.trainable.text().startswith("Trains 66 of") and not page.lora_rank.isVisibleTo(page)
    page.restore_defaults()
    assert cfg.model.method == "full" and page.method.currentData() == "full"


@pytest.mark.slow
def test_adapting_first_runs_two_stages_each_with_its_curves(qtbot, window, tiny_model_dir, runs_home, tmp_path):
    load(qtbot, window, write_tsv(tmp_path / "reviews.tsv", sentiment_rows(100)))
    use_tiny_model(qtbot, window, tiny_model_dir, epochs=1.0)
    page = window.model_page
    assert not page.adapt_epochs.isEnabled()
    page.adapt.setChecked(True)
    assert window.state.adapt_first and page.adapt_epochs.isEnabled()
    page.adapt_epochs.setValue(2.0)
    train = window.train_page
    stages = []
    window.controller.events.connect(lambda b: stages.extend(e for e in b if e["event"] == "StageStarted"))
    run_dir = _start(qtbot, window)
    qtbot.waitUntil(lambda: len(stages) == 1 and len(train.series.step) >= 1, timeout=120000)
    assert "Stage 1 of 2" in train.stage.text() and not train.pause_button.isEnabled()
    adapt_dir = Path(stages[0]["run_dir"])
    with qtbot.waitSignal(window.controller.finished, timeout=240000) as done:
        pass
    assert [s["index"] for s in stages] == [1, 2] and "Stage 2 of 2" in train.stage.text()
    result = done.args[0]
    assert result.run_dir == run_dir == window.state.run_dir and _status(run_dir)["state"] == "finished"
    assert _status(adapt_dir)["state"] == "finished"
    adapted = json.loads((adapt_dir / "report.json").read_text())
    assert adapted["task"] == "masked-lm" and adapted["metrics"]["loss"] < adapted["before_training"]["loss"]
    config = json.loads((Path(run_dir) / "config.json").read_text())
    assert config["model"]["name"] == str(adapt_dir / "model")  # the fine-tuning started from the adapted backbone
    assert json.loads((adapt_dir / "config.json").read_text())["train"]["epochs"] == 2.0
    assert json.loads((adapt_dir / "config.json").read_text())["data"]["text_column"] == "text"
    # The page shows the fine-tuning's curve (its own steps), the log both stages.
    steps = sum(1 for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
                if json.loads(line)["event"] == "StepMetrics")
    assert len(train.series.step) == steps and train.series.step[0] == 1
    log = train.log.toPlainText()
    assert "Stage 1 of 2" in log and "Stage 2 of 2" in log and "perplexity" in log


def test_cancel_during_adaptation_stops_both_stages(qtbot, window, sentiment_tsv, tiny_model_dir, runs_home):
    load(qtbot, window, sentiment_tsv)
    use_tiny_model(qtbot, window, tiny_model_dir, batch_size=4)
    window.model_page.adapt.setChecked(True)
    window.model_page.adapt_epochs.setValue(50.0)
    run_dir = _start(qtbot, window)
    train = window.train_page
    qtbot.waitUntil(lambda: len(train.series.step) >= 1, timeout=120000)
    with qtbot.waitSignal(window.controller.cancelled, timeout=20000):
        train.cancel_button.click()
    assert not Path(run_dir).exists()  # the fine-tuning never started
    assert "Cancelled" in train.result.text()
