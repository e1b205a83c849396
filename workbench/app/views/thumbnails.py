"""Thumbnails of image files, decoded by the engine's own decoder (EXIF orientation, every colour
mode), for the image grids and the label-issues list: a module of their own, which both import."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QImage

THUMB = 112  # thumbnail side in pixels


def decode_preview(path: str, side: int) -> QImage:
    """``path`` as a QImage no longer than ``side``; raises the engine's ImageProblem for a file it
    would skip. For worker threads: QImage, unlike QPixmap, is not tied to the GUI thread."""
    from ...core.data.images import decode_file

    im = decode_file(Path(path), side)
    im.thumbnail((side, side))
    data = im.tobytes()
    return QImage(data, im.width, im.height, 3 * im.width, QImage.Format.Format_RGB888).copy()


def thumbnail_image(path: str, side: int = THUMB) -> QImage:
    """A thumbnail of ``path``, or a null QImage for a file the engine would skip."""
    from ...core.data.images import ImageProblem

    try:
        return decode_preview(path, side)
    except ImageProblem:
        return QImage()
