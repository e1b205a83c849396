"""The report's pictures for the trackers, drawn with Pillow (a Workbench dependency), as RGB arrays:
the confusion matrix (counts, shaded by each true class's share) and the calibration curve."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

_CELL, _MARGIN = 48, 110


def confusion_image(labels: Sequence[str], matrix: Sequence[Sequence[int]]) -> np.ndarray:
    """Rows are true classes, columns predicted ones; a cell's shade is its share of its row."""
    from PIL import Image, ImageDraw

    n = len(matrix)
    size = _MARGIN + _CELL * n + 10
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    for i, row in enumerate(matrix):
        total = max(1, sum(row))
        draw.text((4, _MARGIN + i * _CELL + _CELL // 3), str(labels[i])[:16], fill="black")
        for j, count in enumerate(row):
            shade = int(255 - 200 * count / total)
            x, y = _MARGIN + j * _CELL, _MARGIN + i * _CELL
            draw.rectangle((x, y, x + _CELL - 1, y + _CELL - 1), fill=(shade, shade, 255), outline="grey")
            draw.text((x + 6, y + _CELL // 3), str(count), fill="black" if shade > 128 else "white")
    for j in range(n):
        draw.text((_MARGIN + j * _CELL + 4, _MARGIN - 16), str(labels[j])[:7], fill="black")
    draw.text((_MARGIN, 8), "predicted ->", fill="black")
    draw.text((4, _MARGIN - 16), "true", fill="black")
    return np.asarray(img)


def calibration_image(bins: Sequence[dict[str, Any]], size: int = 320) -> np.ndarray:
    """The reliability diagram: each bin's accuracy against its confidence, the diagonal perfect."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    pad = 30
    span = size - 2 * pad

    def at(x: float, y: float) -> tuple[float, float]:
        return pad + x * span, size - pad - y * span

    draw.rectangle((*at(0, 1), *at(1, 0)), outline="grey")
    draw.line((*at(0, 0), *at(1, 1)), fill="grey")
    points = [at(float(b["confidence"]), float(b["accuracy"])) for b in bins
              if b.get("count") and b.get("confidence") is not None and b.get("accuracy") is not None]
    if len(points) > 1:
        draw.line(points, fill="blue", width=2)
    for x, y in points:
        draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill="blue")
    draw.text((pad, size - pad + 8), "confidence", fill="black")
    draw.text((4, 8), "accuracy", fill="black")
    return np.asarray(img)


def report_images(report: dict[str, Any]) -> dict[str, np.ndarray]:
    """The pictures report.json has the data for, by name."""
    out = {}
    matrix, labels = report.get("confusion_matrix"), report.get("labels")
    if isinstance(matrix, list) and matrix and isinstance(labels, list) and len(labels) == len(matrix):
        out["confusion_matrix"] = confusion_image([str(x) for x in labels], matrix)
    calibration = report.get("calibration")
    if isinstance(calibration, dict) and isinstance(calibration.get("bins"), list):
        out["calibration"] = calibration_image(calibration["bins"])
    return out
