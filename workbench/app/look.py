"""How the app looks: icon, style, light or dark palette, settings storage.

The style is the platform's own where it has a good one (Windows, macOS) and Fusion elsewhere;
Fusion follows the palette, so light and dark both work. View > Appearance picks light, dark or
the desktop's preference (the default) and is remembered in the settings;
``WORKBENCH_COLOR_SCHEME=light|dark`` forces one at start-up (screenshots, testing).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from PySide6.QtCore import QPointF, QRectF, QSettings, Qt
from PySide6.QtGui import QColor, QGuiApplication, QIcon, QLinearGradient, QPainter, QPainterPath, QPalette, QPixmap
from PySide6.QtWidgets import QApplication, QStyleFactory

from ..resources import RESOURCES

SIDEBAR_QSS = """
QListWidget#sidebar { border: none; background: transparent; outline: 0; padding: 10px 0; }
QListWidget#sidebar::item { padding: 7px 10px; margin: 1px 8px; border-radius: 6px; }
QListWidget#sidebar::item:hover:!selected { background: palette(midlight); }
QListWidget#sidebar::item:selected { background: palette(highlight); color: palette(highlighted-text); }
QFrame#sidebarFrame { background: palette(window); border-right: 1px solid palette(mid); }
"""


def app_icon() -> QIcon:
    """The SVG and PNG icons from resources/, or the same drawing painted here when they are absent."""
    icon = QIcon()
    for p in [RESOURCES / "workbench.svg", *sorted(RESOURCES.glob("workbench-*.png"))]:
        if p.is_file():
            icon.addFile(str(p))
    if icon.isNull():
        icon = QIcon(paint_icon(256))
    return icon


def paint_icon(size: int) -> QPixmap:
    """A raster copy of resources/workbench.svg, for installs without the resources folder."""
    pm = QPixmap(size, size)
    pm.fill(Qt.GlobalColor.transparent)
    p = QPainter(pm)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.scale(size / 256, size / 256)
    g = QLinearGradient(0, 0, 256, 256)
    g.setColorAt(0, QColor("#2f7cf6"))
    g.setColorAt(1, QColor("#5b2fc9"))
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(g)
    p.drawRoundedRect(QRectF(8, 8, 240, 240), 54, 54)
    p.setBrush(QColor(255, 255, 255, 230))
    p.drawRoundedRect(QRectF(44, 196, 168, 8), 4, 4)
    for x, y in ((56, 146), (110, 112), (164, 72)):
        p.drawRoundedRect(QRectF(x, y, 36, 188 - y), 8, 8)
    path = QPainterPath(QPointF(50, 58))
    path.cubicTo(88, 64, 104, 112, 136, 126)
    path.cubicTo(168, 140, 188, 146, 210, 148)
    from PySide6.QtGui import QPen

    p.setPen(QPen(QColor("#ffc83d"), 13, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap))
    p.setBrush(Qt.BrushStyle.NoBrush)
    p.drawPath(path)
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(QColor("#ffc83d"))
    p.drawEllipse(QPointF(50, 58), 11, 11)
    p.end()
    return pm


# View > Appearance: the setting's value and the menu's text.
APPEARANCES = (("light", "&Light"), ("dark", "&Dark"), ("system", "Follow the &System"))
APPEARANCE_KEY = "appearance"


def apply_style(app: QApplication) -> None:
    if sys.platform.startswith("linux") or app.style().name().lower() == "windows":
        app.setStyle(QStyleFactory.create("Fusion"))
    scheme = os.environ.get("WORKBENCH_COLOR_SCHEME", "").lower()
    if scheme not in ("dark", "light"):
        scheme = saved_appearance()
    if scheme != "system":
        apply_appearance(app, scheme)


def saved_appearance() -> str:
    """The appearance chosen in View > Appearance: "light", "dark" or "system" (the default)."""
    value = str(settings().value(APPEARANCE_KEY, "system") or "system").lower()
    return value if value in dict(APPEARANCES) else "system"


def set_appearance(scheme: str) -> None:
    """View > Appearance: apply ``scheme`` now and remember it for the next start."""
    settings().setValue(APPEARANCE_KEY, scheme)
    app = QApplication.instance()
    if isinstance(app, QApplication):
        apply_appearance(app, scheme)


def apply_appearance(app: QApplication, scheme: str) -> None:
    """Light or dark whatever the desktop says, or ("system") the desktop's own preference."""
    hints = app.styleHints()
    if scheme == "system":
        hints.unsetColorScheme()
        app.setPalette(QPalette())  # no palette of ours: the platform theme's (or the style's) again
        return
    want = Qt.ColorScheme.Dark if scheme == "dark" else Qt.ColorScheme.Light
    hints.setColorScheme(want)
    # Platforms without a theme (Xvfb, offscreen) ignore the hint: give Fusion the palette ourselves.
    if (app.palette().color(QPalette.ColorRole.Window).lightness() < 128) != (scheme == "dark"):
        app.setPalette(dark_palette() if scheme == "dark" else app.style().standardPalette())


def dark_palette() -> QPalette:
    pal = QPalette()
    roles = {
        QPalette.ColorRole.Window: "#2b2b2e",
        QPalette.ColorRole.WindowText: "#e8e8ea",
        QPalette.ColorRole.Base: "#1e1e21",
        QPalette.ColorRole.AlternateBase: "#262629",
        QPalette.ColorRole.ToolTipBase: "#3a3a3e",
        QPalette.ColorRole.ToolTipText: "#e8e8ea",
        QPalette.ColorRole.PlaceholderText: "#8d8d93",
        QPalette.ColorRole.Text: "#e8e8ea",
        QPalette.ColorRole.Button: "#3a3a3e",
        QPalette.ColorRole.ButtonText: "#e8e8ea",
        QPalette.ColorRole.BrightText: "#ff6b6b",
        QPalette.ColorRole.Light: "#4a4a4f",
        QPalette.ColorRole.Midlight: "#3f3f44",
        QPalette.ColorRole.Mid: "#525258",
        QPalette.ColorRole.Dark: "#1a1a1c",
        QPalette.ColorRole.Shadow: "#000000",
        QPalette.ColorRole.Highlight: "#3d7be0",
        QPalette.ColorRole.HighlightedText: "#ffffff",
        QPalette.ColorRole.Link: "#7aa7ff",
        QPalette.ColorRole.LinkVisited: "#b493ff",
    }
    for role, color in roles.items():
        pal.setColor(role, QColor(color))
    for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText):
        pal.setColor(QPalette.ColorGroup.Disabled, role, QColor("#75757b"))
    return pal


def settings() -> QSettings:
    """App settings (recent files, window geometry, appearance); under $WORKBENCH_HOME when that is set."""
    home = os.environ.get("WORKBENCH_HOME")
    if home:
        return QSettings(str(Path(home).expanduser() / "settings.ini"), QSettings.Format.IniFormat)
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "Workbench", "workbench")


def is_dark(widget_or_app=None) -> bool:
    pal = widget_or_app.palette() if widget_or_app is not None else QGuiApplication.palette()
    return pal.color(QPalette.ColorRole.Window).lightness() < 128
