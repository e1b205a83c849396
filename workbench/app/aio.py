"""Small asyncio (qasync) helpers for sequential UI flows: await work on a thread, then update widgets.

The event loop is qasync's, so coroutines run on the GUI thread between Qt events; only the
function handed to ``in_thread`` runs elsewhere.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from concurrent.futures import Executor
from typing import Any, Awaitable, Callable

_tasks: set[asyncio.Task] = set()  # strong references: the loop keeps only weak ones


def spawn(coro: Awaitable[Any]) -> asyncio.Task:
    """Run ``coro`` on the GUI event loop; an exception nobody handled goes to ``sys.excepthook``."""
    task = asyncio.get_event_loop().create_task(coro)
    _tasks.add(task)
    task.add_done_callback(_done)
    return task


def _done(task: asyncio.Task) -> None:
    _tasks.discard(task)
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        sys.excepthook(type(exc), exc, exc.__traceback__)


async def in_thread(executor: Executor | None, fn: Callable[..., Any], /, *args, **kwargs) -> Any:
    loop = asyncio.get_event_loop()  # the running qasync loop (or, before it runs, the one set for it)
    return await loop.run_in_executor(executor, functools.partial(fn, *args, **kwargs))


def threadsafe(fn: Callable[..., Any]) -> Callable[..., None]:
    """A callable for worker threads that runs ``fn`` on the GUI loop. Create it on the GUI thread."""
    loop = asyncio.get_event_loop()

    def call(*args) -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(fn, *args)

    return call
