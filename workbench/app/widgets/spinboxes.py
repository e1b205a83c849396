"""Spin boxes for values people type in scientific notation (learning rates)."""

from __future__ import annotations

import math

from PySide6.QtGui import QValidator
from PySide6.QtWidgets import QDoubleSpinBox, QSpinBox


def _set_up(box, lo, hi, step, tip: str, suffix: str):
    box.setRange(lo, hi)
    box.setSingleStep(step)
    box.setToolTip(tip)
    box.setSuffix(suffix)
    return box


def int_spin(lo: int, hi: int, tip: str, step: int = 1, special: str = "", suffix: str = "") -> QSpinBox:
    """A whole-number setting; ``special``: what the lowest value shows instead of its number ("off")."""
    box = _set_up(QSpinBox(), lo, hi, step, tip, suffix)
    box.setSpecialValueText(special)
    return box


def float_spin(lo: float, hi: float, step: float, decimals: int, tip: str, suffix: str = "") -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setDecimals(decimals)  # first: the range and step are rounded to it
    return _set_up(box, lo, hi, step, tip, suffix)


def format_lr(lr: float) -> str:
    """5e-5, 1.5e-4, 0.01: learning rates as people write them."""
    if lr >= 1e-3:
        return f"{lr:g}"
    mantissa, exponent = f"{lr:.3e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


class LearningRateSpinBox(QDoubleSpinBox):
    """Shows 5e-5 rather than 0.00005; the arrows step through 1, 2, 3, 5 × 10ⁿ."""

    LADDER = (1.0, 2.0, 3.0, 5.0)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setDecimals(12)
        self.setRange(1e-7, 0.5)
        self.setKeyboardTracking(False)

    def textFromValue(self, value: float) -> str:  # noqa: N802 - Qt API
        return format_lr(value)

    def valueFromText(self, text: str) -> float:  # noqa: N802 - Qt API
        try:
            return float(text)
        except ValueError:
            return self.value()

    def validate(self, text: str, pos: int):
        if not text or text in ("-", ".") or text.lower().endswith(("e", "e-", "e+")):
            return QValidator.State.Intermediate, text, pos
        try:
            v = float(text)
        except ValueError:
            return QValidator.State.Invalid, text, pos
        ok = self.minimum() <= v <= self.maximum()
        return (QValidator.State.Acceptable if ok else QValidator.State.Intermediate), text, pos

    def stepBy(self, steps: int) -> None:  # noqa: N802 - Qt API
        v = self.value()
        exp = math.floor(math.log10(v))
        ladder = sorted(m * 10**e for e in range(exp - 2, exp + 3) for m in self.LADDER)
        i = min(range(len(ladder)), key=lambda k: abs(ladder[k] - v))
        i = max(0, min(len(ladder) - 1, i + steps))
        self.setValue(ladder[i])
