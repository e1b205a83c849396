"""Background jobs for the app: a plain callable runs on a thread pool, and its result, its
exception or its progress comes back to callbacks on the GUI thread.

    self.jobs = Jobs(self)  # one per widget; one thread keeps its jobs in order
    self.jobs.submit(predict, model_dir, text, on_done=self._show, on_error=self._fail)

Only the answer of the latest request is delivered: a newer ``submit`` (with ``latest_only``, the
default), ``cancel()`` or ``shutdown()`` makes earlier jobs stale; their results are dropped and
their cancel tokens set. An error goes to ``on_error``, or, without one, to the log with its
traceback: never lost. A callable that reports progress or checks for cancelling is submitted with
``state=True`` and takes a :class:`JobState` as its first argument.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, Signal, Slot

from ..core.cancel import CancelToken
from ..core.errors import Cancelled, WorkbenchError

log = logging.getLogger(__name__)


def describe(error: BaseException) -> str:
    """One line for the user: the engine's own messages as they are, anything else with its type."""
    return str(error) if isinstance(error, WorkbenchError) else f"{type(error).__name__}: {error}"


class Job:
    """One submitted call: its callbacks, the generation it belongs to and its cancel token."""

    def __init__(self, generation: int, name: str, on_done, on_error, on_progress) -> None:
        self.generation = generation
        self.name = name
        self.on_done, self.on_error, self.on_progress = on_done, on_error, on_progress
        self.started = False  # set by the worker; a job never started was dropped by ``shutdown``
        self.token = CancelToken()  # set when the job goes stale; core functions take it as ``cancel=``

    def cancel(self) -> None:
        self.token.cancel()

    @property
    def cancelled(self) -> bool:
        return self.token.cancelled


class JobState:
    """What a running callable may use: report progress, and see whether it is still wanted."""

    def __init__(self, job: Job, signals: "_Signals") -> None:
        self._job, self._signals = job, signals

    @property
    def token(self) -> CancelToken:
        return self._job.token

    @property
    def cancelled(self) -> bool:
        return self._job.cancelled

    def raise_if_cancelled(self) -> None:
        self._job.token.raise_if_cancelled()

    def progress(self, value: Any) -> None:
        """Hand ``value`` to ``on_progress`` on the GUI thread (meant for a few updates, not one per item)."""
        if not self._job.cancelled:
            self._signals.progress.emit(self._job, value)


class _Signals(QObject):
    # Emitted on worker threads; the receiver lives on the GUI thread, so delivery is queued.
    finished = Signal(object, bool, object)  # job, ok, result or exception
    progress = Signal(object, object)  # job, value


class _Runner(QRunnable):
    def __init__(self, job: Job, call: Callable[[], Any], signals: _Signals) -> None:
        super().__init__()
        # The runner holds the signals object too: it outlives a Jobs destroyed mid-job, and the
        # emit below then goes nowhere instead of touching a deleted object.
        self.job, self.call, self.signals = job, call, signals

    def run(self) -> None:
        self.job.started = True
        try:
            result = self.call()
        except Exception as e:  # delivered to on_error or logged, never dropped here
            self.signals.finished.emit(self.job, False, e)
        else:
            self.signals.finished.emit(self.job, True, result)


class Jobs(QObject):
    """A thread pool whose jobs answer on the GUI thread. Create it on the GUI thread."""

    def __init__(self, parent: QObject | None = None, threads: int = 1, latest_only: bool = True) -> None:
        super().__init__(parent)
        self.latest_only = latest_only
        self._generation = 0
        self._running: set[Job] = set()  # submitted, answer not yet handled (GUI thread only)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(threads)
        self._signals = _Signals()  # no Qt parent: kept alive by this object and by every runner
        self._signals.finished.connect(self._on_finished, Qt.ConnectionType.QueuedConnection)
        self._signals.progress.connect(self._on_progress, Qt.ConnectionType.QueuedConnection)

    def submit(self, fn: Callable[..., Any], /, *args, on_done: Callable[[Any], None] | None = None,
               on_error: Callable[[Exception], None] | None = None,
               on_progress: Callable[[Any], None] | None = None, state: bool = False, **kwargs) -> Job:
        """Run ``fn(*args, **kwargs)`` (``fn(job_state, *args, **kwargs)`` with ``state``) on the pool."""
        if self.latest_only:
            self.cancel()
        job = Job(self._generation, getattr(fn, "__qualname__", repr(fn)), on_done, on_error, on_progress)
        if state:
            job_state = JobState(job, self._signals)

            def call():
                return fn(job_state, *args, **kwargs)
        else:
            def call():
                return fn(*args, **kwargs)
        self._running.add(job)
        self._pool.start(_Runner(job, call, self._signals))
        return job

    def cancel(self) -> None:
        """Make every job submitted so far stale: its answer is dropped, its token set."""
        self._generation += 1
        for job in self._running:
            job.cancel()

    @property
    def busy(self) -> bool:
        """Whether some job's answer (current or stale) has not come back yet."""
        return bool(self._running)

    def is_current(self, job: Job) -> bool:
        return job.generation == self._generation

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        """Cancel, drop jobs not started yet and wait for the running ones; False if some still run."""
        self.cancel()
        self._pool.clear()
        finished = self._pool.waitForDone(timeout_ms)
        self._running = {job for job in self._running if job.started}  # the rest will never answer
        return finished

    @Slot(object, bool, object)
    def _on_finished(self, job: Job, ok: bool, payload: Any) -> None:
        self._running.discard(job)
        if not self.is_current(job):
            if not ok and not isinstance(payload, Cancelled):  # nobody waits for it, but it is not lost
                log.info("A superseded background job (%s) failed: %s", job.name, describe(payload),
                         exc_info=(type(payload), payload, payload.__traceback__))
            return
        if ok:
            if job.on_done is not None:
                job.on_done(payload)
        elif job.on_error is not None:
            job.on_error(payload)
        else:
            log.error("Background job %s failed: %s", job.name, describe(payload),
                      exc_info=(type(payload), payload, payload.__traceback__))

    @Slot(object, object)
    def _on_progress(self, job: Job, value: Any) -> None:
        if self.is_current(job) and job.on_progress is not None:
            job.on_progress(value)
