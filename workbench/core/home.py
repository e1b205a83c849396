"""Where Workbench keeps runs: its own module (no imports from the rest of core), so the modules
that ask (run directories, export targets, packs, the runs list) need not import each other."""

from __future__ import annotations

import os
from pathlib import Path


def runs_home() -> Path:
    """Where runs go when no --run-dir is given: $WORKBENCH_HOME/runs or the user data folder."""
    home = os.environ.get("WORKBENCH_HOME")
    if home:
        return Path(home).expanduser() / "runs"
    from platformdirs import user_data_dir

    return Path(user_data_dir("workbench", appauthor=False)) / "runs"
