"""`workbench search`: Optuna trials as run directories, pruning through the run's evaluations, the
choice by the validation metric alone, a search that goes on after being killed, the final run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from workbench.cli.main import main  # noqa: E402
from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from workbench.core.errors import InputError  # noqa: E402
from workbench.core.search.space import search_space  # noqa: E402
from workbench.core.search.study import default_trial, plan_search, run_search, train_best  # noqa: E402

SETTINGS = dict(epochs=2, batch_size=16, max_length=32, seed=1)


def base_config(data, model_dir, **train) -> RunConfig:
    return RunConfig(data=DataConfig(train=str(data)), model=ModelConfig(name=str(model_dir)),
                     train=TrainConfig(**{**SETTINGS, **train}))


def validation_scores(run_dir: str, metric: str) -> list[float]:
    lines = [json.loads(x) for x in Path(run_dir, "metrics.jsonl").read_text().splitlines()]
    return [r["metrics"][metric] for r in lines if r["event"] == "EvalMetrics" and r["split"] == "validation"]


def test_space_follows_the_method_and_the_flags_given(sentiment_tsv, tiny_model_dir, runs_home):
    full = {r.name for r in search_space("full", "text", 5e-5)}
    assert full == {"train.lr", "train.epochs", "train.batch_size", "train.warmup_ratio", "train.weight_decay"}
    lora = {r.name: r for r in search_space("lora", "text", 5e-4)}
    assert {"model.lora_rank", "model.lora_alpha"} <= set(lora)
    assert lora["train.lr"].low == pytest.approx(5e-5) and lora["train.lr"].high == pytest.approx(5e-3)
    search = plan_search(base_config(sentiment_tsv, tiny_model_dir), 4, fixed=["train.lr", "train.epochs"])
    assert {r.name for r in search.space} == full - {"train.lr", "train.epochs"}
    assert search.metric == "macro_f1" and search.maximize
    assert search.folder == runs_home / "searches" / "reviews-text-classification-full"
    with pytest.raises(InputError, match="--metric"):
        plan_search(base_config(sentiment_tsv, tiny_model_dir, metric="bleu"), 4)
    with pytest.raises(InputError, match="validation"):
        cfg = base_config(sentiment_tsv, tiny_model_dir)
        cfg.data.val_fraction = 0
        plan_search(cfg, 4)


def test_search_prunes_a_bad_trial_and_chooses_by_validation(sentiment_tsv, tiny_model_dir, runs_home):
    # Validation loss, trials given in order: a sound rate and a slow one (both finish: the pruner
    # waits for two), then an absurd one, pruned at its first evaluation (its loss far above theirs).
    search = plan_search(base_config(sentiment_tsv, tiny_model_dir, metric="loss"), 3,
                         fixed=["train.epochs", "train.batch_size"])
    assert not search.maximize
    ended = []
    rates = [3e-3, 2e-4, 0.5]
    result = run_search(search, pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
                        enqueue=[{"lr": rates[0], "warmup_ratio": 0.0, "weight_decay": 0.01},
                                 {"lr": rates[1], "warmup_ratio": 0.1, "weight_decay": 0.05},
                                 {"lr": rates[2], "warmup_ratio": 0.0, "weight_decay": 0.0}], on_trial=lambda t, study: ended.append(t))
    assert [t["state"] for t in ended] == ["complete", "complete", "pruned"]
    assert (result.trials, result.complete, result.pruned) == (3, 2, 1)
    runs = {t["number"]: t["run_dir"] for t in ended}
    assert len(validation_scores(runs[2], "loss")) == 1  # stopped at its first evaluation
    # Each trial is a run directory; none was scored on the test split, none exported.
    for run_dir in runs.values():
        events = [json.loads(x)["event"] for x in Path(run_dir, "metrics.jsonl").read_text().splitlines()]
        assert "Finished" not in events and not Path(run_dir, "model").exists()
        assert not any(json.loads(x).get("split") == "test"
                       for x in Path(run_dir, "metrics.jsonl").read_text().splitlines())
    best_of = {n: min(validation_scores(runs[n], "loss")) for n in (0, 1)}
    winner = min(best_of, key=best_of.get)
    best = json.loads((search.folder / "best.json").read_text())
    assert best["trial"] == winner and best["value"] == pytest.approx(best_of[winner])
    assert best["params"]["lr"] == rates[winner]
    assert "workbench train" in best["command"] and "--lr" in best["command"]
    # The final run: the best settings, tested once on the test split.
    final = train_best(search)
    assert final.eval_split == "test"
    config = json.loads(Path(final.run_dir, "config.json").read_text())
    assert config["train"]["lr"] == best["params"]["lr"]
    assert json.loads((search.folder / "best.json").read_text())["test"] == final.metrics


def test_search_command_checks_its_flags(sentiment_tsv, tiny_model_dir, runs_home, capsys):
    assert main(["search", str(sentiment_tsv)]) == 2
    assert "--trials" in capsys.readouterr().err
    assert main(["search", str(sentiment_tsv), "--trials", "0", "--model", str(tiny_model_dir)]) == 2
    assert main(["search", str(sentiment_tsv), "--train-best", "--model", str(tiny_model_dir)]) == 2
    assert "no best trial" in capsys.readouterr().err


@pytest.mark.slow
def test_a_killed_search_goes_on_with_its_finished_trials(sentiment_tsv, tiny_model_dir, runs_home):
    command = [sys.executable, "-m", "workbench", "search", str(sentiment_tsv), "--model", str(tiny_model_dir),
               "--trials", "3", "--max-length", "32", "--epochs", "2", "--batch-size", "16", "--no-preflight", "-q"]
    env = {**os.environ, "WORKBENCH_HOME": str(runs_home.parent)}
    storage = f"sqlite:///{runs_home / 'searches' / 'reviews-text-classification-full' / 'study.db'}"
    # The process dies (SIGKILL) at the second trial's first training step: no timing involved.
    first = subprocess.run(command, env={**env, "WORKBENCH_FAULT_KILL_TRIAL": "1"}, capture_output=True, text=True,
                           timeout=600)
    assert first.returncode == -signal.SIGKILL, first.stderr
    trials = optuna.load_study(study_name="reviews-text-classification-full", storage=storage).trials
    assert [t.state.name for t in trials][1:] == ["RUNNING"] and trials[0].state.name in ("COMPLETE", "PRUNED")
    kept = (trials[0].number, trials[0].state, trials[0].value)
    cut = [1]
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    study = optuna.load_study(study_name="reviews-text-classification-full", storage=storage)
    states = [t.state.name for t in study.trials]
    assert (study.trials[0].number, study.trials[0].state, study.trials[0].value) == kept  # kept, not run again
    assert [states[n] for n in cut] == ["FAIL"] * len(cut)  # the trials the kill cut short
    assert len([s for s in states if s in ("COMPLETE", "PRUNED")]) == 3 and len(states) == 3 + len(cut)
    summary = json.loads(again.stdout.strip().splitlines()[-1])["search"]
    assert summary["trials"] == 3 and summary["failed"] == len(cut)


def test_the_first_trial_tries_the_defaults(sentiment_tsv, tiny_model_dir, runs_home):
    # A few sampled trials can all land below the defaults; trial 0 is the defaults, so the best
    # on validation never is.
    search = plan_search(base_config(sentiment_tsv, tiny_model_dir), 1, fixed=["train.batch_size"])
    search.config.train.epochs = None  # the text default (3) is what a plain run takes
    defaults = default_trial(search)
    assert defaults == {"lr": 5e-5, "epochs": 3, "warmup_ratio": 0.06, "weight_decay": 0.01}
    search.config.train.epochs = 1  # keep the trial short: the user's setting, within the range, is the default
    ended = []
    run_search(search, on_trial=lambda t, study: ended.append((t, study.trials[t["number"]].user_attrs)))
    (trial, attrs), = ended
    assert trial["params"] == {**defaults, "epochs": 1} and attrs["defaults"] is True and trial["defaults"]
    assert json.loads(Path(trial["run_dir"], "trial.json").read_text())["defaults"] is True
