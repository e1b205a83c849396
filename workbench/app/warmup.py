"""Import the heavy libraries on a background thread once the window is on screen.

Why: some imports run long C initialisations with the GIL held (torch's extension takes about a
quarter of a second here), and nothing can release it meanwhile, so whenever they happen the GUI
thread stalls that long. Done right after start-up, the stall falls while the user is still
looking at the new window, not in the middle of a run's live plots; Start then responds at once.
The plotting library is imported first, so the Train page can be built on the GUI thread without
the GUI thread paying for the import. ``WORKBENCH_WARMUP=0`` turns it off. Qt-free.

Importing transformers' lazy modules while another thread uses them is racy (datasets looks up
``transformers.PreTrainedTokenizerBase`` whenever transformers is in ``sys.modules``), so the app's
other background jobs run ``serialized``: once the warm-up has imported those modules nothing is
left to race, so a job waits for it to finish and then runs beside any other. Only without a
warm-up thread (disabled, or not started yet) do jobs take ``lock`` and run one at a time. A run
waits for the warm-up too: it needs those same modules anyway.
"""

from __future__ import annotations

import functools
import gc
import importlib
import os
import sys
import threading
import time
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")

# In the order they are needed: the plots of the Train page, then what the first run imports.
MODULES = (
    "pyqtgraph",
    "torch",
    "torch._dynamo",  # torch.optim imports it when the first optimizer is built
    "transformers",
    "transformers.models.auto.modeling_auto",
    "transformers.models.auto.tokenization_auto",
    "transformers.models.bert.modeling_bert",  # the default backbone's model code
    "datasets",
    "sklearn.metrics",
    "workbench.core.run.pipeline",
    "workbench.core.training.loop",
    "workbench.core.tasks.text_classification",
)

done = threading.Event()
# Set while no window is building its deferred pages. The window clears it before the warm-up and
# sets it once the pages exist: jobs that wait for the warm-up (counting a backbone's parameters
# builds the model: half a second of Python) then start after those builds instead of competing
# with the GUI thread for the GIL during them (a 0.1 s build took 0.4 s beside such a job).
pages_built = threading.Event()
pages_built.set()
PAGES_WAIT_S = 10.0
lock = threading.RLock()  # held while one module imports, and by jobs while no warm-up thread runs
seconds: float | None = None
_finished: set[str] = set()
_thread: threading.Thread | None = None
_local = threading.local()  # ``holding``: this thread runs a job under ``lock``


def enabled() -> bool:
    return os.environ.get("WORKBENCH_WARMUP", "1").lower() not in ("0", "false", "no", "off")


def imported(name: str) -> bool:
    """Whether the warm-up has finished importing ``name`` (or has stopped altogether)."""
    return name in _finished or done.is_set()


def preload_torch_libraries() -> None:
    """Load torch's C++ core (libtorch_cpu: ~0.3 s of static initialisers) before ``import torch``.

    An extension module's dlopen runs with the GIL held, so importing torch froze the GUI thread
    for that long (a 260 ms tick here). A ctypes call into libc's ``dlopen`` releases the GIL; the
    later import then finds the library loaded (a start-up tick of 40-60 ms). Linux only; the
    library stays local (RTLD_NOW without RTLD_GLOBAL), as torch's own import would load it."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import importlib.util

        spec = importlib.util.find_spec("torch")
        if spec is None or not spec.origin or "torch" in sys.modules:
            return
        lib = Path(spec.origin).parent / "lib"
        dlopen = ctypes.CDLL(None).dlopen
        dlopen.restype, dlopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_int]
        for name in ("libc10.so", "libtorch_cpu.so"):
            if (lib / name).is_file():
                dlopen(str(lib / name).encode(), os.RTLD_NOW)
    except Exception:  # only a speed-up: the import below loads them anyway
        pass


def _run() -> None:
    global seconds
    t0 = time.perf_counter()
    # No garbage collection while the imports run: each full collection walks every object the
    # imports made so far, with the GIL held, and the GUI thread waits that long (75 ms growing to
    # 330 ms here, five times in a warm-up). At the end the survivors are frozen, so that later
    # collections (during a run too) skip them; the little garbage the imports left stays.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        with lock:
            preload_torch_libraries()
        for name in MODULES:
            with lock:
                try:
                    importlib.import_module(name)
                except Exception:  # a missing optional library shows up, with its message, when a run needs it
                    pass
            _finished.add(name)
        gc.freeze()
    finally:
        if gc_was_enabled:
            gc.enable()
        seconds = time.perf_counter() - t0
        done.set()


def serialized(fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` made to run after the warm-up's imports, never during one (see the module docstring).

    The lock is held for a whole job only when there is no warm-up thread to wait for; otherwise a
    long job (reading a large file) would hold up every other page's jobs.
    """

    @functools.wraps(fn)
    def run(*args, **kwargs):
        if getattr(_local, "holding", False):  # nested in a job that holds the lock: waiting could deadlock
            return fn(*args, **kwargs)
        if _thread is not None:
            done.wait()
            pages_built.wait(PAGES_WAIT_S)
            return fn(*args, **kwargs)
        with lock:
            _local.holding = True
            try:
                return fn(*args, **kwargs)
            finally:
                _local.holding = False

    return run


def wait() -> None:
    """Block until a started warm-up has finished (returns at once when none was started)."""
    if _thread is not None:
        done.wait()


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
