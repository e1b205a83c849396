"""Start the app: QApplication, style, icon, qasync event loop, main window.

Nothing here imports torch, transformers or datasets: they load on worker threads when a file is
opened or a run starts, after the window is on screen.

``WORKBENCH_STARTUP_PROBE=1`` prints one JSON line when the window has been painted for the first
time (wall-clock time and which heavy libraries were loaded by then) and quits; the startup
benchmark reads it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

HEAVY_MODULES = ("torch", "transformers", "datasets", "pyarrow", "pyqtgraph", "sklearn")


def _display_problem() -> str | None:
    if sys.platform.startswith("linux") and not os.environ.get("QT_QPA_PLATFORM"):
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            return ("workbench: no display found (DISPLAY and WAYLAND_DISPLAY are unset). Train headless with "
                    "`workbench train DATA`, or run the app under a display server, e.g. `xvfb-run workbench`.")
    return None


def main(path: str | None = None) -> int:
    problem = _display_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication
    from PySide6.QtWidgets import QApplication

    # Fractional scale factors (125%, 150%) as the desktop sets them, rather than rounded ones.
    QGuiApplication.setHighDpiScaleFactorRoundingPolicy(Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Workbench")
    app.setApplicationDisplayName("Workbench")
    app.setOrganizationName("Workbench")
    from ..desktop import APP_ID

    app.setDesktopFileName(APP_ID)  # the installed .desktop entry (workbench --install-desktop-entry)

    from .look import app_icon, apply_style

    apply_style(app)
    app.setWindowIcon(app_icon())

    import qasync

    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)

    from .window import MainWindow

    window = MainWindow(path)
    sys.excepthook = _excepthook_showing(window)
    if os.environ.get("WORKBENCH_STARTUP_PROBE"):
        window.first_painted.connect(lambda: _report_first_paint(app))
    window.show()
    try:
        with loop:
            loop.run_forever()  # returns when the last window has closed
    finally:
        # The window waited for its run on close; this catches any other way out (a signal, quit()).
        window.controller.shutdown(None)
    return 0


def _excepthook_showing(window):
    """Unexpected errors in a slot or a UI flow: printed, and shown in a dialog; the app carries on."""
    import traceback

    from PySide6.QtWidgets import QMessageBox

    def hook(kind, value, tb) -> None:
        details = "".join(traceback.format_exception(kind, value, tb))
        sys.__stderr__.write(details)
        box = QMessageBox(QMessageBox.Icon.Warning, "Unexpected error", f"{kind.__name__}: {value}",
                          QMessageBox.StandardButton.Ok, window)
        box.setInformativeText("The app carries on; the details below help to report it.")
        box.setDetailedText(details)
        box.open()

    return hook


def _report_first_paint(app) -> None:
    loaded = sorted(m for m in HEAVY_MODULES if m in sys.modules)
    print(json.dumps({"first_paint_time": time.time(), "heavy_modules_loaded": loaded}), flush=True)
    app.quit()
