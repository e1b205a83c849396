"""Checkpoints: everything that decides what a run does next, so that it can go on after a crash.

    RUN/checkpoints/step-N/        one complete checkpoint (the last two are kept)
        model.safetensors          the weights
        optimizer.pt, scheduler.pt their state dicts (plain tensors and numbers: loaded weights_only)
        scaler.pt                  fp16 runs only
        rng.safetensors            torch's CPU (and CUDA) generator states
        state.json                 the loop's position and counters (LoopState), Python's and NumPy's
                                   random states
    RUN/checkpoints/best/          the best weights so far and their step and metrics

A checkpoint is written into ``.step-N.writing-PID-*`` and renamed into place: a folder named
``step-N`` is always complete, and a half-written one (the process killed meanwhile) is swept away.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

KEEP = 2  # complete checkpoints kept besides the best weights
_STEP = re.compile(r"step-(\d+)\Z")
_TEMP = re.compile(r"\.(?:step-\d+|best)\.writing-(\d+)-")


@dataclass
class LoopState:
    """Where the training loop is and what it has counted: enough, with the weights, optimizer,
    scheduler and random states, to carry on exactly as if it had never stopped."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # the epoch being trained
    batch: int = 0  # batches of that epoch already trained: training goes on with the next one
    seen: int = 0  # training rows seen
    train_seconds: float = 0.0
    best_value: float | None = None
    best_step: int | None = None
    best_metrics: dict[str, float] | None = None
    bad_evals: int = 0  # evaluations without improvement (early stopping)
    evaluations: list = field(default_factory=list)  # [step, metric value, loss] of each validation
    micro_batch: int | None = None  # the most rows per forward call after an out-of-memory back-off
    metrics_bytes: int = 0  # the length of metrics.jsonl when this state was reached
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LoopState":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def _python_and_numpy_rng() -> dict[str, Any]:
    version, state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(state), gauss],
            "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]}


def _restore_python_and_numpy_rng(d: dict[str, Any]) -> None:
    version, state, gauss = d["python"]
    random.setstate((version, tuple(state), gauss))
    kind, keys, pos, has_gauss, cached = d["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def _torch_rng() -> dict[str, Any]:
    import torch

    out = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"cuda_{i}"] = s
    return out


def _restore_torch_rng(states: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(states["torch_cpu"])
    cuda = [states[k] for k in sorted(states) if k.startswith("cuda_")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


class Checkpoints:
    """The checkpoints of one run directory."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    # ---- finding ------------------------------------------------------------------------------------
    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.folder.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.folder.iterdir() if (m := _STEP.match(p.name)) and p.is_dir()]
        return [p for _, p in sorted(found)]

    def latest(self) -> Path | None:
        done = self.complete()
        return done[-1] if done else None

    def best(self) -> Path | None:
        p = self.folder / "best"
        return p if (p / "model.safetensors").is_file() else None

    def disk_bytes(self) -> int:
        return folder_size(self.folder) if self.folder.is_dir() else 0

    def sweep(self) -> None:
        """Remove half-written checkpoints of processes that are gone (a kill while saving)."""
        from ..processes import pid_alive

        if not self.folder.is_dir():
            return
        for p in self.folder.iterdir():
            m = _TEMP.match(p.name)
            if m and not pid_alive(int(m.group(1))):
                shutil.rmtree(p, ignore_errors=True)

    # ---- writing ------------------------------------------------------------------------------------
    def _write_folder(self, name: str, write) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.writing-{os.getpid()}-", dir=self.folder))
        target = self.folder / name
        try:
            write(tmp)
            if target.exists():  # the best weights are replaced; a step folder never exists twice
                old = self.folder / f".{name}.old-{os.getpid()}"
                shutil.rmtree(old, ignore_errors=True)
                os.replace(target, old)
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # the previous checkpoints stay as they were
            raise
        return target

    def save(self, state: LoopState, model, optimizer, scheduler, scaler=None) -> Path:
        import torch
        from safetensors.torch import save_file, save_model

        def write(folder: Path) -> None:
            save_model(model, str(folder / "model.safetensors"))
            torch.save(optimizer.state_dict(), folder / "optimizer.pt")
            torch.save(scheduler.state_dict(), folder / "scheduler.pt")
            if scaler is not None:
                torch.save(scaler.state_dict(), folder / "scaler.pt")
            save_file({k: v.contiguous() for k, v in _torch_rng().items()}, str(folder / "rng.safetensors"))
            (folder / "state.json").write_text(json.dumps({"loop": state.to_dict(), "rng": _python_and_numpy_rng()}),
                                               encoding="utf-8")

        path = self._write_folder(f"step-{state.step}", write)
        for old in self.complete()[:-KEEP]:
            shutil.rmtree(old, ignore_errors=True)
        return path

    def save_best(self, state: LoopState, weights: dict) -> Path:
        """The best weights so far (a CPU state dict) with the step and metrics they scored."""
        from safetensors.torch import save_file

        def write(folder: Path) -> None:
            save_file({k: v.contiguous() for k, v in weights.items()}, str(folder / "model.safetensors"))
            (folder / "state.json").write_text(json.dumps({"step": state.best_step, "value": state.best_value,
                                                           "metrics": state.best_metrics}), encoding="utf-8")

        return self._write_folder("best", write)

    # ---- reading ------------------------------------------------------------------------------------
    def load(self, path: Path, model, optimizer, scheduler, scaler=None) -> LoopState:
        """Put the checkpoint at ``path`` back into these objects and the random generators."""
        import torch
        from safetensors.torch import load_file, load_model

        load_model(model, str(path / "model.safetensors"), device=str(next(model.parameters()).device))
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
        scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
        if scaler is not None and (path / "scaler.pt").is_file():
            scaler.load_state_dict(torch.load(path / "scaler.pt", weights_only=True))
        saved = json.loads((path / "state.json").read_text(encoding="utf-8"))
        _restore_torch_rng(load_file(str(path / "rng.safetensors")))
        _restore_python_and_numpy_rng(saved["rng"])
        return LoopState.from_dict(saved["loop"])

    def best_weights(self) -> dict | None:
        from safetensors.torch import load_file

        best = self.best()
        return load_file(str(best / "model.safetensors")) if best is not None else None

    @staticmethod
    def loop_state(path: Path) -> LoopState:
        return LoopState.from_dict(json.loads((path / "state.json").read_text(encoding="utf-8"))["loop"])
