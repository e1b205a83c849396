"""Runs the engine on one background QThread per run and brings its events to the GUI thread.

The engine (``workbench.core.run.pipeline.run_training``) is Qt-free and reports through plain callbacks on
its own thread. Here those callbacks only append to a thread-safe queue; a GUI-thread QTimer drains
it about ten times a second into ONE ``events`` signal carrying the whole batch. The worker never
emits a signal of its own: the only cross-thread signal is ``QThread.finished``, which Qt queues
to the controller's (GUI) thread. So nothing runs GUI code off the GUI thread, and a fast run
cannot flood the event loop with one signal per step.

A run on several GPUs (TrainConfig.num_processes > 1) is not a thread: it is a child process group
(app/child_run.py) whose run directory the same timer reads, so the Train page sees the same events.
"""

from __future__ import annotations

import copy
import os
import queue
import signal
import sys
import threading
import traceback
from pathlib import Path

from PySide6.QtCore import QDeadlineTimer, QObject, QThread, QTimer, Signal, Slot

from ..core.cancel import CancelToken
from ..core.config import RunConfig
from ..core.errors import Cancelled, InputError, Paused, WorkbenchError
from ..core.events import Callbacks, Event

DRAIN_INTERVAL_MS = 100  # ~10 GUI updates a second, whatever the step rate
# Niceness added to the training thread (and the torch threads it starts): on a busy machine the
# scheduler serves the GUI thread first, so the window stays responsive. WORKBENCH_TRAIN_NICE=0: off.
TRAIN_NICE = int(os.environ.get("WORKBENCH_TRAIN_NICE", "5"))
# While the engine runs Python code (reading, tokenizing, the training loop), the GUI thread waits
# for the GIL up to one switch interval each time it needs it, and painting needs it hundreds of
# times a frame. 1 ms instead of 5 ms roughly halves paint times during a run (measured on the
# Train page: 46-64 ms -> 20-42 ms); the engine's heavy work is in torch, which releases the GIL.
GIL_SWITCH_INTERVAL_S = 0.001


class _QueueCallbacks(Callbacks):
    """Engine-side callbacks: append and return at once (runs on the worker thread)."""

    def __init__(self, q: queue.SimpleQueue) -> None:
        self.q = q

    def on_event(self, event: Event) -> None:
        self.q.put(event)


class _EngineThread(QThread):
    def __init__(self, config: RunConfig, events: queue.SimpleQueue, cancel: CancelToken, parent: QObject,
                 resume_dir: str | None = None, adapt: RunConfig | None = None) -> None:
        super().__init__(parent)
        self.config = config
        self.adapt = adapt  # adapt the backbone with this run first (two stages)
        self.events = events
        self.cancel = cancel
        self.resume_dir = resume_dir  # go on with this run from its checkpoint instead of starting one
        self.outcome = "failed"
        self.result = None
        self.error: tuple[str, str] = ("", "")

    def run(self) -> None:  # on the worker thread: no Qt objects touched here
        _lower_priority(TRAIN_NICE)
        try:
            from . import warmup

            warmup.wait()  # it imports what the run needs; importing alongside it is racy
            from ..core.run.pipeline import resume_training, run_training

            _select_cuda_device(self.config.train.device)
            callbacks = _QueueCallbacks(self.events)
            if self.resume_dir:
                self.result = resume_training(self.resume_dir, callbacks, self.cancel)
            elif self.adapt is not None:
                from ..core.adaptation.adapt import adapt_then_train

                self.result = adapt_then_train(self.adapt, self.config, callbacks, self.cancel)
            else:
                self.result = run_training(self.config, callbacks, self.cancel)
            self.outcome = "finished"
        except Paused as e:  # a checkpoint is written: Resume goes on from it
            self.outcome = "paused"
            self.error = (str(e), "")
        except (Cancelled, KeyboardInterrupt):
            self.outcome = "cancelled"
        except WorkbenchError as e:  # bad input: the message says it all
            self.outcome = "failed"
            self.error = (str(e), str(e))
        except BaseException as e:  # a bug or a library error: keep every detail
            self.outcome = "failed"
            self.error = (f"{type(e).__name__}: {e}", traceback.format_exc())


def _lower_priority(nice: int) -> None:
    # Linux keeps a nice value per thread, and threads started from this one inherit it (torch's
    # intra-op pool is started by the first parallel op, here). Elsewhere QThread's priority does it.
    if nice > 0 and hasattr(os, "setpriority") and sys.platform.startswith("linux"):
        tid = threading.get_native_id()
        try:
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
        except OSError:
            pass


def _select_cuda_device(device: str) -> None:
    # The current CUDA device is per thread: set it here, on the thread that trains.
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            torch.cuda.set_device(torch.device(device if ":" in device else "cuda:0"))


def new_run_dir(config: RunConfig, detected_task: str | None = None) -> str:
    """A fresh folder under the runs home (named as the engine names them), so the app knows where a
    run writes from its start; ``detected_task`` names the task a run of ``--task auto`` will train."""
    from ..core.run.directory import default_run_path

    task = config.task if config.task != "auto" else (detected_task or "run")
    return str(default_run_path(Path(config.data.train).stem, task))


class TrainingController(QObject):
    """Owns at most one running engine thread. ``start`` -> events... -> finished|failed|cancelled -> stopped."""

    started = Signal(str)  # the run directory
    events = Signal(list)  # a batch of event dicts (the metrics.jsonl form), at most ~10 batches a second
    cancelling = Signal()
    pausing = Signal()
    paused = Signal(str)  # what the run says: "paused at step 120 of 400"
    finished = Signal(object)  # workbench.core.run.pipeline.RunResult
    failed = Signal(str, str)  # message, details (a traceback for unexpected errors)
    cancelled = Signal()
    stopped = Signal(str)  # "finished" | "failed" | "cancelled" | "paused", after the signal of that name
    running_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL_S))
        if os.environ.get("WORKBENCH_ONNX_CHILD", "1") != "0":
            from ..core.export import onnx_export

            onnx_export.in_child_process = True  # the exporter holds the GIL for up to a second at a time
        self._thread: _EngineThread | None = None
        self._child = None  # a ChildRun: a run on several processes
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._cancel: CancelToken | None = None
        self.run_dir: str = ""
        self.resuming = False  # the current run goes on from a checkpoint (its earlier curve is in its folder)
        self._timer = QTimer(self)
        self._timer.setInterval(DRAIN_INTERVAL_MS)
        self._timer.timeout.connect(self._drain)

    @property
    def running(self) -> bool:
        return self._thread is not None or self._child is not None

    @property
    def can_pause(self) -> bool:
        """Pause writes a checkpoint at the end of a step: a run in this process, or a child process
        group on POSIX (the launcher passes SIGUSR1 on to rank 0)."""
        return self._child is None or hasattr(signal, "SIGUSR1")

    @property
    def is_cancelling(self) -> bool:
        return self._cancel is not None and self._cancel.cancelled

    def start(self, config: RunConfig, detected_task: str | None = None, adapt: RunConfig | None = None) -> str:
        """Start a run of a copy of ``config``; returns its run directory. With ``adapt`` (a masked-LM
        adaptation run), that run adapts the backbone first and ``config`` fine-tunes the result."""
        config = copy.deepcopy(config)  # the user may keep editing the original while this one trains
        if not config.run_dir:
            config.run_dir = new_run_dir(config, detected_task)
        if adapt is not None:
            adapt = copy.deepcopy(adapt)
            adapt.run_dir = adapt.run_dir or new_run_dir(adapt)
        return self._start(config, None, adapt)

    def resume(self, run_dir: str) -> str:
        """Go on with a paused, cancelled or crashed run from its last checkpoint. Raises InputError
        (with the reason) when it cannot: finished, still running, no checkpoint."""
        from ..core.run.pipeline import prepare_resume

        if self.running:
            raise RuntimeError("a run is already in progress")
        plan = prepare_resume(run_dir)  # quick; cuts metrics.jsonl back to the checkpoint
        return self._start(plan.config, str(plan.run_dir))

    def _start(self, config: RunConfig, resume_dir: str | None, adapt: RunConfig | None = None) -> str:
        if self.running:
            raise RuntimeError("a run is already in progress")
        if config.train.num_processes > 1:
            if adapt is not None:
                raise InputError("adapting the backbone first trains in one process: choose one device on the Model "
                                 "page, or adapt in a run of its own (workbench adapt)")
            return self._start_child(config, resume_dir)
        self.run_dir = resume_dir or config.run_dir
        self.resuming = resume_dir is not None
        self._queue = queue.SimpleQueue()
        self._cancel = CancelToken()
        thread = _EngineThread(config, self._queue, self._cancel, self, resume_dir, adapt)
        thread.finished.connect(self._on_thread_finished)
        self._thread = thread
        thread.start(QThread.Priority.LowPriority if TRAIN_NICE > 0 else QThread.Priority.InheritPriority)
        self._timer.start()
        self.running_changed.emit(True)
        self.started.emit(self.run_dir)
        return self.run_dir

    def _start_child(self, config: RunConfig, resume_dir: str | None) -> str:
        """A run on several processes: the launcher as a child process group, followed through the
        run directory (the GUI process never joins the process group)."""
        from .child_run import ChildRun

        self.run_dir = resume_dir or config.run_dir
        self.resuming = resume_dir is not None
        self._cancel = CancelToken()
        self._child = ChildRun(None if resume_dir else config, self.run_dir)
        self._timer.start()
        self.running_changed.emit(True)
        self.started.emit(self.run_dir)
        return self.run_dir

    @Slot()
    def cancel(self) -> None:
        if self._child is not None and self._cancel is not None and not self._cancel.cancelled:
            self._cancel.cancel()
            self._child.interrupt()
            self.cancelling.emit()
        if self._thread is not None and self._cancel is not None and not self._cancel.cancelled:
            self._cancel.cancel()
            self.cancelling.emit()

    @Slot()
    def pause(self) -> None:
        """Write a checkpoint at the end of the current step and stop; ``resume`` goes on from it."""
        if self._cancel is None or self._cancel.cancelled or self._cancel.pause_requested:
            return
        if self._child is not None and self.can_pause:
            self._cancel.pause()
            self._child.pause()
            self.pausing.emit()
        elif self._thread is not None:
            self._cancel.pause()
            self.pausing.emit()

    def shutdown(self, timeout: float | None = 10.0) -> bool:
        """Cancel any run and wait up to ``timeout`` seconds (None: as long as it takes) for it to stop.

        Returns True when no run is left. On False the run is still stopping and ``stopped`` follows.
        """
        if self._child is not None:
            self.cancel()
            if not self._child.wait(timeout):
                return False
            self._on_child_finished()
            return True
        thread = self._thread
        if thread is None:
            return True
        self.cancel()
        deadline = QDeadlineTimer(QDeadlineTimer.ForeverConstant.Forever) if timeout is None else QDeadlineTimer(int(timeout * 1000))
        if not thread.wait(deadline):
            return False
        self._on_thread_finished()  # do not wait for the queued signal: the caller may be closing
        return True

    # ---- GUI thread ---------------------------------------------------------------------------------
    @Slot()
    def _drain(self) -> None:
        if self._child is not None:
            events = self._child.new_events()
            if events:
                self.events.emit(events)
            if self._child.poll() is not None:
                self._on_child_finished()
            return
        batch = []
        while True:
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                break
            batch.append(event.to_dict())
        if batch:
            self.events.emit(_coalesce_progress(batch))

    @Slot()
    def _on_thread_finished(self) -> None:
        thread = self._thread
        if thread is None or thread.isRunning():
            return  # already handled (shutdown), or a stale signal
        self._timer.stop()
        self._drain()
        self._thread = None
        thread.wait()
        thread.deleteLater()
        outcome = thread.outcome
        if outcome == "finished":
            self.finished.emit(thread.result)
        elif outcome == "cancelled":
            self.cancelled.emit()
        elif outcome == "paused":
            self.paused.emit(thread.error[0])
        else:
            self.failed.emit(*thread.error)
        self._cancel = None
        self.running_changed.emit(False)
        self.stopped.emit(outcome)


    def _on_child_finished(self) -> None:
        child = self._child
        if child is None:
            return
        self._timer.stop()
        events = child.new_events()
        if events:
            self.events.emit(events)
        self._child = None
        outcome, message, details = child.outcome()
        child.close()
        if outcome == "finished":
            from ..core.run.pipeline import result_from_run_dir

            self.finished.emit(result_from_run_dir(child.run_dir))
        elif outcome == "cancelled":
            self.cancelled.emit()
        elif outcome == "paused":
            self.paused.emit(message)
        else:
            self.failed.emit(message, details)
        self._cancel = None
        self.running_changed.emit(False)
        self.stopped.emit(outcome)


def _coalesce_progress(batch: list[dict]) -> list[dict]:
    """Only the latest Progress of a run of Progress events matters to a display."""
    out: list[dict] = []
    for d in batch:
        if d.get("event") == "Progress" and out and out[-1].get("event") == "Progress" and out[-1].get("phase") == d.get("phase"):
            out[-1] = d
        else:
            out.append(d)
    return out
