"""The row of score tiles atop every Evaluate view: the run's headline metrics, as its task declared
them (``Task.metrics``, recorded in the run's config.json), then a view's own counts."""

from __future__ import annotations

from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from ...core.metrics import Metric
from ..widgets.build import enlarge


class MetricTile(QFrame):
    def __init__(self, title: str, parent=None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.value = QLabel("-")
        enlarge(self.value, 1.6)
        self.title = QLabel(title)
        self.title.setEnabled(False)  # the palette's dimmed text, in light and dark themes alike
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 6, 12, 6)
        layout.setSpacing(0)
        layout.addWidget(self.value)
        layout.addWidget(self.title)


class MetricTiles(QWidget):
    """``tiles`` maps metric names to their tiles (rebuilt per run); ``extra`` tiles follow them."""

    def __init__(self, *extra: MetricTile, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.extra = extra
        self.tiles: dict[str, MetricTile] = {}
        self.row = QHBoxLayout(self)
        self.row.setContentsMargins(0, 0, 0, 0)
        for tile in extra:
            self.row.addWidget(tile)
        self.row.addStretch(1)

    def show_metrics(self, specs: tuple[Metric, ...], metrics: dict, digits: str = ".3f") -> None:
        """One tile per headline metric of ``specs`` (the loss aside: the Train page plots it)."""
        for tile in self.tiles.values():
            self.row.removeWidget(tile)
            tile.deleteLater()
        self.tiles = {}
        for i, m in enumerate(s for s in specs if s.headline and s.name != "loss"):
            tile = MetricTile(m.title)
            value = metrics.get(m.name)
            tile.value.setText(format(value, digits) if isinstance(value, (int, float)) else "-")
            self.tiles[m.name] = tile
            self.row.insertWidget(i, tile)

    def clear(self) -> None:
        for tile in (*self.tiles.values(), *self.extra):
            tile.value.setText("-")
