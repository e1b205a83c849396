"""Image views: a thumbnail grid per class for image folders (Data page), and the evaluation of an
image-classification run (Evaluate page) whose confusion-matrix cells open a grid of exactly those
images with gold, predicted and confidence, and whose "try it" takes a dropped image.

Thumbnails are decoded on a thread pool by the engine's own decoder (EXIF orientation, every colour
mode) and cached; the grid asks only for the items it shows, so a folder of 10,000 photos opens at once.
The "try it" image is decoded and scored on a worker thread, with the model from the app's cache.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QRect,
    QSize,
    Qt,
    Signal,
    Slot,
)
from PySide6.QtGui import QColor, QFontMetrics, QIcon, QImage, QPainter, QPalette, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListView,
    QListWidget,
    QPushButton,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ...core.tasks.table import TASKS, first_task_of, method_spec
from ..evaluation.classification import ClassificationView, _example_caption, _html
from ..evaluation.predictions_model import PredictionColumns
from ..evaluation.try_it_base import TryIt, load_pipeline
from ..jobs import Jobs, describe
from ..model_cache import MODELS
from ..widgets.build import button, enlarge
from ..widgets.score_bars import ScoreBars
from .thumbnails import THUMB, decode_preview, thumbnail_image

log = logging.getLogger(__name__)

IMAGE_TASK = first_task_of("image") or ""  # what an image folder trains

PATH_ROLE = Qt.ItemDataRole.UserRole + 1


# ---------------------------------------------------------------------------- the grid


@dataclass
class GridItem:
    path: str
    caption: str
    tooltip: str = ""
    wrong: bool = False  # drawn with a red caption


class ImageGridModel(QAbstractListModel):
    """Items with lazily decoded thumbnails: ``data`` asks the pool for a thumbnail the first time an
    item is shown and repaints the item when it arrives."""

    thumbnails_loaded = Signal()  # every requested thumbnail has arrived (tests wait on it)

    def __init__(self, parent: QObject | None = None, side: int = THUMB, cache_size: int = 2000) -> None:
        super().__init__(parent)
        self.items: list[GridItem] = []
        self.side = side
        self._rows: dict[str, list[int]] = {}
        self._cache: OrderedDict[str, QPixmap] = OrderedDict()
        self._cache_size = cache_size
        self._pending: set[str] = set()
        self.jobs = Jobs(self, threads=2, latest_only=False)  # every thumbnail asked for is wanted
        self._placeholder = QPixmap(side, side)
        self._placeholder.fill(QColor(128, 128, 128, 60))

    def set_items(self, items: list[GridItem]) -> None:
        self.beginResetModel()
        self.items = list(items)
        self._rows = {}
        for r, it in enumerate(self.items):
            self._rows.setdefault(it.path, []).append(r)
        self.endResetModel()

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.items)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self.items):
            return None
        item = self.items[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return item.caption
        if role == Qt.ItemDataRole.DecorationRole:
            return self.thumbnail(item.path)
        if role == Qt.ItemDataRole.ToolTipRole:
            return item.tooltip or item.path
        if role == Qt.ItemDataRole.ForegroundRole and item.wrong:
            return QColor("#d64541")
        if role == PATH_ROLE:
            return item.path
        return None

    def thumbnail(self, path: str) -> QPixmap:
        pix = self._cache.get(path)
        if pix is not None:
            self._cache.move_to_end(path)
            return pix
        if path not in self._pending:
            self._pending.add(path)
            self.jobs.submit(thumbnail_image, path, self.side, on_done=partial(self._on_ready, path),
                             on_error=partial(self._on_failed, path))
        return self._placeholder

    def _on_failed(self, path: str, error: Exception) -> None:
        log.warning("Could not show a thumbnail of %s: %s", path, describe(error))
        self._on_ready(path, QImage())  # the red tile: the file cannot be shown

    def _on_ready(self, path: str, image: QImage) -> None:
        self._pending.discard(path)
        if image.isNull():
            pix = QPixmap(self.side, self.side)
            pix.fill(QColor("#d64541"))  # an unreadable file: the engine skips it
        else:
            pix = QPixmap.fromImage(image)
        self._cache[path] = pix
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        for r in self._rows.get(path, []):
            idx = self.index(r)
            self.dataChanged.emit(idx, idx, [Qt.ItemDataRole.DecorationRole])
        if not self._pending:
            self.thumbnails_loaded.emit()

    @property
    def loading(self) -> bool:
        return bool(self._pending)

    def shutdown(self, timeout_ms: int = 5000) -> None:
        self.jobs.shutdown(timeout_ms)


BREAKS = "_-. "  # where a file name is best broken across lines


def caption_lines(caption: str, metrics: QFontMetrics, width: int, max_lines: int) -> list[str]:
    """``caption``'s lines as a grid cell of ``width`` pixels shows them, at most ``max_lines``: the
    first line (a file name) wraps onto the lines the others leave free, broken after "_", "-" or
    "." where it can be; a line that still does not fit is elided in the middle, keeping the name's
    start and its extension."""
    first, *rest = caption.split("\n")
    lines = wrap_name(first, metrics, width, max(1, max_lines - len(rest)))
    lines += [metrics.elidedText(line, Qt.TextElideMode.ElideMiddle, width) for line in rest]
    return lines[:max_lines]


def wrap_name(name: str, metrics: QFontMetrics, width: int, max_lines: int) -> list[str]:
    lines: list[str] = []
    while len(lines) < max_lines - 1 and metrics.horizontalAdvance(name) > width:
        low, high = 1, len(name) - 1  # the longest start that fits (at least one character): a binary search,
        while low < high:  # as the delegate asks on every repaint
            mid = (low + high + 1) // 2
            low, high = (mid, high) if metrics.horizontalAdvance(name[:mid]) <= width else (low, mid - 1)
        fit = low
        cut = max((name.rfind(c, 0, fit) + 1 for c in BREAKS), default=0)
        cut = cut if cut > fit // 2 else fit  # a break near the start would waste the line
        lines.append(name[:cut])
        name = name[cut:]
    return [*lines, metrics.elidedText(name, Qt.TextElideMode.ElideMiddle, width)]


class ThumbnailDelegate(QStyledItemDelegate):
    """A grid cell: the thumbnail centred in a square of the grid's icon size (portrait and
    landscape photos alike), then its caption on up to ``lines`` lines (see :func:`caption_lines`);
    the full name is in the tooltip."""

    PAD = 4

    def __init__(self, view: QListView, lines: int) -> None:
        super().__init__(view)
        self.view, self.lines = view, lines

    def sizeHint(self, option: QStyleOptionViewItem, index) -> QSize:  # noqa: N802 - Qt API
        return self.view.gridSize()

    def caption_width(self, option: QStyleOptionViewItem) -> int:
        return option.rect.width() - 2 * self.PAD

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index) -> None:
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        opt.text, opt.icon = "", QIcon()  # the panel alone: selection and hover
        style = self.view.style()
        style.drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, self.view)
        side = self.view.iconSize().width()
        rect = option.rect
        pix = index.data(Qt.ItemDataRole.DecorationRole)
        if isinstance(pix, QPixmap) and not pix.isNull():
            w, h = min(pix.width(), side), min(pix.height(), side)
            target = QRect(rect.x() + (rect.width() - w) // 2, rect.y() + self.PAD + (side - h) // 2, w, h)
            painter.drawPixmap(target, pix)
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        colour = index.data(Qt.ItemDataRole.ForegroundRole)
        painter.save()
        painter.setPen(option.palette.color(QPalette.ColorRole.HighlightedText) if selected and colour is None
                       else colour if colour is not None else option.palette.color(QPalette.ColorRole.Text))
        painter.setFont(option.font)
        metrics = option.fontMetrics
        top = rect.y() + 2 * self.PAD + side
        for i, line in enumerate(caption_lines(index.data(Qt.ItemDataRole.DisplayRole) or "", metrics,
                                               self.caption_width(option), self.lines)):
            painter.drawText(QRect(rect.x() + self.PAD, top + i * metrics.lineSpacing(), self.caption_width(option),
                                   metrics.lineSpacing()), int(Qt.AlignmentFlag.AlignHCenter), line)
        painter.restore()


class ImageGrid(QListView):
    """A scrolling grid of thumbnails with captions of up to ``lines`` lines."""

    def __init__(self, parent: QWidget | None = None, side: int = THUMB, lines: int = 2) -> None:
        super().__init__(parent)
        self.grid_model = ImageGridModel(self, side)
        self.setModel(self.grid_model)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setIconSize(QSize(side, side))
        pad = ThumbnailDelegate.PAD
        self.setGridSize(QSize(side + 32, side + 3 * pad + lines * self.fontMetrics().lineSpacing() + 4))
        self.setItemDelegate(ThumbnailDelegate(self, lines))
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setUniformItemSizes(True)  # no per-item size query: large folders lay out at once
        self.setSelectionMode(QListView.SelectionMode.SingleSelection)

    def set_items(self, items: list[GridItem]) -> None:
        self.grid_model.set_items(items)
        self.scrollToTop()

    def shutdown(self) -> None:
        self.grid_model.shutdown()


# ---------------------------------------------------------------------------- Data page


def _scan(path: str):
    from ...core.data.images import scan_image_folders
    from ...core.tasks.image.policy import measure_images

    folders = scan_image_folders(path)
    # Sizes and colour modes from a few hundred file headers: what the run's defaults are chosen from.
    folders.stats = measure_images([it.path for it in folders.items.get("train", [])])
    return folders


def image_defaults_text(data, config) -> str:
    """The input size, augmentation and epochs a run will choose for the loaded image folder, and why
    (rich text: what it will use on top, the reasons dimmed below)."""
    from html import escape

    from ...core.tasks.image.policy import planned_defaults

    stats = getattr(getattr(data, "folders", None), "stats", None)
    if stats is None:
        return ""
    plan = planned_defaults(stats, data.n_rows, config.train, config.model.name)
    why = f"<br><span style='color: gray'>Why: {escape(plan.why)}</span>" if plan.why else ""
    cached = ""
    views = config.train.feature_views
    if method_spec(config.model.method).frozen_backbone and views > 0:
        # feature_cache.py: view 0 is the centre crop; only further views are augmented.
        cached = (" With the frozen backbone, its features are computed once: training uses the centre crops"
                  + (f" and {views - 1} augmented crop{'s' if views > 2 else ''} of each image" if views > 1 else
                     " only (no augmentation)") + ".")
    return f"{escape(plan.measured)} <b>{escape(plan.uses)}</b>{escape(cached)}{why}"


class ImageFolderView(QWidget):
    """An image folder as the engine will read it: classes with their counts, a thumbnail grid per
    class (and split), and what the scan had to leave out."""

    loaded = Signal(object)  # ImageFolders
    failed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.folders = None
        self.jobs = Jobs(self)

        self.title = QLabel()
        enlarge(self.title, 1.3)
        self.info = QLabel()
        self.info.setWordWrap(True)
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.defaults = QLabel()  # the input size and augmentation chosen for these images, and why
        self.defaults.setWordWrap(True)
        self.defaults.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.defaults.setToolTip("Chosen from the images themselves; the Model page's Image size, Augmentation and "
                                 "Epochs override it")
        self.another = QPushButton("Open Another…")
        self.class_combo = QComboBox()
        self.class_combo.setToolTip("The class (and split) whose images the grid shows")
        self.class_combo.currentIndexChanged.connect(self._show_class)
        self.grid = ImageGrid()
        self.findings = QListWidget()
        self.findings.setWordWrap(True)
        self.findings.setMaximumHeight(140)
        self.findings.setToolTip("Files the engine will skip or that need a look; hover for the paths")

        bar = QHBoxLayout()
        bar.addWidget(QLabel("Class:"))
        bar.addWidget(self.class_combo, 1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(16, 12, 16, 12)
        head = QHBoxLayout()
        head.addWidget(self.title, 1)
        head.addWidget(self.another, 0, Qt.AlignmentFlag.AlignTop)
        lay.addLayout(head)
        lay.addWidget(self.info)
        lay.addWidget(self.defaults)
        lay.addLayout(bar)
        self.tabs = QTabWidget()  # the grid; DataPageImages adds "Suspicious labels"
        self.tabs.addTab(self.grid, "Images")
        lay.addWidget(self.tabs, 1)
        lay.addWidget(self.findings)

    def load(self, path: str) -> None:
        """Scan ``path`` on a worker thread; ``loaded`` or ``failed`` follows."""
        self.title.setText(Path(path).name)
        self.info.setText("Reading the folder…")
        self.defaults.setText("")
        self.jobs.submit(_scan, str(path), on_done=self._on_done, on_error=self._on_failed)

    def _on_done(self, folders) -> None:
        self.show_folders(folders)
        self.loaded.emit(folders)

    def _on_failed(self, error: Exception) -> None:
        message = describe(error)
        self.info.setText(f"⚠ {message}")
        self.failed.emit(message)

    def show_folders(self, folders) -> None:
        from ...core.labels import build_label_map

        self.folders = folders
        parts = []
        self.class_combo.blockSignals(True)
        self.class_combo.clear()
        for split, items in folders.items.items():
            counts: dict[str, int] = {}
            for it in items:
                counts[it.label] = counts.get(it.label, 0) + 1
            names = build_label_map(list(counts)).names
            parts.append(f"{split}: {len(items):,} images in {len(names)} classes ("
                         + ", ".join(f"{n} {counts[n]:,}" for n in names) + ")")
            for n in names:
                self.class_combo.addItem(f"{n} ({split}, {counts[n]:,})", (split, n))
        self.class_combo.blockSignals(False)
        layout = "train / validation / test folders" if folders.layout == "splits" else "one folder per class"
        self.info.setText(f"{layout}\n" + "\n".join(parts))
        self.findings.clear()
        for f in folders.findings:
            self.findings.addItem(f"{f.severity.upper()}: {f.message}")
            self.findings.item(self.findings.count() - 1).setToolTip("\n".join(f.items[:30]))
        self.findings.setVisible(bool(folders.findings))
        self._show_class(0)

    @Slot(int)
    def _show_class(self, index: int) -> None:
        key = self.class_combo.itemData(index) if index >= 0 else None
        if self.folders is None or key is None:
            self.grid.set_items([])
            return
        split, label = key
        self.grid.set_items([GridItem(str(it.path), it.path.name, str(it.path))
                             for it in self.folders.items[split] if it.label == label])

    def show_class(self, label: str, split: str = "train") -> None:
        for i in range(self.class_combo.count()):
            if self.class_combo.itemData(i) == (split, label):
                self.class_combo.setCurrentIndex(i)
                return

    def shutdown(self) -> None:
        self.jobs.shutdown(5000)
        self.grid.shutdown()


class _NoTable:
    """The parts of a data Table the pages read (AppState pins its delimiter and header; the window
    checks for malformed rows): an image folder has none of them."""

    class format:  # noqa: N801 - mirrors Table.format
        delimiter = None
        has_header = None
        encoding = None

    columns: tuple[str, ...] = ()
    malformed: tuple = ()
    warnings: tuple = ()


@dataclass
class ImageFolderData:
    """An image folder for AppState: the fields of ``app.dataset.LoadedData`` the pages read."""

    path: Path
    folders: Any  # core.data.images.ImageFolders
    val_path: str | None = None
    test_path: str | None = None
    table: Any = _NoTable()
    preview: Any = None
    choice: Any = None
    labeled: Any = None
    report: Any = None
    problem: str | None = None
    notes: tuple[str, ...] = ()
    task: str = IMAGE_TASK
    task_title: str = TASKS[IMAGE_TASK].heading

    @property
    def class_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for it in self.folders.items.get("train", []):
            counts[it.label] = counts.get(it.label, 0) + 1
        return counts

    @property
    def usable(self) -> bool:
        return len(self.class_counts) >= 2

    @property
    def n_rows(self) -> int:
        return len(self.folders.items.get("train", []))


class DataPageImages(QObject):
    """Adds image folders to the Data page: ``handles(path)`` says whether a dropped path is one, and
    ``open(path)`` shows it in an :class:`ImageFolderView` on the page's stack and hands it to the
    app state, so Train uses it like a data file."""

    def __init__(self, page) -> None:
        super().__init__(page)
        self.page = page
        self.view = ImageFolderView()
        self.view.another.clicked.connect(page.choose_folder)
        self.view.loaded.connect(self._on_loaded)
        self.view.failed.connect(self._on_failed)
        page.stack.addWidget(self.view)
        page.state.config_changed.connect(self._show_defaults)  # another backbone or image size
        self._path = ""
        from .label_issues import LabelIssuesView

        self.label_issues = LabelIssuesView(page.state)
        self.label_issues.show_image.connect(self._show_image)
        self.label_issues.corrected.connect(page.open_path)  # the copy (a folder of links) is the training data now
        self.view.tabs.addTab(self.label_issues, "Suspicious labels")

    def _show_image(self, path: str, label: str) -> None:
        self.view.tabs.setCurrentIndex(0)
        self.view.show_class(label)
        self.page.status.emit(path)

    @staticmethod
    def handles(path: str | Path) -> bool:
        """Whether ``path`` is a folder of labelled images (a cheap look, fine on the GUI thread)."""
        from ...core.data.image_sniff import sniff_image_folder

        return sniff_image_folder(Path(path)) >= 0.9

    def open(self, path: str | Path) -> None:
        self.page.cancel_loading()
        self.label_issues.clear()
        self.view.tabs.setCurrentIndex(0)
        self._path = str(path)
        self.view.load(self._path)
        self.page.stack.setCurrentWidget(self.view)
        self.page.status.emit(f"Reading {path}…")

    @Slot(object)
    def _on_loaded(self, folders) -> None:
        data = ImageFolderData(Path(self._path).resolve(), folders, val_path=None, test_path=None)
        self.page.state.set_data(data)
        self._show_defaults()
        self.page.file_loaded.emit(self._path)
        self.page.status.emit(f"Loaded {data.n_rows:,} training images in {len(data.class_counts)} classes "
                              f"from {data.path.name}")

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self.page.status.emit(message)

    @Slot()
    def _show_defaults(self) -> None:
        data = self.page.state.data
        text = image_defaults_text(data, self.page.state.config) if isinstance(data, ImageFolderData) else ""
        self.view.defaults.setText(text)
        self.view.defaults.setVisible(bool(text))

    def shutdown(self) -> None:
        self.view.shutdown()
        self.label_issues.shutdown()


# ---------------------------------------------------------------------------- Evaluate page


KIND = "image-classifier"  # the model cache's name for the classifier below


def _load_image_classifier(folder: Path):
    """A function image path -> [(label, probability)], best first: Workbench's loader for its own
    architectures, the transformers pipeline for Hugging Face ones. A loader for ``MODELS.get``."""
    from ...core.tasks.image.models import classify_with, load_image_classifier, read_image_config

    if read_image_config(folder) is not None:
        model, config = load_image_classifier(folder, fold=True)

        def classify(path: str) -> list[tuple[str, float]]:
            return [(t["label"], t["score"]) for t in classify_with(model, config, [path], top_k=10_000)[0]]
    else:
        pipe = load_pipeline(folder, "image")

        def classify(path: str) -> list[tuple[str, float]]:
            return [(o["label"], float(o["score"])) for o in pipe(path, top_k=None)]
    return classify


def predict_image(model_dir: str | Path, path: str) -> list[tuple[str, float]]:
    """(label, probability) for every class, best first, from an exported image model."""
    return MODELS.get(KIND, model_dir, _load_image_classifier)(path)


def _try_image(state, model_dir: str, path: str) -> list[tuple[str, float]]:
    """The try-it job: the preview first (as progress, so it shows while the model works), then the scores."""
    state.progress(decode_preview(path, 2 * THUMB))  # raises ImageProblem for a file the model cannot read
    # The model decodes the file again at its own size, as evaluation did, so the scores match the run's.
    return predict_image(model_dir, path)


def _preview(model_dir: str, path: str) -> QImage:
    """An image of the predictions list, at the Try it box's size (a job: ``model_dir`` is not used)."""
    return decode_preview(path, 2 * THUMB)


def _saliency_image(model_dir: str, path: str) -> tuple[QImage, str]:
    """The image as the model saw it with its gradient saliency over it (core/analysis/explain.py), as a QImage."""
    import numpy as np

    from ...core.analysis.explain import explain_image, overlay

    seen, saliency, label = explain_image(model_dir, path)
    shown = np.ascontiguousarray(overlay(seen, saliency))
    h, w, _ = shown.shape
    image = QImage(shown.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()  # owns its pixels
    side = 2 * THUMB
    return image.scaled(side, side, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation), label


class ImageTryIt(TryIt):
    """Drop an image (or choose one) and see the exported model's scores for it."""

    model_kind = KIND
    busy_text = "Predicting…"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Choose Image…", parent)  # the run button asks for a file
        self.setAcceptDrops(True)
        self._path = ""
        self._caption = ""  # what the saliency being computed is of (an image of the predictions list)
        self.picture = QLabel("Drop an image here, or click one in the predictions list")
        self.picture.setWordWrap(True)
        self.picture.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.picture.setMinimumSize(THUMB, THUMB)
        self.picture.setFrameShape(QLabel.Shape.StyledPanel)
        self.column.insertWidget(0, self.picture)
        self.saliency = button("Show Saliency", self.explain, "Overlay where the pixels most change the predicted "
                               "class's score (gradient saliency); Workbench image models")
        self.add_button(self.saliency, needs_model=False)  # needs an image too: enabled once one is scored
        self.bars = ScoreBars()
        self.add_result(self.bars)
        self.set_model(None)

    def dragEnterEvent(self, event) -> None:
        if self._model_dir and event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        urls = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if urls:
            self.predict_file(urls[0])
            event.acceptProposedAction()

    @Slot()
    def predict(self) -> None:
        """Ask for an image, then score it."""
        path, _ = QFileDialog.getOpenFileName(self, "Choose an image", "",
                                              "Images (*.jpg *.jpeg *.png *.bmp *.webp *.gif *.tif *.tiff)")
        if path:
            self.predict_file(path)

    def predict_file(self, path: str) -> None:
        if not self._model_dir:
            return
        self._path = path
        self.clear_result()
        self.run_prediction(_try_image, path, state=True, on_progress=self._on_preview)

    def _on_preview(self, image: QImage) -> None:
        self.picture.setPixmap(QPixmap.fromImage(image))

    @Slot()
    def explain(self) -> None:
        if self._model_dir and self._path:
            self.run_model(_saliency_image, self._path, show=self._show_saliency, button=self.saliency,
                           busy="Computing the saliency map…")

    def explain_example(self, path: str, caption: str) -> None:
        """An image of the predictions list, with its saliency drawn over it."""
        if not self._model_dir:
            return
        self._path = path
        self.clear_result()  # the bars were another image's
        self._caption = caption
        self.explain()

    def show_example(self, path: str, caption: str, scores: list[tuple[str, float]]) -> None:
        """An image of the predictions list with the scores the run gave it (``scores``, best first);
        Show Saliency then explains it."""
        if not self._model_dir:
            return
        self._path = path
        self.clear_result()
        self.run_model(_preview, path, show=partial(self._show_example, caption, scores), busy="Opening the image…")

    def _show_example(self, caption: str, scores: list[tuple[str, float]], image: QImage) -> None:
        self.picture.setPixmap(QPixmap.fromImage(image))
        self.bars.show_scores(scores)
        self.status.setText(caption)
        self.saliency.setEnabled(True)

    def _show_saliency(self, answer) -> None:
        image, label = answer
        self.picture.setPixmap(QPixmap.fromImage(image))
        caption, self._caption = self._caption, ""
        self.status.setText((f"{caption}<br>" if caption else "")
                            + f"Where the model looked for “{label}” (brighter = more influence)")
        self.saliency.setEnabled(True)

    def show_prediction(self, scores: list[tuple[str, float]]) -> None:
        self.saliency.setEnabled(True)
        self.bars.show_scores(scores)

    def clear_result(self) -> None:
        self.bars.clear()
        self.saliency.setEnabled(False)

    def show_failure(self, error: Exception) -> None:
        from ...core.data.images import ImageProblem

        if isinstance(error, ImageProblem):
            self.picture.setText("Not a readable image")
            self.status.setText(f"{Path(self._path).name} is not an image the model can read ({error}).")
        else:
            super().show_failure(error)

    def top_label(self) -> str | None:
        return self.bars.top_label()


class CellImagesDialog(QDialog):
    """The images behind one confusion-matrix cell, each captioned with gold, predicted, confidence."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Images")
        self.setModal(False)
        self.heading = QLabel()
        self.grid = ImageGrid(lines=3)  # the file name on up to two lines, then the prediction
        lay = QVBoxLayout(self)
        lay.addWidget(self.heading)
        lay.addWidget(self.grid, 1)
        self.resize(760, 560)

    def show_cell(self, gold: str, predicted: str, rows: list[dict]) -> None:
        what = "correct" if gold == predicted else "mistakes"
        self.setWindowTitle(f"Gold {gold}, predicted {predicted}")
        self.heading.setText(f"{len(rows):,} image(s) with gold <b>{gold}</b> predicted as <b>{predicted}</b> "
                             f"({what}), least confident first")
        rows = sorted(rows, key=lambda r: r["confidence"])
        self.grid.set_items([
            GridItem(r["path"], f"{Path(r['path']).name}\n{r['predicted']} {r['confidence']:.0%}",
                     f"{r['path']}\ngold: {r['gold']}\npredicted: {r['predicted']} ({r['confidence']:.1%})",
                     wrong=r["gold"] != r["predicted"])
            for r in rows
        ])


class ImageClassificationView(ClassificationView):
    """The classification view (scores, per-class table, confusion matrix, predictions) with
    images: a cell opens the grid of its images, and "try it" takes a dropped image."""

    @staticmethod
    def prepare(run):
        import pyarrow as pa

        table = run.predictions()
        records = table.select([c for c in ("path", "gold", "predicted", "confidence") if c in table.column_names]).to_pylist() \
            if table.num_rows else []
        if table.num_rows and "text" not in table.column_names and "path" in table.column_names:
            # The predictions table's Input column shows each image's file name.
            names = pa.array([Path(p).name for p in table.column("path").to_pylist()], pa.string())
            table = table.append_column("text", names)
        return PredictionColumns.from_table(table), records

    def __init__(self, parent: QWidget | None = None, try_it: TryIt | None = None) -> None:
        super().__init__(parent, try_it if try_it is not None else ImageTryIt())
        self.cell_dialog = CellImagesDialog(self)
        self._records: list[dict] = []
        # A click on a row (or the arrow keys) shows its image in Try it; a double-click its saliency.
        self.predictions.selectionModel().currentRowChanged.connect(self._on_current_row)

    def show_run(self, run, prepared) -> None:
        columns, self._records = prepared
        self.cell_dialog.hide()
        super().show_run(run, columns)

    def clear(self) -> None:
        self._records = []
        self.cell_dialog.hide()
        super().clear()

    @Slot(str, str)
    def _on_cell_chosen(self, gold: str, predicted: str) -> None:
        super()._on_cell_chosen(gold, predicted)
        rows = [r for r in self._records if r["gold"] == gold and r["predicted"] == predicted]
        self.cell_dialog.show_cell(gold, predicted, rows)
        self.cell_dialog.show()
        self.cell_dialog.raise_()

    @Slot(QModelIndex, QModelIndex)
    def _on_current_row(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if current.isValid():
            self.show_row_image(current.row())

    def show_row_image(self, view_row: int) -> None:
        """The listed image at ``view_row`` in the Try it box, with the scores the run gave it."""
        path = self._row_path(view_row)
        if path and isinstance(self.try_it, ImageTryIt):
            record = self.predictions_model.row_record(view_row)
            self.try_it.show_example(path, f"{_html(Path(path).name)}<br>{_example_caption(record)}",
                                     self.predictions_model.probabilities(view_row))

    def _row_path(self, view_row: int) -> str:
        if not 0 <= view_row < self.predictions_model.rowCount():
            return ""
        index = self.predictions_model.row_record(view_row)["index"]
        if index >= len(self._records):
            return ""
        return self._records[index].get("path") or ""

    def explain_row(self, view_row: int) -> None:
        """The listed image's saliency map, in the Try it box."""
        path = self._row_path(view_row)
        if path:
            self.try_it.explain_example(path, _example_caption(self.predictions_model.row_record(view_row)))

    def shutdown(self) -> None:
        self.cell_dialog.grid.shutdown()
        super().shutdown()
