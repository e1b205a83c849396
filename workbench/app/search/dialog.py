"""Run > Find Best Settings: a hyper-parameter search of the current settings in the background
(core/search, on the app's Jobs thread), its trials in a table as they end, the optimisation
history, parameter importance and parallel coordinates drawn with pyqtgraph, and "Train with these
settings", which hands the best settings back to the window for the final run.

The estimate (one run's preflight x the trials) is shown before Start."""

from __future__ import annotations

import copy
import logging
from typing import Any, Callable

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ...core.config import RunConfig
from ..jobs import Jobs, JobState, describe

log = logging.getLogger(__name__)
_PARAM_TITLES = {"lr": "learning rate", "epochs": "epochs", "batch_size": "batch size", "warmup_ratio": "warm-up",
                 "weight_decay": "weight decay", "lora_rank": "LoRA rank", "lora_alpha": "LoRA alpha"}


def _estimate(state: JobState, search) -> dict[str, Any]:
    from ...core.search.study import estimate_search

    return estimate_search(search, None, state.token)


def _search(state: JobState, search, enqueue) -> Any:
    from ...core.search.results import study_results
    from ...core.search.study import run_search

    def on_trial(info, study) -> None:
        state.progress(study_results(search, study))

    result = run_search(search, None, state.token, enqueue=enqueue, on_trial=on_trial)
    import optuna

    study = optuna.load_study(study_name=search.name, storage=search.storage)
    return result, study_results(search, study)


class SearchDialog(QDialog):
    """``config``: the settings to search around (a copy is taken); ``train_with`` gets the best
    settings as a RunConfig when the user asks to train with them."""

    finished_search = Signal(bool)  # True: the search ended with a best trial

    def __init__(self, config: RunConfig, train_with: Callable[[RunConfig], None] | None = None,
                 parent: QWidget | None = None, enqueue: list[dict[str, Any]] | tuple = ()) -> None:
        super().__init__(parent)
        self.setWindowTitle("Find Best Settings")
        self.resize(900, 640)
        self.config = copy.deepcopy(config)
        self.train_with = train_with
        self.enqueue = list(enqueue)  # settings tried first (tests)
        self.search = None
        self.results: dict[str, Any] | None = None
        self.best_config: RunConfig | None = None
        self.running = False
        self.run_seconds: float | None = None
        self.estimates, self.jobs = Jobs(self), Jobs(self)
        self._build()
        self._plan()

    # ---- building -------------------------------------------------------------------------------
    def _build(self) -> None:
        lay = QVBoxLayout(self)
        form = QFormLayout()
        self.trials = QSpinBox()
        self.trials.setRange(1, 500)
        self.trials.setValue(12)
        self.trials.valueChanged.connect(self._show_estimate)
        self.timeout = QDoubleSpinBox()
        self.timeout.setRange(0, 10_000)
        self.timeout.setSuffix(" min")
        self.timeout.setSpecialValueText("none")
        form.addRow("Trials", self.trials)
        form.addRow("Time limit", self.timeout)
        lay.addLayout(form)
        self.estimate_label = QLabel("Estimating the time of one run…")
        self.estimate_label.setWordWrap(True)
        lay.addWidget(self.estimate_label)
        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["trial", "state", "score", "settings"])
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.table, "Trials")
        self.history_plot = self._plot("trial", "score")
        self.importance_plot = self._plot("setting", "importance")
        self.parallel_plot = self._plot("setting", "scaled value")
        self.tabs.addTab(self.history_plot, "Optimisation history")
        self.tabs.addTab(self.importance_plot, "Parameter importance")
        self.tabs.addTab(self.parallel_plot, "Parallel coordinates")
        lay.addWidget(self.tabs, 1)
        self.best_label = QLabel("")
        self.best_label.setWordWrap(True)
        self.best_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.best_label)
        row = QHBoxLayout()
        self.start_button = QPushButton("Start Search")
        self.start_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop)
        self.stop_button.setEnabled(False)
        self.train_button = QPushButton("Train with These Settings")
        self.train_button.setEnabled(False)
        self.train_button.clicked.connect(self._train_best)
        for b in (self.start_button, self.stop_button, self.train_button):
            row.addWidget(b)
        row.addStretch(1)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.reject)
        row.addWidget(close)
        lay.addLayout(row)

    @staticmethod
    def _plot(bottom: str, left: str) -> pg.PlotWidget:
        plot = pg.PlotWidget(enableMenu=False)
        plot.setLabel("bottom", bottom)
        plot.setLabel("left", left)
        plot.showGrid(x=True, y=True, alpha=0.2)
        for side in ("left", "bottom"):  # scores and shares as they are, not "x0.001"
            plot.getAxis(side).enableAutoSIPrefix(False)
        return plot

    # ---- the search -----------------------------------------------------------------------------
    def _plan(self) -> None:
        from ...core.search.study import plan_search

        try:
            self.search = plan_search(copy.deepcopy(self.config), self.trials.value())
        except Exception as e:  # noqa: BLE001 - said in the dialog: bad settings, a missing library
            self.estimate_label.setText(f"Cannot search these settings: {describe(e)}")
            self.start_button.setEnabled(False)
            return
        self.estimates.submit(_estimate, self.search, state=True, on_done=self._estimated,
                              on_error=lambda e: self.estimate_label.setText(f"No estimate: {describe(e)}"))

    def _estimated(self, estimate: dict[str, Any]) -> None:
        self.run_seconds = float(estimate["run_seconds"])
        self._show_estimate()

    def _show_estimate(self) -> None:
        from ...core.run.preflight import rough_duration

        if self.run_seconds is None or self.search is None:
            return
        n = self.trials.value()
        self.estimate_label.setText(f"About {rough_duration(self.run_seconds * n)} for {n} trials of about "
                                    f"{rough_duration(self.run_seconds)} each (pruned trials end sooner). Trials: "
                                    f"{self.search.folder}")

    @Slot()
    def start(self) -> None:
        if self.search is None or self.running:
            return
        self.search.trials = self.trials.value()
        self.search.timeout_s = self.timeout.value() * 60 or None
        self.running = True
        self.start_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.best_label.setText(f"Searching ({self.search.trials} trials, choosing by validation "
                                f"{self.search.metric})…")
        self.jobs.submit(_search, self.search, self.enqueue, state=True, on_progress=self.show_results,
                         on_done=self._done, on_error=self._failed)

    @Slot()
    def stop(self) -> None:
        self.jobs.cancel()
        self._ended(False, "Stopped; start again to go on with the same search.")

    def _done(self, payload) -> None:
        result, results = payload
        self.show_results(results)
        self._ended(result.best is not None, "" if result.best else "No trial finished.")

    def _failed(self, error: Exception) -> None:
        self._ended(False, f"The search stopped: {describe(error)}")

    def _ended(self, ok: bool, message: str) -> None:
        self.running = False
        self.start_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        if message:
            self.best_label.setText(message)
        self.finished_search.emit(ok)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self.jobs.cancel()
        self.estimates.cancel()
        super().closeEvent(event)

    # ---- results --------------------------------------------------------------------------------
    def show_results(self, results: dict[str, Any]) -> None:
        self.results = results
        self._fill_table(results)
        self._draw_history(results)
        self._draw_importance(results)
        self._draw_parallel(results)
        self._show_best(results)

    def _fill_table(self, results: dict[str, Any]) -> None:
        rows = results["trials"]
        self.table.setRowCount(len(rows))
        for i, t in enumerate(rows):
            value = "" if t["value"] is None else f"{t['value']:.4f}"
            settings = ", ".join(f"{_PARAM_TITLES.get(k, k)} {_fmt(v)}" for k, v in t["params"].items())
            state = t["state"] + (" (defaults)" if t.get("defaults") else "")
            for j, text in enumerate((str(t["number"]), state, value, settings)):
                item = QTableWidgetItem(text)
                if t["number"] == results["best"]:
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                self.table.setItem(i, j, item)

    def _draw_history(self, results: dict[str, Any]) -> None:
        plot = self.history_plot
        plot.clear()
        points = results["history"]
        if not points:
            return
        x = [p[0] for p in points]
        plot.plot(x, [p[1] for p in points], pen=None, symbol="o", symbolSize=7, name="trial")
        plot.plot(x, [p[2] for p in points], pen=pg.mkPen("#d62728", width=2), name="best so far")
        plot.setLabel("left", f"validation {results['metric']}")

    def _draw_importance(self, results: dict[str, Any]) -> None:
        plot = self.importance_plot
        plot.clear()
        items = sorted(results["importance"].items(), key=lambda kv: kv[1])
        if not items:
            return
        plot.addItem(pg.BarGraphItem(x0=0, y=list(range(len(items))), height=0.6, width=[v for _, v in items],
                                     brush="#1f77b4"))
        plot.getAxis("left").setTicks([[(i, _PARAM_TITLES.get(k, k)) for i, (k, _) in enumerate(items)]])
        plot.setLabel("bottom", "importance (fANOVA)")
        plot.setLabel("left", "")

    def _draw_parallel(self, results: dict[str, Any]) -> None:
        plot = self.parallel_plot
        plot.clear()
        parallel = results["parallel"]
        axes, values = parallel["axes"], parallel["values"]
        if not axes or not values:
            return
        low, high = min(values), max(values)
        for line, value in zip(parallel["lines"], values):
            share = 0.5 if high == low else (value - low) / (high - low)
            good = share if results["maximize"] else 1 - share
            color = pg.mkColor(int(255 * (1 - good)), 60, int(255 * good))
            plot.plot(list(range(len(axes))), line, pen=pg.mkPen(color, width=2), symbol="o", symbolSize=5)
        plot.getAxis("bottom").setTicks([[(i, _PARAM_TITLES.get(a, a)) for i, a in enumerate(axes)]])
        plot.setXRange(-0.5, len(axes) - 0.5, padding=0)  # room for the outer axes' names
        plot.setLabel("left", "scaled value (blue: better score, red: worse)")

    def _show_best(self, results: dict[str, Any]) -> None:
        from ...core.command import command_line
        from ...core.search.study import best_config

        best = next((t for t in results["trials"] if t["number"] == results["best"]), None)
        if best is None or self.search is None:
            return
        self.best_config = best_config(self.search, best["params"])
        settings = ", ".join(f"{_PARAM_TITLES.get(k, k)} {_fmt(v)}" for k, v in best["params"].items())
        self.best_label.setText(f"Best so far: trial {best['number']}, validation {results['metric']} "
                                f"{best['value']:.4f}: {settings}\n{command_line(self.best_config)}")
        self.train_button.setEnabled(self.train_with is not None)

    @Slot()
    def _train_best(self) -> None:
        if self.best_config is not None and self.train_with is not None:
            self.train_with(copy.deepcopy(self.best_config))
            self.accept()


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
