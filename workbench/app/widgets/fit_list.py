"""A list that is as tall as its items, up to a cap: two findings take two lines' room, not a tall
empty box that pushes what follows it (the Data page's split explanation) out of a 1280x800 window."""

from __future__ import annotations

from PySide6.QtCore import QSize
from PySide6.QtWidgets import QListWidget, QSizePolicy, QWidget


class FitList(QListWidget):
    """A ``QListWidget`` whose size hint is its items' height (word-wrapped at its width), at most
    ``max_height`` pixels; past that it scrolls."""

    def __init__(self, max_height: int = 220, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.max_height = max_height
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        self._width = -1
        model = self.model()  # items added or taken away: the height wanted changes
        for signal in (model.rowsInserted, model.rowsRemoved, model.modelReset):
            signal.connect(self.updateGeometry)

    def content_height(self) -> int:
        """The items' height as laid out at the list's width, with the frame."""
        self.executeDelayedItemsLayout()
        height = 0
        if self.count():
            height = self.visualItemRect(self.item(self.count() - 1)).bottom() + self.verticalOffset()
            height += self.spacing() + 1
        return height + 2 * self.frameWidth()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        wanted = max(self.content_height(), self.minimumHeight())
        return QSize(super().sizeHint().width(), min(wanted, max(self.max_height, self.minimumHeight())))

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(super().minimumSizeHint().width(), self.minimumHeight())

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(event)
        if event.size().width() != self._width:  # wrapped items change height with the width
            self._width = event.size().width()
            self.updateGeometry()
