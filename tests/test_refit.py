"""Refit: without a validation file, small sets train the final model on every row, for the number
of epochs the held-out part chose (workbench/core/run/refit.py)."""

from __future__ import annotations

import io
import json
import math

import pytest

from tests.conftest import sentiment_rows, write_tsv
from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from workbench.core.data.prepare import HELD_OUT
from workbench.core.events import Callbacks, PhaseChanged, Refitted, StepMetrics
from workbench.core.run.pipeline import run_training
from workbench.core.run.refit import REFIT_MAX_ROWS, plan_refit, wants_refit
from workbench.core.training.loop import TrainOutcome


class Recorder(Callbacks):
    def __init__(self):
        self.events = []

    def on_event(self, event):
        self.events.append(event)


def _config(tmp_path, model_dir, **train):
    train_file = write_tsv(tmp_path / "train.tsv", sentiment_rows(200, seed=1))
    test_file = write_tsv(tmp_path / "test.tsv", sentiment_rows(40, seed=2))
    return RunConfig(data=DataConfig(train=str(train_file), test=str(test_file)), model=ModelConfig(name=str(model_dir)),
                     train=TrainConfig(epochs=2, batch_size=16, lr=1e-3, max_length=32, seed=3, **train),
                     run_dir=str(tmp_path / "run"))


def test_the_decision():
    held = {"train": "t.tsv", "validation": "t.tsv" + HELD_OUT, "test": "test.tsv"}
    assert wants_refit(None, held, {"train": 900, "validation": 100})[0]
    assert not wants_refit(None, held, {"train": REFIT_MAX_ROWS, "validation": 1})[0]
    assert wants_refit(True, held, {"train": REFIT_MAX_ROWS, "validation": 1})[0]
    assert not wants_refit(False, held, {"train": 90, "validation": 10})[0]
    # A run capped by --max-steps is a quick trial: auto does not double it; --refit still does.
    assert not wants_refit(None, held, {"train": 90, "validation": 10}, capped=True)[0]
    assert wants_refit(True, held, {"train": 90, "validation": 10}, capped=True)[0]
    # A validation file the user gave is never trained on, even with --refit.
    given = {"train": "t.tsv", "validation": "v.tsv", "test": "test.tsv"}
    assert not wants_refit(True, given, {"train": 90, "validation": 10})[0]
    # Nor is a held-out part that is also the split the report is computed on.
    assert not wants_refit(True, {"train": "t.tsv", "validation": "t.tsv" + HELD_OUT}, {"train": 90, "validation": 10})[0]


def test_ties_go_to_the_lowest_validation_loss():
    evals = [[10, 0.5, 0.69], [20, 1.0, 0.48], [30, 1.0, 0.14], [40, 1.0, 0.20]]
    outcome = TrainOutcome(steps=40, train_seconds=1, samples_seen=1, samples_per_second=1, best_step=20,
                           best_metrics={}, stopped_early=False, evaluations=evals)
    assert plan_refit(outcome, 10, {"train": 9, "validation": 1}).chosen_step == 30


def test_the_chosen_length_is_the_best_step_in_epochs():
    outcome = TrainOutcome(steps=30, train_seconds=1, samples_seen=1, samples_per_second=1, best_step=20,
                           best_metrics={}, stopped_early=False)
    plan = plan_refit(outcome, steps_per_epoch=10, rows={"train": 90, "validation": 10})
    assert (plan.epochs, plan.rows, plan.chosen_step, plan.first_pass_epochs) == (2.0, 100, 20, 3.0)


def test_small_sets_refit_on_every_row(tmp_path, tiny_model_dir):
    rec = Recorder()
    result = run_training(_config(tmp_path, tiny_model_dir), rec)
    run = tmp_path / "run"
    report = json.loads((run / "report.json").read_text())
    trained = report["trained_on"]
    assert trained["refit"] and trained["rows"] == 200 and trained["validation_rows"] == 20
    assert trained["splits"] == ["train", "validation"]
    # The first pass: 180 rows (12 steps an epoch) for 2 epochs; the second: 200 rows (13 steps an
    # epoch) for the epochs chosen, numbered after the first pass's.
    steps = [e for e in rec.events if isinstance(e, StepMetrics)]
    first = [e for e in steps if e.total_steps == 24]
    second = [e for e in steps if e.total_steps != 24]
    assert [e.step for e in first] == list(range(1, 25))
    chosen = trained["epochs"]
    assert second and second[0].step == 25 and second[-1].step == second[-1].total_steps == 24 + math.ceil(round(13 * chosen, 6))
    assert any(isinstance(e, PhaseChanged) and e.phase == "refitting" for e in rec.events)
    assert "trained on all 200 rows" in (run / "report.txt").read_text()
    card = (run / "model" / "README.md").read_text()
    assert "trained on all 200 rows" in card
    # The card's data lists the rows the final model saw, and says why: 180 + 20 held out, one source.
    assert "- train, refit on all rows (180 training + 20 held out for validation): `" in card
    assert "` (200 rows)" in card and "- validation:" not in card and "(40 rows)" in card
    _refit_is_a_phase_of_its_own(rec.events, len(second))
    _the_terminal_says_so(rec.events, len(second))
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["refit"] is True and "200 rows" in config["resolved"]["refit_reason"]
    assert result.metrics["accuracy"] >= 0  # tested on the test file, with the refitted model
    assert not (run / "checkpoints").exists()


def _refit_is_a_phase_of_its_own(events, refit_steps: int) -> None:
    """The refit says what it will do as it starts, counts its own steps and epochs, and says what it
    did once it has: the log line of its end, not of its start."""
    kinds = [type(e).__name__ for e in events]
    start = next(i for i, e in enumerate(events) if isinstance(e, PhaseChanged) and e.phase == "refitting")
    assert "trains again from the backbone on all 200 rows" in events[start].detail
    assert "was trained" not in events[start].detail
    end = kinds.index("Refitted")
    steps = [e for e in events if isinstance(e, StepMetrics)]
    first = [e for e in steps if e.refit_step is None]
    refit = [e for e in events[start:end] if isinstance(e, StepMetrics)]
    assert first and all(events.index(e) < start for e in first)
    assert [e.refit_step for e in refit] == list(range(1, refit_steps + 1)) and refit == steps[len(first):]
    assert {e.refit_steps for e in refit} == {refit_steps} and refit[-1].step == first[-1].step + refit_steps
    assert refit[0].refit_epoch == pytest.approx(1 / 13) and refit[-1].epoch > refit[-1].refit_epoch
    done = events[end]
    assert isinstance(done, Refitted) and (done.rows, done.steps) == (200, refit_steps)
    assert done.epochs == pytest.approx(refit_steps / 13)
    assert done.message.startswith(f"the final model trained on all 200 rows for {refit_steps} steps (")
    assert kinds.index("Refitted") < max(i for i, e in enumerate(events) if isinstance(e, PhaseChanged)
                                         and e.phase == "testing")


def _the_terminal_says_so(events, refit_steps: int) -> None:
    """The CLI's progress: the first pass's bar, then the refit's own, counting its own steps."""
    from workbench.cli.progress import TerminalProgress

    out = io.StringIO()
    progress = TerminalProgress(stream=out)
    for e in events:
        progress.on_event(e)
    progress.close()
    text = out.getvalue()
    assert "training: 100%" in text and "24/24" in text
    assert "[refitting: the final model trains again from the backbone on all 200 rows" in text
    assert "training on all rows: 100%" in text and f" {refit_steps}/{refit_steps} " in text
    assert f"[refitted: the final model trained on all 200 rows for {refit_steps} steps (" in text
    assert text.index("[refitting") < text.index("training on all rows:") < text.index("[refitted")


@pytest.mark.slow
def test_refit_on_all_rows_repeats_a_run_without_hold_out(tmp_path, tiny_model_dir):
    """When the hold-out chooses the whole run, the refit is exactly the run on every row."""
    cfg = _config(tmp_path, tiny_model_dir, metric="loss")
    cfg.train.epochs = 1  # one evaluation: the chosen length is the whole first pass
    refitted = run_training(cfg)
    cfg = _config(tmp_path, tiny_model_dir, metric="loss")
    cfg.train.epochs = 1
    cfg.data.val_fraction = 0.0
    cfg.run_dir = str(tmp_path / "plain")
    plain = run_training(cfg)
    assert refitted.metrics == pytest.approx(plain.metrics, abs=1e-6)


@pytest.mark.parametrize("flags", [dict(refit=False), dict()])
def test_no_refit_or_a_validation_file(tmp_path, tiny_model_dir, flags):
    cfg = _config(tmp_path, tiny_model_dir, **flags)
    if not flags:
        cfg.data.val = str(write_tsv(tmp_path / "val.tsv", sentiment_rows(30, seed=4)))
    rec = Recorder()
    run_training(cfg, rec)
    trained = json.loads((tmp_path / "run" / "report.json").read_text())["trained_on"]
    assert not trained["refit"] and trained["rows"] == (180 if "refit" in flags else 200)
    assert not any(isinstance(e, PhaseChanged) and e.phase == "refitting" for e in rec.events)
