"""Train page: start and cancel a run, watch it live, replay a past run's curves.

Events arrive from the TrainingController in batches (about ten a second). Each batch appends to
plain Python lists and then every curve gets exactly one ``setData``: the plot cost is per batch,
not per step. Curves clip to the visible range and downsample (peak mode), the pyqtgraph way of
keeping long series cheap. A past run replays through the same code from its metrics.jsonl.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt, QTimer, QUrl, Signal, Slot
from PySide6.QtGui import QColor, QDesktopServices, QFont, QPalette
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from ...core.metrics import CLASSIFICATION, Metric, find, specs_from, summary_text
from ...core.run.history import resumable
from ..controller import TrainingController
from ..preflight import PreflightRunner
from ..state import AppState
from ..views.generation_samples import LiveSamplesPanel
from ..widgets.build import button, fill, row, text_label
from ..widgets.spinboxes import format_lr
from ..wording import in_app_words

PHASES = {
    "reading": "Reading data",
    "validating": "Checking data",
    "tokenizing": "Tokenizing",
    "loading_model": "Loading the backbone",
    "model_ready": "Model ready",
    "training": "Training",
    "planning": "Planning",
    "preprocessing": "Choosing the preprocessing",
    "epochs": "Choosing the epochs",
    "baseline": "Baseline on frozen features",
    "refitting": "Training on all rows",
    "evaluating": "Evaluating",
    "tuning": "Tuning thresholds",
    "calibrating": "Calibrating",
    "testing": "Testing",
    "exporting": "Exporting the model",
}
LOG_LINES = 5000
PAUSE_TIP = "Write a checkpoint at the end of this step and stop; Resume goes on from there"
# While a run goes on, the curves are redrawn at most this often. Painting three pyqtgraph plots
# (axes, antialiased lines) costs the GUI thread a good part of a core, which on a 2-core laptop
# comes out of training: at 10 redraws a second the app trained MiniLM 25% slower than the CLI.
# The numbers (progress, rate, log) still follow every event batch.
PLOT_INTERVAL_S = 1.0
SERIES_COLORS = {"val_loss": "#e8710a", "lr": "#12b5cb", "refit": "#9334e6"}
REFIT_LABEL = "final model, all rows"  # the refit's band and curves: the final model trained again on every row
METRIC_COLORS = ("#1e8e3e", "#9334e6", "#d93025", "#f9ab00")  # the task's plotted metrics, in declaration order
METRIC_SYMBOLS = ("o", "s", "t", "d")


def counted(n: float, noun: str) -> str:
    """ "1 epoch", "2 epochs", "0.5 epochs", "1,200 rows": a count with its noun."""
    number = f"{int(n):,}" if float(n).is_integer() else f"{n:g}"
    return f"{number} {noun}" if n == 1 else f"{number} {noun}s"


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class _Series:
    """The numbers behind the plots, grown by events."""

    def __init__(self) -> None:
        self.step: list[float] = []
        self.loss: list[float] = []
        self.ema: list[float] = []
        self.lr: list[float] = []
        self.eval_step: list[float] = []
        self.val_loss: list[float] = []
        self.metrics: dict[str, list[float]] = {}  # plotted validation metric -> one value per evaluation
        # The refit (the final model trained again on every row) goes on along the same x-axis from
        # the first pass's last step, ``refit_from``; its points start at index ``refit_at``.
        self.refit_at: int | None = None
        self.refit_from = 0
        self._ema_raw = 0.0
        self._ema_n = 0
        self.smoothing = 0.9

    def add_step(self, step: int, loss: float, lr: float, total: int, refit_step: int | None = None) -> None:
        """``total``: the steps of this pass (the refit's own in the refit, whose ``refit_step`` is given)."""
        if refit_step is not None and self.refit_at is None:
            self.refit_at, self.refit_from = len(self.step), step - refit_step
            self._ema_raw, self._ema_n = 0.0, 0  # the refit's smoothed curve is its own, not the first pass's
        if not self._ema_n:
            # About a tenth of the pass's steps in the smoothing window, within sane bounds.
            self.smoothing = min(0.98, max(0.6, 1 - 10 / max(total, 1)))
        self.step.append(step)
        self.loss.append(loss)
        self.lr.append(lr)
        a = self.smoothing
        self._ema_raw = a * self._ema_raw + (1 - a) * loss
        self._ema_n += 1
        self.ema.append(self._ema_raw / (1 - a**self._ema_n))  # bias-corrected, as TensorBoard does

    def first_pass(self, values: list[float]) -> list[float]:
        return values if self.refit_at is None else values[:self.refit_at]

    def refit(self, values: list[float]) -> list[float]:
        return [] if self.refit_at is None else values[self.refit_at:]

    @property
    def last_step(self) -> float:
        return max(self.step[-1] if self.step else 0, self.eval_step[-1] if self.eval_step else 0)

    def add_eval(self, step: int, metrics: dict, plotted: list[str]) -> None:
        self.eval_step.append(step)
        nan = float("nan")
        self.val_loss.append(metrics.get("loss", nan))
        for name in plotted:
            self.metrics.setdefault(name, [nan] * (len(self.eval_step) - 1)).append(metrics.get(name, nan))


PLOTS = ("Loss", "Validation", "Learning rate")  # the page's plots, in the order make_plot builds them


def make_plot(title: str) -> pg.PlotWidget:
    """One of the Train page's plots (steps along x). The window builds them one per event-loop turn
    before the page (each takes 25-90 ms of the GUI thread) and hands them to ``TrainPage``."""
    pg.setConfigOptions(antialias=True)
    # No context menus: the live plots have nothing to configure, and building a ViewBox's menu
    # is a third of a plot's construction time on the GUI thread.
    p = pg.PlotWidget(enableMenu=False)
    p.setMinimumHeight(150)
    item = p.getPlotItem()
    item.setTitle(title)
    item.setLabel("bottom", "step")
    item.setClipToView(True)
    item.setDownsampling(auto=True, mode="peak")
    item.setMenuEnabled(False)
    item.hideButtons()  # the page sets the x-range itself (TrainPage._fit_x): no "auto-range" button
    p.setFrameShape(QFrame.Shape.NoFrame)
    return p


class TrainPage(QWidget):
    evaluate_requested = Signal()
    go_to_data = Signal()
    resume_requested = Signal(str)  # the shown run's folder: go on with it from its checkpoint

    def __init__(self, state: AppState, controller: TrainingController, parent: QWidget | None = None,
                 plots: list | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.controller = controller
        self.series = _Series()
        self.metric_specs: tuple[Metric, ...] = CLASSIFICATION  # the shown run's, from its TaskReady event
        self.metric_curves: dict[str, pg.PlotDataItem] = {}
        self._plotted_at = 0.0  # time.monotonic() of the last redraw
        self._stale = [False, False]  # steps, evaluations: changed since the last redraw
        self._plot_timer = QTimer(self)
        self._plot_timer.setSingleShot(True)
        self._plot_timer.timeout.connect(self._redraw_stale)
        self.redraws = 0  # setData rounds, for the tests and the responsiveness benchmark
        self.error_dialog: QMessageBox | None = None
        self._shown_run = ""
        self._total_steps = 0
        self._last_step = 0
        self._bar = (0, 0)  # the progress bar's step and steps: the first pass's, or the refit's own
        self._refitting = False  # between the refit's start and its end (its loop's "training" phase is the refit's)
        self._outcome = ""
        self._eval_split = "validation"  # the split of the shown run's final results (test when it has one)

        lay = QVBoxLayout(self)
        lay.setContentsMargins(16, 12, 16, 12)
        lay.addLayout(self._build_controls())
        lay.addLayout(self._build_progress())
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self._build_plots(plots))
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(LOG_LINES)
        self.log.setPlaceholderText("Phase changes, warnings and results appear here.")
        mono = QFont("monospace")
        mono.setStyleHint(QFont.StyleHint.Monospace)
        self.log.setFont(mono)
        split.addWidget(self.log)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)
        split.setSizes([600, 160])
        lay.addWidget(split, 1)
        lay.addLayout(self._build_result())

        controller.events.connect(self.on_events)
        controller.started.connect(self._on_started)
        controller.cancelling.connect(self._on_cancelling)
        controller.pausing.connect(self._on_pausing)
        controller.paused.connect(self._on_paused)
        controller.finished.connect(self._on_finished)
        controller.failed.connect(self._on_failed)
        controller.cancelled.connect(self._on_cancelled)
        self.preflight = PreflightRunner(self)
        self.preflight.finished.connect(self._on_estimate)
        self.preflight.failed.connect(self._on_estimate_failed)
        state.config_changed.connect(self._update_summary)
        state.config_changed.connect(self._forget_estimate)
        state.dataset_changed.connect(self._on_new_data)
        self._update_summary()
        self.set_ready(False, "Load a dataset on the Data page first.")

    # ---- building -----------------------------------------------------------------------------------
    def _build_controls(self) -> QHBoxLayout:
        self.start_button = button("Start Training", self.start, default=True)
        self.cancel_button = button("Cancel", self.controller.cancel, enabled=False)
        self.pause_button = button("Pause", self.controller.pause, PAUSE_TIP, enabled=False)
        self.resume_button = button("Resume", lambda: self.resume_requested.emit(self._shown_run),
                                    "Go on with this run from its last checkpoint", visible=False)
        self.estimate_button = button("Estimate Time", self.estimate,
                                      "Train a few batches of these settings in a separate process and estimate the "
                                      "time per epoch, the whole run's time and its peak memory")
        self.copy_button = button("Copy Command", self.copy_command,
                                  "Copy the workbench train command line that repeats these settings, e.g. on another "
                                  "machine or under a cluster's launcher")
        self.stage = QLabel()  # "Stage 1 of 2: adapting the backbone", for runs of two stages
        self.stage.setVisible(False)
        self.summary = text_label(selectable=False)
        self.reason = text_label(selectable=False)
        self.reason.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.reason.linkActivated.connect(lambda _: self.go_to_data.emit())
        self.estimate_text = text_label(selectable=False)  # the preflight estimate of these settings
        self.estimate_text.setVisible(False)
        controls = row(self.start_button, self.pause_button, self.resume_button, self.cancel_button,
                       self.estimate_button, self.copy_button)
        controls.addSpacing(12)
        texts = fill(QVBoxLayout(), self.stage, self.summary, self.estimate_text, self.reason)
        return fill(controls, (texts, 1))

    def _build_progress(self) -> QHBoxLayout:
        self.phase = QLabel("Not started")
        self.phase.setMinimumWidth(180)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("")
        self.rate = QLabel()
        self.rate.setMinimumWidth(280)
        self.rate.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return row(self.phase, (self.progress, 1), self.rate)

    def _build_plots(self, plots: list | None) -> QWidget:
        w = QWidget()
        grid = QGridLayout(w)
        grid.setContentsMargins(0, 6, 0, 6)
        if not plots or len(plots) != len(PLOTS):
            plots = [make_plot(title) for title in PLOTS]
        self.loss_plot, self.metric_plot, self.lr_plot = plots
        self.lr_plot.getPlotItem().getAxis("left").enableAutoSIPrefix(False)
        grid.addWidget(self.loss_plot, 0, 0, 2, 1)
        grid.addWidget(self.metric_plot, 0, 1)
        grid.addWidget(self.lr_plot, 1, 1)
        # Text generation: a few validation prompts' answers, beside the curves; shown from a run's first
        # GenerationSamples event (the base model's, before training), hidden for other tasks.
        self.samples = LiveSamplesPanel()
        self.samples.setMinimumWidth(240)
        grid.addWidget(self.samples, 0, 2, 2, 1)
        grid.setColumnStretch(0, 3)
        grid.setColumnStretch(1, 2)
        self._plot_grid = grid
        self._show_samples(False)
        self._make_curves()
        self._apply_palette()
        return w

    def _show_samples(self, shown: bool) -> None:
        """The live samples' column: two sevenths of the width for a generation run, none otherwise (an
        empty column with a stretch would still take its share)."""
        self.samples.setVisible(shown)
        self._plot_grid.setColumnStretch(2, 2 if shown else 0)

    def _make_curves(self) -> None:
        # Bottom left: a falling loss leaves it empty, and the refit's band takes the right-hand side.
        self.loss_plot.addLegend(offset=(8, -8))
        # Top left: scores rise from low, and the latest ones (right) must not hide behind the legend.
        self.metric_plot.addLegend(offset=(8, 8))
        self.raw_curve = self.loss_plot.plot(name="training (per step)")
        self.ema_curve = self.loss_plot.plot(name="training (smoothed)")
        self.val_loss_curve = self.loss_plot.plot(name="validation", symbol="o", symbolSize=6)
        self.lr_curve = self.lr_plot.plot()
        # The refit: curves of their own (named in the legend once it starts) over a labelled band.
        self.refit_raw_curve = self.loss_plot.plot()
        self.refit_ema_curve = self.loss_plot.plot()
        self.refit_lr_curve = self.lr_plot.plot()
        self.refit_bands, self.refit_labels = [], []
        for plot in (self.loss_plot, self.metric_plot, self.lr_plot):
            band = pg.LinearRegionItem(movable=False)
            band.setZValue(-10)  # under the curves
            band.setVisible(False)
            # At the band's right-hand end, inside it once it is wide enough (left of it until then).
            self.refit_labels.append(pg.InfLineLabel(band.lines[1], REFIT_LABEL, position=0.96,
                                                     anchors=[(1, 0), (1, 0)]))
            plot.addItem(band, ignoreBounds=True)
            self.refit_bands.append(band)
        self._follow_x = {id(p): True for p in (self.loss_plot, self.metric_plot, self.lr_plot)}
        for plot in (self.loss_plot, self.metric_plot, self.lr_plot):
            # A user's zoom or pan stands until the next run; until then the page sets the x-range.
            plot.getPlotItem().getViewBox().sigRangeChangedManually.connect(
                lambda *_, key=id(plot): self._follow_x.__setitem__(key, False))
        self._set_metric_curves(CLASSIFICATION)

    def _set_metric_curves(self, specs: tuple[Metric, ...]) -> None:
        """One curve per metric the task plots (accuracy and macro F1; entity F1; MSE and Pearson)."""
        if specs == self.metric_specs and self.metric_curves:
            return  # the same curves (every run starts with the classification set): nothing to rebuild
        self.metric_specs = specs
        for curve in self.metric_curves.values():
            self.metric_plot.removeItem(curve)
        plotted = [m for m in specs if m.plot]
        self.metric_curves = {m.name: self.metric_plot.plot(name=m.title, symbol=METRIC_SYMBOLS[i % 4], symbolSize=6)
                              for i, m in enumerate(plotted)}
        self._bounded = bool(plotted) and all(m.bounded for m in plotted)
        if self._bounded:
            self.metric_plot.setYRange(0, 1, padding=0.02)
        else:
            self.metric_plot.enableAutoRange(axis="y")
        names = ", ".join(m.title for m in plotted)
        # A long title would widen the plot past its column (text generation's three); the legend names them.
        self.metric_plot.getPlotItem().setTitle(f"Validation: {names}" if len(names) <= 40 else "Validation")
        self._apply_palette()

    def _apply_palette(self) -> None:
        pal = self.palette()
        base = pal.color(QPalette.ColorRole.Base)
        text = pal.color(QPalette.ColorRole.Text)
        accent = pal.color(QPalette.ColorRole.Highlight)
        dark = base.lightness() < 128
        if not hasattr(self, "lr_curve"):
            return  # called again once the curves exist
        for plot in (self.loss_plot, self.metric_plot, self.lr_plot):
            plot.setBackground(base)
            item = plot.getPlotItem()
            for name in ("left", "bottom"):
                axis = item.getAxis(name)
                axis.setPen(pg.mkPen(text))
                axis.setTextPen(pg.mkPen(text))
            item.titleLabel.setAttr("color", text.name())
            item.setTitle(item.titleLabel.text)
            if item.legend is not None:
                item.legend.setLabelTextColor(text)
                for _, label in item.legend.items:
                    label.setText(label.text)  # setLabelTextColor colours only the labels drawn after it
                lb = QColor(base)
                lb.setAlpha(200)
                item.legend.setBrush(pg.mkBrush(lb))
        faint = QColor(accent)
        faint.setAlphaF(0.4 if dark else 0.35)  # the per-step curve under the opaque smoothed one
        self.raw_curve.setPen(pg.mkPen(faint, width=1))
        # One-pixel pens and no grid: Qt's raster engine strokes wider lines and the grid's lines
        # slowly (a redraw of the three plots: 130-450 ms with them, 15-20 ms without, 400 points),
        # and a redraw holds the GUI thread. The smoothed curve stands out by being opaque.
        self.ema_curve.setPen(pg.mkPen(accent, width=1))

        def colored(curve, key, symbol=True):
            c = QColor(SERIES_COLORS.get(key, key))
            if dark:
                c = c.lighter(130)
            curve.setPen(pg.mkPen(c, width=1))
            if symbol:
                curve.setSymbolBrush(pg.mkBrush(c))
                curve.setSymbolPen(pg.mkPen(c))

        colored(self.val_loss_curve, "val_loss")
        for i, curve in enumerate(self.metric_curves.values()):
            colored(curve, METRIC_COLORS[i % len(METRIC_COLORS)])
        colored(self.lr_curve, "lr", symbol=False)
        self._color_refit(QColor(SERIES_COLORS["refit"]).lighter(140) if dark else QColor(SERIES_COLORS["refit"]))

    def _color_refit(self, color: QColor) -> None:
        """The refit's curves in their own colour, over a faint band of it with a labelled edge."""
        faint = QColor(color)
        faint.setAlphaF(0.35)
        self.refit_raw_curve.setPen(pg.mkPen(faint, width=1))
        self.refit_ema_curve.setPen(pg.mkPen(color, width=1))
        self.refit_lr_curve.setPen(pg.mkPen(color, width=1))
        shade, edge = QColor(color), QColor(color)
        shade.setAlphaF(0.10)
        edge.setAlphaF(0.6)
        for band, label in zip(self.refit_bands, self.refit_labels):
            band.setBrush(pg.mkBrush(shade))
            for line in band.lines:
                line.setPen(pg.mkPen(edge, width=1))
            label.setColor(color)

    def changeEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange and hasattr(self, "lr_curve"):
            self._apply_palette()

    def _build_result(self) -> QHBoxLayout:
        self.result = text_label()
        self.open_folder = button("Open Run Folder", self._open_run_folder, enabled=False)
        self.evaluate_button = button("Evaluate →", self.evaluate_requested, enabled=False)
        return row((self.result, 1), self.open_folder, self.evaluate_button)

    # ---- readiness and summary ----------------------------------------------------------------------
    def set_ready(self, ready: bool, reason: str = "") -> None:
        self._ready = ready
        self._reason = reason
        running = self.controller.running
        self.start_button.setEnabled(ready and not running)
        self.estimate_button.setEnabled(ready and not running and not self.preflight.running)
        self.start_button.setToolTip("" if ready else reason)
        if not ready and "Data page" in reason:
            reason = reason.replace("Data page", '<a href="data">Data page</a>')
        self.reason.setText("" if ready or running else reason)

    def _update_summary(self) -> None:
        c = self.state.config
        data = self.state.data
        model = c.model.name
        if Path(model).is_absolute():
            model = Path(model).name + " (local folder)"
        rows = ""
        if data is not None:
            n = c.data.sample or data.n_rows
            rows = f" on {Path(c.data.train).name} ({counted(min(n, data.n_rows), 'row')})"
        epochs = "automatic epochs" if c.train.epochs is None else counted(c.train.epochs, "epoch")
        steps = f", at most {counted(c.train.max_steps, 'step')}" if c.train.max_steps else ""
        device = {"auto": "automatic device"}.get(c.train.device, c.train.device)
        self.summary.setText(f"<b>{model}</b>{rows} · {epochs}{steps} · batch {c.train.batch_size} · "
                             f"lr {format_lr(self.state.default_lr if c.train.lr is None else c.train.lr)} · {device}")

    # ---- preflight estimate -------------------------------------------------------------------------
    @Slot()
    def estimate(self) -> None:
        """Measure the current settings in a child process (core/run/preflight.py): time and memory."""
        if self.controller.running or not self._ready:
            return
        from ...core.errors import InputError

        try:
            self.state.config.validate()
        except InputError as e:
            self.show_error("Cannot estimate", str(e), "")
            return
        self.preflight.start(copy.deepcopy(self.state.config))
        self.estimate_button.setEnabled(False)
        self.estimate_button.setText("Estimating…")
        self.estimate_text.setText("Estimating: reading the data, loading the model and timing a few batches…")
        self.estimate_text.setVisible(True)

    @Slot(dict)
    def _on_estimate(self, result: dict) -> None:
        self._estimate_done()
        self.estimate_text.setText(result.get("text") or "")
        self._log(f"Estimate: {result.get('text', '')}")

    @Slot(str)
    def _on_estimate_failed(self, message: str) -> None:
        self._estimate_done()
        self.estimate_text.setText(f"No estimate: {message}")

    def _estimate_done(self) -> None:
        self.estimate_button.setText("Estimate Time")
        self.estimate_button.setEnabled(self._ready and not self.controller.running)

    @Slot()
    def _forget_estimate(self) -> None:
        """An estimate is of the settings it measured: changed settings drop it (and stop its process)."""
        if self.preflight.running:
            self.preflight.stop()
            self._estimate_done()
        self.estimate_text.clear()
        self.estimate_text.setVisible(False)

    # ---- running ------------------------------------------------------------------------------------
    @Slot()
    def start(self) -> str | None:
        """Start a run with the state's config; returns its run directory (None when it cannot start)."""
        if self.controller.running:
            return None
        if not self._ready:
            self.show_error("Cannot start training", self._reason, "")
            return None
        from ...core.errors import InputError

        try:
            self.state.config.validate()
        except InputError as e:
            self.show_error("Cannot start training", str(e), "")
            return None
        try:
            adapt = self.state.adaptation_config()
            if adapt is not None:
                adapt.validate()
        except InputError as e:
            self.show_error("Cannot start the adaptation", str(e), "")
            return None
        try:
            return self.controller.start(self.state.config, getattr(self.state.data, "task", None), adapt)
        except InputError as e:
            self.show_error("Cannot start training", str(e), "")
            return None

    @Slot()
    def copy_command(self) -> str:
        """Put the CLI line that repeats these settings (on this or another machine) on the clipboard."""
        from PySide6.QtWidgets import QApplication

        from ...core.command import command_line

        line = command_line(self.state.config)
        QApplication.clipboard().setText(line)
        self._log(f"Copied: {line}")
        return line

    @Slot(str)
    def _on_started(self, run_dir: str) -> None:
        self._reset()
        self._shown_run = run_dir
        self._outcome = "running"
        if self.controller.resuming:  # the curve so far, from the run's folder, then it goes on live
            from ...core.run.directory import read_metrics

            self.on_events(read_metrics(run_dir))
            self._log(f"Resuming from step {self._last_step}")
        self.start_button.setEnabled(False)
        if self.preflight.running:  # it would compete with the run for the same cores
            self.preflight.stop()
            self._estimate_done()
            self.estimate_text.setVisible(False)
        self.estimate_button.setEnabled(False)
        self.resume_button.setVisible(False)
        self.pause_button.setEnabled(self.controller.can_pause)
        self.pause_button.setToolTip(PAUSE_TIP if self.controller.can_pause else
                                     "A run on several processes cannot pause on this system; cancel it and resume "
                                     "it later")
        self.pause_button.setText("Pause")
        self.cancel_button.setEnabled(True)
        self.cancel_button.setText("Cancel")
        self.reason.setText("")
        self.phase.setText("Starting…")
        self.progress.setRange(0, 0)
        self.open_folder.setEnabled(True)
        self._log(f"Run folder: {run_dir}")

    @Slot()
    def _on_pausing(self) -> None:
        self.pause_button.setEnabled(False)
        self.pause_button.setText("Pausing…")
        self.phase.setText("Pausing…")
        self._log("Pausing… (a checkpoint is written at the end of this step)")

    @Slot(str)
    def _on_paused(self, message: str) -> None:
        self._stopped("paused")
        where = message[len("paused "):] if message.startswith("paused ") else message
        self.result.setText(f"<b>Paused</b> {_escape(where)}; Resume goes on from there.")
        self.resume_button.setVisible(True)

    @Slot()
    def _on_cancelling(self) -> None:
        self.pause_button.setEnabled(False)
        self.cancel_button.setEnabled(False)
        self.cancel_button.setText("Cancelling…")
        self.phase.setText("Cancelling…")
        self._log("Cancelling… (the run stops at the next step or batch)")

    @Slot(object)
    def _on_finished(self, result) -> None:
        self._stopped("finished")
        split = result.eval_split or self._eval_split
        self.result.setText(f"<b>Finished.</b> {split.capitalize()}: {self._metric_text(result.metrics, split)} · "
                            f"{result.samples_per_second:.1f} samples/s · trained in {format_duration(result.train_seconds)}")
        self.evaluate_button.setEnabled(True)

    @Slot(str, str)
    def _on_failed(self, message: str, details: str) -> None:
        self._stopped("failed")
        self.result.setText(f"<b>Failed:</b> {_escape(in_app_words(message))}")
        self.show_error("Training failed", message, details)

    @Slot()
    def _on_cancelled(self) -> None:
        self._stopped("cancelled")
        self.result.setText("<b>Cancelled.</b> The run folder keeps what was done so far.")

    def _stopped(self, outcome: str) -> None:
        self._outcome = outcome
        self._redraw_stale()  # the last points, whatever the interval
        self.cancel_button.setEnabled(False)
        self.cancel_button.setText("Cancel")
        self.pause_button.setEnabled(False)
        self.pause_button.setText("Pause")
        self.start_button.setEnabled(self._ready)
        self.estimate_button.setEnabled(self._ready and not self.preflight.running)
        self.phase.setText({"finished": "Finished", "failed": "Failed", "cancelled": "Cancelled",
                            "paused": "Paused"}[outcome])
        self.resume_button.setVisible(outcome != "finished" and resumable(self._shown_run))
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
        if outcome == "finished":
            self.progress.setValue(self.progress.maximum())
        self.rate.setText(self.rate.text().split(" · ETA")[0])

    def show_error(self, title: str, message: str, details: str) -> None:
        box = QMessageBox(QMessageBox.Icon.Critical, title, message, QMessageBox.StandardButton.Ok, self)
        if details and details != message:
            box.setDetailedText(details)
        box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        box.setWindowModality(Qt.WindowModality.WindowModal)
        box.open()  # never exec(): that would nest an event loop inside async code
        self.error_dialog = box
        self._log(f"Error: {message}")

    def _open_run_folder(self) -> None:
        if self._shown_run:
            QDesktopServices.openUrl(QUrl.fromLocalFile(self._shown_run))

    # ---- events -------------------------------------------------------------------------------------
    def _reset(self) -> None:
        self.log.clear()
        self._clear_run()

    def _clear_run(self) -> None:
        """Empty curves, no results, an idle bar: the page before a run (the log stays)."""
        self.stage.setVisible(False)
        self.series = _Series()
        self._set_metric_curves(CLASSIFICATION)
        self.samples.clear()  # a new run's (or data's) samples start afresh; its first samples show the panel
        self._show_samples(False)
        self._total_steps = 0
        self._last_step = 0
        self._bar = (0, 0)
        self._refitting = False
        self._eval_split = "validation"
        self.result.setText("")
        self.rate.setText("")
        self.evaluate_button.setEnabled(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("")
        # Empty curves would leave a plot's range where the last run had it: the next run's first
        # points would sit in the old x-range. Back to 0..1, following the data from there.
        self._follow_x = dict.fromkeys(self._follow_x, True)
        for plot in (self.loss_plot, self.lr_plot):  # nor the last run's losses and rates on the y-axis
            plot.getPlotItem().getViewBox().setYRange(0, 1, padding=0)
            plot.enableAutoRange(axis="y")
        self._redraw()

    @Slot(object)
    def _on_new_data(self, _data) -> None:
        """New data (or none): the page is ready for a run of it. The last run's status, curves and
        results go; the run itself stays on the Runs page, where reopening it shows it here again."""
        if self.controller.running:
            return  # the live run owns the page
        had_run = bool(self._shown_run)
        self._clear_run()
        self._shown_run = ""
        self._outcome = ""
        self.phase.setText("Not started")
        self.resume_button.setVisible(False)
        self.open_folder.setEnabled(False)
        if had_run:
            self._log("New data: the page is ready for a run of it (past runs are on the Runs page).")

    @Slot(list)
    def on_events(self, batch: list[dict]) -> None:
        """Apply a batch of events (dicts as in metrics.jsonl), then redraw every curve once."""
        steps_changed = evals_changed = False
        for e in batch:
            kind = e.get("event")
            if kind == "StepMetrics":
                self._on_step(e)
                steps_changed = True
            elif kind == "EvalMetrics":
                evals_changed |= self._on_eval(e)
            elif kind == "PhaseChanged":
                self._on_phase(e)
            elif kind == "Progress":
                self._on_progress(e)
            elif kind == "StageStarted":
                self._on_stage(e)
                steps_changed = evals_changed = True
            elif kind == "RunStarted":
                self._log(f"Run directory: {e.get('run_dir', '')}", e.get("time"))
            elif kind == "TaskReady":
                self._set_metric_curves(specs_from(e.get("metrics")))
                main = find(self.metric_specs, e.get("main_metric") or "").title
                self._log(f"{e.get('title', e.get('task', ''))}: the best checkpoint is picked by {main}", e.get("time"))
            elif kind == "GenerationSamples":
                self.samples.add(e)
                self._show_samples(True)
            elif kind == "Refitted":
                self._refitting = False
                message = e.get("message", "")
                self._log(message[:1].upper() + message[1:], e.get("time"))
            elif kind == "Warning_":
                self._log(f"⚠ {e.get('message', '')}", e.get("time"))
            elif kind == "Finished":
                self._log(f"Finished: {self._metric_text(e.get('metrics', {}), self._eval_split)}", e.get("time"))
            elif kind == "Failed":
                self._log(f"Failed: {e.get('message', '')}", e.get("time"))
            elif kind == "Cancelled":
                self._log("Cancelled.", e.get("time"))
        if steps_changed or evals_changed:
            self._redraw(steps=steps_changed, evals=evals_changed)

    def _on_stage(self, e: dict) -> None:
        """The next stage of a two-stage run starts (adaptation, then fine-tuning): fresh curves, the
        log goes on."""
        index, count = int(e.get("index", 1)), int(e.get("count", 1))
        self.series = _Series()
        self._set_metric_curves(CLASSIFICATION)
        self.samples.clear()
        self._total_steps = self._last_step = 0
        self._bar = (0, 0)
        self._refitting = False
        self.progress.setRange(0, 0)
        self.progress.setFormat("")
        self.rate.setText("")
        if e.get("run_dir"):
            self._shown_run = e["run_dir"]
        self.stage.setText(f"<b>Stage {index} of {count}:</b> {_escape(e.get('title', ''))}")
        self.stage.setVisible(True)
        # A paused first stage could only resume itself, not go on to the next: it is cancelled or finished.
        last = index == count
        self.pause_button.setEnabled(last and self.controller.can_pause and not self.controller.is_cancelling)
        self.pause_button.setToolTip(PAUSE_TIP if last else "The adaptation stage cannot be paused; cancel it or let "
                                     "it finish")
        self._log(f"Stage {index} of {count}: {e.get('title', '')} (run folder {e.get('run_dir', '')})", e.get("time"))

    def _on_step(self, e: dict) -> None:
        """A training step: the curves, and the bar of its pass. The refit (the final model trained
        again on every row) counts its own steps and epochs; its ``step`` goes on from the first pass's."""
        step, total = int(e["step"]), int(e["total_steps"])
        refit = e.get("refit_step") is not None
        here, steps = (int(e["refit_step"]), int(e["refit_steps"])) if refit else (step, total)
        epoch = float(e["refit_epoch"] if refit else e["epoch"])
        self.series.add_step(step, float(e["loss"]), float(e["learning_rate"]), steps, e.get("refit_step"))
        self._total_steps, self._last_step, self._bar = total, step, (here, steps)
        if self.progress.maximum() != steps:
            self.progress.setRange(0, steps)
        self.progress.setValue(here)
        self.progress.setFormat(f"{'final model: ' if refit else ''}step {here:,} of {steps:,} (%p%)")
        eta = f" · ETA {format_duration(e['eta_s'])}" if here < steps else ""
        gpu = ""
        if e.get("mfu") is not None:
            gpu += f" · MFU {100 * e['mfu']:.0f}%"
        if e.get("peak_memory_gib") is not None:
            gpu += f" · peak GPU memory {e['peak_memory_gib']:.1f} GiB"
        self.rate.setText(f"epoch {epoch:.2f} · {e['samples_per_second']:.1f} samples/s{gpu}{eta}")
        if self.phase.text().startswith(("Starting", "Model ready", "Loading", "Tokenizing")):
            self.phase.setText(PHASES["refitting" if refit else "training"])

    def _on_eval(self, e: dict) -> bool:
        metrics = e.get("metrics", {})
        split = e.get("split", "validation")
        if split == "validation":
            self.series.add_eval(int(e["step"]), metrics, list(self.metric_curves))
            best = " (best so far)" if e.get("is_best") else ""
            self._log(f"Validation at step {e['step']}: {self._metric_text(metrics)}{best}", e.get("time"))
            return True
        self._eval_split = split
        self._log(f"{split.capitalize()} ({counted(e['step'], 'step')}): {self._metric_text(metrics, split)}",
                  e.get("time"))
        return False

    def _on_phase(self, e: dict) -> None:
        phase, detail = e.get("phase", ""), e.get("detail", "")
        if phase in ("refitting", "evaluating", "tuning", "calibrating", "testing", "exporting"):
            self._refitting = phase == "refitting"  # it ends with its Refitted event, or at the latest here
        title = PHASES.get("refitting" if phase == "training" and self._refitting else phase,
                           phase.replace("_", " ").capitalize())
        if not self.controller.is_cancelling:
            self.phase.setText(title + ("" if phase == "model_ready" else "…"))
        if phase == "refitting" or (phase in ("reading", "validating", "tokenizing", "loading_model", "model_ready",
                                              "training") and not self._total_steps):
            self.progress.setRange(0, 0)  # busy until a Progress event or the first step brings numbers
            self.progress.setFormat("")
        if phase == "training" and not detail:
            return  # back to training after an evaluation: not worth a log line
        self._log(f"{title}{': ' + detail if detail else ''}", e.get("time"))

    def _on_progress(self, e: dict) -> None:
        if self._total_steps:
            return  # during training the bar shows steps
        done, total = int(e.get("done", 0)), int(e.get("total", 0))
        if total > 0:
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(1000 * done / total))
            self.progress.setFormat(f"{PHASES.get(e.get('phase', ''), e.get('phase', ''))} %p%")

    def _redraw(self, steps: bool = True, evals: bool = True) -> None:
        """One setData per changed curve; a plot whose curves did not change is not repainted. During
        a run, at most once per PLOT_INTERVAL_S (the rest is caught up by a timer)."""
        self._stale[0] |= steps
        self._stale[1] |= evals
        wait = PLOT_INTERVAL_S - (time.monotonic() - self._plotted_at)
        if self.controller.running and wait > 0:
            if not self._plot_timer.isActive():
                self._plot_timer.start(int(wait * 1000) + 1)
            return
        self._redraw_stale()

    @Slot()
    def _redraw_stale(self) -> None:
        self._plot_timer.stop()
        steps, evals = self._stale
        self._stale = [False, False]
        self._plotted_at = time.monotonic()
        s = self.series
        if steps:
            first, refit = s.first_pass, s.refit
            self.raw_curve.setData(first(s.step), first(s.loss))
            self.ema_curve.setData(first(s.step), first(s.ema))
            self.lr_curve.setData(first(s.step), first(s.lr))
            self.refit_raw_curve.setData(refit(s.step), refit(s.loss))
            self.refit_ema_curve.setData(refit(s.step), refit(s.ema))
            self.refit_lr_curve.setData(refit(s.step), refit(s.lr))
            self._show_refit_band()
        if evals:
            self.val_loss_curve.setData(s.eval_step, s.val_loss)
            for name, curve in self.metric_curves.items():
                curve.setData(s.eval_step, s.metrics.get(name, []))
        self._fit_x()
        self.redraws += 1

    def _show_refit_band(self) -> None:
        """The band behind the refit's steps, and its curve named in the loss plot's legend."""
        s, legend = self.series, self.loss_plot.getPlotItem().legend
        shown = s.refit_at is not None
        named = any(getattr(sample, "item", None) is self.refit_ema_curve for sample, _ in legend.items)
        if shown and not named:
            legend.addItem(self.refit_ema_curve, REFIT_LABEL)
        elif named and not shown:
            legend.removeItem(self.refit_ema_curve)
        for band in self.refit_bands:
            band.setVisible(shown)
            if shown:
                band.setRegion((s.refit_from, s.step[-1]))

    def _fit_x(self) -> None:
        """Every plot from step 0 to the last step so far, one x-axis for the three: pyqtgraph's
        auto-range gives a single point (one evaluation) a range of its own around it, such as -3 to 7.
        A plot the user zoomed or panned keeps the range they chose until the next run."""
        end = max(self.series.last_step, 1)
        for plot in (self.loss_plot, self.metric_plot, self.lr_plot):
            if self._follow_x[id(plot)]:
                plot.getPlotItem().getViewBox().setXRange(0, end, padding=0.02)
        if self._bounded and self._follow_x[id(self.metric_plot)]:  # scores in [0, 1]: never an axis to 1.1
            self.metric_plot.getPlotItem().getViewBox().setYRange(0, 1, padding=0.02)

    @Slot(str, float)
    def show_log_record(self, text: str, when: float) -> None:
        """A record of the engine's log (see app/logs.py)."""
        self._log(text, when)

    def _metric_text(self, metrics: dict, split: str = "validation") -> str:
        """The headline metrics; the loss named after ``split`` (the test split's results say "test loss")."""
        specs = self.metric_specs
        if split and split != "validation":
            specs = tuple(dataclasses.replace(m, title=f"{split.capitalize()} loss") if m.name == "loss" else m
                          for m in specs)
        return summary_text(metrics, specs)

    def _log(self, text: str, when: float | None = None) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(when if when else time.time()))
        self.log.appendPlainText(f"{stamp}  {in_app_words(text)}")

    # ---- past runs ----------------------------------------------------------------------------------
    def show_run(self, run_dir: str) -> None:
        """Show a finished, failed or cancelled run from its folder, as if it had just run."""
        if self.controller.running:
            return  # the live run owns the page
        from ...core.run.directory import read_metrics

        self._reset()
        self._shown_run = str(run_dir)
        self.open_folder.setEnabled(True)
        self._log(f"Run folder: {run_dir}")
        self.on_events(read_metrics(run_dir))
        state = _read_status(run_dir)
        outcome = state.get("state", "unknown")
        self.phase.setText({"finished": "Finished", "failed": "Failed", "cancelled": "Cancelled", "paused": "Paused",
                            "running": "Running (or stopped abruptly)"}.get(outcome, outcome.capitalize()))
        self.resume_button.setVisible(outcome != "finished" and resumable(run_dir))
        if self._bar[1]:
            self.progress.setRange(0, self._bar[1])
            self.progress.setValue(self._bar[0])
        if outcome == "finished":
            split = self._eval_split
            self.result.setText(f"<b>Finished</b> run, {split}: {self._metric_text(state.get('metrics', {}), split)}")
            self.evaluate_button.setEnabled(True)
        elif outcome == "failed":
            self.result.setText(f"<b>Failed:</b> {_escape(in_app_words(state.get('message', '')))}")
        else:
            self.result.setText(f"<b>{outcome.capitalize()}</b> run")
        self._outcome = outcome

    @property
    def shown_run(self) -> str:
        return self._shown_run


def _read_status(run_dir: str) -> dict:
    try:
        return json.loads((Path(run_dir) / "status.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
