"""Calibration: ECE by hand, temperature scaling on validation, and both recorded by a run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from workbench.core.analysis.calibration import calibration_report, fit_temperature, nll, reliability


def test_ece_matches_a_hand_computation():
    # Four examples in two of 10 bins: confidences 0.95, 0.92 (one right) and 0.62, 0.68 (both right).
    probs = np.array([[0.95, 0.05], [0.08, 0.92], [0.62, 0.38], [0.32, 0.68]])
    labels = np.array([0, 0, 0, 1])
    r = reliability(probs, labels, bins=10)
    # bin (0.9, 1]: accuracy 0.5, confidence 0.935; bin (0.6, 0.7]: accuracy 1.0, confidence 0.65
    hand = 2 / 4 * abs(0.5 - 0.935) + 2 / 4 * abs(1.0 - 0.65)
    assert r["ece"] == pytest.approx(hand)
    full = [b for b in r["bins"] if b["count"]]
    assert [(b["lower"], b["count"]) for b in full] == [(pytest.approx(0.6), 2), (pytest.approx(0.9), 2)]
    assert full[0]["accuracy"] == 1.0 and full[1]["confidence"] == pytest.approx(0.935)


def test_perfectly_calibrated_has_small_ece():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, 20000)
    correct = rng.uniform(size=20000) < conf
    labels = np.where(correct, 0, 1)
    probs = np.stack([conf, 1 - conf], 1)
    assert reliability(probs, labels)["ece"] < 0.02


def overconfident(n, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), labels] += 1.0
    return logits * 4.0, labels  # sharpened: too sure of itself


def test_temperature_scaling_lowers_validation_nll():
    val_logits, val_labels = overconfident(2000, 0)
    t = fit_temperature(val_logits, val_labels)
    assert t > 1.5  # it softens an overconfident model
    assert nll(val_logits, val_labels, t) < nll(val_logits, val_labels) - 0.1
    # the optimum: nearby temperatures are no better
    assert nll(val_logits, val_labels, t) <= min(nll(val_logits, val_labels, t * 0.9), nll(val_logits, val_labels, t * 1.1))
    test_logits, test_labels = overconfident(2000, 1)
    rep = calibration_report(test_logits, test_labels, val_logits, val_labels)
    assert rep["temperature"] == pytest.approx(t)
    assert rep["ece_scaled"] < rep["ece"] and rep["nll_scaled"] < rep["nll"]
    assert rep["validation_nll_scaled"] < rep["validation_nll"]
    assert (np.argmax(test_logits / t, 1) == np.argmax(test_logits, 1)).all()


def test_run_records_calibration_and_exports_temperature(sentiment_tsv, tiny_model_dir, runs_home):
    from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from workbench.core.run.pipeline import run_training

    cfg = RunConfig(data=DataConfig(train=str(sentiment_tsv)), model=ModelConfig(name=str(tiny_model_dir)),
                    train=TrainConfig(epochs=2, batch_size=16, lr=3e-3, max_length=32, seed=1))
    result = run_training(cfg)
    report = json.loads((Path(result.run_dir) / "report.json").read_text())
    cal = report["calibration"]
    assert 0 <= cal["ece"] <= 1 and len(cal["bins"]) == 15 and cal["fitted_on"] == "validation"
    assert cal["temperature"] > 0 and cal["validation_nll_scaled"] <= cal["validation_nll"] + 1e-9
    meta = json.loads((Path(result.run_dir) / "model" / "workbench.json").read_text())
    assert meta["temperature"] == pytest.approx(cal["temperature"])
