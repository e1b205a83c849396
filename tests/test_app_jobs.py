"""The app's background-job helper, its model cache and the warm-up gate of its jobs."""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before Qt is imported

import pytest  # noqa: E402

pytest.importorskip("pytestqt")

pytestmark = [pytest.mark.qt_log_level_fail("WARNING"), pytest.mark.timeout(120)]


@pytest.fixture()
def jobs(qtbot):
    from PySide6.QtWidgets import QWidget

    from workbench.app.jobs import Jobs

    owner = QWidget()
    qtbot.addWidget(owner)
    j = Jobs(owner)
    yield j
    j.shutdown(5000)


# ---------------------------------------------------------------------------- jobs


def test_results_and_errors_reach_gui_thread_callbacks(qtbot, jobs):
    got: list[tuple[str, object, threading.Thread]] = []
    ran_on: list[threading.Thread] = []

    def work(x):
        ran_on.append(threading.current_thread())
        if x < 0:
            raise ValueError("negative")
        return x * 2

    jobs.submit(work, 21, on_done=lambda r: got.append(("done", r, threading.current_thread())))
    qtbot.waitUntil(lambda: len(got) == 1, timeout=5000)
    jobs.submit(work, -1, on_error=lambda e: got.append(("error", e, threading.current_thread())))
    qtbot.waitUntil(lambda: len(got) == 2, timeout=5000)

    assert got[0][:2] == ("done", 42)
    assert got[1][0] == "error" and isinstance(got[1][1], ValueError) and str(got[1][1]) == "negative"
    assert all(t is threading.main_thread() for *_, t in got)  # callbacks on the GUI thread
    assert all(t is not threading.main_thread() for t in ran_on)  # the work elsewhere
    assert not jobs.busy


def test_a_newer_request_drops_the_answer_of_an_older_one(qtbot, jobs):
    release = threading.Event()
    got: list[str] = []

    def slow(name):
        release.wait(5)
        return name

    first = jobs.submit(slow, "first", on_done=got.append)
    second = jobs.submit(slow, "second", on_done=got.append)  # supersedes the first
    assert first.cancelled and not second.cancelled  # the first may stop early if it checks
    release.set()
    qtbot.waitUntil(lambda: not jobs.busy, timeout=5000)
    assert got == ["second"]

    # cancel() drops everything in flight, e.g. when the view switches to another model.
    release.clear()
    jobs.submit(slow, "third", on_done=got.append)
    jobs.cancel()
    release.set()
    qtbot.waitUntil(lambda: not jobs.busy, timeout=5000)
    assert got == ["second"]


def test_errors_without_a_callback_are_logged_never_lost(qtbot, jobs, caplog):
    def broken():
        raise RuntimeError("disk on fire")

    with caplog.at_level(logging.INFO, logger="workbench.app.jobs"):
        jobs.submit(broken)
        qtbot.waitUntil(lambda: not jobs.busy, timeout=5000)
    record = next(r for r in caplog.records if "disk on fire" in r.getMessage())
    assert record.levelno == logging.ERROR and record.exc_info[0] is RuntimeError


def test_progress_arrives_in_order_and_cancel_reaches_the_job(qtbot, jobs):
    seen: list[int] = []
    stopped = threading.Event()

    def counting(state, n):
        for i in range(n):
            state.progress(i)
        while not state.cancelled:  # a long computation checking its token
            time.sleep(0.01)
        stopped.set()
        state.raise_if_cancelled()

    job = jobs.submit(counting, 3, state=True, on_progress=seen.append,
                      on_done=lambda r: pytest.fail("a cancelled job has no answer"))
    qtbot.waitUntil(lambda: seen == [0, 1, 2], timeout=5000)
    assert not job.cancelled
    jobs.cancel()
    assert stopped.wait(5)
    qtbot.waitUntil(lambda: not jobs.busy, timeout=5000)  # its Cancelled is expected: not logged, not shown


def test_threads_for_independent_jobs_and_shutdown_waits(qtbot):
    from workbench.app.jobs import Jobs

    pool = Jobs(None, threads=2, latest_only=False)  # e.g. thumbnails: every answer wanted
    both = threading.Barrier(2, timeout=5)
    got: list[int] = []
    for i in range(2):
        pool.submit(lambda i=i: (both.wait(), i)[1], on_done=got.append)  # needs two threads at once
    qtbot.waitUntil(lambda: sorted(got) == [0, 1], timeout=5000)

    running, finished = threading.Event(), threading.Event()
    pool.submit(lambda: (running.set(), time.sleep(0.3), finished.set()))
    pool.submit(time.sleep, 0.5)  # holds the second thread, so the next job stays queued
    queued = pool.submit(finished.clear)
    assert running.wait(5)
    assert pool.shutdown(5000) and finished.is_set()  # waited for the running job, dropped the queued one
    assert not queued.started
    qtbot.waitUntil(lambda: not pool.busy, timeout=5000)  # the stale answers came back, the dropped job is forgotten


# ---------------------------------------------------------------------------- model cache


def _model_folder(tmp_path, name="model"):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights")
    return folder


def test_cache_loads_a_model_once_for_repeated_and_concurrent_requests(tmp_path):
    from workbench.app.model_cache import ModelCache

    cache = ModelCache(capacity=2)
    folder = _model_folder(tmp_path)
    loads: list[str] = []

    def load(path):
        loads.append(str(path))
        time.sleep(0.2)  # long enough for the other threads to ask meanwhile
        return object()

    with ThreadPoolExecutor(4) as pool:
        models = list(pool.map(lambda _: cache.get("kind", folder, load), range(4)))
    assert len(loads) == 1 and cache.loads == 1
    assert all(m is models[0] for m in models)
    for _ in range(3):  # repeated predictions
        assert cache.get("kind", folder, load) is models[0]
    assert len(loads) == 1 and cache.holds("kind", folder)

    # Another kind from the same folder is another model; the least recently used goes first.
    cache.get("other", folder, load)
    cache.get("kind", folder, load)
    cache.get("third", _model_folder(tmp_path, "b"), load)
    assert cache.holds("kind", folder) and not cache.holds("other", folder) and len(loads) == 3


def test_cache_reloads_a_retrained_folder_and_never_keeps_a_failed_load(tmp_path):
    from workbench.app.model_cache import ModelCache

    cache = ModelCache()
    folder = _model_folder(tmp_path)
    first = cache.get("kind", folder, lambda p: ["first"])
    later = time.time() + 5
    os.utime(folder / "model.safetensors", (later, later))  # trained again
    assert not cache.holds("kind", folder)
    assert cache.get("kind", folder, lambda p: ["second"]) == ["second"] != first

    attempts = []

    def broken(path):
        attempts.append(path)
        raise OSError("no weights")

    for _ in range(2):
        with pytest.raises(OSError, match="no weights"):
            cache.get("broken", folder, broken)
    assert len(attempts) == 2 and not cache.holds("broken", folder)


# ---------------------------------------------------------------------------- warm-up gate


def _two_jobs(first_seconds: float) -> float:
    """Start a slow serialized job, then a quick one; the seconds the quick one took to finish."""
    from workbench.app import warmup

    started = threading.Event()

    def slow():
        started.set()
        time.sleep(first_seconds)

    quick = warmup.serialized(lambda: None)
    with ThreadPoolExecutor(2) as pool:
        pool.submit(warmup.serialized(slow))
        assert started.wait(5)
        t0 = time.perf_counter()
        pool.submit(quick).result(10)
        return time.perf_counter() - t0


def test_a_slow_serialized_job_does_not_block_another_once_the_warm_up_is_done(monkeypatch):
    from workbench.app import warmup

    finished = threading.Event()
    finished.set()
    monkeypatch.setattr(warmup, "_thread", threading.Thread(target=lambda: None))  # a warm-up that ran
    monkeypatch.setattr(warmup, "done", finished)
    assert _two_jobs(1.0) < 0.5


def test_without_a_warm_up_serialized_jobs_take_turns(monkeypatch):
    from workbench.app import warmup

    monkeypatch.setattr(warmup, "_thread", None)  # WORKBENCH_WARMUP=0, or not started yet
    assert _two_jobs(0.5) >= 0.4
    # A serialized call inside a serialized job runs at once (the lock is its own).
    assert warmup.serialized(lambda: warmup.serialized(lambda: 7)())() == 7


def test_serialized_jobs_wait_for_a_running_warm_up(monkeypatch):
    from workbench.app import warmup

    importing = threading.Event()
    monkeypatch.setattr(warmup, "_thread", threading.Thread(target=lambda: None))
    monkeypatch.setattr(warmup, "done", importing)
    ran = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        pool.submit(warmup.serialized(ran.set))
        assert not ran.wait(0.3)  # the warm-up is still importing
        importing.set()
        assert ran.wait(5)
