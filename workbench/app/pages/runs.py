"""Runs page: every past run read from its run directory; open one, or overlay several runs' curves.

Nothing here retrains: the list comes from status.json/config.json, the curves from metrics.jsonl,
and opening a run hands its folder to the Evaluate and Export pages. Pack writes a run into one
portable .wbrun file; Import Run unpacks one into the runs home (core/export/pack.py, on a worker thread).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from PySide6.QtCore import (
    QItemSelectionModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    QUrl,
    Signal,
    Slot,
)
from PySide6.QtGui import QColor, QDesktopServices, QPalette
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMenu,
    QMessageBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from ...core.metrics import in_sentence, summary_text
from ...core.run.directory import read_metrics, runs_home
from ...core.run.history import RESUMABLE_STATES, RunSummary, list_runs, resumable, summarize
from ...core.tasks.table import DEFAULT_METHOD, METHODS
from ..jobs import Jobs, describe
from ..widgets.build import button, column, fill, heading, row, rows_table, set_column, stacked, text_label, timer
from ..widgets.table_model import ListTableModel
from ..wording import in_app_words

SORT_ROLE = Qt.ItemDataRole.UserRole
PATH_ROLE = Qt.ItemDataRole.UserRole + 1

STATE_COLOURS = {"failed": QColor("#d64541"), "interrupted": QColor("#d9822b"), "cancelled": QColor("#d9822b"),
                 "paused": QColor("#1a73e8"),
                 "running": QColor("#2f7fd8")}
# Distinct on light and dark backgrounds (Tableau 10).
CURVE_COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948", "#9c755f")


# How a run's folder came to be here (status.json's "imported.via"): Import Run, or `workbench unpack`.
ORIGINS = {"import": "Imported", "unpack": "Unpacked"}
RUN_TIME_TIP = ("The whole run, from its start to its end: reading and checking the data, loading the model, "
                "training, the final test and the export. The Train page's \"trained in\" counts the training "
                "steps alone.")


class RunsModel(ListTableModel):
    # "Score" is the metric each run picked its best checkpoint by ("Best by" names it): runs of
    # different tasks are scored differently.
    COLUMNS = HEADERS = ("Started", "Dataset", "Task", "Method", "Backbone", "Source", "State", "Best by", "Score",
                         "Run time", "Folder")
    TIPS = ("When the run started", "The training file", "What the model learns", "What trains: every weight, the "
            "new head only, or low-rank adapters", "The pretrained model it started from", "Trained here, or "
            "brought from a .wbrun file: imported (Import Run) or unpacked (from the command line), and when",
            "How the run ended", "The metric that picked the best checkpoint", "That metric on the run's test "
            "(or validation) split", RUN_TIME_TIP, "The run's folder")
    NUMERIC = ("Score", "Run time")

    rows: list[RunSummary]

    def _value(self, run: RunSummary, column: int):
        name = self.COLUMNS[column]
        if name == "Started":
            return run.started
        if name == "Dataset":
            return run.dataset or ""
        if name == "Task":
            return run.task or ""
        if name == "Method":
            return _method(run.method)
        if name == "Backbone":
            return run.backbone or ""
        if name == "Source":
            return _source(run)
        if name == "State":
            return run.state
        if name == "Best by":
            return run.main_title
        if name == "Score":
            return run.main_value
        if name == "Run time":
            return run.duration_s
        return run.name

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        run = self.rows[index.row()]
        value = self._value(run, index.column())
        name = self.COLUMNS[index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            if value is None:
                return ""
            if name == "Started":
                return value.strftime("%Y-%m-%d %H:%M")
            if name == "Score":
                return f"{value:.3f}"
            if name == "Run time":
                return _duration(value) if value >= 0 else ""  # a clock set back meanwhile: no honest figure
            return str(value)
        if role == SORT_ROLE:
            if value is None:
                return -1.0 if name in self.NUMERIC else ""
            return value.timestamp() if name == "Started" else value
        if role == PATH_ROLE:
            return str(run.path)
        if role == Qt.ItemDataRole.ForegroundRole and name == "State":
            return STATE_COLOURS.get(run.state)
        if role == Qt.ItemDataRole.TextAlignmentRole and name in self.NUMERIC:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole:
            return _tooltip(run, name)
        return None


def _tooltip(run: RunSummary, column: str) -> str:
    """A cell's tooltip: what the column counts (Run time, Source), then the run's folder, data and result."""
    lines = []
    if column == "Run time" and run.duration_s is not None:
        lines.append(f"Run time {_duration(run.duration_s)}. {RUN_TIME_TIP}")
    elif column == "Source" and run.imported:
        packed = run.imported.get("packed")
        lines.append(f"{_source(run)} from the pack of {run.imported.get('pack') or 'a run'}"
                     + (f", packed {str(packed).replace('T', ' ')}" if packed else ""))
    elif column == "Method" and run.method in METHODS:
        lines.append(f"{METHODS[run.method].menu_title}: trains {METHODS[run.method].help}")
    lines.append(str(run.path))
    if run.dataset_path:
        lines.append(f"data: {run.dataset_path}")
    if run.message:
        lines.append(f"{run.state}: {in_app_words(run.message)}")
    if run.key_metrics():
        lines.append(summary_text(run.metrics, run.metric_specs))
    return "\n".join(lines)


def _method(name: str | None) -> str:
    """The method as the runs list names it: the table's title (runs before methods were recorded: full)."""
    spec = METHODS.get(name or DEFAULT_METHOD)
    return spec.title[:1].upper() + spec.title[1:] if spec else str(name)


def _source(run: RunSummary) -> str:
    """Trained here, or imported / unpacked from a pack, with when (two copies of one run differ)."""
    if not run.imported:
        return "Trained here"
    origin = ORIGINS.get(str(run.imported.get("via")), "Imported")  # unpacked before "via" was recorded
    at = str(run.imported.get("at") or "")
    return f"{origin} {at[5:16].replace('T', ' ')}" if len(at) >= 16 else origin


def _copy_to_clipboard(text: str) -> None:
    from PySide6.QtGui import QGuiApplication

    QGuiApplication.clipboard().setText(text)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _ema(values, weight: float = 0.9):
    """Exponential moving average with bias correction, as TensorBoard smooths loss curves."""
    import numpy as np

    out = np.empty(len(values))
    acc = 0.0
    for i, v in enumerate(values):
        acc = weight * acc + (1 - weight) * v
        out[i] = acc / (1 - weight ** (i + 1))
    return out


class CurvesPanel(QWidget):
    """Training loss and the validation metric of one or more runs, overlaid.

    pyqtgraph is imported on first use so the window's first paint does not wait for it.
    """

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._plots = None
        self._cache: dict[str, tuple[tuple[float, int], list[dict]]] = {}
        self.hint = QLabel("Select a run to see its curves; select two or more to compare them.")
        self.hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.hint.setEnabled(False)
        self.hint.setWordWrap(True)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.hint)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.stack)
        self.shown: list[str] = []  # run folders currently drawn
        self.metric: str | None = None

    def _build(self):
        if self._plots is not None:
            return self._plots
        import pyqtgraph as pg

        widget = pg.GraphicsLayoutWidget()
        # The window's own colours, so the plots sit in light and dark themes alike.
        widget.setBackground(self.palette().color(QPalette.ColorRole.Base))
        text = self.palette().color(QPalette.ColorRole.Text)
        loss = widget.addPlot(row=0, col=0)
        metric = widget.addPlot(row=0, col=1)
        for plot in (loss, metric):
            for side in ("left", "bottom"):
                plot.getAxis(side).setPen(pg.mkPen(text))
                plot.getAxis(side).setTextPen(pg.mkPen(text))
            plot.showGrid(x=True, y=True, alpha=0.2)
            plot.setLabel("bottom", "step", color=text.name())
            backdrop = QColor(self.palette().color(QPalette.ColorRole.Base))
            backdrop.setAlpha(200)
            plot.addLegend(offset=(-10, 10), labelTextColor=text, brush=backdrop)
        self.stack.addWidget(widget)
        self._text_colour = text.name()
        loss.setTitle("Training loss (faint: raw, bold: smoothed)", color=self._text_colour)
        self._plots = (widget, loss, metric)
        return self._plots

    def _metrics(self, run_dir: str) -> list[dict]:
        path = Path(run_dir) / "metrics.jsonl"
        try:
            st = path.stat()
            key = (st.st_mtime, st.st_size)
        except OSError:
            return []
        cached = self._cache.get(run_dir)
        if cached and cached[0] == key:
            return cached[1]
        events = read_metrics(run_dir)
        self._cache[run_dir] = (key, events)
        return events

    def show_runs(self, runs: list[RunSummary]) -> None:
        import numpy as np

        self.shown = [str(r.path) for r in runs]
        if not runs:
            self.stack.setCurrentWidget(self.hint)
            return
        widget, loss_plot, metric_plot = self._build()
        import pyqtgraph as pg

        for plot in (loss_plot, metric_plot):
            plot.clear()
            if plot.legend is not None:
                plot.legend.clear()
        # One metric for every run, so the curves share a scale: the first run's selection metric.
        first = next((r for r in runs if r.main_metric), None)
        self.metric = first.main_metric if first else "accuracy"
        title = f"Validation {in_sentence(first.main_title if first else 'accuracy')}"
        any_eval = False
        for i, run in enumerate(runs):
            colour = QColor(CURVE_COLOURS[i % len(CURVE_COLOURS)])
            label = _short_label(run, runs)
            events = self._metrics(str(run.path))
            steps = [e for e in events if e.get("event") == "StepMetrics" and isinstance(e.get("loss"), (int, float))]
            if steps:
                x = np.array([e["step"] for e in steps], float)
                y = np.array([e["loss"] for e in steps], float)
                faint = QColor(colour)
                faint.setAlpha(60)
                loss_plot.plot(x, y, pen=pg.mkPen(faint, width=1))
                loss_plot.plot(x, _ema(y), pen=pg.mkPen(colour, width=2), name=label)
            evals = [
                e for e in events
                if e.get("event") == "EvalMetrics" and e.get("split") == "validation"
                and isinstance((e.get("metrics") or {}).get(self.metric), (int, float))
            ]
            if evals:
                any_eval = True
                x = np.array([e["step"] for e in evals], float)
                y = np.array([e["metrics"][self.metric] for e in evals], float)
                metric_plot.plot(x, y, pen=pg.mkPen(colour, width=2), symbol="o", symbolSize=6,
                                 symbolBrush=colour, symbolPen=None, name=label)
        metric_plot.setTitle(title if any_eval else f"{title} (none recorded)", color=self._text_colour)
        self.stack.setCurrentWidget(widget)


def _short_label(run: RunSummary, runs: list[RunSummary]) -> str:
    started = run.started.strftime("%m-%d %H:%M") if run.started else run.name
    parts = [started]
    if len({r.dataset for r in runs}) > 1 and run.dataset:
        parts.append(run.dataset)
    if len({r.backbone for r in runs}) > 1 and run.backbone:
        parts.append(run.backbone)
    return "  ".join(parts)


class RunsPage(QWidget):
    run_opened = Signal(str)  # a run folder the user chose to open
    run_deleted = Signal(str)
    resume_requested = Signal(str)  # a paused, cancelled or crashed run to go on with

    def __init__(self, parent: QWidget | None = None, home: str | Path | None = None) -> None:
        super().__init__(parent)
        self.home = Path(home) if home is not None else None
        self._shown_once = False
        self.jobs = Jobs(self)  # packing and unpacking, off the GUI thread
        self.message: QMessageBox | None = None  # the last outcome shown (tests read it)

        self.title = heading("Runs")
        self.where = text_label(dimmed=True)
        self.where.setWordWrap(False)
        self.curves = CurvesPanel()
        self.curves.setMinimumHeight(220)
        split = stacked(column(self._build_buttons(), (self._build_list(), 1)), self.curves, stretch=(2, 3))
        split.setSizes([260, 390])
        head = QVBoxLayout()
        head.setSpacing(2)
        fill(head, self.title, self.where)
        set_column(self, head, (split, 1), margins=None)
        self._update_buttons()
        # A run can finish, or a CLI run appear, while the page is open.
        self._poll = timer(self, 5000, self._refresh_if_visible, start=True)

    def _build_list(self) -> QStackedWidget:
        """The runs, newest first; a note instead while there are none."""
        self.model = RunsModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        self.table = rows_table(self.proxy, len(RunsModel.COLUMNS) - 1, sort_column=0, descending=True,
                                fit_columns=True)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # a copy's folder differs at its end ("-2")
        self.table.doubleClicked.connect(self._on_double_clicked)
        self.table.selectionModel().selectionChanged.connect(self._on_selection_changed)
        self.empty = QLabel()
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setWordWrap(True)
        self.list_stack = QStackedWidget()
        self.list_stack.addWidget(self.table)
        self.list_stack.addWidget(self.empty)
        return self.list_stack

    def _build_buttons(self) -> QHBoxLayout:
        self.open_button = button("Open", self._open_selected,
                                  "Show this run's report and predictions (Evaluate) and its model (Export)")
        self.compare_button = button("Compare", self._compare_selected,
                                     "Overlay the selected runs' training loss and validation curves")
        self.diff_button = button("Diff", self._diff_selected, "Two runs scored on the same test data: metric deltas "
                                                               "with p-values and the examples the newer run fixed or broke")
        self.resume_button = button("Resume", self._resume_selected, "Go on with a paused, cancelled or crashed run "
                                    "from its last checkpoint, with its curves so far on the Train page")
        self.files_button = button("Show files", self._show_files, "Open the run folder in the file manager")
        self.delete_button = button("Delete...", self._delete_selected, "Delete the selected runs' folders (asks first)")
        self.pack_button = button("Pack…", tip="Write the selected run (config, metrics, report, predictions, model) "
                                  "into one .wbrun file to share or move; Import Run reads it back, here or on another machine")
        pack_menu = QMenu(self.pack_button)
        pack_menu.addAction("Pack Run…", lambda: self._pack_selected(False))
        pack_menu.addAction("Pack Run with Its Data…", lambda: self._pack_selected(True))
        self.pack_button.setMenu(pack_menu)
        self.import_button = button("Import Run…", self._import_chosen,
                                    "Unpack a .wbrun file into the runs home; it is listed like a local run")
        self.refresh_button = button("Refresh", self.refresh)
        buttons = row(self.open_button, self.resume_button, self.compare_button, self.diff_button, self.files_button,
                      self.pack_button, self.delete_button)
        buttons.addStretch(1)
        return fill(buttons, self.import_button, self.refresh_button)

    # ---- public ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        """List the runs afresh; the runs selected before stay selected (by folder, wherever their rows
        moved), and so does the current one."""
        home = self.home if self.home is not None else runs_home()
        selected = set(self.selected_paths())
        current = self.table.currentIndex().siblingAtColumn(0).data(PATH_ROLE)
        runs = list_runs(home)
        self.model.set_rows(runs)
        self.where.setText(f"{len(runs)} run{'' if len(runs) == 1 else 's'} in {home}")
        if runs:
            self.list_stack.setCurrentWidget(self.table)
        else:
            self.empty.setText(f"No runs yet. Runs you train, here or from the command line, are kept in\n{home}")
            self.list_stack.setCurrentWidget(self.empty)
        if selected:
            self.select_paths(selected, current)
        elif runs and not self._shown_once:
            # The newest run selected at first sight, so its curves are there without a click.
            self.table.selectRow(0)
        self._shown_once = True
        self._update_buttons()

    def selected_paths(self) -> list[str]:
        rows = sorted({i.row() for i in self.table.selectionModel().selectedRows()})
        return [self.proxy.index(r, 0).data(PATH_ROLE) for r in rows]

    def select_paths(self, paths, current: str | None = None) -> None:
        """Select the runs in these folders; the current row (where the keyboard and Shift+click go on
        from) is ``current``'s, else the first selected run's."""
        wanted = {str(Path(p).resolve()) for p in paths}
        current = str(Path(current).resolve()) if current else None
        sel = self.table.selectionModel()
        sel.clearSelection()
        first = None
        for r in range(self.proxy.rowCount()):
            idx = self.proxy.index(r, 0)
            path = str(Path(idx.data(PATH_ROLE)).resolve())
            if path in wanted:
                sel.select(idx, QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows)
                if first is None or path == current:
                    first = idx
        if first is not None:
            sel.setCurrentIndex(first, QItemSelectionModel.SelectionFlag.NoUpdate)
            self.table.scrollTo(first)

    def compare(self, paths) -> None:
        """Overlay these runs' curves (the Compare button does this for the selection)."""
        wanted = [str(Path(p).resolve()) for p in paths]
        by_path = {str(r.path.resolve()): r for r in self.model.rows}
        self.curves.show_runs([by_path[p] for p in wanted if p in by_path])

    def shutdown(self) -> None:
        self._poll.stop()
        self.jobs.shutdown()

    def import_run(self, archive: str) -> None:
        """Unpack ``archive`` into a new folder of the runs home, then list and select it."""
        from ...core.export.pack import unpack_run

        home = self.home if self.home is not None else runs_home()
        self._busy(f"Importing {Path(archive).name}…")
        self.jobs.submit(lambda state: unpack_run(archive, home=home, cancel=state.token, via="import"), state=True,
                         on_done=self._imported, on_error=lambda e: self._failed("Import failed", e))

    def pack_run(self, run_dir: str, output: str, with_data: bool = False, overwrite: bool = False) -> None:
        """Write ``run_dir`` into the .wbrun file ``output`` (``overwrite``: the save dialog asked)."""
        from ...core.export.pack import pack_run

        self._busy(f"Packing {Path(run_dir).name}…")
        self.jobs.submit(lambda state: pack_run(run_dir, output, with_data=with_data, overwrite=overwrite,
                                                cancel=state.token), state=True,
                         on_done=self._packed, on_error=lambda e: self._failed("Pack failed", e))

    # ---- slots ----------------------------------------------------------------------------------
    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.refresh()

    @Slot()
    def _refresh_if_visible(self) -> None:
        if self.isVisible() and any(r.state == "running" for r in self.model.rows):
            self.refresh()

    @Slot(QModelIndex)
    def _on_double_clicked(self, index: QModelIndex) -> None:
        self.run_opened.emit(index.siblingAtColumn(0).data(PATH_ROLE))

    @Slot()
    def _open_selected(self) -> None:
        paths = self.selected_paths()
        if paths:
            self.run_opened.emit(paths[0])

    @Slot()
    def _on_selection_changed(self) -> None:
        self._update_buttons()
        paths = self.selected_paths()
        # One run: its own curves at once; several: overlaid when Compare is pressed.
        if len(paths) == 1:
            self.compare(paths)

    @Slot()
    def _resume_selected(self) -> None:
        paths = self.selected_paths()
        if len(paths) == 1:
            self.resume_requested.emit(paths[0])

    @Slot()
    def _compare_selected(self) -> None:
        self.compare(self.selected_paths())

    @Slot()
    def _diff_selected(self) -> None:
        paths = self.selected_paths()
        if len(paths) == 2:
            self.diff(*paths)

    def diff(self, first: str, second: str):
        """Open the diff of two runs, the older as A; returns the dialog (views/run_diff.py)."""
        from ..views.run_diff import RunDiffView

        by_path = {str(r.path): r for r in self.model.rows}
        a, b = sorted((first, second), key=lambda p: (getattr(by_path.get(p), "started", None) is None,
                                                      str(getattr(by_path.get(p), "started", "")), p))
        dialog = RunDiffView(a, b, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.show()
        return dialog

    @Slot()
    def _show_files(self) -> None:
        for p in self.selected_paths()[:1]:
            QDesktopServices.openUrl(QUrl.fromLocalFile(p))

    def _busy(self, text: str) -> None:
        self.where.setText(text)
        self.pack_button.setEnabled(False)
        self.import_button.setEnabled(False)

    def _done(self) -> None:
        self.import_button.setEnabled(True)
        self.refresh()

    def _show(self, icon, title: str, text: str, details: str = "", command: str = "") -> QMessageBox:
        """A message in the app's words; ``command``: a command line, behind a Copy Command button."""
        box = QMessageBox(icon, title, in_app_words(text), QMessageBox.StandardButton.Ok, self)
        if details:
            box.setInformativeText(in_app_words(details))
        if command:
            copy = box.addButton("Copy Command", QMessageBox.ButtonRole.ActionRole)
            copy.setToolTip(f"Copy the command line that repeats this run: {command}")
            copy.clicked.disconnect()  # an action button would close the box; copying should not
            copy.clicked.connect(lambda: _copy_to_clipboard(command))
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.message = box
        box.open()
        return box

    def _imported(self, result) -> None:
        self._done()
        self.select_paths([result.path])
        notes = "\n".join(result.notes)
        self._show(QMessageBox.Icon.Information, "Run imported",
                   f"Imported {result.manifest.get('run')} into\n{result.path}",
                   notes + ("\n\n" if notes else "") + "It is selected in the list: Open shows its report and model.",
                   command=f"workbench train --config {result.path / 'config.json'}")

    def _packed(self, result) -> None:
        self._done()
        self._show(QMessageBox.Icon.Information, "Run packed",
                   f"Wrote {result.path} ({result.archive_bytes / 1e6:,.1f} MB)", "\n".join(result.notes()))

    def _failed(self, title: str, error: Exception) -> None:
        self._done()
        self._show(QMessageBox.Icon.Warning, title, describe(error))

    @Slot()
    def _import_chosen(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import Run", str(Path.home()), "Workbench runs (*.wbrun);;All files (*)")
        if path:
            self.import_run(path)

    def _pack_selected(self, with_data: bool) -> None:
        from ...core.export.pack import default_pack_name

        paths = self.selected_paths()
        if len(paths) != 1:
            return
        suggested = str(Path.home() / default_pack_name(paths[0]))
        path, _ = QFileDialog.getSaveFileName(self, "Pack Run", suggested, "Workbench runs (*.wbrun)")
        if path:  # the dialog asked before replacing ``path``, not a name with the suffix added
            named = path.endswith(".wbrun")
            self.pack_run(paths[0], path if named else path + ".wbrun", with_data, overwrite=named)

    @Slot()
    def _delete_selected(self) -> None:
        paths = self.selected_paths()
        if not paths:
            return
        names = "\n".join(Path(p).name for p in paths[:10]) + ("\n..." if len(paths) > 10 else "")
        answer = QMessageBox.question(
            self, "Delete runs?",
            f"Delete {len(paths)} run folder(s) with their models and predictions?\n\n{names}\n\nThis cannot be undone.",
        )
        if answer == QMessageBox.StandardButton.Yes:
            self.delete_runs(paths)

    def delete_runs(self, paths) -> list[str]:
        """Delete run folders (not ones still training); returns those deleted."""
        by_path = {str(r.path): r for r in self.model.rows}
        deleted, refused = [], []
        for p in paths:
            run = by_path.get(str(p))
            if run is None:
                continue
            if summarize(run.path).state == "running":  # read afresh: it may have started since the list
                refused.append(run.name)
                continue
            shutil.rmtree(run.path, ignore_errors=True)
            deleted.append(str(run.path))
            self.run_deleted.emit(str(run.path))
        self.curves.show_runs([])
        self.refresh()
        if refused:
            QMessageBox.information(self, "Runs not deleted", "Still training, so kept:\n" + "\n".join(refused))
        return deleted

    def _update_buttons(self) -> None:
        paths = self.selected_paths()
        n = len(paths)
        by_path = {str(r.path): r for r in self.model.rows}
        run = by_path.get(paths[0]) if n == 1 else None
        self.resume_button.setEnabled(run is not None and run.state in RESUMABLE_STATES and resumable(paths[0]))
        self.open_button.setEnabled(n == 1)
        self.files_button.setEnabled(n == 1)
        self.pack_button.setEnabled(n == 1 and run is not None and run.state not in ("running", "resumed")
                                    and not self.jobs.busy)
        self.compare_button.setEnabled(n >= 2)
        self.diff_button.setEnabled(n == 2)
        self.delete_button.setEnabled(n >= 1)
