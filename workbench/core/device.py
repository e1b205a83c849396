"""Device choice: CUDA, then MPS, then CPU; always passed explicitly, never left to globals."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError


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


def resolve_precision(requested: str, device) -> str:
    """fp32 on CPU; bf16 where the GPU supports it, else fp16 (with a grad scaler)."""
    import torch

    if device.type == "cpu":
        if requested in ("bf16", "fp16"):
            raise InputError(f"--precision {requested} needs a GPU; this run is on the CPU")
        return "fp32"
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"  # MPS autocast support varies by release; stay exact
