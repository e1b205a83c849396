"""Checkpoints: everything that decides what a run does next, so that it can go on after a crash.

    RUN/checkpoints/step-N/        one complete checkpoint (the last two are kept)
        model.safetensors          the weights
        optimizer.pt, scheduler.pt their state dicts (plain tensors and numbers: loaded weights_only)
        scaler.pt                  fp16 runs only
        rng.safetensors            torch's CPU (and CUDA) generator states
        state.json                 the loop's position and counters (LoopState), Python's and NumPy's
                                   random states
        manifest.json              the size and SHA-256 of each file above, written last: ``verify``
                                   tells an intact checkpoint from one damaged since (a disk error, a
                                   truncated copy), and ``--resume`` goes on from the newest intact one
    RUN/checkpoints/best/          the best weights so far and their step and metrics (and manifest)

A checkpoint is written into ``.step-N.writing-PID-*`` and renamed into place: a folder named
``step-N`` is always complete, and a half-written one (the process killed meanwhile) is swept away.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import replacing
from ..errors import InputError

KEEP = 2  # complete checkpoints kept besides the best weights
MANIFEST = "manifest.json"
REQUIRED = ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng.safetensors", "state.json")
BEST_REQUIRED = ("model.safetensors", "state.json")
DAMAGED_PREFIX = "damaged-"  # a damaged checkpoint set aside by --resume (never used, removed with the rest)
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
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # the 5-tuple, not a dict
    return {"python": [version, list(state), gauss],
            "numpy": [kind, np.asarray(keys).tolist(), int(pos), int(has_gauss), float(cached)]}


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


def quantized_base(model) -> bool:
    """Whether ``model``'s frozen base is quantized to 4 bits (QLoRA; a peft wrapper answers for it)."""
    return bool(getattr(model, "is_loaded_in_4bit", False))


def model_weights(model) -> dict:
    """What a checkpoint (and the best weights) keep of ``model``: its whole state, or, over a 4-bit base
    (QLoRA), only the parameters that train: the frozen base loads again, quantized the same way, from
    the backbone, and bitsandbytes' packed weights do not round-trip through ``load_state_dict``."""
    if quantized_base(model):
        return {n: p for n, p in model.named_parameters() if p.requires_grad}
    return model.state_dict()


def load_weights(model, weights: dict) -> None:
    """Put ``model_weights``' result back (strict: every kept tensor has its parameter)."""
    if not quantized_base(model):
        model.load_state_dict(weights)
        return
    result = model.load_state_dict(weights, strict=False)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    lacking = sorted(trained - set(weights))
    if result.unexpected_keys or lacking:
        raise ValueError(f"the saved weights do not fit the model: unexpected {result.unexpected_keys[:5]}, "
                         f"missing {lacking[:5]}")


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


class DamagedCheckpoint(InputError):
    """A checkpoint's files are not what was written (see ``Checkpoints.verify``)."""


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _write_manifest(folder: Path) -> None:
    """The size and SHA-256 of every file in ``folder``: written last, so a checkpoint can be
    checked before it is trusted."""
    files = {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)}
             for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    with open(folder / MANIFEST, "w", encoding="utf-8") as f:
        json.dump({"version": 1, "files": files}, f)
        f.flush()
        os.fsync(f.fileno())


def _size_text(n: int) -> str:
    return f"{n:,} bytes"


def _check_safetensors(path: Path) -> str | None:
    """Whether a safetensors file holds all the bytes its header promises (older checkpoints)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{path.name} is cut short ({_size_text(size)})"
            n = int.from_bytes(head, "little")
            if n > size - 8:
                return f"{path.name} is cut short ({_size_text(size)})"
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        return f"{path.name} is not readable ({type(e).__name__})"
    return None if size >= 8 + n + end else f"{path.name} is cut short ({_size_text(size)}, needs {_size_text(8 + n + end)})"


def _check_zip(path: Path) -> str | None:
    """Whether a torch.save file (a zip archive) is complete and its entries' checksums match."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (OSError, zipfile.BadZipFile, EOFError, ValueError, RuntimeError) as e:
        return f"{path.name} is not readable ({type(e).__name__}: {e})"
    return f"{path.name} is damaged (entry {bad})" if bad else None


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

    @staticmethod
    def verify(path: Path, required: tuple[str, ...] = REQUIRED) -> str | None:
        """None when the checkpoint at ``path`` is intact; otherwise what is wrong with it (a file
        missing, cut short or changed since it was written). Its manifest's sizes and hashes are
        checked; a checkpoint written before manifests existed is checked by its files' structure."""
        path = Path(path)
        manifest = path / MANIFEST
        if manifest.is_file():
            try:
                files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
                if not isinstance(files, dict):
                    raise TypeError("files")
            except (OSError, ValueError, KeyError, TypeError) as e:
                return f"{MANIFEST} is not readable ({type(e).__name__})"
            for name in required:
                if name not in files:
                    return f"{name} is missing"
            for name, want in files.items():
                if not isinstance(want, dict) or Path(name).name != name:
                    return f"{MANIFEST} is not readable (entry {name!r})"
                p = path / name
                try:
                    size = p.stat().st_size
                except OSError:
                    return f"{name} is missing"
                if size != want.get("size"):
                    return f"{name} has {_size_text(size)}, {_size_text(want.get('size') or 0)} were written"
                try:
                    if _sha256(p) != want.get("sha256"):
                        return f"{name} has changed since it was written (its SHA-256 differs)"
                except OSError as e:
                    return f"{name} is not readable ({e.strerror or e})"
            return None
        for name in required:  # no manifest: a checkpoint from an earlier version
            if not (path / name).is_file():
                return f"{name} is missing"
        for name in required:
            p = path / name
            if name.endswith(".safetensors"):
                problem = _check_safetensors(p)
            elif name.endswith(".pt"):
                problem = _check_zip(p)
            else:
                try:
                    json.loads(p.read_text(encoding="utf-8"))
                    problem = None
                except (OSError, ValueError) as e:
                    problem = f"{name} is not readable ({type(e).__name__})"
            if problem:
                return problem
        return None

    def newest_intact(self) -> tuple[Path | None, list[tuple[Path, str]]]:
        """The newest checkpoint that ``verify`` passes, and the newer ones that it does not (with
        what is wrong with each)."""
        damaged: list[tuple[Path, str]] = []
        for path in reversed(self.complete()):
            problem = self.verify(path)
            if problem is None:
                try:
                    self.loop_state(path)
                except (OSError, ValueError, KeyError, TypeError) as e:
                    problem = f"state.json holds no loop state ({type(e).__name__})"
            if problem is None:
                return path, damaged
            damaged.append((path, problem))
        return None, damaged

    def damaged_after(self, step: int) -> list[Path]:
        """Checkpoints set aside as damaged that were newer than ``step``."""
        if not self.folder.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.folder.iterdir()
                 if p.name.startswith(DAMAGED_PREFIX) and (m := re.match(r"step-(\d+)", p.name[len(DAMAGED_PREFIX):]))]
        return [p for n, p in sorted(found) if n > step]

    def set_aside(self, path: Path) -> Path:
        """Rename a damaged checkpoint out of the way (``damaged-step-N``): it is never used again,
        nor counted among the kept ones, and goes when the run's checkpoints do."""
        target = self.folder / f"{DAMAGED_PREFIX}{path.name}"
        n = 1
        while target.exists():
            n += 1
            target = self.folder / f"{DAMAGED_PREFIX}{path.name}-{n}"
        os.replace(path, target)
        return target

    def best(self) -> Path | None:
        p = self.folder / "best"
        return p if (p / "model.safetensors").is_file() else None

    def verify_best(self) -> str | None:
        """None when the best weights are intact (or there are none); otherwise what is wrong."""
        best = self.best()
        return self.verify(best, BEST_REQUIRED) if best is not None else None

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
        target = self.folder / name
        # The best weights are replaced; a step folder never exists twice. On an error the previous
        # checkpoints stay as they were.
        with replacing(target, folder=True) as tmp:
            write(tmp)
        return target

    def save(self, state: LoopState, model, optimizer, scheduler, scaler=None) -> Path:
        import torch
        from safetensors.torch import save_file, save_model

        def write(folder: Path) -> None:
            if quantized_base(model):
                save_file({k: v.detach().contiguous() for k, v in model_weights(model).items()},
                          str(folder / "model.safetensors"))
            else:
                save_model(model, str(folder / "model.safetensors"))
            torch.save(optimizer.state_dict(), folder / "optimizer.pt")
            torch.save(scheduler.state_dict(), folder / "scheduler.pt")
            if scaler is not None:
                torch.save(scaler.state_dict(), folder / "scaler.pt")
            save_file({k: v.contiguous() for k, v in _torch_rng().items()}, str(folder / "rng.safetensors"))
            (folder / "state.json").write_text(json.dumps({"loop": state.to_dict(), "rng": _python_and_numpy_rng()}),
                                               encoding="utf-8")
            _write_manifest(folder)

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
            _write_manifest(folder)

        return self._write_folder("best", write)

    # ---- reading ------------------------------------------------------------------------------------
    def load(self, path: Path, model, optimizer, scheduler, scaler=None) -> LoopState:
        """Put the checkpoint at ``path`` back into these objects and the random generators. A file
        that cannot be read raises ``DamagedCheckpoint`` naming it (``--resume`` checks checkpoints
        first, so this is for one damaged after that check)."""
        import torch
        from safetensors.torch import load_file, load_model

        def read(name: str, loader):
            try:
                return loader(path / name)
            except (OSError, MemoryError):
                raise
            except Exception as e:  # noqa: BLE001 - each library has its own error for a bad file
                raise DamagedCheckpoint(f"{path / name} cannot be read ({type(e).__name__}: {e})") from e

        device = str(next(model.parameters()).device)
        if quantized_base(model):
            read("model.safetensors", lambda p: load_weights(model, load_file(str(p), device=device)))
        else:
            read("model.safetensors", lambda p: load_model(model, str(p), device=device))
        read("optimizer.pt", lambda p: optimizer.load_state_dict(torch.load(p, weights_only=True)))
        read("scheduler.pt", lambda p: scheduler.load_state_dict(torch.load(p, weights_only=True)))
        if scaler is not None and (path / "scaler.pt").is_file():
            read("scaler.pt", lambda p: scaler.load_state_dict(torch.load(p, weights_only=True)))
        saved = read("state.json", lambda p: json.loads(p.read_text(encoding="utf-8")))
        read("rng.safetensors", lambda p: _restore_torch_rng(load_file(str(p))))
        read("state.json", lambda p: _restore_python_and_numpy_rng(saved["rng"]))
        return read("state.json", lambda p: LoopState.from_dict(saved["loop"]))

    def best_weights(self) -> dict | None:
        from safetensors.torch import load_file

        best = self.best()
        if best is None:
            return None
        try:
            return load_file(str(best / "model.safetensors"))
        except OSError:
            raise
        except Exception as e:  # noqa: BLE001
            raise DamagedCheckpoint(f"{best / 'model.safetensors'} cannot be read ({type(e).__name__}: {e})") from e

    @staticmethod
    def loop_state(path: Path) -> LoopState:
        return LoopState.from_dict(json.loads((path / "state.json").read_text(encoding="utf-8"))["loop"])
