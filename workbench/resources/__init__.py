"""Files the app and the desktop integration ship: the icon (SVG and PNGs in the hicolor sizes) and,
under linux/, the .desktop entry, the AppStream metainfo and the MIME types (see workbench/desktop.py).
A package so that the wheel and the PyInstaller bundle carry it as package data."""

from pathlib import Path

RESOURCES = Path(__file__).resolve().parent
ICON_SIZES = (16, 32, 48, 64, 128, 256, 512)  # the PNGs beside this file, workbench-N.png
