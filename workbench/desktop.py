"""Linux desktop integration: `workbench --install-desktop-entry` and `--uninstall-desktop-entry`.

Installs, for the current user under $XDG_DATA_HOME (default ~/.local/share):

    applications/APP_ID.desktop          the menu entry; Exec is this installation's own launcher
    metainfo/APP_ID.metainfo.xml         AppStream metadata (software centres)
    icons/hicolor/NxN/apps/APP_ID.png    the icon in each hicolor size, and scalable/apps/APP_ID.svg
    mime/packages/APP_ID.xml             text/x-conll (*.conll, *.conllu) and *.wbrun packed runs

then refreshes the desktop, MIME and icon caches with update-desktop-database, update-mime-database and
gtk-update-icon-cache where they are installed. TSV, CSV, CoNLL files, folders and packed runs can then
be opened with Workbench from the file manager. Uninstalling removes exactly these files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .core.atomic import write_bytes_atomic
from .resources import ICON_SIZES, RESOURCES

APP_ID = "io.github.workbench.Workbench"
LINUX = RESOURCES / "linux"


def data_home() -> Path:
    value = os.environ.get("XDG_DATA_HOME", "")
    # The spec: a relative path is invalid and is ignored.
    return Path(value) if value and os.path.isabs(value) else Path.home() / ".local" / "share"


def launcher() -> list[str]:
    """The command that starts this installation: the bundle's executable, the `workbench` script
    that is running, or this Python with ``-m workbench``."""
    if getattr(sys, "frozen", False):
        return [str(Path(sys.executable).resolve())]
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is not None and script.name == "workbench" and script.is_file():
        return [str(script.resolve())]
    found = shutil.which("workbench")
    if found and Path(found).resolve().parent == Path(sys.executable).resolve().parent:
        return [str(Path(found).resolve())]  # this environment's script, not another install's
    return [str(Path(sys.executable).resolve()), "-m", "workbench"]


def _exec_quote(arg: str) -> str:
    """Quote one argument of a desktop entry's Exec key (Desktop Entry Specification, "The Exec key")."""
    if arg and not any(c in arg for c in ' \t\n"\'\\><~|&;$*?#()`'):
        return arg.replace("%", "%%")
    escaped = "".join("\\" + c if c in '"`$\\' else c for c in arg).replace("%", "%%")
    return f'"{escaped}"'


def _entry_text(command: list[str]) -> str:
    """The packaged .desktop entry with Exec and TryExec pointing at ``command``."""
    exec_line = " ".join(_exec_quote(a) for a in command) + " %f"
    out = []
    for line in (LINUX / f"{APP_ID}.desktop").read_text(encoding="utf-8").splitlines():
        if line.startswith("Exec="):
            line = f"Exec={exec_line}"
        elif line.startswith("TryExec="):
            line = f"TryExec={command[0]}"
        out.append(line)
    return "\n".join(out) + "\n"


def installed_files(home: Path | None = None) -> list[Path]:
    """Every file the installation writes, in the order it writes them."""
    home = data_home() if home is None else home
    hicolor = home / "icons" / "hicolor"
    return [
        *(hicolor / f"{n}x{n}" / "apps" / f"{APP_ID}.png" for n in ICON_SIZES),
        hicolor / "scalable" / "apps" / f"{APP_ID}.svg",
        home / "mime" / "packages" / f"{APP_ID}.xml",
        home / "metainfo" / f"{APP_ID}.metainfo.xml",
        home / "applications" / f"{APP_ID}.desktop",  # last: the entry appears once its icon is there
    ]


def _sources() -> list[Path]:
    return [
        *(RESOURCES / f"workbench-{n}.png" for n in ICON_SIZES),
        RESOURCES / "workbench.svg",
        LINUX / f"{APP_ID}.mime.xml",
        LINUX / f"{APP_ID}.metainfo.xml",
        LINUX / f"{APP_ID}.desktop",
    ]


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, data)


def _refresh_caches(home: Path) -> list[str]:
    """Run the cache tools that are installed; returns the ones that ran."""
    ran = []
    tools = (
        ("update-desktop-database", ["-q", str(home / "applications")]),
        ("update-mime-database", [str(home / "mime")]),
        ("gtk-update-icon-cache", ["-q", "-t", "-f", str(home / "icons" / "hicolor")]),
    )
    for tool, args in tools:
        exe = shutil.which(tool)
        if exe is None:
            continue
        try:
            subprocess.run([exe, *args], check=False, capture_output=True, timeout=60)
            ran.append(tool)
        except (OSError, subprocess.SubprocessError):
            pass  # a stale cache only delays the menu entry; the files are in place
    return ran


def install(home: Path | None = None, command: list[str] | None = None) -> tuple[list[Path], list[str]]:
    """Write the entry, metainfo, icons and MIME types; returns (files written, cache tools run)."""
    from .core.errors import InputError, write_failure

    home = data_home() if home is None else home
    command = command or launcher()
    written = []
    for source, target in zip(_sources(), installed_files(home)):
        if not source.is_file():
            raise InputError("is missing from this installation; reinstall Workbench", path=source)
        data = _entry_text(command).encode() if target.suffix == ".desktop" else source.read_bytes()
        try:
            _write_atomic(target, data)
        except OSError as e:
            raise (write_failure(e, target, permission_too=True) or e) from None
        written.append(target)
    return written, _refresh_caches(home)


def uninstall(home: Path | None = None) -> tuple[list[Path], list[str]]:
    """Remove what ``install`` wrote (and nothing else); returns (files removed, cache tools run)."""
    home = data_home() if home is None else home
    removed = []
    for path in reversed(installed_files(home)):
        if path.is_file() or path.is_symlink():
            path.unlink()
            removed.append(path)
    return removed, _refresh_caches(home) if removed else []


def run(uninstalling: bool) -> int:
    """The CLI flags: print what was done; exit 0, or 2 (bad install) / 3 (not writable) via the caller."""
    if not sys.platform.startswith("linux"):
        print("workbench: desktop entries are for Linux desktops; on Windows and macOS use the installer's "
              "shortcut or drag the app to Applications", file=sys.stderr)
        return 2
    home = data_home()
    if uninstalling:
        removed, ran = uninstall(home)
        print(f"removed {len(removed)} file(s) from {home}" if removed else f"no Workbench desktop entry in {home}")
    else:
        written, ran = install(home)
        print(f"installed the Workbench desktop entry, icons and file types in {home}")
        print(f"  {home / 'applications' / f'{APP_ID}.desktop'} runs: {' '.join(launcher())}")
    if ran:
        print(f"  refreshed: {', '.join(ran)}")
    return 0
