"""The models the app keeps loaded for its "Try it" boxes: one cache, whatever the task.

Keyed by what is built (``kind``: a text pipeline, a tagger, ...) and the model folder, with the
modification times of its config and weights, so a folder trained again is loaded again. A load
runs on the worker thread that first asks, outside the cache's lock, so two different models load
side by side; a second thread asking for the same one meanwhile waits for that load instead of
starting its own. Failed loads are not kept: the next request tries again. The least recently used
model goes when more than ``capacity`` are held.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable, TypeVar

from . import warmup

T = TypeVar("T")

CAPACITY = 3  # the models of the last few runs looked at; a few hundred MB each at most
_STAMPED = ("config.json", ".safetensors", ".bin")  # the config and the weights (sharded ones too)


def model_key(kind: str, folder: str | Path) -> tuple:
    """(kind, resolved folder, newest modification time of its config and weights)."""
    folder = Path(folder).resolve()
    try:
        stamps = [e.stat().st_mtime_ns for e in folder.iterdir() if e.name.endswith(_STAMPED)]
    except OSError:
        stamps = []  # no folder: the loader raises the error the user sees
    return (kind, str(folder), max(stamps, default=0))


class ModelCache:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self.loads = 0  # loads started, failed ones included (tests count them)
        self._models: OrderedDict[tuple, Any] = OrderedDict()
        self._loading: dict[tuple, Future] = {}
        self._lock = threading.Lock()  # guards the two dicts only; never held while loading

    def get(self, kind: str, folder: str | Path, load: Callable[[Path], T]) -> T:
        """The ``kind`` model of ``folder``, built by ``load(folder)`` unless it is held already."""
        key = model_key(kind, folder)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            pending = self._loading.get(key)
            owner = pending is None
            if owner:
                pending = self._loading[key] = Future()
                self.loads += 1
        if not owner:
            return pending.result()  # the load another thread runs: its model, or its exception
        try:
            # Loading imports transformers' lazy modules, which must not race the warm-up's imports.
            model = warmup.serialized(load)(Path(key[1]))
        except BaseException as e:
            with self._lock:
                del self._loading[key]
            pending.set_exception(e)
            raise
        with self._lock:
            del self._loading[key]
            for old in [k for k in self._models if k[:2] == key[:2]]:  # the folder before it was rewritten
                del self._models[old]
            self._models[key] = model
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
        pending.set_result(model)
        return model

    def holds(self, kind: str, folder: str | Path) -> bool:
        """Whether ``get`` would answer without loading (the status line says "Loading..." otherwise)."""
        key = model_key(kind, folder)
        with self._lock:
            return key in self._models

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


MODELS = ModelCache()  # the app's one cache
