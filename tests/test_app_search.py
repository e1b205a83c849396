"""Run > Find Best Settings: a small search on the tiny model in the background fills the trials
table and the three plots; "Train with These Settings" starts the final run with the best settings.
Run > Log Runs To: the trackers the app's runs log to, remembered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from app_support import APP_MARKS, aloop, load, shoot, use_tiny_model, window  # noqa: F401 - fixtures

pytest.importorskip("optuna")

pytestmark = [*APP_MARKS, pytest.mark.timeout(600)]


def test_find_best_settings_fills_the_table_and_plots(qtbot, window, sentiment_tsv, tiny_model_dir, runs_home):
    import pyqtgraph as pg

    from workbench.app.search import open_search

    load(qtbot, window, sentiment_tsv)
    use_tiny_model(qtbot, window, tiny_model_dir, epochs=2.0, lr=None)
    assert window.search_action.text() == "Find &Best Settings…"
    dialog = open_search(window)
    qtbot.addWidget(dialog)
    # The estimate comes before Start.
    qtbot.waitUntil(lambda: dialog.run_seconds is not None, timeout=60000)
    dialog.trials.setValue(3)
    assert "for 3 trials" in dialog.estimate_label.text()
    dialog.enqueue = [{"lr": 3e-3, "epochs": 2, "batch_size": 16, "warmup_ratio": 0.0, "weight_decay": 0.01},
                      {"lr": 1e-5, "epochs": 1, "batch_size": 32, "warmup_ratio": 0.1, "weight_decay": 0.05},
                      {"lr": 3e-4, "epochs": 3, "batch_size": 8, "warmup_ratio": 0.2, "weight_decay": 0.0}]
    with qtbot.waitSignal(dialog.finished_search, timeout=400000) as ended:
        dialog.start_button.click()
    assert ended.args == [True]
    results = dialog.results
    assert dialog.table.rowCount() == 3 == len(results["trials"])
    complete = [t for t in results["trials"] if t["state"] == "complete"]
    assert complete and {dialog.table.item(i, 1).text() for i in range(3)} <= {"complete", "pruned"}
    # Optimisation history: one point per finished trial and the best-so-far line.
    scatter, best_line = dialog.history_plot.listDataItems()
    assert len(scatter.getData()[0]) == len(complete) == len(best_line.getData()[0])
    # Parameter importance (optuna.importance) as bars, one per searched setting.
    bars = [i for i in dialog.importance_plot.getPlotItem().items if isinstance(i, pg.BarGraphItem)]
    assert len(complete) < 2 or (bars and len(bars[0].opts["width"]) == len(results["importance"]) > 0)
    # Parallel coordinates: one line per complete trial across the searched settings.
    lines = dialog.parallel_plot.listDataItems()
    assert len(lines) == len(complete) and len(lines[0].getData()[0]) == len(results["parallel"]["axes"]) >= 4
    best = next(t for t in results["trials"] if t["number"] == results["best"])
    assert f"trial {best['number']}" in dialog.best_label.text()
    # The best trial is the one with the best validation score.
    assert best["value"] == max(t["value"] for t in complete)
    best_json = json.loads(Path(dialog.search.folder, "best.json").read_text())
    assert best_json["trial"] == best["number"]
    shoot(dialog, "search-results")  # WORKBENCH_SHOTS=folder keeps it, in both schemes
    # Train with these settings: the Model page takes them and the final run starts.
    with qtbot.waitSignal(window.controller.finished, timeout=120000):
        dialog.train_button.click()
    assert window.state.config.train.lr == pytest.approx(best["params"]["lr"])
    assert window.model_page.batch_size.value() == best["params"]["batch_size"]


def test_log_runs_to_is_remembered(qtbot, window):
    from workbench.app.search import saved_trackers

    actions = window.tracker_actions
    assert not any(a.isChecked() for a in actions.values()) and window.state.config.report_to == []
    actions["tensorboard"].setChecked(True)
    assert window.state.config.report_to == ["tensorboard"] and saved_trackers() == ["tensorboard"]
    actions["mlflow"].setChecked(True)
    actions["tensorboard"].setChecked(False)
    assert window.state.config.report_to == ["mlflow"] == saved_trackers()
