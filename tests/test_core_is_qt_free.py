"""The engine must never pull in Qt: the CLI, the tests and the app share it (checked in a fresh
interpreter, since pytest-qt imports Qt into this one)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_importing_the_engine_imports_no_qt():
    code = (
        "import sys, pkgutil, importlib, workbench.core as c\n"
        "for m in pkgutil.walk_packages(c.__path__, 'workbench.core.'):\n"
        "    importlib.import_module(m.name)\n"
        "import workbench.cli.main, workbench.cli.progress\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph', 'qasync', 'PyQt5', 'PyQt6'))\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stdout + p.stderr
