"""Fixtures and helpers for the desktop-app tests (imported by tests/test_app_*.py).

The app runs headless (``QT_QPA_PLATFORM=offscreen``) and offline. Its asyncio flows need a qasync
loop; pytest-qt drives the Qt event loop itself (``qtbot.waitSignal``/``waitUntil``), so the loop is
created as "already running" on top of it.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

# Qt warnings fail the test; the offscreen platform's note about window size hints is not one of ours.
APP_MARKS = [
    pytest.mark.qt_log_level_fail("WARNING"),
    pytest.mark.qt_log_ignore(r"This plugin does not support", r"propagateSizeHints"),
]


@pytest.fixture(autouse=True)
def _hang_guard():
    # A hang prints every thread's stack instead of silently eating the CI job.
    faulthandler.dump_traceback_later(240, exit=False, file=sys.stderr)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture()
def aloop(qapp):
    import qasync

    loop = qasync.QEventLoop(qapp, already_running=True)
    asyncio.set_event_loop(loop)
    yield loop
    try:
        qapp.aboutToQuit.disconnect(loop._after_run_forever)
    except (RuntimeError, TypeError):
        pass
    loop._QEventLoop__is_running = False  # pytest-qt, not qasync, ran the Qt loop
    loop._after_run_forever()
    asyncio.events._set_running_loop(None)
    loop.close()
    asyncio.set_event_loop(None)


@pytest.fixture()
def window(qtbot, aloop, runs_home):
    from workbench.app.window import MainWindow

    w = MainWindow()
    qtbot.addWidget(w)
    with qtbot.waitSignal(w.pages_ready, timeout=20000):
        w.show()
    yield w
    from workbench.app import aio

    qtbot.waitUntil(lambda: not aio._tasks, timeout=30000)  # background flows of the test finish first
    import shiboken6

    if not shiboken6.isValid(w):  # the test closed and deleted it already (and waited for its run)
        return
    if w.isVisible():
        w.close()
    qtbot.waitUntil(lambda: not shiboken6.isValid(w) or not w.controller.running, timeout=30000)


def wait_task(qtbot, task, timeout: int = 30000):
    """Spin Qt until an asyncio task of the app is done; return its result (re-raising its error)."""
    qtbot.waitUntil(task.done, timeout=timeout)
    return task.result()


def drop_files(widget, *paths) -> None:
    """Drag ``paths`` onto ``widget`` and drop them, as a file manager would."""
    from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
    from PySide6.QtGui import QDragEnterEvent, QDropEvent
    from PySide6.QtWidgets import QApplication

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    pos = widget.rect().center()
    enter = QDragEnterEvent(pos, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, enter)
    assert enter.isAccepted(), "the window refused the drag"
    drop = QDropEvent(QPointF(pos), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, drop)
    assert drop.isAccepted(), "the window refused the drop"


def load(qtbot, window, path, target=None):
    """Drop ``path`` on ``target`` (default: the sidebar) and wait until the Data page has it."""
    drop_files(target or window.sidebar, path)
    wait_task(qtbot, window.data_page._task)
    return window.state.data


def use_tiny_model(qtbot, window, model_dir, **train) -> None:
    """Select the tiny fixture BERT through the Model page and set quick training settings."""
    wait_task(qtbot, window.model_page.use_backbone(str(model_dir)))
    t = window.state.config.train
    t.epochs, t.batch_size, t.max_length, t.lr = 1.0, 16, 32, 1e-3
    for k, v in train.items():
        setattr(t, k, v)
    window.model_page.sync_from_config()
    window.state.touch_config()


def shoot(window, name: str) -> None:
    """Screenshots of the window in both schemes when WORKBENCH_SHOTS names a folder."""
    folder = os.environ.get("WORKBENCH_SHOTS")
    if not folder:
        return
    from PySide6.QtWidgets import QApplication

    from workbench.app.look import apply_appearance

    app = QApplication.instance()
    Path(folder).mkdir(parents=True, exist_ok=True)
    window.resize(1280, 800)  # the smallest screen the app is laid out for
    try:
        for scheme in ("light", "dark"):
            apply_appearance(app, scheme)
            for _ in range(5):
                QApplication.processEvents()
            assert window.grab().save(str(Path(folder) / f"{name}-{scheme}.png"))
    finally:
        apply_appearance(app, "system")
        QApplication.processEvents()
