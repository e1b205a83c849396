"""Evaluate page: how a finished run did, read from its run directory.

The page reads the run on a worker thread (a 100,000-row predictions file takes most of a second),
then hands it to the view the task table names for the run's task (``TaskSpec.evaluate_view``, an
:class:`~workbench.app.evaluation.view.EvaluateView`), built with the table's "Try it" box. A task
without a view gets the plain-text report, so a new task is shown from its first run.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Signal, Slot
from PySide6.QtGui import QDesktopServices, QFontDatabase
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from ...core.run.history import RunData, load_run
from ..evaluation.view import EvaluateView, view_classes
from ..jobs import Jobs, describe
from ..widgets.build import heading

ViewKind = tuple[type, type | None]  # (view class, its "Try it" class)


class ReportTextView(QWidget):
    """The run's report.txt, or why there is none: for tasks without a view and unfinished runs."""

    @staticmethod
    def prepare(run: RunData):
        return None

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.note)
        layout.addWidget(self.text, 1)

    def show_run(self, run: RunData, prepared=None) -> None:
        if run.report_text:
            self.note.setText("")
            self.text.setPlainText(run.report_text)
        else:
            why = {
                "failed": f"This run failed: {run.status.get('message') or 'see the details below'}",
                "cancelled": "This run was cancelled before it was evaluated.",
                "interrupted": "This run stopped before it was evaluated (its process ended without finishing).",
                "running": "This run is still training; its evaluation appears here when it finishes.",
            }.get(run.state, "This run has no evaluation report.")
            self.note.setText(why)
            self.text.setPlainText(run.error_text or "")
        self.text.setVisible(bool(self.text.toPlainText()))

    def clear(self) -> None:
        self.note.setText("")
        self.text.clear()

    def shutdown(self) -> None:
        pass


def _read_run(run_dir: str) -> tuple[RunData, ViewKind, object]:
    """The run, the view that shows it and what that view prepared (on a worker thread)."""
    run = load_run(run_dir)
    kind = view_for(run)
    return run, kind, kind[0].prepare(run)


def view_for(run: RunData) -> ViewKind:
    """The task table's view (and "Try it") for the run; the plain report for a run without one."""
    view_class, try_it_class = view_classes(run.task) if run.report is not None else (None, None)
    return (view_class, try_it_class) if view_class is not None else (ReportTextView, None)


class EvaluatePage(QWidget):
    """``show_run(run_dir)`` loads in the background and emits ``loaded(run_dir)`` when shown."""

    loaded = Signal(str)
    load_failed = Signal(str)

    EMPTY = "No run to show yet. Train a model, or open a past run from Runs."

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.run: RunData | None = None
        self._views: dict[ViewKind, EvaluateView] = {}
        self._unshown: tuple | None = None  # a loaded run whose view is built when the page is shown
        self.jobs = Jobs(self)

        self.title = heading()
        self.subtitle = QLabel()
        self.subtitle.setEnabled(False)
        self.subtitle.setWordWrap(True)
        self.open_folder = QPushButton("Show files")
        self.open_folder.setToolTip("Open the run folder in the file manager")
        self.open_folder.clicked.connect(self._open_run_folder)
        self.open_other = QPushButton("Open run...")
        self.open_other.setToolTip("Show a run from its folder")
        self.open_other.clicked.connect(self._choose_run)
        head = QHBoxLayout()
        titles = QVBoxLayout()
        titles.setSpacing(2)
        titles.addWidget(self.title)
        titles.addWidget(self.subtitle)
        head.addLayout(titles, 1)
        head.addWidget(self.open_folder, 0, Qt.AlignmentFlag.AlignTop)
        head.addWidget(self.open_other, 0, Qt.AlignmentFlag.AlignTop)

        self.message = QLabel()
        self.message.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.message)

        layout = QVBoxLayout(self)
        layout.addLayout(head)
        layout.addWidget(self.stack, 1)
        self.clear()

    # ---- public ---------------------------------------------------------------------------------
    def show_run(self, run_dir: str) -> None:
        self.title.setText(Path(run_dir).name)
        self.subtitle.setText("")
        self._show_message("Loading the run...")
        self._unshown = None
        self.jobs.submit(_read_run, str(run_dir), on_done=self._on_loaded, on_error=self._on_load_error)

    def clear(self) -> None:
        self.jobs.cancel()  # a load still on its way is no longer wanted
        self.run = None
        self._unshown = None
        for view in self._views.values():
            view.clear()
        self.title.setText("Evaluate")
        self.subtitle.setText("")
        self.open_folder.setEnabled(False)
        self._show_message(self.EMPTY)

    @property
    def view(self) -> QWidget | None:
        """The view showing the current run, or None while there is none."""
        current = self.stack.currentWidget()
        return None if current is self.message else current

    def shutdown(self) -> None:
        """Wait for background work; the window calls this when it closes."""
        self.jobs.shutdown(5000)
        for view in self._views.values():
            view.shutdown()

    # ---- loading --------------------------------------------------------------------------------
    def _show_message(self, text: str) -> None:
        self.message.setText(text)
        self.stack.setCurrentWidget(self.message)

    def _view(self, kind: ViewKind) -> EvaluateView:
        if kind not in self._views:
            view_class, try_it_class = kind
            view = view_class(try_it=try_it_class()) if try_it_class is not None else view_class()
            self._views[kind] = view
            self.stack.addWidget(view)
        return self._views[kind]

    def _on_loaded(self, loaded: tuple[RunData, ViewKind, object]) -> None:
        run, kind, prepared = loaded
        self.run = run
        self.title.setText(run.name)
        self.subtitle.setText(_describe(run))
        self.open_folder.setEnabled(True)
        if self.window() is not self and not self.isVisible():
            # In the main window but not on screen (a run has just finished on the Train page):
            # building a report view holds the GUI thread for 0.1-0.4 s, so it waits until the
            # page is opened instead of stalling the window the moment training ends.
            self._unshown = loaded
            self._show_message("Loading the run...")
            return
        self._unshown = None
        view = self._view(kind)
        try:
            view.show_run(run, prepared)
        except Exception as e:  # a damaged report.json: say so, keep the app usable
            view.clear()
            self._show_failure(f"{run.path / 'report.json'}: cannot be shown ({type(e).__name__}: {e})")
            return
        self.stack.setCurrentWidget(view)
        self.loaded.emit(str(run.path))

    def showEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().showEvent(event)
        if self._unshown is not None:
            self._on_loaded(self._unshown)

    def _on_load_error(self, error: Exception) -> None:
        self._show_failure(describe(error))

    def _show_failure(self, message: str) -> None:
        self.run = None
        self.open_folder.setEnabled(False)
        self._show_message(f"Could not open this run.\n\n{message}")
        self.load_failed.emit(message)

    @Slot()
    def _open_run_folder(self) -> None:
        if self.run is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.run.path)))

    @Slot()
    def _choose_run(self) -> None:
        start = str(self.run.path.parent) if self.run else ""
        folder = QFileDialog.getExistingDirectory(self, "Open a run folder", start)
        if folder:
            self.show_run(folder)


def _describe(run: RunData) -> str:
    cfg = run.config
    resolved = cfg.get("resolved") or {}
    parts = []
    train = (cfg.get("data") or {}).get("train")
    if train:
        parts.append(Path(train).name)
    backbone = (resolved.get("backbone") or {}).get("name") or (cfg.get("model") or {}).get("name")
    if backbone:
        parts.append(Path(backbone).name if "/" in backbone and Path(backbone).is_absolute() else backbone)
    if run.task:
        parts.append(run.task)
    if run.report and run.report.get("split"):
        parts.append(f"scored on the {run.report['split']} split")
    trained = (run.report or {}).get("trained_on") or {}
    if trained.get("refit"):
        parts.append(f"trained on all {trained['rows']:,} {trained.get('unit', 'rows')} (refit)")
    state = run.state
    ended = run.status.get("ended") or run.status.get("started")
    parts.append(f"{state} {str(ended).replace('T', ' ')}" if ended else state)
    return "  \u00b7  ".join(parts)
