"""The desktop app (PySide6). It drives the same engine as the CLI, ``workbench.core.run.pipeline``.

Importing this package imports no Qt, torch or datasets: ``run_app`` pulls Qt in when called, and
the engine's heavy libraries load only after the window is on screen.
"""

from __future__ import annotations


def run_app(path: str | None = None) -> int:
    """Open the main window (with ``path``, a data file or folder, loaded) and run until it closes."""
    from .main import main

    return main(path)


__all__ = ["run_app"]
