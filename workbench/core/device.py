"""Device choice: CUDA, then MPS, then CPU; always passed explicitly, never left to globals."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from .errors import InputError

log = logging.getLogger(__name__)

CPU_BF16_ENV = "WORKBENCH_CPU_BF16"  # 1 or 0: the CPU is taken to have bf16 units, or not
# The precision of everything a user compares with the exported model (test metrics, predictions,
# calibration): the export runs in fp32 in transformers' pipeline and ONNX Runtime.
REPORT_PRECISION = "fp32"


@dataclass(frozen=True)
class DeviceInfo:
    name: str  # torch device string
    description: str  # for people: "NVIDIA H100 80GB HBM3 (79.1 GiB)", "Apple MPS", "CPU (2 threads)"
    total_memory_gib: float | None = None


def available_devices() -> list[DeviceInfo]:
    import torch

    out = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gib = p.total_memory / 2**30
            out.append(DeviceInfo(f"cuda:{i}", f"{p.name} ({gib:.1f} GiB)", gib))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append(DeviceInfo("mps", "Apple GPU (MPS)"))
    out.append(DeviceInfo("cpu", f"CPU ({torch.get_num_threads()} threads)"))
    return out


def resolve_device(requested: str = "auto"):
    import torch

    req = (requested or "auto").lower()
    if req == "auto":
        return torch.device(available_devices()[0].name)
    try:
        dev = torch.device(req)
    except RuntimeError:
        raise InputError(f"unknown device {requested!r}; use auto, cpu, cuda, cuda:N or mps") from None
    names = {d.name for d in available_devices()}
    if dev.type == "cuda":
        idx = dev.index or 0
        if f"cuda:{idx}" not in names:
            raise InputError(f"device {requested!r} is not available here; available: {', '.join(sorted(names))}")
        return torch.device(f"cuda:{idx}")
    if dev.type == "mps" and "mps" not in names:
        raise InputError(f"device 'mps' is not available here; available: {', '.join(sorted(names))}")
    return dev


def cpu_bf16_units() -> tuple[bool, str]:
    """Whether this CPU multiplies bfloat16 in hardware (Intel AMX, AVX512-BF16), and what it has.

    Without such units torch still runs bf16 on the CPU, but by converting to fp32 and back, which
    is slower than fp32 itself (measured on this project's AVX2 machine).

    ``WORKBENCH_CPU_BF16=1`` or ``0`` overrides the check: for tests that must run the same on every
    CPU, and for users who want fp32 (or bf16) whatever the CPU has."""
    import torch

    forced = os.environ.get(CPU_BF16_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1", f"{CPU_BF16_ENV}={forced}"
    if forced:
        log.warning("%s=%r is not 0 or 1; ignored", CPU_BF16_ENV, forced)
    try:
        amx = bool(torch.cpu._is_amx_tile_supported())
        avx512_bf16 = bool(torch.cpu._is_avx512_bf16_supported())
    except (AttributeError, RuntimeError):  # private checks: a torch without them gets fp32
        return False, "this torch cannot tell whether the CPU has bf16 units"
    if amx:
        return True, "the CPU has AMX bf16 matrix units"
    if avx512_bf16:
        return True, "the CPU has AVX512-BF16 instructions"
    try:
        cap = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        cap = "unknown"
    return False, f"the CPU has no bf16 units ({cap})"


def cpu_has_amx() -> bool:
    """Whether this CPU has Intel AMX tiles (bf16 matrix units), beside AVX512-BF16's vector instructions."""
    import torch

    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return False


def choose_precision(requested: str, device, cpu_bf16: str | None = None,
                     cpu_bf16_without_amx: str | None = None) -> tuple[str, str]:
    """The precision a run uses and why: on a GPU bf16 where supported, else fp16 (with a grad
    scaler); on the CPU bf16 autocast where it has bf16 units, else fp32. Master weights, the
    optimizer and the loss stay fp32 in every case.

    ``cpu_bf16``: None where bf16 pays on a CPU with bf16 units, else why the task keeps fp32
    there (``Task.cpu_bf16_not_worth``: measured no faster, or less accurate). ``cpu_bf16_without_amx``: the
    same where bf16 pays only with AMX's matrix units, not with AVX512-BF16 alone (``Task.cpu_bf16_needs_amx``);
    ``WORKBENCH_CPU_BF16=1`` still means bf16."""
    import torch

    req = requested or "auto"
    if device.type == "cpu":
        if req == "fp16":
            raise InputError("--precision fp16 needs a GPU; on the CPU use bf16 or fp32")
        if req != "auto":
            return req, f"--precision {req}"
        units, why = cpu_bf16_units()
        if units and cpu_bf16:
            return "fp32", f"auto: {why}, but {cpu_bf16}"
        if units and cpu_bf16_without_amx and not os.environ.get(CPU_BF16_ENV, "").strip() and not cpu_has_amx():
            return "fp32", f"auto: {why}, but {cpu_bf16_without_amx}"
        return ("bf16", f"auto: {why}") if units else ("fp32", f"auto: {why}")
    if req != "auto":
        return req, f"--precision {req}"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "auto: the GPU supports bf16"
        return "fp16", "auto: the GPU has no bf16; fp16 with loss scaling"
    return "fp32", "auto: MPS autocast support varies by release"


def resolve_precision(requested: str, device) -> str:
    return choose_precision(requested, device)[0]
