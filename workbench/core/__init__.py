"""The Qt-free engine: data, tasks, training, evaluation and export.

Nothing under this package may import PySide6, pyqtgraph or qasync; the CLI, the tests and the
desktop app all share it. ``tests/test_core_is_qt_free.py`` enforces that.
"""
