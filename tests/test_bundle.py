"""The self-contained bundle: `python packaging/build.py` builds dist/workbench/ with PyInstaller and
smoke-tests it (the bundled CLI trains offline and exports, the bundled app paints a window and quits).
Building takes many minutes, so it runs only with WORKBENCH_BUILD_BUNDLE=1:

    WORKBENCH_BUILD_BUNDLE=1 python -m pytest -q tests/test_bundle.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(3600),
    pytest.mark.skipif(os.environ.get("WORKBENCH_BUILD_BUNDLE") != "1",
                       reason="builds the PyInstaller bundle (many minutes); set WORKBENCH_BUILD_BUNDLE=1"),
]


def test_build_script_builds_a_bundle_that_passes_its_smoke_test(tmp_path):
    pytest.importorskip("PyInstaller", reason='pip install -e ".[bundle]"')
    figures_file = tmp_path / "figures.json"
    # The build's own smoke test fails the script (non-zero exit) when any step of it fails.
    subprocess.run([sys.executable, str(ROOT / "packaging" / "build.py"), "--json", str(figures_file)],
                   check=True, cwd=ROOT, timeout=3500)
    figures = json.loads(figures_file.read_text())
    bundle = ROOT / "dist" / "workbench"
    assert (bundle / ("workbench.exe" if sys.platform == "win32" else "workbench")).is_file()
    assert figures["bundle_first_paint_s"] > 0 and figures["bundle_version_s"] > 0
    assert Path(figures["archive"]).is_file() and figures["archive_bytes"] > 0
    if sys.platform.startswith("linux"):
        assert (bundle / "install-desktop-entry.sh").is_file()
