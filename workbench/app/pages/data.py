"""Data page: get a file in, see it as the engine will read it, fix what the checks find.

Loading is one asyncio flow: show progress, await the reading and checking on a worker thread,
then fill the preview. A newer drop or the Cancel button stops the older load through its
CancelToken, which ``read_table`` and the checks poll between batches.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QItemSelectionModel, QSize, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListView,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QStackedWidget,
    QStyle,
    QTableView,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ...core.cancel import CancelToken
from ...core.errors import Cancelled, InputError
from ...core.run.refit import decide_refit
from ...core.tasks.table import TEXT_GENERATION
from .. import aio, warmup
from ..dataset import LoadedData, load_data, with_columns
from ..state import AppState
from ..views.conversations import ConversationsView
from ..views.images import DataPageImages, ImageFolderData
from ..views.multilabel_data import LabelSourceBox, LabelSpread, is_multilabel, readable_preview
from ..widgets.bar_chart import ClassBarChart
from ..widgets.build import add_rows, button, column, enlarge, row, section, set_column, side_by_side, text_label
from ..widgets.drop_zone import DropZone
from ..widgets.fit_list import FitList
from ..widgets.spinboxes import float_spin, int_spin
from ..wording import in_app_words

# JSON Lines and JSON: conversations for text generation (the task is detected from the content).
FILE_FILTER = "Data files (*.tsv *.csv *.tab *.txt *.jsonl *.json);;All files (*)"
GENERATION = TEXT_GENERATION
SEVERITY_ICON = {
    "error": QStyle.StandardPixmap.SP_MessageBoxCritical,
    "warning": QStyle.StandardPixmap.SP_MessageBoxWarning,
    "info": QStyle.StandardPixmap.SP_MessageBoxInformation,
}
FINDING_ROLE = Qt.ItemDataRole.UserRole + 1
# The Delimiter control: "Auto" sniffs the file (and names what it found), the others force a re-read.
DELIMITERS = (("Auto", None), ("Tab", "\t"), ("Comma", ","), ("Semicolon", ";"), ("Pipe", "|"))


def _title(text: str) -> QLabel:
    label = QLabel(text)
    enlarge(label, 1.3)
    return label


class _FileField(QWidget):
    """A path with Browse and Clear, for the optional validation and test files."""

    changed = Signal()

    def __init__(self, placeholder: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        self.edit.setToolTip("A separate file; without one, part of the training file is held out")
        self.edit.setReadOnly(True)
        self.browse = QPushButton("Browse…")
        self.clear = QToolButton()
        self.clear.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_LineEditClearButton))
        self.clear.setToolTip("Hold out part of the training file instead")
        self.clear.setAutoRaise(True)
        lay.addWidget(self.edit, 1)
        lay.addWidget(self.browse)
        lay.addWidget(self.clear)
        self.browse.clicked.connect(self._browse)
        self.clear.clicked.connect(lambda: self.set_path(None, emit=True))

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a file", str(Path(self.path or ".").parent), FILE_FILTER)
        if path:
            self.set_path(path, emit=True)

    @property
    def path(self) -> str | None:
        return self.edit.text() or None

    def set_path(self, path: str | None, emit: bool = False) -> None:
        self.edit.setText(path or "")
        self.edit.setToolTip(path or "A separate file; without one, part of the training file is held out")
        self.clear.setEnabled(bool(path))
        if emit:
            self.changed.emit()


class _ProblemPanel(QFrame):
    """Why the file just opened could not be used, at the top of the page, and which data is still the
    one training would use: a failed open must not look like the file shown."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("problemPanel")
        self.icon = QLabel()
        self.title = QLabel()
        self.title.setTextFormat(Qt.TextFormat.PlainText)
        enlarge(self.title, 1.1, bold=True)
        self.detail = text_label()
        close = QToolButton()
        close.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_TitleBarCloseButton))
        close.setAutoRaise(True)
        close.setToolTip("Hide this message")
        close.clicked.connect(self.hide)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(12, 8, 8, 8)
        lay.addWidget(self.icon, 0, Qt.AlignmentFlag.AlignTop)
        lay.addWidget(column(self.title, self.detail), 1)
        lay.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self.hide()

    def say(self, title: str, detail: str, error: bool) -> None:
        colour = "214, 69, 65" if error else "217, 130, 43"  # translucent: reads on light and dark schemes
        self.setStyleSheet(f"QFrame#problemPanel {{ border: 1px solid rgb({colour}); border-radius: 4px; "
                           f"background: rgba({colour}, 0.12); margin: 10px 16px 0px 16px; }}")
        icon = SEVERITY_ICON["error" if error else "warning"]
        self.icon.setPixmap(self.style().standardIcon(icon).pixmap(32, 32))
        self.title.setText(title)
        self.detail.setText(detail)
        self.detail.setVisible(bool(detail))
        self.show()


class DataPage(QWidget):
    status = Signal(str)  # for the status bar
    file_loaded = Signal(str)  # the path the user opened (file or folder), for the recent list
    sample_opened = Signal()  # the bundled sample was loaded: the window applies quick-trial settings
    opening = Signal(str)  # a file or folder starts loading (from any menu or page): the window shows this page

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="workbench-data")
        self._token: CancelToken | None = None
        self._task = None
        self._model = None
        self._setting = False  # True while widgets are filled from code, so change handlers stay quiet
        self._opened_path: str | None = None
        self._opened_sample = False  # the file shown is the bundled sample (or a corrected copy of it)
        self._delimiter: str | None = None  # the Delimiter control's choice for the file shown (None: sniffed)
        self._label_options: dict | None = None  # the multi-label settings chosen for the file shown (None: detected)
        # The split summary says whether the final model refits, a Model-page setting.
        state.config_changed.connect(lambda: self.split_summary.setText(self._split_text()))

        self.stack = QStackedWidget()
        self.stack.addWidget(self._build_empty())
        self.stack.addWidget(self._build_loading())
        self.stack.addWidget(self._build_loaded())
        self.images = DataPageImages(self)  # image folders: a thumbnail grid per class (views/images.py)
        self.problem = _ProblemPanel()
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.problem)
        lay.addWidget(self.stack)
        self.sync_from_config()

    # ---- building -----------------------------------------------------------------------------------
    def _build_empty(self) -> QWidget:
        w = QWidget()
        lay = QVBoxLayout(w)
        lay.setContentsMargins(24, 24, 24, 24)
        self.drop_zone = DropZone()
        self.drop_zone.open_file.connect(self.choose_file)
        self.drop_zone.open_folder.connect(self.choose_folder)
        self.drop_zone.open_sample.connect(self.open_sample)
        lay.addWidget(self.drop_zone, 1)
        self.recent_box = QLabel()
        self.recent_box.setTextFormat(Qt.TextFormat.RichText)
        self.recent_box.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.recent_box.linkActivated.connect(self.open_path)
        self.recent_box.hide()
        lay.addWidget(self.recent_box)
        return w

    def _build_loading(self) -> QWidget:
        w = QWidget()
        lay = QVBoxLayout(w)
        lay.addStretch(1)
        self.loading_title = _title("Reading…")
        self.loading_title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.loading_phase = QLabel()
        self.loading_phase.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.loading_bar = QProgressBar()
        self.loading_bar.setMaximumWidth(480)
        self.loading_bar.setTextVisible(True)
        self.loading_cancel = QPushButton("Cancel")
        self.loading_cancel.clicked.connect(self.cancel_loading)
        lay.addWidget(self.loading_title)
        lay.addWidget(self.loading_phase)
        lay.addWidget(self.loading_bar, 0, Qt.AlignmentFlag.AlignHCenter)
        lay.addWidget(self.loading_cancel, 0, Qt.AlignmentFlag.AlignHCenter)
        lay.addStretch(2)
        return w

    def _build_loaded(self) -> QWidget:
        self.file_title = _title("")
        self.file_title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.file_info = text_label(selectable=False)
        head = row((column(self.file_title, self.file_info), 1))
        head.addWidget(button("Open Another…", self.choose_file), 0, Qt.AlignmentFlag.AlignTop)
        side = QWidget()
        self.label_source, self.label_spread = LabelSourceBox(), LabelSpread()  # multi-label (views/multilabel_data.py)
        self.label_source.options_chosen.connect(self._label_options_chosen)
        # Each box as tall as it needs (the checks list fits its findings), the room left at the bottom:
        # the split explanation reads at 1280x800 without scrolling.
        boxes = set_column(side, self._build_columns_box(), self.label_source, self._build_classes_box(),
                           self.label_spread, self._build_checks_box(), self._build_splits_box())
        boxes.setContentsMargins(8, 0, 0, 0)
        boxes.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(side)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setMinimumWidth(360)
        split = side_by_side(self._build_rows_tabs(), scroll, stretch=(1, 0))
        split.setChildrenCollapsible(True)
        split.setSizes([800, 380])
        w = QWidget()
        set_column(w, head, (split, 1)).setContentsMargins(16, 12, 16, 12)
        self._set_split_widgets()
        return w

    def _build_rows_tabs(self) -> QTabWidget:
        self.preview = QTableView()
        self.preview.setWordWrap(False)
        self.preview.setAlternatingRowColors(True)
        self.preview.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.preview.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.preview.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.preview.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        vh = self.preview.verticalHeader()
        vh.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)  # no per-row size queries on 100k rows
        vh.setDefaultSectionSize(self.fontMetrics().height() + 8)
        vh.setDefaultAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.preview.horizontalHeader().setHighlightSections(False)
        # The rows as read, and the ranked rows whose label is probably wrong (views/label_issues.py).
        from ..views.label_issues import LabelIssuesView

        self.tabs = QTabWidget()
        self.tabs.addTab(self.preview, "Rows")
        self.label_issues = LabelIssuesView(self.state)
        self.label_issues.jump_to_line.connect(self._show_line)
        self.label_issues.corrected.connect(self._train_on_copy)
        self.tabs.addTab(self.label_issues, "Suspicious labels")
        # Text generation: each example's turns (the Rows tab has its last prompt and answer only).
        self.conversations = ConversationsView()
        self.tabs.addTab(self.conversations, "Conversations")
        self.tabs.setTabVisible(self.tabs.indexOf(self.conversations), False)
        return self.tabs

    def _build_columns_box(self) -> QGroupBox:
        cols = QGroupBox("Columns")
        form = QFormLayout(cols)
        self.delimiter = QComboBox()
        for text, value in DELIMITERS:
            self.delimiter.addItem(text, value)
        self.delimiter.setToolTip("What separates the fields of each line. Auto: worked out from the file; "
                                  "another choice reads the file again with it")
        self.delimiter.activated.connect(self._delimiter_chosen)
        self.text_combo = QComboBox()
        self.text_combo.setToolTip("The column holding the texts the model reads")
        self.label_combo = QComboBox()
        self.label_combo.setToolTip("The column holding the class of each text")
        self.columns_note = text_label(selectable=False)
        add_rows(form, ("Delimiter:", self.delimiter), ("Text:", self.text_combo), ("Label:", self.label_combo),
                 self.columns_note)
        self.text_combo.currentTextChanged.connect(self._columns_edited)
        self.label_combo.currentTextChanged.connect(self._columns_edited)
        self.columns_box = cols
        return cols

    def _build_classes_box(self) -> QGroupBox:
        self.chart = ClassBarChart()
        self.classes_box = section("Classes", self.chart)
        return self.classes_box

    def _build_checks_box(self) -> QGroupBox:
        checks = QGroupBox("Checks")
        ch = QVBoxLayout(checks)
        self.findings = FitList(max_height=220)
        self.findings.setWordWrap(True)
        self.findings.setTextElideMode(Qt.TextElideMode.ElideNone)
        self.findings.setResizeMode(QListView.ResizeMode.Adjust)
        self.findings.setUniformItemSizes(False)
        self.findings.setSpacing(2)
        self.findings.setMinimumHeight(36)
        self.findings.setIconSize(QSize(20, 20))  # a line per finding, not a 32-pixel row each
        self.findings.setToolTip("Click a finding to show its first row in the preview")
        self.findings.itemClicked.connect(self._finding_clicked)
        self.findings.currentItemChanged.connect(lambda item, _prev: self._finding_clicked(item) if item else None)
        ch.addWidget(self.findings)
        self.finding_lines = QLabel()
        self.finding_lines.setWordWrap(True)
        self.finding_lines.setTextFormat(Qt.TextFormat.RichText)
        self.finding_lines.linkActivated.connect(lambda line: self.jump_to_line(int(line)))
        self.finding_lines.hide()
        ch.addWidget(self.finding_lines)
        return checks

    def _build_splits_box(self) -> QGroupBox:
        splits = QGroupBox("Splits")
        sf = QFormLayout(splits)
        self.val_fraction = float_spin(0, 50, 1, 0, "Share of the training file held out to pick the best epoch and "
                                                    "stop early (0: no validation)", " %")
        self.test_fraction = float_spin(0, 50, 1, 0, "Share of the training file held out for the final report; never "
                                                     "seen in training", " %")
        self.val_file = _FileField("optional")
        self.test_file = _FileField("optional")
        self.sample_rows = int_spin(0, 100_000_000, "Train on a stratified random sample of this many rows: quick "
                                                    "trials on big files", 1000, "all rows")
        self.sample_rows.setGroupSeparatorShown(True)
        self.skip_bad = QCheckBox("Skip malformed rows")
        self.skip_bad.setToolTip("Rows with the wrong number of fields stop a run unless they are skipped")
        self.split_summary = text_label(selectable=False)
        # The two shares on one line: the split explanation below fits a 1280x800 window.
        shares = row((self.val_fraction, 1), QLabel("Test:"), (self.test_fraction, 1))
        add_rows(sf, ("Validation:", shares), ("Validation file:", self.val_file),
                 ("Test file:", self.test_file), ("Rows used:", self.sample_rows), self.skip_bad, self.split_summary)
        for sig in (self.val_fraction.valueChanged, self.test_fraction.valueChanged, self.sample_rows.valueChanged,
                    self.skip_bad.toggled, self.val_file.changed, self.test_file.changed):
            sig.connect(self._splits_edited)
        return splits

    # ---- opening ------------------------------------------------------------------------------------
    def set_recent(self, paths: list[str]) -> None:
        shown = [p for p in paths if Path(p).exists()][:5]
        if not shown:
            self.recent_box.hide()
            return
        links = " · ".join(f'<a href="{p}">{Path(p).name}</a>' for p in shown)
        self.recent_box.setText(f"Recent: {links}")
        self.recent_box.show()

    def choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a data file", "", FILE_FILTER)
        if path:
            self.open_path(path)

    def choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a folder with train / dev / test files")
        if path:
            self.open_path(path)

    def open_sample(self):
        """Load the bundled sample, cleaned once into the cache (``samples.sample_dataset``, on the
        worker thread); returns the asyncio task doing it."""
        from ...samples import sample_dataset, tweets_corpus

        self.opening.emit("sample")
        self.problem.hide()
        try:
            tweets_corpus()
        except InputError as e:
            self._back_to_start(str(e), error=True)
            return None
        self._delimiter = self._label_options = None
        return self._start(sample_dataset, "the sample dataset", sample=True)

    def open_path(self, path: str, sample: bool = False, delimiter: str | None = None, label_options: dict | None = None):
        """Load ``path`` (a file or folder) in the background, its fields split at ``delimiter`` (None:
        sniffed), its labels where ``label_options`` say (None: detected); returns the asyncio task doing it."""
        self.opening.emit(str(path))
        self.problem.hide()
        if self.images.handles(path):
            return self.images.open(path)
        self._delimiter, self._label_options = delimiter, label_options
        return self._start(str(path), str(path), sample)

    def _start(self, source: str | Callable[[], Path], shown: str, sample: bool):
        """Load ``source``: a path, or a function that makes the file on the worker thread."""
        self.cancel_loading()
        # The token exists from this moment, so a Cancel right after the drop already counts.
        self._token = CancelToken()
        self._show_loading(shown)
        self._task = aio.spawn(self._load(source, sample, self._token))
        return self._task

    def cancel_loading(self) -> None:
        if self._token is not None:
            self._token.cancel()
            self.loading_phase.setText("Cancelling…")
            self.loading_cancel.setEnabled(False)

    @property
    def loading(self) -> bool:
        return self._task is not None and not self._task.done()

    def _show_loading(self, path: str) -> None:
        self.loading_title.setText(f"Reading {Path(path).name}…")
        self.loading_phase.setText("Starting")
        self.loading_bar.setRange(0, 0)
        self.loading_cancel.setEnabled(True)
        self.stack.setCurrentIndex(1)
        self.status.emit(f"Reading {path}…")

    async def _load(self, source: str | Callable[[], Path], sample: bool, token: CancelToken) -> None:
        progress = aio.threadsafe(self._on_progress)
        phase = aio.threadsafe(self._on_phase)
        path = source if isinstance(source, str) else "the sample dataset"
        try:
            if not isinstance(source, str):
                path = str(await aio.in_thread(self._executor, source))
            loaded = await aio.in_thread(self._executor, warmup.serialized(load_data), path, progress=progress,
                                         phase=phase, cancel=token, delimiter=self._delimiter,
                                         data_options=self._label_options)
        except Cancelled:
            if token is self._token:
                self._token = None
                self._back_to_start("Loading cancelled.", error=False)
            return
        except InputError as e:
            if token is self._token:
                self._token = None
                self._back_to_start(str(e), error=True, opened=path)
            return
        except Exception as e:  # an unexpected failure: say so on the page, and report it
            if token is self._token:
                self._token = None
                self._back_to_start(f"Could not read {Path(path).name}: {type(e).__name__}: {e}", error=True,
                                    opened=path)
            raise
        if token is not self._token:
            return  # a newer load took over
        self._token = None
        self._opened_path, self._opened_sample = path, sample
        self.state.set_data(loaded, quick_trial=sample)
        self._show_loaded(loaded, sample)
        self.file_loaded.emit(path)
        if sample:
            self.sample_opened.emit()
        self.status.emit(f"Loaded {loaded.n_rows:,} {loaded.unit} from {loaded.path.name}")

    def _on_progress(self, done: int, total: int) -> None:
        if self._token is None or self._token.cancelled:
            return
        self.loading_bar.setRange(0, 1000)
        self.loading_bar.setValue(int(1000 * done / max(total, 1)))
        self.loading_bar.setFormat(f"{done / 2**20:,.1f} of {total / 2**20:,.1f} MB")

    def _on_phase(self, text: str) -> None:
        if self._token is None or self._token.cancelled:
            return
        self.loading_phase.setText(text + "…")
        if text != "Reading":
            self.loading_bar.setRange(0, 0)
            self.loading_bar.setFormat("")

    def _back_to_start(self, message: str, error: bool, opened: str | None = None) -> None:
        """Say why the file ``opened`` is not shown (``error``) or that its loading was cancelled."""
        message = in_app_words(message)
        data = self.state.data
        if data is None:
            self.drop_zone.set_message(message, error=error)
            self.stack.setCurrentIndex(0)
        else:
            # The data loaded before stays the data to train on: say what went wrong with the new file
            # at the top of the page, and that what is shown is the earlier file.
            still = f"Still loaded: {data.path.name}, shown below; training uses it until another file opens."
            if opened and error:
                self.problem.say(f"Could not open {Path(opened).name}", f"{_named(message, Path(opened))}\n{still}",
                                 error)
            else:
                self.problem.say(message, still, error)
            self.stack.setCurrentWidget(self.images.view if self._showing_images() else self.stack.widget(2))
        self.status.emit(message)

    def _showing_images(self) -> bool:
        return isinstance(self.state.data, ImageFolderData)

    # ---- showing ------------------------------------------------------------------------------------
    def _show_loaded(self, loaded: LoadedData, sample: bool = False) -> None:
        from ...core.data.tabular import LINE_COLUMN
        from ..widgets.arrow_model import ArrowTableModel

        table = loaded.table
        self.label_issues.clear()  # a ranking belongs to the file it was made for
        self.problem.hide()
        self.drop_zone.set_message("")
        self.file_title.setText(loaded.path.name)
        self.file_title.setToolTip(str(loaded.path))
        fmt = getattr(table, "format", None)  # a delimited file's; a tagged file has none
        if fmt is None:
            parts = [loaded.task_title, f"{loaded.n_rows:,} {loaded.unit}"]
        else:
            n = len(table.columns)
            parts = [f"{loaded.n_rows:,} rows", f"{n} column{'' if n == 1 else 's'}", f"{fmt.delimiter_name}-separated",
                     "with a header row" if fmt.has_header else "no header row", fmt.encoding]
            if not loaded.checked_here:
                parts.insert(0, loaded.task_title)
        info = " · ".join(parts)
        if loaded.notes:
            info += "\n" + "\n".join(in_app_words(_without_path(n, loaded.path)) for n in loaded.notes)
        self.file_info.setText(info)
        self._show_delimiter(fmt)

        shown, columns, roles = readable_preview(loaded)  # a multi-label file's labels as read
        self._model = ArrowTableModel(shown, columns, LINE_COLUMN, self)
        self._model.set_roles(roles)
        self.preview.setModel(self._model)
        header = self.preview.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(False)
        self._setting = True
        try:
            for combo in (self.text_combo, self.label_combo):
                combo.clear()
                combo.addItems(table.columns)
            self.val_file.set_path(loaded.val_path)
            self.test_file.set_path(loaded.test_path)
            self.sample_rows.setMaximum(max(loaded.n_rows, 0))
            self.sample_rows.setValue(min(3000, loaded.n_rows) if sample else 0)
            self.skip_bad.setChecked(False)
        finally:
            self._setting = False
        self._show_columns(loaded)
        self._set_split_widgets()
        self._splits_edited()
        self._show_conversations(loaded)
        self.stack.setCurrentIndex(2)

    def _show_conversations(self, loaded: LoadedData) -> None:
        """Generation data: the Conversations tab (filled from a second read on the worker thread: the
        preview holds each example's last turns only), no Suspicious labels (there are no labels)."""
        generation = loaded.task == GENERATION
        tabs = self.tabs
        tabs.setTabVisible(tabs.indexOf(self.conversations), generation)
        tabs.setTabVisible(tabs.indexOf(self.label_issues), not generation)
        self.conversations.clear()
        if not generation:
            if tabs.currentWidget() is self.conversations:
                tabs.setCurrentWidget(self.preview)
            return
        tabs.setCurrentWidget(self.conversations)
        self.conversations.count.setText("Reading the conversations…")
        aio.spawn(self._read_conversations(loaded))

    async def _read_conversations(self, loaded: LoadedData) -> None:
        try:
            read = await aio.in_thread(self._executor, warmup.serialized(_conversations_of), loaded)
        except InputError as e:  # the file changed since it was checked
            if self.state.data is loaded:
                self.conversations.count.setText(f"⚠ {_sentence(in_app_words(e.problem))}")
            return
        if self.state.data is loaded:  # not replaced by a newer file meanwhile
            self.conversations.set_examples(read.examples, read.format_title)

    def _show_delimiter(self, fmt) -> None:
        """The Delimiter control shows the choice the file was read with; Auto names what it found."""
        self.delimiter.setEnabled(fmt is not None)
        found = fmt.delimiter_name if fmt is not None else ""
        self.delimiter.setItemText(0, f"Auto ({found})" if found and self._delimiter is None else "Auto")
        index = self.delimiter.findData(self._delimiter) if self._delimiter is not None else 0
        self.delimiter.setCurrentIndex(max(index, 0))

    def _label_options_chosen(self, options: dict) -> None:
        """Read the file shown again with the multi-label settings chosen (LabelSourceBox)."""
        if self._opened_path is not None:
            self.open_path(self._opened_path, sample=self._opened_sample, delimiter=self._delimiter,
                           label_options=options)

    def _delimiter_chosen(self, index: int) -> None:
        """Read the file shown again, split at the chosen delimiter (Auto: sniffed again)."""
        chosen = self.delimiter.itemData(index)
        if self._opened_path is None or chosen == self._delimiter:
            return
        self.open_path(self._opened_path, sample=self._opened_sample, delimiter=chosen, label_options=self._label_options)

    def _show_columns(self, loaded: LoadedData) -> None:
        self.columns_box.setVisible(loaded.checked_here)
        multi = is_multilabel(loaded)
        self.label_source.setVisible(multi or loaded.checked_here)
        self.label_source.show_data(loaded)
        self.label_spread.setVisible(multi)
        if multi:
            self.label_spread.show_data(loaded)
        self.classes_box.setVisible((loaded.checked_here or bool(loaded.class_counts)) and not multi)
        self.classes_box.setTitle(loaded.counts_title)
        self.skip_bad.setVisible(bool(loaded.table.malformed))
        if not loaded.checked_here:
            if self._model is not None:
                # Texts (a sentence and its tags, or both texts of a pair) share the width; the last
                # column (a word count, label or score) is narrow.
                header = self.preview.horizontalHeader()
                last = self._model.columnCount() - 1
                for i in range(last + 1):
                    header.setSectionResizeMode(i, QHeaderView.ResizeMode.Stretch if i < last or last == 0
                                                else QHeaderView.ResizeMode.ResizeToContents)
            if loaded.class_counts:
                self.chart.set_counts(loaded.class_counts)
            self._fill_findings(loaded)
            return
        choice = loaded.choice
        self._setting = True
        try:
            if choice is not None:
                self.text_combo.setCurrentText(choice.text)
                self.label_combo.setCurrentText(choice.label)
        finally:
            self._setting = False
        if self._model is not None:
            self._model.set_roles({choice.text: "text", choice.label: "label"} if choice else {})
            self._size_columns(loaded)
        if loaded.problem:
            self.columns_note.setText(f"⚠ {_sentence(in_app_words(loaded.problem))}")
        elif choice is not None and choice.ambiguous:
            self.columns_note.setText("These columns were guessed from their contents; check them.")
        else:
            self.columns_note.setText("Worked out from the file; change them if wrong.")
        self.chart.set_counts(loaded.class_counts)
        self._fill_findings(loaded)

    def _size_columns(self, loaded: LoadedData) -> None:
        header = self.preview.horizontalHeader()
        fm = self.preview.fontMetrics()
        choice = loaded.choice
        for i, name in enumerate(loaded.table.columns):
            if choice is not None and name == choice.text:
                header.setSectionResizeMode(i, QHeaderView.ResizeMode.Stretch)
                continue
            header.setSectionResizeMode(i, QHeaderView.ResizeMode.Interactive)
            # Widths from the header and the first rows only: sizing to all contents would read every row.
            sample = [str(self._model.data(self._model.index(r, i)) or "") for r in range(min(50, self._model.rowCount()))]
            width = max([fm.horizontalAdvance(s) for s in sample] + [fm.horizontalAdvance(f"{name}  ·  label") + 24])
            header.resizeSection(i, min(max(width + 16, 80), 360))

    def _fill_findings(self, loaded: LoadedData) -> None:
        self.findings.clear()
        self.finding_lines.hide()
        style = self.style()

        def add(text: str, icon, tip: str = "", finding=None) -> None:
            item = QListWidgetItem(style.standardIcon(icon), text)
            item.setToolTip(tip or text)
            item.setData(FINDING_ROLE, finding)
            self.findings.addItem(item)

        if loaded.problem:
            add(_sentence(in_app_words(loaded.problem)), SEVERITY_ICON["error"])
        if not loaded.checked_here:
            add(in_app_words(loaded.notes[-1]) if loaded.notes else f"Detected task: {loaded.task_title}.",
                SEVERITY_ICON["info"])
        report = loaded.report
        if report is None:
            return
        if not report.findings:
            add(f"No problems found in {loaded.n_rows:,} {loaded.unit}.", QStyle.StandardPixmap.SP_DialogApplyButton)
        for f in report.findings:
            message = f.message
            prefix = f"{f.path}: "
            if f.path and message.startswith(prefix):
                message = message[len(prefix):]  # the file is named in the header already
            message = in_app_words(message)
            add(message[:1].upper() + message[1:], SEVERITY_ICON.get(f.severity, SEVERITY_ICON["info"]),
                in_app_words(f.message), f)

    def _finding_clicked(self, item: QListWidgetItem) -> None:
        f = item.data(FINDING_ROLE)
        if f is None or not f.lines:
            self.finding_lines.hide()
            return
        links = ", ".join(f'<a href="{line}">{line}</a>' for line in f.lines)
        more = f" and {f.count - len(f.lines):,} more" if f.count > len(f.lines) else ""
        self.finding_lines.setText(f"Lines {links}{more}")
        self.finding_lines.show()
        if self.tabs.currentWidget() is self.conversations:  # the Rows tab shows the line the finding names
            self.tabs.setCurrentWidget(self.preview)
        self.jump_to_line(f.lines[0])

    def jump_to_line(self, line: int) -> int:
        """Scroll the preview to file line ``line`` and select it; returns the row (-1: none)."""
        if self._model is None:
            return -1
        row, exact = self._model.row_of_line(line)
        if row < 0:
            return -1
        index = self._model.index(row, 0)
        self.preview.scrollTo(index, QAbstractItemView.ScrollHint.PositionAtCenter)
        self.preview.selectionModel().select(
            index, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
        self.preview.setCurrentIndex(index)
        if exact:
            self.status.emit(f"Line {line}")
        else:
            self.status.emit(f"Line {line} is not in the table (it was not read as a row); showing the next row, "
                             f"line {self._model.line_of_row(row)}")
        return row

    def _show_line(self, line: int) -> None:
        self.tabs.setCurrentWidget(self.preview)
        self.jump_to_line(line)

    def _train_on_copy(self, copy: str) -> None:
        """A corrected copy was saved: it becomes the training file (config.json records its original)."""
        self.tabs.setCurrentWidget(self.preview)
        self.open_path(copy, sample=self._opened_sample)  # the sample's copy trains as quickly

    @property
    def preview_model(self):
        return self._model

    # ---- editing ------------------------------------------------------------------------------------
    def _columns_edited(self, _text: str = "") -> None:
        if self._setting or self.state.data is None:
            return
        text, label = self.text_combo.currentText(), self.label_combo.currentText()
        if not text or not label:
            return
        current = self.state.data.choice
        if current is not None and (current.text, current.label) == (text, label):
            return
        if text == label:
            self.columns_note.setText("⚠ The text and label columns must differ.")
            return
        self._task = aio.spawn(self._rechoose(text, label))

    async def _rechoose(self, text: str, label: str) -> None:
        data = self.state.data
        self.columns_note.setText("Checking the rows with these columns…")
        self.status.emit("Checking the rows…")
        token = self._token = CancelToken()
        try:
            loaded = await aio.in_thread(self._executor, warmup.serialized(with_columns), data, text, label, cancel=token)
        except Cancelled:
            return
        if token is not self._token or self.state.data is not data:
            return
        self._token = None
        self.state.set_columns(loaded)
        self._show_columns(loaded)
        self._splits_edited()
        self.status.emit(f"Text column '{text}', label column '{label}'")

    def _set_split_widgets(self) -> None:
        has_val = bool(self.val_file.path)
        has_test = bool(self.test_file.path)
        self.val_fraction.setEnabled(not has_val)
        # The engine holds out a test share only when neither file was given.
        self.test_fraction.setEnabled(not has_val and not has_test)

    def _splits_edited(self, *_args) -> None:
        self._set_split_widgets()
        d = self.state.config.data
        if not self._setting:
            d.val_fraction = self.val_fraction.value() / 100
            d.test_fraction = self.test_fraction.value() / 100
            d.val = self.val_file.path
            d.test = self.test_file.path
            n = self.sample_rows.value()
            d.sample = n if n >= 10 else None
            d.skip_bad_rows = self.skip_bad.isChecked()
            self.state.touch_config()
        self.split_summary.setText(self._split_text())

    def _split_text(self) -> str:
        data = self.state.data
        if data is None or data.labeled is None:
            return ""
        d = self.state.config.data
        n = len(data.labeled)
        if d.sample and d.sample < n:
            n = d.sample
        test = val = 0
        if not d.val and not d.test and d.test_fraction > 0:
            test = round(n * d.test_fraction)
        if not d.val and d.val_fraction > 0:
            val = round((n - test) * d.val_fraction)
        train = n - test - val
        parts = [f"about {train:,} rows to train on"]
        parts.append(f"{val:,} to validate" if not d.val else f"validation from {Path(d.val).name}")
        if d.test:
            parts.append(f"test from {Path(d.test).name}")
        elif test:
            parts.append(f"{test:,} to test")
        elif d.val:
            parts.append("the report uses the validation file")
        text = "With these settings: " + ", ".join(parts) + "."
        refit, _ = decide_refit(self.state.config.train.refit, held_out=bool(val), given_validation=bool(d.val),
                                tested_apart=bool(test or d.test), rows=train + val,
                                capped=bool(self.state.config.train.max_steps))
        if refit:
            text += (f" The validation rows choose the number of epochs; then the final model trains again on all "
                     f"{train + val:,} rows (small sets gain from every row; about twice the time; the Model "
                     "page's Final model turns it off).")
        elif val:
            text += " The final model is the best one on the validation rows, which it never trains on."
        return text

    def sync_from_config(self) -> None:
        """Show the split settings held in the state's config (after a reset or a preset)."""
        d = self.state.config.data
        self._setting = True
        try:
            self.val_fraction.setValue(round(d.val_fraction * 100))
            self.test_fraction.setValue(round(d.test_fraction * 100))
            self.sample_rows.setValue(d.sample or 0)
            self.skip_bad.setChecked(d.skip_bad_rows)
        finally:
            self._setting = False
        self.split_summary.setText(self._split_text())

    # ---- closing ------------------------------------------------------------------------------------
    def shutdown(self) -> None:
        self.images.shutdown()
        self.label_issues.shutdown()
        if self._token is not None:
            self._token.cancel()
        self._executor.shutdown(wait=True, cancel_futures=True)


def _conversations_of(loaded: LoadedData):
    """The training file's conversations as the engine reads them (ReadResult), bad records skipped:
    the checks list them."""
    from ...core.tasks.generation.conversations import read_conversations

    options = loaded.data_options or {}
    return read_conversations(loaded.path, input_column=options.get("text_column"),
                              target_column=options.get("label_column"), delimiter=loaded.delimiter, skip_bad=True)


def _named(message: str, path: Path) -> str:
    """An engine message about ``path`` ("/long/path/x.tsv: is empty") with the file's name for its path
    ("x.tsv is empty.")."""
    for full in (f"{path}", f"{path.resolve()}"):
        if message.startswith(full + ": "):
            return f"{path.name} {message[len(full) + 2:].rstrip('.')}."
        if message.startswith(full):
            return f"{path.name}{message[len(full):]}"
    return message


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _without_path(note: str, path: Path) -> str:
    """A note about the file shown, without its (often long) path in front: the title names the file."""
    for prefix in (f"{path}: ", f"{path.resolve()}: "):
        if note.startswith(prefix):
            note = note[len(prefix):]
            return note[:1].upper() + note[1:]
    return note
