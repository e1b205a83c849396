"""One run on several processes (torch.distributed): who this process is, and the few collectives
the engine needs.

A distributed run is N copies of the same `workbench train` process started by a launcher
(``torch.distributed.run``/torchrun, ``accelerate launch``, SLURM's srun with torchrun), which
sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. Every process reads and prepares
the data itself (the splits are seeded, so they agree), trains a DistributedDataParallel replica
on its shard of each batch, and takes part in the sharded evaluations; only rank 0 writes the run
directory, the checkpoints and the export.

Collectives that carry control (stop flags, row counts, gathered predictions) go through a gloo
group on the CPU, so a GPU run does not wait on its device for them. Every collective has a
timeout (WORKBENCH_DIST_TIMEOUT seconds, default 300): a process that hangs or vanishes on another
machine ends the run with a message instead of a hang.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from .errors import InputError, WorkbenchError

DEFAULT_TIMEOUT_S = 300.0
ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


class RankStopped(WorkbenchError):
    """This process was told to stop (SIGTERM) by its launcher: another process of the run ended,
    or the job was cancelled."""


def launched_world_size() -> int:
    """The number of processes the launcher started (1 when there is no launcher)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def env_rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def timeout_seconds() -> float:
    raw = os.environ.get("WORKBENCH_DIST_TIMEOUT", "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise InputError(f"WORKBENCH_DIST_TIMEOUT must be a number of seconds, got {raw!r}") from None
    return max(1.0, value)


@dataclass
class Dist:
    rank: int
    world_size: int
    local_rank: int
    backend: str  # the gradient group's: nccl on GPUs, gloo on CPUs
    control: Any = field(default=None, repr=False)  # a gloo group for flags and gathered objects
    active: bool = True  # False once the group is taken down (rank 0 goes on alone after training)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        return f"{self.world_size} processes ({self.backend}), this is rank {self.rank}"

    # ---- collectives ----------------------------------------------------------------------------
    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        import torch.distributed as td

        box = [obj]
        td.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        import torch.distributed as td

        out: list[Any] = [None] * self.world_size
        td.all_gather_object(out, obj, group=self.control)
        return out

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over the ranks (CPU, the control group)."""
        import torch
        import torch.distributed as td

        t = torch.tensor(values, dtype=torch.float64)
        td.all_reduce(t, op=td.ReduceOp.SUM, group=self.control)
        return t.tolist()

    def average_norm_statistics(self, model) -> int:
        """Average the batch norms' running means and variances over the ranks, in place; returns
        how many norms there were. DDP here leaves buffers alone (the training loop turns its
        per-forward buffer sync off), so each rank's statistics follow its own shards; averaged
        before each evaluation and at the end of training, every rank evaluates the same model and
        rank 0 keeps statistics of all the batches, not of its half. One all-reduce for them all."""
        import torch
        import torch.distributed as td

        norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                 and m.track_running_stats and m.running_mean is not None]
        if not norms:
            return 0
        # track_running_stats (checked above) means both buffers exist
        buffers = [b for m in norms for b in (m.running_mean, m.running_var) if b is not None]
        flat = torch.cat([b.detach().reshape(-1).float() for b in buffers])
        td.all_reduce(flat, op=td.ReduceOp.SUM)  # the default group: the buffers' own device
        flat /= self.world_size
        with torch.no_grad():
            offset = 0
            for b in buffers:
                b.copy_(flat[offset:offset + b.numel()].view_as(b))
                offset += b.numel()
        return len(norms)

    def finish(self) -> None:
        """Take the process group down; what follows runs in this process alone."""
        import torch.distributed as td

        if self.active and td.is_initialized():
            td.destroy_process_group()
        self.active = False


_current: Dist | None = None
_ending = False  # set while a run records how it ended: a launcher's SIGTERM then waits


def current() -> Dist | None:
    """The active process group of this run, or None for a run in one process."""
    return _current if _current is not None and _current.active else None


def world_size() -> int:
    d = current()
    return d.world_size if d is not None else 1


def is_main() -> bool:
    d = current()
    return d is None or d.main


def set_ending(value: bool = True) -> None:
    global _ending
    _ending = value


def setup(device_request: str) -> Dist | None:
    """Join the launcher's process group when this process is one of several (WORLD_SIZE > 1);
    None otherwise. Idempotent: a second call returns the same group."""
    global _current
    if _current is not None and _current.active:
        return _current
    world = launched_world_size()
    if world <= 1:
        return None
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise InputError(f"WORLD_SIZE is {world} but {' and '.join(missing)} is not set: start the processes with "
                         "a launcher (workbench train --num-processes N, torchrun, accelerate launch)")
    import torch
    import torch.distributed as td

    rank, local = env_rank(), int(os.environ.get("LOCAL_RANK", "0") or 0)
    wants_gpu = (device_request or "auto").lower() not in ("cpu", "mps") and torch.cuda.is_available()
    backend = "nccl" if wants_gpu else "gloo"
    timeout = timedelta(seconds=timeout_seconds())
    if wants_gpu:
        torch.cuda.set_device(local % max(torch.cuda.device_count(), 1))
    if not td.is_initialized():
        td.init_process_group(backend=backend, timeout=timeout)
    control = td.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else None
    _current = Dist(rank, world, local, backend, control)
    _stop_on_sigterm()
    return _current


def forget() -> None:
    """Drop the module's record of the group (tests; a process that starts another run)."""
    global _current
    if _current is not None:
        _current.finish()
    _current = None


def _stop_on_sigterm() -> None:
    """A launcher stops the other processes with SIGTERM when one fails: end like a failure (rank 0
    records it in status.json) instead of vanishing without a word."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):
        if _ending:
            return  # already recording how the run ended; the launcher waits for it
        raise RankStopped("stopped by the launcher: another process of this distributed run ended, or the job "
                          "was cancelled")

    signal.signal(signal.SIGTERM, handler)


# ---- batches --------------------------------------------------------------------------------------
def shard(rows, rank: int, world: int):
    """This rank's part of a global batch: every world-th row, so that each part gets a share of
    each length in a length-sorted batch. A part can be empty (a short tail batch)."""
    return rows[rank::world]


def device_for_rank(device, dist: Dist | None):
    """The device this rank trains on: its own GPU (LOCAL_RANK) when the run is on GPUs."""
    import torch

    if dist is None or device.type != "cuda":
        return device
    return torch.device(f"cuda:{dist.local_rank % max(torch.cuda.device_count(), 1)}")
