"""The main window: a sidebar of steps, one page per step, and the wiring between them.

Pages talk through ``AppState`` and the ``TrainingController``; this module only decides which
steps can work yet (and says why not), routes files dropped anywhere on the window to the Data
page, and keeps the Evaluate and Export pages on the run the user is looking at.

Only the Data and Model pages are built before the first paint. The Train page (pyqtgraph) and
the run pages are built right after it, one per event-loop turn, so the window appears at once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QEvent, QObject, QSize, Qt, QTimer, QUrl, Signal, Slot
from PySide6.QtGui import (
    QAction,
    QActionGroup,
    QColor,
    QDesktopServices,
    QFont,
    QIcon,
    QKeySequence,
    QPainter,
    QPalette,
    QPixmap,
)
from PySide6.QtWidgets import (
    QApplication,
    QFrame,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from . import warmup
from .controller import TrainingController
from .logs import LogRelay
from .look import APPEARANCES, SIDEBAR_QSS, app_icon, saved_appearance, set_appearance, settings
from .pages.data import DataPage
from .pages.model import ModelPage
from .state import AppState
from .widgets.build import enlarge, timer
from .widgets.placeholder import Placeholder

if TYPE_CHECKING:
    from .about import DiagnosticsCopier

STEPS = (
    # key, sidebar title, badge, title of the placeholder
    ("data", "Data", "1", "Data"),
    ("model", "Model & task", "2", "Model & task"),
    ("train", "Train", "3", "Train"),
    ("evaluate", "Evaluate", "4", "Evaluate"),
    ("export", "Export", "5", "Export"),
    ("runs", "Runs", "≡", "Runs"),
)
MAX_RECENT = 10
# Help > User Guide: the guide beside the package in a source checkout (pyproject names no online copy).
GUIDE = Path(__file__).resolve().parents[2] / "docs" / "GUIDE.md"
CLOSE_WAIT_S = 2.0  # cancelling takes effect within a step; past this the window closes once the run stops


def _badge(text: str, color: QColor, size: int = 22) -> QIcon:
    """A numbered disc for the sidebar: accent on white text, inverted on the selected row."""
    ratio = QApplication.instance().devicePixelRatio() if QApplication.instance() else 1.0
    icon = QIcon()
    for mode, disc, ink in ((QIcon.Mode.Normal, color, QColor("white")),
                            (QIcon.Mode.Selected, QColor("white"), color)):
        pm = QPixmap(int(size * ratio), int(size * ratio))
        pm.setDevicePixelRatio(ratio)
        pm.fill(Qt.GlobalColor.transparent)
        p = QPainter(pm)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(disc)
        p.drawEllipse(1, 1, size - 2, size - 2)
        f = QFont()
        f.setBold(True)
        f.setPixelSize(int(size * 0.55))
        p.setFont(f)
        p.setPen(ink)
        p.drawText(0, 0, size, size, Qt.AlignmentFlag.AlignCenter, text)
        p.end()
        icon.addPixmap(pm, mode)
    return icon



def _is_pack(path: str) -> bool:
    from ..core.export.pack import SUFFIX  # here, not at start-up: the first paint does not wait for zipfile

    return str(path).lower().endswith(SUFFIX)


def _owns_file_drops(widget: QWidget | None) -> bool:
    """Whether a drop on ``widget`` is for the widget (a drop zone with the "ownsFileDrops" property, e.g.
    the Export page's Predict section) rather than a file to open as data."""
    while widget is not None:
        if widget.property("ownsFileDrops"):
            return True
        widget = widget.parentWidget()
    return False


DEFAULT_SIZE = QSize(1280, 800)  # what every page is laid out for; larger screens get this, smaller ones less
FRAME_ALLOWANCE = QSize(16, 48)  # the window manager's title bar and borders around the window's own size


def default_size(available: QSize) -> QSize:
    """The window's first size: ``DEFAULT_SIZE``, or what fits the screen's ``available`` area (a
    1280x800 laptop less its panel) with the window manager's frame around it."""
    room = available - FRAME_ALLOWANCE
    return QSize(max(640, min(DEFAULT_SIZE.width(), room.width())), max(480, min(DEFAULT_SIZE.height(), room.height())))


# `workbench --sample`: open the bundled real dataset (the tweets corpus) with quick-trial settings.
SAMPLE = ":sample:"

class _StepHost(QStackedWidget):
    """Holds a step's page, or the placeholder saying why the step cannot work yet."""

    def __init__(self, title: str) -> None:
        super().__init__()
        self.placeholder = Placeholder(title)
        self.placeholder.set_reason("Loading…")
        self.addWidget(self.placeholder)
        self.page: QWidget | None = None

    def set_page(self, page: QWidget) -> None:
        self.page = page
        self.addWidget(page)
        self.setCurrentWidget(page)

    def show_reason(self, reason: str, action: str = "") -> None:
        if reason or self.page is None:
            self.placeholder.set_reason(reason or "Loading…", action)
            self.setCurrentWidget(self.placeholder)
        else:
            self.setCurrentWidget(self.page)


class MainWindow(QMainWindow):
    first_painted = Signal()
    pages_ready = Signal()

    def __init__(self, path: str | None = None) -> None:
        super().__init__()
        self.setWindowTitle("Workbench")
        self.setWindowIcon(app_icon())
        self.setAcceptDrops(True)
        self.state = AppState(self)
        self.controller = TrainingController(self)
        self._initial_path = path
        self._painted = False
        self._closing = False
        self._finished_run = ""  # the finished run shown on Evaluate/Export
        self._run_problem = ""  # why the run being looked at cannot be evaluated
        self.hosts: dict[str, _StepHost] = {}

        central = QWidget()
        row = QHBoxLayout(central)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(0)
        row.addWidget(self._build_sidebar())
        self.stack = QStackedWidget()
        for key, _, _, title in STEPS:
            host = self.hosts[key] = _StepHost(title)
            host.placeholder.action.connect(lambda k=key: self._placeholder_action(k))
            self.stack.addWidget(host)
        row.addWidget(self.stack, 1)
        self.setCentralWidget(central)
        self._drop_overlay = QLabel("Drop to open", central)
        self._drop_overlay.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._drop_overlay.hide()

        self.data_page = DataPage(self.state)
        self.hosts["data"].set_page(self.data_page)
        self.model_page = ModelPage(self.state)
        self.hosts["model"].set_page(self.model_page)
        self.train_page = None
        self._plots: list = []  # the Train page's plots, built ahead one per event-loop turn
        self.log_relay = LogRelay(self)
        self.log_relay.install()
        self.evaluate_page = None
        self.export_page = None
        self.runs_page = None
        self._diagnostics: DiagnosticsCopier | None = None  # Help > Report a Problem's, made on first use
        self.report_box: QMessageBox | None = None  # what Report a Problem said last

        self._build_menus()
        self._wire()
        self._restore()
        self.sidebar.setCurrentRow(0)
        self._refresh_steps()
        self.sidebar.viewport().installEventFilter(self)
        QApplication.instance().installEventFilter(self)  # drops anywhere, even on widgets that take text drops

    # ---- building -----------------------------------------------------------------------------------
    def _build_sidebar(self) -> QWidget:
        frame = QFrame()
        frame.setObjectName("sidebarFrame")
        # On the sidebar only: an application-wide style sheet makes every widget of every page
        # slower to build and to show (the Train page: about a quarter).
        frame.setStyleSheet(SIDEBAR_QSS)
        lay = QVBoxLayout(frame)
        lay.setContentsMargins(0, 8, 0, 8)
        brand = QLabel()
        brand.setPixmap(app_icon().pixmap(QSize(28, 28)))
        name = QLabel("Workbench")
        enlarge(name, 1.15)
        head = QHBoxLayout()
        head.setContentsMargins(16, 6, 16, 6)
        head.addWidget(brand)
        head.addWidget(name, 1)
        lay.addLayout(head)
        self.sidebar = QListWidget()
        self.sidebar.setObjectName("sidebar")
        self.sidebar.setIconSize(QSize(22, 22))
        self.sidebar.setFrameShape(QFrame.Shape.NoFrame)
        self.sidebar.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        accent = self.palette().color(QPalette.ColorRole.Highlight)
        for key, text, badge, _ in STEPS:
            item = QListWidgetItem(_badge(badge, accent), text)
            item.setData(Qt.ItemDataRole.UserRole, key)
            item.setSizeHint(QSize(160, 38))
            self.sidebar.addItem(item)
        self.sidebar.currentRowChanged.connect(self._step_changed)
        lay.addWidget(self.sidebar, 1)
        frame.setFixedWidth(196)
        return frame

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        act = QAction("&Open File…", self)
        act.setShortcut(QKeySequence.StandardKey.Open)
        act.triggered.connect(self.data_page.choose_file)
        file_menu.addAction(act)
        act = QAction("Open &Folder…", self)
        act.setShortcut(QKeySequence("Ctrl+Shift+O"))
        act.triggered.connect(self.data_page.choose_folder)
        file_menu.addAction(act)
        self.recent_menu = file_menu.addMenu("Open &Recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        act = QAction("Try a &Sample Dataset", self)
        act.triggered.connect(self.data_page.open_sample)
        file_menu.addAction(act)
        file_menu.addSeparator()
        act = QAction("&Quit", self)
        act.setShortcut(QKeySequence.StandardKey.Quit)
        act.setMenuRole(QAction.MenuRole.QuitRole)
        act.triggered.connect(self.close)
        file_menu.addAction(act)

        self._build_view_menu()
        go = self.menuBar().addMenu("&Go")
        for i, (key, text, _, _) in enumerate(STEPS):
            act = QAction(text.replace("&", "&&"), self)  # a single & would underline the next letter
            act.setShortcut(QKeySequence(f"Ctrl+{i + 1}"))
            act.triggered.connect(lambda _=False, k=key: self.go_to(k))
            go.addAction(act)

        run = self.menuBar().addMenu("&Run")
        self.start_action = QAction("&Start Training", self)
        self.start_action.setShortcut(QKeySequence("Ctrl+R"))
        self.start_action.triggered.connect(self._start_from_menu)
        run.addAction(self.start_action)
        self.cancel_action = QAction("&Cancel Training", self)
        self.cancel_action.setShortcut(QKeySequence("Ctrl+."))
        self.cancel_action.triggered.connect(self.controller.cancel)
        self.cancel_action.setEnabled(False)
        run.addAction(self.cancel_action)
        from .search import install as install_search

        install_search(self, run)  # Find Best Settings, Log Runs To

        self._build_help_menu()

    def _build_view_menu(self) -> None:
        appearance = self.menuBar().addMenu("&View").addMenu("&Appearance")
        group = QActionGroup(self)
        current = saved_appearance()
        self.appearance_actions: dict[str, QAction] = {}
        for scheme, text in APPEARANCES:
            act = appearance.addAction(text)
            act.setCheckable(True)
            act.setChecked(scheme == current)
            act.triggered.connect(lambda _=False, s=scheme: set_appearance(s))
            group.addAction(act)
            self.appearance_actions[scheme] = act

    def _build_help_menu(self) -> None:
        help_menu = self.menuBar().addMenu("&Help")
        act = help_menu.addAction("&User Guide")
        act.setShortcut(QKeySequence.StandardKey.HelpContents)
        act.triggered.connect(self.open_guide)
        help_menu.addAction("&Keyboard Shortcuts").triggered.connect(self._shortcuts)
        help_menu.addAction("&Report a Problem…").triggered.connect(self.report_problem)
        help_menu.addSeparator()
        act = QAction("&About Workbench", self)
        act.setMenuRole(QAction.MenuRole.AboutRole)
        act.triggered.connect(self._about)
        help_menu.addAction(act)

    def _wire(self) -> None:
        s = self.state
        self.data_page.status.connect(self._status)
        self.data_page.file_loaded.connect(self._add_recent)
        self.data_page.sample_opened.connect(self._apply_quick_trial)
        self.data_page.opening.connect(lambda _path: self.go_to("data"))  # File > Open from any page shows it
        self.model_page.status.connect(self._status)
        s.dataset_changed.connect(lambda _: self._refresh_steps())
        s.columns_changed.connect(lambda _: self._refresh_steps())
        s.config_changed.connect(self._refresh_steps)
        c = self.controller
        c.running_changed.connect(self._running_changed)
        c.finished.connect(self._run_finished)
        c.stopped.connect(self._run_stopped)
        c.started.connect(lambda d: self._status(f"Training… run folder {d}"))

    # ---- deferred pages -----------------------------------------------------------------------------
    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        t = event.type()
        if t == QEvent.Type.Paint and not self._painted and obj is self.sidebar.viewport():
            self._painted = True
            QTimer.singleShot(0, self._after_first_paint)
        elif t in (QEvent.Type.DragEnter, QEvent.Type.DragMove, QEvent.Type.Drop, QEvent.Type.DragLeave):
            if isinstance(obj, QWidget) and obj.window() is self and not _owns_file_drops(obj):
                return self._drag_event(event)
        return False

    def _after_first_paint(self) -> None:
        self.first_painted.emit()
        if os.environ.get("WORKBENCH_STARTUP_PROBE"):
            return  # the start-up benchmark quits now: no background work to wait for
        if self._initial_path:
            path, self._initial_path = self._initial_path, None
            if path == SAMPLE:
                self.data_page.open_sample()
            elif not _is_pack(path):
                self.data_page.open_path(path)
            else:
                self._initial_path = path  # a packed run: imported once the Runs page exists, below
        if self._initial_path:  # a packed run: the Runs page imports it
            self.ensure_run_pages()
            self.open_path(self._initial_path)
            self._initial_path = None
        self.model_page.load_catalog()
        if self.train_page is None or self.runs_page is None:
            warmup.pages_built.clear()  # set again by _build_run_pages
        warmup.start()
        # The Train page needs pyqtgraph (0.6 s to import) and ~0.1 s to build its plots, and the
        # Evaluate, Export and Runs pages import pandas and the data readers (1.5 s): they are built
        # once the warm-up thread has imported all that, one per event-loop turn, so the GUI thread
        # neither blocks on the imports nor competes with torch's initialisation for the GIL
        # (unless the user goes to one of them first).
        self._build_timer = timer(self, 50, self._build_when_imported, start=True)

    def _build_when_imported(self) -> None:
        if not warmup.done.is_set():
            return
        self._build_timer.stop()
        QTimer.singleShot(0, self._build_next_plot)

    def _build_next_plot(self) -> None:
        """The Train page's plots, one per event-loop turn, then the page, then the run pages: each
        turn holds the GUI thread for a fraction of what building them all at once did."""
        from .pages.train import PLOTS, make_plot

        if self.train_page is None and len(self._plots) < len(PLOTS):
            self._plots.append(make_plot(PLOTS[len(self._plots)]))
            QTimer.singleShot(0, self._build_next_plot)
            return
        self.ensure_train_page()
        QTimer.singleShot(0, self._build_run_pages)

    def _build_run_pages(self) -> None:
        self.ensure_run_pages()
        warmup.pages_built.set()
        self.pages_ready.emit()

    def ensure_train_page(self):
        if self.train_page is None:
            from .pages.train import TrainPage

            plots, self._plots = self._plots, []  # built ahead, when the warm-up finished
            self.train_page = TrainPage(self.state, self.controller, plots=plots)
            for text, when in list(self.log_relay.recent):  # what the engine logged before the page existed
                self.train_page.show_log_record(text, when)
            self.log_relay.record.connect(self.train_page.show_log_record)
            self.train_page.evaluate_requested.connect(lambda: self.go_to("evaluate"))
            self.train_page.go_to_data.connect(lambda: self.go_to("data"))
            self.train_page.resume_requested.connect(self.resume_run)
            self.hosts["train"].set_page(self.train_page)
            self._refresh_steps()
        return self.train_page

    def ensure_run_pages(self) -> None:
        if self.runs_page is not None:
            return
        # Helper pages for finished runs (report, export, history).
        from .pages.evaluate import EvaluatePage
        from .pages.export import ExportPage
        from .pages.runs import RunsPage

        self.evaluate_page = EvaluatePage()
        self.export_page = ExportPage()
        self.runs_page = RunsPage()
        self.runs_page.run_opened.connect(self.open_run)
        self.runs_page.resume_requested.connect(self.resume_run)
        self.hosts["evaluate"].set_page(self.evaluate_page)
        self.hosts["export"].set_page(self.export_page)
        self.hosts["runs"].set_page(self.runs_page)
        if self._finished_run:
            self.evaluate_page.show_run(self._finished_run)
            self.export_page.show_run(self._finished_run)
        self._refresh_steps()

    def ensure_pages(self) -> None:
        """Build every page now (screenshots)."""
        self.ensure_train_page()
        self.ensure_run_pages()

    # ---- navigation ---------------------------------------------------------------------------------
    def go_to(self, key: str) -> None:
        keys = [k for k, *_ in STEPS]
        self.sidebar.setCurrentRow(keys.index(key))

    @Slot(int)
    def _step_changed(self, row: int) -> None:
        key = STEPS[row][0]
        if key == "train":
            self.ensure_train_page()
        elif key in ("evaluate", "export", "runs"):
            self.ensure_run_pages()
            if key == "runs":
                self.runs_page.refresh()
        self.stack.setCurrentIndex(row)

    def current_step(self) -> str:
        return STEPS[self.sidebar.currentRow()][0]

    def _placeholder_action(self, key: str) -> None:
        if key in ("evaluate", "export"):
            self.go_to("train" if self.state.has_data else "data")

    # ---- step readiness -----------------------------------------------------------------------------
    def train_reason(self) -> str:
        """Why training cannot start now ("" when it can)."""
        s = self.state
        if self.data_page.loading and s.data is None:
            return "Wait for the data to finish loading."
        data = s.data
        if data is None:
            return "Load a dataset on the Data page first."
        if data.problem:
            return f"The data cannot be trained on as it is: {data.problem} Choose other columns on the Data page."
        if data.report is not None and data.report.errors:
            return data.report.errors[0].message + " (see the checks on the Data page)"
        if data.table.malformed and not s.config.data.skip_bad_rows:
            n = len(data.table.malformed)
            return (f"{n:,} malformed row{'s' if n != 1 else ''} (line {data.table.malformed[0].line} first): "
                    "tick 'Skip malformed rows' on the Data page, or fix the file.")
        return ""

    def step_reason(self, key: str) -> str:
        if key == "train":
            return "" if self.controller.running else self.train_reason()
        if key in ("evaluate", "export"):
            if self._run_problem:
                return self._run_problem
            if not self._finished_run:
                verb = "evaluate" if key == "evaluate" else "export"
                return f"Nothing to {verb} yet: train a model, or open a finished run on the Runs page."
        return ""

    def _refresh_steps(self) -> None:
        placeholder_color = self.palette().color(QPalette.ColorRole.PlaceholderText)
        for row, (key, text, _, _) in enumerate(STEPS):
            reason = self.step_reason(key)
            item = self.sidebar.item(row)
            item.setToolTip(reason or text)
            item.setData(Qt.ItemDataRole.ForegroundRole, placeholder_color if reason else None)
            item.setData(Qt.ItemDataRole.AccessibleDescriptionRole, reason)
        for key in ("evaluate", "export"):
            host = self.hosts[key]
            if host.page is not None:
                host.show_reason(self.step_reason(key), "Go to Train" if self.state.has_data else "Go to Data")
        if self.train_page is not None:
            reason = self.train_reason()
            self.train_page.set_ready(not reason, reason)
        self.start_action.setEnabled(not self.controller.running and not self.train_reason())

    # ---- runs ---------------------------------------------------------------------------------------
    def _start_from_menu(self) -> None:
        self.go_to("train")
        self.ensure_train_page().start()

    @Slot(bool)
    def _running_changed(self, running: bool) -> None:
        self.state.set_running(running)
        self.cancel_action.setEnabled(running)
        self._refresh_steps()

    @Slot(object)
    def _run_finished(self, result) -> None:
        self._show_finished_run(result.run_dir)
        self._status(f"Finished: {result.run_dir}")

    @Slot(str)
    def _run_stopped(self, outcome: str) -> None:
        # Only a Runs page on screen is refreshed now (its plots take ~0.2 s to build); going
        # to it refreshes it anyway.
        if self.runs_page is not None and self.current_step() == "runs":
            self.runs_page.refresh()
        if outcome != "finished":
            self._status({"failed": "Training failed", "cancelled": "Training cancelled",
                          "paused": "Training paused: Resume goes on from its checkpoint"}.get(outcome, outcome))
        if self._closing:
            QTimer.singleShot(0, self.close)

    def _show_finished_run(self, run_dir: str) -> None:
        self._finished_run = run_dir
        self._run_problem = ""
        self.state.set_run_dir(run_dir)
        self.ensure_run_pages()
        self.evaluate_page.show_run(run_dir)
        self.export_page.show_run(run_dir)
        self._refresh_steps()

    @Slot(str)
    def resume_run(self, run_dir: str) -> None:
        """Go on with a paused, cancelled or crashed run; its curve so far is shown on the Train page."""
        from ..core.errors import InputError

        if self.controller.running:
            self._status("A run is in progress; resume this one when it has stopped.")
            return
        self.go_to("train")
        try:
            self.controller.resume(run_dir)
        except InputError as e:
            self.ensure_train_page().show_error("Cannot resume this run", str(e), "")

    @Slot(str)
    def open_run(self, run_dir: str) -> None:
        """Show a past run: its curves on Train, and its report and export when it finished."""
        status = {}
        try:
            status = json.loads((Path(run_dir) / "status.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
        train = self.ensure_train_page()
        if not self.controller.running:
            train.show_run(run_dir)
        if status.get("state") == "finished":
            self._show_finished_run(run_dir)
            self.go_to("evaluate")
        else:
            self.state.set_run_dir(run_dir)
            self._finished_run = ""
            self._run_problem = (f"This run {status.get('state', 'did not finish')}: there is no model to evaluate "
                                 "or export. Its curves and log are on the Train page.")
            self.ensure_run_pages()
            self.evaluate_page.clear()
            self.export_page.clear()
            self._refresh_steps()
            self.go_to("train")

    # ---- files --------------------------------------------------------------------------------------
    def open_path(self, path: str):
        if _is_pack(path):  # a packed run (`workbench run.wbrun`, the file manager): import it
            self.ensure_run_pages()
            self.go_to("runs")
            return self.runs_page.import_run(path)
        self.go_to("data")
        return self.data_page.open_path(path)

    def _drag_event(self, event) -> bool:
        urls = event.mimeData().urls() if event.type() != QEvent.Type.DragLeave else []
        local = [u.toLocalFile() for u in urls if u.isLocalFile()]
        t = event.type()
        if t == QEvent.Type.DragLeave:
            self._show_drop_overlay(False)
            return False
        if not local:
            return False  # text drags go to the widgets as usual
        if t in (QEvent.Type.DragEnter, QEvent.Type.DragMove):
            event.setDropAction(Qt.DropAction.CopyAction)
            event.accept()
            self._show_drop_overlay(True, local[0])
            return True
        # Drop
        self._show_drop_overlay(False)
        event.setDropAction(Qt.DropAction.CopyAction)
        event.accept()
        self.open_path(local[0])
        return True

    def _show_drop_overlay(self, show: bool, path: str = "") -> None:
        o = self._drop_overlay
        if show:
            pal = self.palette()
            accent = pal.color(QPalette.ColorRole.Highlight)
            bg = QColor(pal.color(QPalette.ColorRole.Window))
            bg.setAlpha(225)
            o.setStyleSheet(f"background: rgba({bg.red()},{bg.green()},{bg.blue()},{bg.alpha()});"
                            f"border: 3px dashed {accent.name()}; border-radius: 14px;"
                            f"font-size: 18pt; font-weight: bold; color: {accent.name()};")
            o.setText(f"Drop to open {Path(path).name}" if path else "Drop to open")
            o.setGeometry(self.centralWidget().rect().adjusted(12, 12, -12, -12))
            o.raise_()
            o.show()
            self.data_page.drop_zone.set_hover(True)
        else:
            o.hide()
            self.data_page.drop_zone.set_hover(False)

    def recent_files(self) -> list[str]:
        value = settings().value("recentFiles", [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or [])]

    def _add_recent(self, path: str) -> None:
        path = str(Path(path).resolve())
        recent = [p for p in self.recent_files() if p != path]
        recent.insert(0, path)
        settings().setValue("recentFiles", recent[:MAX_RECENT])
        self.data_page.set_recent(recent)

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = [p for p in self.recent_files() if Path(p).exists()]
        for p in recent:
            act = self.recent_menu.addAction(Path(p).name.replace("&", "&&"))  # "R&D.tsv" as it is
            act.setToolTip(p)
            act.setStatusTip(p)
            act.triggered.connect(lambda _=False, p=p: self.open_path(p))
        if not recent:
            act = self.recent_menu.addAction("No recent files")
            act.setEnabled(False)
        else:
            self.recent_menu.addSeparator()
            clear = self.recent_menu.addAction("Clear Menu")
            clear.triggered.connect(lambda: (settings().setValue("recentFiles", []), self.data_page.set_recent([])))

    def _apply_quick_trial(self) -> None:
        # The bundled sample: AppState.set_data chose settings that train in a few minutes on a laptop CPU,
        # like `workbench demo` (app/carried.py QUICK_TRIAL), unless the user had changed them.
        self.model_page.sync_from_config()
        self.state.touch_config()

    # ---- misc ---------------------------------------------------------------------------------------
    def _status(self, text: str) -> None:
        self.statusBar().showMessage(text, 8000)

    def _about(self):
        """Help > About: versions and diagnostics with a copy button (about.py); returns the dialog."""
        from .about import AboutDialog

        dialog = AboutDialog(self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()
        return dialog

    def open_guide(self) -> bool:
        """Help > User Guide: docs/GUIDE.md in the desktop's viewer for Markdown (or its editor)."""
        if not GUIDE.is_file():
            QMessageBox.information(self, "User Guide", "The user guide (docs/GUIDE.md) is not installed with this "
                                    "copy of Workbench; it is in the docs folder of the source repository.")
            return False
        return QDesktopServices.openUrl(QUrl.fromLocalFile(str(GUIDE)))

    def _shortcuts(self):
        """Help > Keyboard Shortcuts: the shortcuts of the window's actions (about.py); returns the dialog."""
        from .about import ShortcutsDialog

        dialog = ShortcutsDialog(self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()
        return dialog

    def report_problem(self) -> None:
        """Help > Report a Problem: the About dialog's diagnostics onto the clipboard, then say so."""
        from .about import DiagnosticsCopier

        if self._diagnostics is None:
            self._diagnostics = DiagnosticsCopier(self)
            self._diagnostics.copied.connect(self._diagnostics_copied)
        self._status("Gathering the versions and devices for a problem report…")
        self._diagnostics.start()

    def _diagnostics_copied(self, _text: str) -> None:
        self._status("Diagnostics copied to the clipboard.")
        self.report_box = box = QMessageBox(
            QMessageBox.Icon.Information, "Report a Problem",
            "The versions and devices of this installation are on the clipboard. Paste them into your report, "
            "with what you did, what you expected and what happened instead.", QMessageBox.StandardButton.Ok, self)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()

    def _restore(self) -> None:
        geometry = settings().value("windowGeometry")
        if geometry is None or not self.restoreGeometry(geometry):
            self.resize(default_size(self.screen().availableGeometry().size()))
        self.data_page.set_recent(self.recent_files())

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        if self.controller.running:
            self._closing = True
            self._status("Cancelling the run before closing…")
            if not self.controller.shutdown(CLOSE_WAIT_S):
                # Still inside a long library call: keep the window until the run has stopped
                # (``_run_stopped`` closes it then) rather than destroy a running thread.
                event.ignore()
                return
        self.data_page.shutdown()
        self.model_page.shutdown()
        if self.runs_page is not None:
            self.runs_page.shutdown()
        if self.train_page is not None:
            self.train_page.preflight.stop()
        if self._diagnostics is not None:
            self._diagnostics.jobs.shutdown()
        self.log_relay.uninstall()
        settings().setValue("windowGeometry", self.saveGeometry())
        QApplication.instance().removeEventFilter(self)
        event.accept()
