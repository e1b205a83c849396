"""The Evaluate page's reliability diagram: accuracy against confidence per confidence bin (a
calibrated model's bars follow the diagonal), with the expected calibration error before and after
the temperature fitted on the validation split (report.json's "calibration"; see
workbench/core/analysis/calibration.py). pyqtgraph is imported when the first run is shown, not at startup."""

from __future__ import annotations

from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget


def calibration_text(cal: dict) -> str:
    """A short line for the page; the tooltip says the rest."""
    text = f"ECE {cal['ece']:.3f}"
    t = cal.get("temperature")
    if t:
        text += f" → {cal['ece_scaled']:.3f} at T = {t:.2f} (orange)"
        if cal["ece_scaled"] > cal["ece"]:
            n = cal.get("validation_n")
            text += f"; no help here ({n:,} validation examples)" if n else "; no help here"
    return text


def calibration_tooltip(cal: dict) -> str:
    text = (f"Expected calibration error over {cal.get('n', 0):,} {cal.get('bins_count', 15)}-bin examples: the "
            "share-weighted gap between each confidence bin's accuracy (bars) and its confidence (the diagonal).")
    if cal.get("temperature"):
        text += (f" Dividing the logits by the temperature {cal['temperature']:.3f}, fitted on the validation split, "
                 f"gives {cal['ece_scaled']:.3f}; it is stored in the export's workbench.json (transformers' "
                 "pipeline ignores it).")
    return text


class ReliabilityView(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.plot = None
        self._lay = QVBoxLayout(self)
        self._lay.setContentsMargins(0, 0, 0, 0)
        self._lay.addWidget(self.note)
        self.note.setWordWrap(True)
        self.calibration: dict | None = None
        self.setMinimumWidth(240)  # bins of 1/15 need room to read

    def _ensure_plot(self):
        if self.plot is None:
            import pyqtgraph as pg

            self.plot = pg.PlotWidget()
            self.plot.setLabel("bottom", "confidence")
            self.plot.setLabel("left", "accuracy")
            self.plot.setXRange(0, 1, padding=0.02)
            self.plot.setYRange(0, 1, padding=0.02)
            self.plot.setMouseEnabled(False, False)
            self.plot.setMinimumHeight(160)
            self._lay.addWidget(self.plot, 1)
            self._apply_palette()
        return self.plot

    def _apply_palette(self) -> None:
        """The plot on the palette's base colour with its text colour, in light and dark schemes alike."""
        if self.plot is None:
            return
        import pyqtgraph as pg

        pal = self.palette()
        text = pal.color(QPalette.ColorRole.Text)
        self.plot.setBackground(pal.color(QPalette.ColorRole.Base))
        for name in ("left", "bottom"):
            axis = self.plot.getPlotItem().getAxis(name)
            axis.setPen(pg.mkPen(text))
            axis.setTextPen(pg.mkPen(text))

    def changeEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:
            self._apply_palette()

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(event)
        # A wrapped label asks for one line's height; the note needs as many lines as this width
        # wraps it to, or the splitter above gives the plot too little and cuts its axis title.
        self.note.setMinimumHeight(self.note.heightForWidth(max(1, self.width())))

    def set_calibration(self, cal: dict | None) -> None:
        self.calibration = cal
        if not cal:
            if self.plot is not None:
                self.plot.clear()
                self.plot.hide()
            self.note.setText("No calibration recorded for this run.")
            self.note.setToolTip("Classification runs record it from this version on.")
            return
        import pyqtgraph as pg

        plot = self._ensure_plot()
        plot.show()
        plot.clear()
        bins = [b for b in cal["bins"]]
        width = bins[0]["upper"] - bins[0]["lower"] if bins else 0.1
        xs = [(b["lower"] + b["upper"]) / 2 for b in bins if b["count"]]
        ys = [b["accuracy"] for b in bins if b["count"]]
        plot.addItem(pg.BarGraphItem(x=xs, height=ys, width=width * 0.9, brush=(60, 110, 200, 160),
                                     pen=pg.mkPen((40, 80, 160)), name="accuracy"))
        plot.plot([0, 1], [0, 1], pen=pg.mkPen((120, 120, 120), style=Qt.PenStyle.DashLine), name="calibrated")
        scaled = cal.get("bins_scaled")
        if scaled:
            sx = [b["confidence"] for b in scaled if b["count"]]
            sy = [b["accuracy"] for b in scaled if b["count"]]
            plot.plot(sx, sy, pen=pg.mkPen((220, 120, 30), width=2), symbol="o", symbolSize=5,
                      symbolBrush=(220, 120, 30), name=f"T = {cal['temperature']:.2f}")
        self.note.setText(calibration_text(cal))
        self.note.setToolTip(calibration_tooltip(cal))
        plot.setToolTip(calibration_tooltip(cal))
