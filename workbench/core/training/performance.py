"""Speed: fast matrix products, how much of the GPU a run uses (MFU, peak memory), and a CPU
allocator that reuses memory (keep_freed_memory).

MFU (model FLOPs utilisation) is the share of the GPU's peak dense bf16 tensor throughput that the
model's own arithmetic uses, counting real tokens, not padding. The FLOPs per token follow the PaLM
paper's appendix B (Chowdhery et al. 2022): 6 N + 12 L H T for a full fine-tune, where N counts the
parameters outside embedding tables (a lookup multiplies nothing), L is the number of layers, H the
hidden size and T the row's length (the attention products QK^T and AV, 4 L H T forward, twice that
backward). Only the gradients actually computed are counted (``FlopCount``): a frozen backbone or
LoRA adapters cut the backward pass. It is reported only on GPUs whose peak is known.
"""

from __future__ import annotations

from dataclasses import dataclass

# Dense (not 2:4 sparse) bf16 tensor-core peaks with fp32 accumulation, in FLOP/s, by a part of the
# device name (first match wins: the longer names come first). Sources, NVIDIA's datasheets and
# architecture whitepapers: H100 SXM / H200 / GH200 989.4 (H100 datasheet, "BF16 Tensor Core 1,979
# TFLOPS" with sparsity), H100 PCIe 756; A100 312 (A100 datasheet, 624 sparse); L40S 362.05; L40
# 181.05; L4 121 (242 sparse); A10 125 (250 sparse); RTX A6000 154.8 (FP16/BF16 with FP32 accumulate).
# GeForce cards run fp32 accumulation at half the fp16-accumulate rate: the Ada whitepaper (appendix
# A) gives the RTX 4090 165.2 TFLOPS for "FP16/BF16 Tensor with FP32 Accumulate" (330.3 with FP16
# accumulate) and the Ampere GA102 whitepaper the RTX 3090 71 (142 with FP16 accumulate): the figures
# here are the fp32-accumulate ones that PyTorch's autocast uses. V100 and T4 have no bf16 units:
# theirs are the fp16 (fp32 accumulate) peaks, which is what fp16 autocast runs there.
PEAK_FLOPS = (
    ("GH200", 989.4e12), ("H200", 989.4e12), ("H100 PCIe", 756e12), ("H100", 989.4e12), ("A100", 312e12),
    ("L40S", 362.05e12), ("L40", 181.05e12), ("L4", 121e12), ("A10", 125e12), ("A6000", 154.8e12),
    ("V100", 125e12), ("T4", 65e12), ("4090", 165.2e12), ("3090", 71e12),
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


def transformer_shape(model) -> tuple[int, int] | None:
    """(layers, hidden size) from the first Hugging Face config among the model's modules that names
    both (BERT-style, DistilBERT-style and GPT-style names); None for models without attention."""
    for module in model.modules():
        cfg = getattr(module, "config", None)
        if cfg is None:
            continue
        layers = next((getattr(cfg, k) for k in ("num_hidden_layers", "n_layers", "n_layer")
                       if isinstance(getattr(cfg, k, None), int)), None)
        hidden = next((getattr(cfg, k) for k in ("hidden_size", "dim", "n_embd")
                       if isinstance(getattr(cfg, k, None), int)), None)
        if layers and hidden:
            return layers, hidden
    return None


@dataclass(frozen=True)
class FlopCount:
    """The training FLOPs of one token, from the parameters that take part.

    ``dense``: N, the parameters outside embedding tables. The forward pass multiplies every token by
    all of them: 2 N. The backward pass computes two kinds of gradient, each 2 FLOPs per parameter:
    weight gradients for the trainable parameters alone (``weight_grads``), and gradients of the
    activations wherever a trainable parameter lies below (``activation_grads``). The approximation
    used for the latter: the parameters are taken in the order the model registers them, which for the
    encoders here is the order of the forward pass (embeddings, layer 0 ... layer L-1, pooler, head),
    and the activation gradients are counted through every non-embedding parameter from the first
    trainable one on (that layer's own input gradient, which nothing needs, is counted too: a slight
    over-count). A full fine-tune gives 2 N + 2 N + 2 N = 6 N; a frozen backbone with a trained head
    about 2 N + 4 x the head; LoRA on every layer about 4 N + 2 x the adapters.

    Attention (no parameters): 4 L H T per token forward; its backward, 8 L H T, is scaled by the share
    of the dense parameters the activation gradients pass through (``activation_grads / dense``).
    """

    dense: int
    weight_grads: int
    activation_grads: int
    layers: int = 0
    hidden: int = 0

    @classmethod
    def of(cls, model) -> "FlopCount":
        from torch import nn

        embedding = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters(recurse=False)}
        dense = weight = below = 0
        seen_trainable = False
        for p in model.parameters():  # each shared (tied) parameter once
            if id(p) in embedding:
                continue
            n = p.numel()
            dense += n
            if p.requires_grad:
                weight += n
                seen_trainable = True
            if seen_trainable:
                below += n
        if not seen_trainable and any(p.requires_grad for p in model.parameters()):
            below = dense  # only embeddings train: the gradients flow through every layer
        layers, hidden = transformer_shape(model) or (0, 0)
        return cls(dense=dense, weight_grads=weight, activation_grads=below, layers=layers, hidden=hidden)

    @property
    def per_token(self) -> float:
        """The parameter FLOPs of one token: 2 N forward plus the backward's gradients."""
        return 2.0 * (self.dense + self.weight_grads + self.activation_grads)

    @property
    def attention_per_pair(self) -> float:
        """Attention FLOPs per (token, position attended to) pair: 4 L H forward, 8 L H backward scaled."""
        share = self.activation_grads / self.dense if self.dense else 0.0
        return 4.0 * self.layers * self.hidden * (1.0 + 2.0 * share)

    def tokens(self, n_tokens: float, pairs: float) -> float:
        """FLOPs of ``n_tokens`` tokens in rows whose squared real lengths sum to ``pairs``."""
        return self.per_token * n_tokens + self.attention_per_pair * pairs

    def per_token_at(self, length: int) -> float:
        """FLOPs per token for rows of ``length`` real tokens (6 N + 12 L H T for a full fine-tune)."""
        return self.per_token + self.attention_per_pair * length


class StepCounter:
    """Tokens trained since the last report, turned into MFU and peak memory on a CUDA device."""

    def __init__(self) -> None:
        self.tokens = 0
        self.pairs = 0  # the sum of each row's real length squared: attention's (query, key) pairs
        self.rows = 0
        self.device = None
        self.flops: FlopCount | None = None
        self.peak: float | None = None  # the GPU's peak FLOP/s, where known
        self._last_elapsed = 0.0

    @property
    def params(self) -> int:
        return self.flops.dense if self.flops else 0

    def start(self, model, device, precision: str, world: int = 1) -> None:
        import torch

        self.device = device
        self.flops = FlopCount.of(model)
        self.peak = None
        if device.type == "cuda":
            self.peak = peak_flops(torch.cuda.get_device_name(device))

    def add_batch(self, host_parts: list[dict], rows: int) -> None:
        import numpy as np

        self.rows += rows
        for h in host_parts:
            mask = h.get("attention_mask")
            if mask is not None:  # a NumPy array from the batcher (or a CPU tensor)
                lengths = np.asarray(mask).sum(-1).astype(np.int64)
                self.tokens += int(lengths.sum())
                self.pairs += int((lengths * lengths).sum())

    def model_flops(self) -> float:
        """The model FLOPs of the tokens counted since the last read."""
        return self.flops.tokens(self.tokens, self.pairs) if self.flops else 0.0

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
                mfu = self.model_flops() / seconds / self.peak
        self.tokens = self.pairs = self.rows = 0
        return mfu, peak_gib
