"""Help > About: the version, and the diagnostics a bug report needs (core/diagnostics.py) with a
button that copies them. The diagnostics import torch and transformers, so they are gathered on a
worker thread; the dialog opens at once and fills in when they are ready."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
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
