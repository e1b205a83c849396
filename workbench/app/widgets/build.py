"""Builders for the widgets the pages make the same way again and again: a button wired to its slot,
a wrapping status line, a bold heading, zero-margin columns and rows, a titled section, a read-only
table of rows. A page states what it shows; the Qt set-up lives here once.

Layout items are widgets, layouts, or (widget or layout, stretch) pairs.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Union

from PySide6.QtCore import QAbstractItemModel, QObject, Qt, QTimer
from PySide6.QtWidgets import (
    QAbstractItemView,
    QBoxLayout,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLayout,
    QPushButton,
    QSplitter,
    QTableView,
    QTableWidget,
    QVBoxLayout,
    QWidget,
)

Item = Union[QWidget, QLayout, tuple[Union[QWidget, QLayout], int]]
Selection = QAbstractItemView.SelectionMode


def button(text: str, on_click: Callable | None = None, tip: str = "", *, visible: bool = True,
           enabled: bool = True, default: bool = False) -> QPushButton:
    """A push button calling ``on_click``; ``default``: the one Enter presses."""
    b = QPushButton(text)
    b.setDefault(default)
    if on_click is not None:
        b.clicked.connect(on_click)
    if tip:
        b.setToolTip(tip)
    b.setVisible(visible)
    b.setEnabled(enabled)
    return b


def choices(items: Iterable[tuple[str, Any]], tip: str = "") -> QComboBox:
    """A combo box of (text shown, value) items; ``currentData()`` is the chosen value."""
    combo = QComboBox()
    for text, value in items:
        combo.addItem(text, value)
    combo.setToolTip(tip)
    return combo


def timer(parent: QObject, interval_ms: int, on_timeout: Callable, *, start: bool = False) -> QTimer:
    """A repeating timer calling ``on_timeout`` every ``interval_ms`` (running at once with ``start``)."""
    t = QTimer(parent)
    t.setInterval(interval_ms)
    t.timeout.connect(on_timeout)
    if start:
        t.start()
    return t


def text_label(text: str = "", *, selectable: bool = True, dimmed: bool = False) -> QLabel:
    """A word-wrapped label (a status line, a note); ``dimmed``: the palette's disabled text colour."""
    label = QLabel(text)
    label.setWordWrap(True)
    if selectable:
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    label.setEnabled(not dimmed)
    return label


def enlarge(widget: QWidget, scale: float, bold: bool = True) -> None:
    font = widget.font()
    font.setPointSizeF(font.pointSizeF() * scale)
    font.setBold(bold)
    widget.setFont(font)


def heading(text: str = "", scale: float = 1.25) -> QLabel:
    """A page's or a view's title: bold and larger, selectable."""
    label = QLabel(text)
    enlarge(label, scale)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


def fill(layout: QBoxLayout, *items: Item) -> QBoxLayout:
    for item in items:
        thing, stretch = item if isinstance(item, tuple) else (item, 0)
        if isinstance(thing, QLayout):
            layout.addLayout(thing, stretch)
        else:
            layout.addWidget(thing, stretch)
    return layout


def set_column(owner: QWidget, *items: Item, margins: int | None = 0) -> QVBoxLayout:
    """``owner``'s layout: ``items`` top to bottom, ``margins`` pixels from its edges (None: the style's)."""
    layout = QVBoxLayout(owner)
    if margins is not None:
        layout.setContentsMargins(margins, margins, margins, margins)
    fill(layout, *items)
    return layout


def column(*items: Item) -> QWidget:
    """A widget holding ``items`` top to bottom, flush with its edges."""
    widget = QWidget()
    set_column(widget, *items)
    return widget


def row(*items: Item) -> QHBoxLayout:
    return fill(QHBoxLayout(), *items)  # type: ignore[return-value]


def add_rows(form: QFormLayout, *rows: QWidget | tuple[str, QWidget | QLayout]) -> None:
    """Rows of ``form``: (label, field) pairs, or a widget spanning the row."""
    for r in rows:
        if isinstance(r, tuple):
            label, field = r
            form.addRow(label, field)
        else:
            form.addRow(r)


def section(title: str, *widgets: QWidget, hint: str = "") -> QGroupBox:
    """A titled box; ``hint``: a dimmed line above its content saying how to read or use it."""
    box = QGroupBox(title)
    layout = QVBoxLayout(box)
    if hint:
        layout.addWidget(text_label(hint, selectable=False, dimmed=True))
    fill(layout, *widgets)
    return box


def side_by_side(*widgets: QWidget, stretch: tuple[int, ...] = ()) -> QSplitter:
    """A horizontal splitter whose parts never collapse; ``stretch``: their shares of the width."""
    split = QSplitter(Qt.Orientation.Horizontal)
    split.setChildrenCollapsible(False)
    for w in widgets:
        split.addWidget(w)
    for i, s in enumerate(stretch):
        split.setStretchFactor(i, s)
    return split


def stacked(*widgets: QWidget, stretch: tuple[int, ...] = ()) -> QSplitter:
    """A vertical splitter whose parts never collapse; ``stretch``: their shares of the height."""
    split = side_by_side(*widgets, stretch=stretch)
    split.setOrientation(Qt.Orientation.Vertical)
    return split


def rows_table(model: QAbstractItemModel, stretch_column: int, *, sort_column: int | None = None,
               descending: bool = False, selection: Selection = Selection.ExtendedSelection,
               fit_columns: bool = False) -> QTableView:
    """A read-only table of whole rows, alternating colours, no row numbers. Rows have a fixed height
    and columns a set width (``fit_columns``: their contents'), so nothing is measured per row and
    100,000 rows scroll freely; ``stretch_column`` takes the spare width. ``sort_column``: clicking a
    header sorts, starting from that column (-1: the model's own order)."""
    table = QTableView()
    table.setModel(model)
    if sort_column is not None:
        table.setSortingEnabled(True)
        table.sortByColumn(sort_column, Qt.SortOrder.DescendingOrder if descending else Qt.SortOrder.AscendingOrder)
    table.setAlternatingRowColors(True)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(selection)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setWordWrap(False)
    rows = table.verticalHeader()
    rows.hide()
    rows.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
    rows.setDefaultSectionSize(table.fontMetrics().height() + 8)
    columns = table.horizontalHeader()
    columns.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents if fit_columns
                                 else QHeaderView.ResizeMode.Interactive)
    columns.setSectionResizeMode(stretch_column, QHeaderView.ResizeMode.Stretch)
    return table


def items_table(headers: tuple[str, ...], selection: Selection = Selection.ExtendedSelection) -> QTableWidget:
    """A read-only QTableWidget of whole rows under ``headers``, columns fitted to their contents."""
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(headers)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(selection)
    table.verticalHeader().hide()
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    return table
