"""The `workbench` command: the parser and dispatch (main.py), one module per command family (predict,
pack, analysis), the HTTP server (serve.py), the terminal progress bar and the exit statuses (exits.py)."""

from .main import main

__all__ = ["main"]
