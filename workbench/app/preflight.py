"""The preflight estimate for the Train page, measured in a child process.

A child process (``workbench train --config CONFIG --preflight``) because the estimate trains a
few real batches: in the app's own process they would hold the GIL against the GUI thread, and
the process's peak memory would be the app's, not the run's.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, Signal

from ..core.config import RunConfig


class PreflightRunner(QObject):
    finished = Signal(dict)  # the Preflight's fields, with "text": the paragraph to show
    failed = Signal(str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._process: QProcess | None = None
        self._config_file: str | None = None

    @property
    def running(self) -> bool:
        return self._process is not None

    def start(self, config: RunConfig) -> None:
        self.stop()
        fd, path = tempfile.mkstemp(prefix="workbench-preflight-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(config.to_dict(), f)
        self._config_file = path
        process = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        # The child imports this very package, wherever it was imported from.
        package_root = str(Path(__file__).resolve().parents[2])
        env.insert("PYTHONPATH", os.pathsep.join(p for p in (package_root, env.value("PYTHONPATH")) if p))
        process.setProcessEnvironment(env)
        process.finished.connect(self._done)
        process.errorOccurred.connect(self._error)
        self._process = process
        process.start(sys.executable, ["-m", "workbench", "train", "--config", path, "--preflight", "--quiet"])

    def stop(self) -> None:
        """Stop a running estimate (a run is starting, or the settings changed)."""
        process, self._process = self._process, None
        if process is not None:
            process.finished.disconnect(self._done)
            process.errorOccurred.disconnect(self._error)
            process.kill()
            process.waitForFinished(3000)
            process.deleteLater()
        self._forget_config()

    def _forget_config(self) -> None:
        if self._config_file:
            Path(self._config_file).unlink(missing_ok=True)
            self._config_file = None

    def _error(self, error) -> None:
        if error == QProcess.ProcessError.FailedToStart and self._process is not None:
            self._process = None
            self._forget_config()
            self.failed.emit("the estimate could not start a Python process")

    def _done(self, code: int, _status) -> None:
        process, self._process = self._process, None
        self._forget_config()
        if process is None:
            return
        out = bytes(process.readAllStandardOutput()).decode("utf-8", "replace").strip().splitlines()
        err = bytes(process.readAllStandardError()).decode("utf-8", "replace").strip()
        process.deleteLater()
        if code == 0 and out:
            try:
                result = json.loads(out[-1])["preflight"]
            except (ValueError, KeyError, TypeError):
                result = None
            if isinstance(result, dict):
                result["text"] = "\n".join(out[:-1]).strip()
                self.finished.emit(result)
                return
        lines = [line for line in err.splitlines() if line.strip()]
        message = lines[-1] if lines else f"the estimate stopped with exit status {code}"
        self.failed.emit(message.removeprefix("workbench: error: "))
