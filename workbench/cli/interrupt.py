"""Ctrl+C for the commands that run one long computation (predict, label-issues, pack, unpack): it
cancels the computation through its CancelToken, so the command can say what was (not) written and
exit with status 130, instead of dying mid-file with a traceback."""

from __future__ import annotations

import signal
import sys
from contextlib import contextmanager
from typing import Callable, Iterator, Protocol

from ..core.cancel import CancelToken
from ..core.errors import Cancelled


class Interrupted(Exception):
    """A command cancelled by Ctrl+C; ``main`` exits with EXIT_INTERRUPTED (its message is printed)."""


class _Closing(Protocol):
    def close(self) -> None: ...


def cancel_once(cancel: CancelToken) -> Callable:
    """A SIGINT handler: Ctrl+C cancels."""
    return lambda signum, frame: cancel.cancel()


def cancel_then_stop(cancel: CancelToken) -> Callable:
    """A SIGINT handler: the first Ctrl+C cancels (and says so), a second one stops at once."""
    def on_sigint(signum, frame):
        if cancel.cancelled:
            raise KeyboardInterrupt
        cancel.cancel()
        print("\nCancelling... (Ctrl+C again to stop at once)", file=sys.stderr, flush=True)

    return on_sigint


@contextmanager
def cancelled_by_ctrl_c(progress: _Closing, message: str,
                        handler: Callable[[CancelToken], Callable] = cancel_once) -> Iterator[CancelToken]:
    """A CancelToken that Ctrl+C sets while the block runs. ``progress`` (a bar) is closed when the
    block ends; a cancelled block prints ``message`` and raises Interrupted."""
    cancel = CancelToken()
    previous = signal.signal(signal.SIGINT, handler(cancel))
    try:
        yield cancel
    except Cancelled:
        progress.close()
        print(message, file=sys.stderr)
        raise Interrupted from None
    finally:
        progress.close()
        signal.signal(signal.SIGINT, previous)
