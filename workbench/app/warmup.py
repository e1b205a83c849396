"""Import the engine's heavy libraries on a background thread once the window is on screen.

Why: importing torch runs its C extension's initialisation (about a quarter of a second here)
with the GIL held, and nothing can release it meanwhile, so whichever moment it happens the GUI
thread stalls that long. Done right after start-up, the stall falls while the user is still
looking at the empty window, not in the middle of a run's live plots, and Start responds at
once. ``WORKBENCH_WARMUP=0`` turns it off. Qt-free.
"""

from __future__ import annotations

import importlib
import os
import threading
import time

# What the first run imports, heaviest first.
MODULES = (
    "torch",
    "transformers",
    "datasets",
    "workbench.core.run",
    "workbench.core.training.loop",
    "workbench.core.tasks.text_classification",
    "sklearn.metrics",
)

done = threading.Event()
seconds: float | None = None


def enabled() -> bool:
    return os.environ.get("WORKBENCH_WARMUP", "1").lower() not in ("0", "false", "no", "off")


def _run() -> None:
    global seconds
    t0 = time.perf_counter()
    try:
        for name in MODULES:
            try:
                importlib.import_module(name)
            except Exception:  # a missing optional library shows up, with its message, when a run needs it
                continue
        if "transformers" in importlib.sys.modules:
            import transformers

            # Resolving the lazy attributes imports the auto classes' modules, as a run will.
            transformers.AutoTokenizer, transformers.AutoModelForSequenceClassification  # noqa: B018
    finally:
        seconds = time.perf_counter() - t0
        done.set()


_thread: threading.Thread | None = None


def start() -> bool:
    """Start the warm-up once per process; returns False when it is disabled."""
    global _thread
    if not enabled():
        done.set()
        return False
    if _thread is None:
        # A daemon: an import cannot be interrupted, and quitting must not wait for one.
        _thread = threading.Thread(target=_run, name="workbench-warmup", daemon=True)
        _thread.start()
    return True
