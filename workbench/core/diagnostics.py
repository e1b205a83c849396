"""What a bug report needs to know about this installation: versions, platform, devices, where runs go.

Shown by Help > About (with a "Copy diagnostics" button) and printed by ``workbench --diagnostics``.
Versions of the Qt binding are read from package metadata, so this module imports no Qt.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata


def _version(*distributions: str) -> str | None:
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _module_version(module: str) -> str | None:
    """The version a module reports (a frozen bundle may have no package metadata)."""
    try:
        return getattr(__import__(module), "__version__", None)
    except Exception:  # a broken install is itself a diagnosis: reported as missing
        return None


def diagnostics() -> dict[str, object]:
    """Plain values, for a dialog, the terminal or JSON. Imports torch (a second or so the first time)."""
    from .. import __version__
    from .home import runs_home

    info: dict[str, object] = {
        "workbench": __version__,
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "os": platform.platform(),
        "machine": platform.machine(),
        "bundle": bool(getattr(sys, "frozen", False)),
        "torch": _module_version("torch"),
        "transformers": _module_version("transformers"),
        "PySide6": _version("PySide6-Essentials", "PySide6") or _module_version("PySide6"),
        "onnxruntime": _version("onnxruntime", "onnxruntime-gpu"),
        "datasets": _version("datasets"),
    }
    try:
        import torch

        info["torch_cuda"] = torch.version.cuda or "none (CPU build)"
        from .device import available_devices

        info["devices"] = [d.description if d.name == "cpu" else f"{d.name}: {d.description}"
                           for d in available_devices()]
    except Exception as e:  # torch missing or broken: still a useful report
        info["devices"] = [f"unknown ({type(e).__name__}: {e})"]
    info["runs_home"] = str(runs_home())
    info["offline"] = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    return info


def diagnostics_text(info: dict[str, object] | None = None) -> str:
    """One ``key: value`` line each, devices joined: ready to paste into a bug report."""
    info = diagnostics() if info is None else info
    lines = []
    for key, value in info.items():
        if isinstance(value, list):
            value = "; ".join(map(str, value))
        lines.append(f"{key}: {value if value is not None else 'not installed'}")
    return "\n".join(lines)
