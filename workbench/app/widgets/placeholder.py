"""What a step shows while it cannot work yet: why, and a button to the step that fixes it."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QLabel, QPushButton, QVBoxLayout, QWidget

from .build import enlarge


class Placeholder(QWidget):
    action = Signal()

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.addStretch(1)
        self.title = QLabel(title)
        enlarge(self.title, 1.4)
        self.title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.reason = QLabel()
        self.reason.setWordWrap(True)
        self.reason.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.reason.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.button = QPushButton()
        self.button.clicked.connect(self.action)
        lay.addWidget(self.title)
        lay.addWidget(self.reason)
        lay.addSpacing(12)
        lay.addWidget(self.button, 0, Qt.AlignmentFlag.AlignHCenter)
        lay.addStretch(2)

    def set_reason(self, reason: str, action_text: str = "") -> None:
        self.reason.setText(reason)
        self.button.setText(action_text)
        self.button.setVisible(bool(action_text))
