"""Linux desktop integration: `workbench --install-desktop-entry` writes a valid .desktop entry, AppStream
metainfo, hicolor icons and MIME types under $XDG_DATA_HOME, and `--uninstall-desktop-entry` removes
exactly those; the resources ship inside the wheel."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from workbench.cli.main import main
from workbench.desktop import APP_ID, LINUX, _entry_text, installed_files
from workbench.resources import ICON_SIZES

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux desktop integration")


@pytest.fixture()
def xdg(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "share"
    monkeypatch.setenv("XDG_DATA_HOME", str(home))
    return home


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", data[16:24])


def test_install_and_uninstall_the_desktop_entry(xdg, capsys):
    mine = xdg / "applications" / "someone-else.desktop"
    mine.parent.mkdir(parents=True)
    mine.write_text("[Desktop Entry]\nType=Application\nName=Other\nExec=other\n")

    assert main(["--install-desktop-entry"]) == 0
    assert str(xdg) in capsys.readouterr().out
    files = installed_files(xdg)
    assert all(p.is_file() for p in files)
    for n in ICON_SIZES:
        assert _png_size(xdg / "icons" / "hicolor" / f"{n}x{n}" / "apps" / f"{APP_ID}.png") == (n, n)
    entry = (xdg / "applications" / f"{APP_ID}.desktop").read_text()
    exec_line = next(line for line in entry.splitlines() if line.startswith("Exec="))
    assert exec_line.endswith(" %f") and Path(exec_line[5:].split()[0].strip('"')).is_absolute()
    assert f"Icon={APP_ID}" in entry
    mimes = next(line for line in entry.splitlines() if line.startswith("MimeType=")).split("=")[1].split(";")
    assert {"text/tab-separated-values", "text/csv", "text/x-conll", "inode/directory"} <= set(mimes)

    if shutil.which("update-mime-database"):  # the MIME database now knows CoNLL files and packed runs
        globs = (xdg / "mime" / "globs2").read_text()
        assert "text/x-conll:*.conllu" in globs and "application/x-workbench-run:*.wbrun" in globs
    if shutil.which("update-desktop-database"):  # and that Workbench opens them
        cache = (xdg / "applications" / "mimeinfo.cache").read_text()
        assert f"text/csv={APP_ID}.desktop" in cache and f"text/x-conll={APP_ID}.desktop" in cache

    assert main(["--install-desktop-entry"]) == 0  # again: replaces its own files, nothing else
    assert main(["--uninstall-desktop-entry"]) == 0
    assert not any(p.exists() for p in files)
    assert mine.is_file()  # someone else's entry is untouched
    if shutil.which("update-mime-database"):
        assert "x-conll" not in (xdg / "mime" / "globs2").read_text()
    assert main(["--uninstall-desktop-entry"]) == 0
    assert "no Workbench desktop entry" in capsys.readouterr().out


def test_exec_quotes_a_launcher_path_with_spaces():
    text = _entry_text(["/opt/my apps/workbench 100%/workbench"])
    assert 'Exec="/opt/my apps/workbench 100%%/workbench" %f' in text.splitlines()


@pytest.mark.skipif(shutil.which("desktop-file-validate") is None, reason="desktop-file-utils not installed")
def test_desktop_entry_passes_desktop_file_validate(xdg):
    assert main(["--install-desktop-entry"]) == 0
    for path in (LINUX / f"{APP_ID}.desktop", xdg / "applications" / f"{APP_ID}.desktop"):
        result = subprocess.run(["desktop-file-validate", str(path)], capture_output=True, text=True)
        assert result.returncode == 0 and "error" not in result.stdout, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("appstreamcli") is None, reason="appstream not installed")
def test_metainfo_passes_appstreamcli_validate():
    result = subprocess.run(["appstreamcli", "validate", "--no-net", str(LINUX / f"{APP_ID}.metainfo.xml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_the_wheel_ships_the_resources(tmp_path):
    root = Path(__file__).resolve().parents[1]
    build = tmp_path / "src"
    shutil.copytree(root, build, ignore=shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info",
                                                                "__pycache__", "tests", "benchmarks", "docs"))
    from importlib.metadata import PackageNotFoundError, version

    try:  # this environment's setuptools builds wheels by itself from 70.1 on; else pip fetches one
        local = tuple(int(x) for x in version("setuptools").split(".")[:2]) >= (70, 1)
    except (PackageNotFoundError, ValueError):
        local = False
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(build), "--no-deps", "-q", "-w", str(tmp_path / "wheel"),
                    *(["--no-build-isolation"] if local else [])], check=True, timeout=300)
    (wheel,) = (tmp_path / "wheel").glob("workbench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"workbench/resources/workbench-{n}.png" for n in ICON_SIZES} | {
        "workbench/resources/workbench.svg", f"workbench/resources/linux/{APP_ID}.desktop",
        f"workbench/resources/linux/{APP_ID}.metainfo.xml", f"workbench/resources/linux/{APP_ID}.mime.xml"}
    assert expected <= names, expected - names
