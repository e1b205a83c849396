"""The command line's exit statuses and its usage error: a module of their own, which ``cli`` and
the command modules it dispatches to (``cli_predict``, ``cli_pack``) all import."""

from __future__ import annotations

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_WRITE, EXIT_PAUSED, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


class UsageError(Exception):
    pass
