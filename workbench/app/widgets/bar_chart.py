"""A horizontal bar chart of class counts, painted with QPainter in the palette's colours.

Horizontal bars keep long class names readable, and painting it directly keeps the Data page free
of the plotting library (which loads later, with the Train page).
"""

from __future__ import annotations

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFontMetrics, QPainter, QPalette
from PySide6.QtWidgets import QSizePolicy, QWidget

MAX_BARS = 25


class ClassBarChart(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._counts: list[tuple[str, int]] = []
        self._rest: tuple[int, int] = (0, 0)  # classes and rows not drawn
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setAccessibleName("Class distribution")

    def set_counts(self, counts: dict[str, int]) -> None:
        ordered = sorted(counts.items(), key=lambda kv: -kv[1])
        self._counts = ordered[:MAX_BARS]
        rest = ordered[MAX_BARS:]
        self._rest = (len(rest), sum(c for _, c in rest))
        total = sum(counts.values())
        self.setToolTip("\n".join(f"{name}: {c:,} ({c / total:.1%})" for name, c in ordered[:60]) if total else "")
        self.updateGeometry()
        self.update()

    def counts(self) -> list[tuple[str, int]]:
        return list(self._counts)

    def _row_height(self) -> int:
        return max(18, QFontMetrics(self.font()).height() + 6)

    def sizeHint(self) -> QSize:
        rows = len(self._counts) + (1 if self._rest[0] else 0)
        return QSize(320, max(1, rows) * self._row_height() + 4)

    def minimumSizeHint(self) -> QSize:
        return QSize(160, self.sizeHint().height())

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        fm = QFontMetrics(self.font())
        rh = self._row_height()
        if not self._counts:
            p.setPen(pal.color(QPalette.ColorRole.PlaceholderText))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "No labels yet")
            return
        total = sum(c for _, c in self._counts) + self._rest[1]
        biggest = max(c for _, c in self._counts)
        name_w = min(max(fm.horizontalAdvance(n) for n, _ in self._counts) + 10, int(self.width() * 0.35))
        value_w = fm.horizontalAdvance("000,000 (100%)") + 8
        bar_x = name_w
        bar_w = max(10, self.width() - name_w - value_w)
        bar = QColor(pal.color(QPalette.ColorRole.Highlight))
        track = QColor(pal.color(QPalette.ColorRole.WindowText))
        track.setAlphaF(0.07)
        text = pal.color(QPalette.ColorRole.WindowText)
        for i, (name, count) in enumerate(self._counts):
            y = 2 + i * rh
            p.setPen(text)
            p.drawText(QRectF(0, y, name_w - 8, rh), Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                       fm.elidedText(name or "(empty)", Qt.TextElideMode.ElideMiddle, name_w - 8))
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(track)
            p.drawRoundedRect(QRectF(bar_x, y + 3, bar_w, rh - 6), 3, 3)
            p.setBrush(bar)
            p.drawRoundedRect(QRectF(bar_x, y + 3, max(2.0, bar_w * count / biggest), rh - 6), 3, 3)
            p.setPen(text)
            p.drawText(QRectF(bar_x + bar_w + 6, y, value_w, rh), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                       f"{count:,} ({count / total:.0%})")
        if self._rest[0]:
            y = 2 + len(self._counts) * rh
            p.setPen(pal.color(QPalette.ColorRole.PlaceholderText))
            p.drawText(QRectF(bar_x, y, bar_w + value_w, rh), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                       f"… and {self._rest[0]:,} more classes ({self._rest[1]:,} rows)")
