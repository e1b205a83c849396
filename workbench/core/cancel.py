"""A thread-safe cancel token checked by every long loop in the engine (reading, tokenizing,
training, evaluating), not only between training steps."""

from __future__ import annotations

import threading

from .errors import Cancelled


class CancelToken:
    """Cancel stops a run at the next check; pause asks the training loop to write a checkpoint at
    the end of the current optimizer step (the first one, when asked before training) and stop."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._pause = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    def pause(self) -> None:
        self._pause.set()

    @property
    def pause_requested(self) -> bool:
        return self._pause.is_set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled()


NEVER = CancelToken()  # a token nobody cancels, for callers that do not care
