"""The Help menu's windows. About: the version, and the diagnostics a bug report needs
(core/diagnostics.py) with a button that copies them. The diagnostics import torch and
transformers, so they are gathered on a worker thread; the dialog opens at once and fills in when
they are ready. Report a problem copies the same text without a dialog; Keyboard Shortcuts lists
the shortcuts of the window's actions."""

from __future__ import annotations

import re

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QAction, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMainWindow,
    QMenu,
    QPlainTextEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .jobs import Jobs, describe
from .look import app_icon


class AboutDialog(QDialog):
    def __init__(self, parent: QWidget | None = None) -> None:
        from .. import __version__

        super().__init__(parent)
        self.setWindowTitle("About Workbench")
        icon = QLabel()
        icon.setPixmap(app_icon().pixmap(64, 64))
        self.title = title = QLabel(f"<b>Workbench {__version__}</b><br>Fine-tune pretrained models on your own data, "
                       "on your own machine.")
        title.setWordWrap(True)
        head = QHBoxLayout()
        head.addWidget(icon, 0, Qt.AlignmentFlag.AlignTop)
        head.addWidget(title, 1)

        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setPlainText("Gathering versions and devices…")
        self.details.setMinimumSize(520, 260)
        self.copy_button = QPushButton("Copy diagnostics")
        self.copy_button.setToolTip("Copy these lines to the clipboard, to paste into a bug report")
        self.copy_button.setEnabled(False)
        self.copy_button.clicked.connect(self.copy_diagnostics)
        self.copied = QLabel()
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.addButton(self.copy_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addLayout(head)
        layout.addWidget(self.details, 1)
        layout.addWidget(self.copied)
        layout.addWidget(buttons)

        self.text = ""
        self.jobs = Jobs(self)
        from ..core.diagnostics import diagnostics_text

        self.jobs.submit(diagnostics_text, on_done=self._show, on_error=self._failed)

    @property
    def ready(self) -> bool:
        return bool(self.text)

    def _show(self, text: str) -> None:
        self.text = text
        self.details.setPlainText(text)
        self.copy_button.setEnabled(True)

    def _failed(self, error: Exception) -> None:
        self._show(f"The diagnostics could not be gathered: {describe(error)}")

    def copy_diagnostics(self) -> None:
        QGuiApplication.clipboard().setText(self.text)
        self.copied.setText("Copied to the clipboard.")

    def done(self, result: int) -> None:  # noqa: D401 - Qt API
        self.jobs.shutdown()
        super().done(result)


class DiagnosticsCopier(QObject):
    """Help > Report a Problem: gathers the About dialog's diagnostics on a worker thread and puts
    them on the clipboard; ``copied`` carries the text (or why it could not be gathered)."""

    copied = Signal(str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.jobs = Jobs(self)

    def start(self) -> None:
        from ..core.diagnostics import diagnostics_text

        self.jobs.submit(diagnostics_text, on_done=self._copy,
                         on_error=lambda e: self._copy(f"The diagnostics could not be gathered: {describe(e)}"))

    def _copy(self, text: str) -> None:
        QGuiApplication.clipboard().setText(text)
        self.copied.emit(text)


def plain_text(action_text: str) -> str:
    """A menu text as it reads: "&Open File…" -> "Open File…", "Model && task" -> "Model & task"."""
    return re.sub("&(.)", r"\1", action_text)


def shortcut_rows(window: QMainWindow) -> list[tuple[str, str]]:
    """(what, keys) for every action of the window with a shortcut: the menus' in menu order
    ("Run › Start Training"), then any others."""
    rows: list[tuple[str, str]] = []
    seen: set[QAction] = set()

    def walk(menu: QMenu, path: str) -> None:
        for action in menu.actions():
            submenu = action.menu()
            if isinstance(submenu, QMenu):
                walk(submenu, f"{path} › {plain_text(action.text())}")
            elif not action.isSeparator():
                seen.add(action)
                if not action.shortcut().isEmpty():
                    rows.append((f"{path} › {plain_text(action.text())}", _keys(action)))

    for top in window.menuBar().actions():
        menu = top.menu()
        if isinstance(menu, QMenu):
            walk(menu, plain_text(top.text()))
    for action in window.findChildren(QAction):
        if action not in seen and not action.shortcut().isEmpty() and action.text():
            rows.append((plain_text(action.text()), _keys(action)))
    return rows


def _keys(action: QAction) -> str:
    return ", ".join(k.toString(QKeySequence.SequenceFormat.NativeText) for k in action.shortcuts())


class ShortcutsDialog(QDialog):
    """Help > Keyboard Shortcuts: a two-column table of the window's shortcuts."""

    def __init__(self, window: QMainWindow) -> None:
        super().__init__(window)
        self.setWindowTitle("Keyboard Shortcuts")
        rows = shortcut_rows(window)
        self.table = QTableWidget(len(rows), 2)
        self.table.setHorizontalHeaderLabels(["Action", "Keys"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        for i, (what, keys) in enumerate(rows):
            self.table.setItem(i, 0, QTableWidgetItem(what))
            self.table.setItem(i, 1, QTableWidgetItem(keys))
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.table.setMinimumSize(460, 320)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table, 1)
        layout.addWidget(buttons)
