"""The preflight estimate: time per epoch, the whole run's time and peak memory, before Start."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from app_support import APP_MARKS, aloop, load, use_tiny_model, window  # noqa: F401 - fixtures
from conftest import sentiment_rows, write_tsv
from text_tasks_helpers import tiny_text_model  # noqa: F401 - fixture

from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from workbench.core.errors import InputError
from workbench.core.run.preflight import _padded, duration, estimate, rough_duration

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.timeout(300)]


def _config(data, model, **train) -> RunConfig:
    t = dict(epochs=2.0, batch_size=16, max_length=32, lr=1e-3) | train
    return RunConfig(data=DataConfig(train=str(data)), model=ModelConfig(name=str(model)), train=TrainConfig(**t))


def test_the_estimate_scales_measured_batches_to_the_whole_run(sentiment_tsv, tiny_model_dir, runs_home):
    p = estimate(_config(sentiment_tsv, tiny_model_dir), batches=3)
    # 240 rows: a tenth held out for validation, a tenth for the test; refit on small sets.
    n = p.rows["train"]
    assert sum(p.rows.values()) == 240 and 180 < n < 200 and set(p.rows) == {"train", "validation", "test"}
    assert p.steps_per_epoch == math.ceil(n / 16) and p.total_steps == 2 * p.steps_per_epoch
    assert p.measured_batches == 3 and p.seconds_per_step > 0
    assert p.train_seconds_per_epoch == pytest.approx(p.seconds_per_step * p.steps_per_epoch, rel=1e-6)
    assert p.evaluations == 2 and p.validation_seconds > 0
    assert p.refit and p.refit_seconds == pytest.approx(p.train_seconds_per_epoch * 2 * (n + p.rows["validation"]) / n, rel=1e-6)
    parts = p.setup_seconds + 2 * p.train_seconds_per_epoch + 2 * p.validation_seconds + p.refit_seconds
    assert p.total_seconds == pytest.approx(parts + p.final_seconds, rel=1e-6)
    if sys.platform.startswith("linux"):
        assert p.peak_memory_bytes > 50 * 2**20 and "CPU" in p.memory_kind
    assert p.trainable_parameters == p.parameters > 0
    assert p.text().startswith("About ") and "refit" in p.text() and "Peak memory" in p.text()
    assert not runs_home.exists()  # an estimate makes no run


def test_the_estimate_follows_the_settings(sentiment_tsv, tiny_model_dir, runs_home, tmp_path):
    test = write_tsv(tmp_path / "test.tsv", sentiment_rows(40, seed=3))
    c = _config(sentiment_tsv, tiny_model_dir, epochs=1.0, batch_size=8, refit=False)
    c.data.test = str(test)
    c.model.method = "frozen"
    p = estimate(c, batches=2)
    assert p.rows["test"] == 40 and p.rows["train"] + p.rows["validation"] == 240
    assert p.steps_per_epoch == math.ceil(p.rows["train"] / 8) and not p.refit and p.refit_seconds == 0
    assert 0 < p.trainable_parameters < p.parameters
    with pytest.raises(InputError):
        estimate(_config(tmp_path / "missing.tsv", tiny_model_dir))


def test_padding_is_costed_by_the_longest_row_of_each_batch():
    lengths = np.array([3, 10, 4, 4])
    assert _padded(lengths, np.array([0, 1])) == 20 and _padded(lengths, np.array([2, 3])) == 8
    assert _padded(lengths, np.array([], dtype=int)) == 0
    assert [duration(s) for s in (0.2, 42, 90, 600, 5400)] == ["1 s", "42 s", "1 min 30 s", "10 min", "1 h 30 min"]
    assert [rough_duration(s) for s in (2, 42, 289, 5430)] == ["5 s", "40 s", "5 min", "1 h 30 min"]


def _wb(args, home):
    env = {**os.environ, "WORKBENCH_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "workbench", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)


def test_cli_preflight_prints_the_estimate_and_trains_nothing(sentiment_tsv, tiny_model_dir, tmp_path):
    home = tmp_path / "home"
    p = _wb(["train", sentiment_tsv, "--model", tiny_model_dir, "--batch-size", 16, "--max-length", 32,
             "--preflight"], home)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert lines[0].startswith("About ")
    result = json.loads(lines[-1])["preflight"]
    assert result["steps_per_epoch"] == math.ceil(result["rows"]["train"] / 16) and result["total_seconds"] > 0 and result["epochs"] == 3
    assert not (home / "runs").exists()
    bad = _wb(["train", tmp_path / "nope.tsv", "--preflight"], home)
    assert bad.returncode == 2 and "nope.tsv" in bad.stderr and "Traceback" not in bad.stderr
    resumed = _wb(["train", "--resume", tmp_path, "--preflight"], home)
    assert resumed.returncode == 2 and "--preflight" in resumed.stderr


class TestApp:
    pytestmark = APP_MARKS

    def test_estimate_button_shows_the_estimate_and_settings_drop_it(self, qtbot, window, sentiment_tsv,
                                                                      tiny_model_dir):
        load(qtbot, window, sentiment_tsv)
        use_tiny_model(qtbot, window, tiny_model_dir)
        window.go_to("train")
        page = window.train_page
        assert page.estimate_button.isEnabled()
        with qtbot.waitSignal(page.preflight.finished, timeout=120000) as done:
            page.estimate_button.click()
            assert not page.estimate_button.isEnabled() and "Estimating" in page.estimate_text.text()
        assert done.args[0]["steps_per_epoch"] == math.ceil(done.args[0]["rows"]["train"] / 16)
        assert page.estimate_text.text().startswith("About ") and page.estimate_button.isEnabled()
        assert "Estimate: About" in page.log.toPlainText()
        window.state.config.train.epochs = 5.0
        window.state.touch_config()  # other settings: the old estimate is not theirs
        assert page.estimate_text.text() == "" and not page.estimate_text.isVisible()
        # Settings changed while estimating: the child process is stopped, nothing is shown.
        page.estimate_button.click()
        assert page.preflight.running
        window.state.touch_config()
        assert not page.preflight.running and page.estimate_button.isEnabled()


def test_the_estimate_covers_tagging_and_images(tmp_path, tiny_text_model):
    from image_samples import write_class_folder
    from text_tasks_helpers import ner_sentences, write_conll

    conll = write_conll(tmp_path / "ner.conll", ner_sentences(120))
    tags = estimate(_config(conll, tiny_text_model, epochs=1.0), batches=2)
    assert tags.row_unit == "sentences" and tags.seconds_per_step > 0 and tags.measured_batches == 2
    images = write_class_folder(tmp_path / "images", n_per_class=12)
    c = _config(images, "small-cnn", epochs=1.0, batch_size=8, image_size=32)
    pics = estimate(c, batches=2)
    assert pics.row_unit == "images" and pics.steps_per_epoch == math.ceil(pics.rows["train"] / 8)
    assert pics.train_seconds_per_epoch > 0
