"""Speed: fast matrix products, how much of the GPU a run uses (MFU, peak memory), and a CPU
allocator that reuses memory (keep_freed_memory).

MFU (model FLOPs utilisation) is the share of the GPU's peak bf16/fp16 tensor throughput that the
model's own arithmetic uses: 6 x parameters x tokens per second (forward 2, backward 4) over the
peak, counting real tokens, not padding. It is reported only on GPUs whose peak is known.
"""

from __future__ import annotations

# Dense bf16/fp16 tensor-core peaks in FLOP/s, by a part of the device name (first match wins:
# the longer names come first).
PEAK_FLOPS = (
    ("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("GH200", 989e12), ("A100", 312e12),
    ("L40S", 362e12), ("L40", 181e12), ("L4", 121e12), ("A10", 125e12), ("A6000", 155e12), ("V100", 125e12),
    ("T4", 65e12), ("4090", 165e12), ("3090", 71e12),
)


def peak_flops(device_name: str) -> float | None:
    for part, flops in PEAK_FLOPS:
        if part in device_name:
            return flops
    return None


def enable_fast_matmul() -> None:
    """TF32 for fp32 matrix products and convolutions on Ampere and later GPUs (10 bits of mantissa,
    as transformers' Trainer does with --tf32); bf16/fp16 autocast covers most products anyway."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True  # image models: the fastest convolution for each shape


_MALLOC_TUNED = False


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.

    By default glibc serves each allocation over 32 MiB (and, until its threshold adapts, over
    128 KiB) with a fresh mmap and unmaps it on free. A CPU training step frees and re-allocates
    the same activations every step (a 32-image batch of EfficientNet-Lite0 at 224 px has buffers
    of 150 MB), so each step faults in and zeroes hundreds of MB of new pages: on 2 cores about a
    third of the step went to the kernel, and images/s rose from 10 to 19 with this setting
    (benchmarks/bench_image_classification.py). Freed memory then stays in the heap, up to the
    run's peak, which training reaches anyway. Linux with glibc only; WORKBENCH_MALLOC=default
    leaves malloc as it is. Returns whether it was applied."""
    global _MALLOC_TUNED
    import os
    import sys

    if _MALLOC_TUNED:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("WORKBENCH_MALLOC", "") == "default":
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another C library: nothing to tune
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    # No mmap'd chunks (everything from the heap), and free memory at the heap's top kept up to 1 GiB.
    _MALLOC_TUNED = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**30))
    return _MALLOC_TUNED


class StepCounter:
    """Tokens trained since the last report, turned into MFU and peak memory on a CUDA device."""

    def __init__(self) -> None:
        self.tokens = 0
        self.rows = 0
        self.device = None
        self.params = 0
        self.peak = None
        self._last_elapsed = 0.0

    def start(self, model, device, precision: str, world: int = 1) -> None:
        import torch

        self.device = device
        self.params = sum(p.numel() for p in model.parameters())
        self.peak = None
        if device.type == "cuda":
            self.peak = peak_flops(torch.cuda.get_device_name(device))

    def add_batch(self, host_parts: list[dict], rows: int) -> None:
        self.rows += rows
        for h in host_parts:
            mask = h.get("attention_mask")
            if mask is not None:
                self.tokens += int(mask.sum())

    def read(self, elapsed: float | None = None) -> tuple[float | None, float | None]:
        """(MFU since the last read, peak GPU memory in GiB); (None, None) off CUDA. ``elapsed``:
        the training seconds so far (evaluation excluded)."""
        if self.device is None or self.device.type != "cuda":
            return None, None
        import torch

        peak_gib = torch.cuda.max_memory_allocated(self.device) / 2**30
        mfu = None
        if elapsed is not None:
            seconds = elapsed - self._last_elapsed
            self._last_elapsed = elapsed
            if self.peak and seconds > 0 and self.tokens:
                mfu = 6.0 * self.params * self.tokens / seconds / self.peak
        self.tokens = self.rows = 0
        return mfu, peak_gib
