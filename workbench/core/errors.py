"""Errors the engine raises on purpose. Front ends show their message; they never show a traceback."""

from __future__ import annotations

from pathlib import Path


class WorkbenchError(Exception):
    """Base class for errors whose message is meant for the user."""


class InputError(WorkbenchError):
    """Bad user input: a data file, a column name, an option. The CLI exits with status 2.

    ``path`` and ``line`` (1-based physical line in the file) are kept apart from the message so the
    app can jump to the offending row; ``str(err)`` already names both.
    """

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None):
        self.path = str(path) if path is not None else None
        self.line = line
        where = ""
        if self.path is not None:
            where = f"{self.path}"
            if line is not None:
                where += f", line {line}"
            where += ": "
        super().__init__(where + message)
        self.problem = message


class BackboneError(InputError):
    """A model name that cannot be resolved to weights on this machine."""


class Cancelled(WorkbenchError):
    """Raised inside the engine when the cancel token was set; the run ends as 'cancelled'."""

    def __init__(self, message: str = "cancelled by the user"):
        super().__init__(message)
