"""The engine's log (``workbench`` loggers: plug-in warnings, fallbacks, what a run resolved) in the
app: records from any thread become a signal on the GUI thread, and the Train page's log shows them.
Records that arrive before that page exists are kept and shown when it is built."""

from __future__ import annotations

import logging
from collections import deque

import shiboken6
from PySide6.QtCore import QObject, Signal

from .wording import in_app_words

KEPT = 200


class _Handler(logging.Handler):
    def __init__(self, relay: "LogRelay") -> None:
        super().__init__(logging.INFO)
        self.relay = relay

    def emit(self, record: logging.LogRecord) -> None:
        if not shiboken6.isValid(self.relay):  # its window is gone (tests make many)
            logging.getLogger("workbench").removeHandler(self)
            return
        try:
            text = in_app_words(record.getMessage())  # the engine's log names the CLI's flags; the app its controls
            if record.levelno >= logging.WARNING:
                text = f"⚠ {text}"
            self.relay.recent.append((text, record.created))
            self.relay.record.emit(text, record.created)  # queued to the GUI thread when from a worker
        except Exception:  # logging must never break a run
            self.handleError(record)


class LogRelay(QObject):
    record = Signal(str, float)  # the message, and when (epoch seconds)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.recent: deque[tuple[str, float]] = deque(maxlen=KEPT)
        self.handler = _Handler(self)
        self._logger = logging.getLogger("workbench")

    def install(self) -> None:
        self._logger.addHandler(self.handler)
        if self._logger.level == logging.NOTSET or self._logger.level > logging.INFO:
            self._logger.setLevel(logging.INFO)

    def uninstall(self) -> None:
        self._logger.removeHandler(self.handler)
