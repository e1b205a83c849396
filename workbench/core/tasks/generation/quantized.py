"""QLoRA's base model: a causal LM whose linear layers load in 4 bits (bitsandbytes NF4 with double
quantization, the QLoRA paper's recipe), computing in bf16/fp16 on a GPU and fp32 on the CPU.

The adapters train on this frozen 4-bit base; the export folds them into the full-precision base
(TrainingMethod.merged), so the exported model loads without bitsandbytes.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any

# bitsandbytes' CPU backend (on CPUs with AVX512-BF16) tries, on import, to download a kernel from the
# Hugging Face Hub, which it then refuses (an unverified publisher) with a warning; its own PyTorch
# kernels run either way. The import looks in the local cache only (no network wait offline) and quietly.
_NOISY_LOGGER = "bitsandbytes.backends.cpu.ops"


@contextmanager
def _quiet_bitsandbytes_import():
    from huggingface_hub import constants

    log = logging.getLogger(_NOISY_LOGGER)
    level, offline = log.level, constants.HF_HUB_OFFLINE
    log.setLevel(logging.ERROR)
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        log.setLevel(level)
        constants.HF_HUB_OFFLINE = offline


def quantization_config(device: str) -> Any:
    import torch
    from transformers import BitsAndBytesConfig

    compute = torch.float32
    if device.startswith("cuda"):
        compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute)


def load_4bit(path: str, device: str):
    """The model at ``path`` with its linear layers (not the embeddings or the output layer) in 4 bits,
    on ``device`` ("cpu" or "cuda:N")."""
    import torch
    from transformers import AutoModelForCausalLM

    with _quiet_bitsandbytes_import():
        import bitsandbytes  # noqa: F401  (imported here, quietly, before transformers does)

        model = AutoModelForCausalLM.from_pretrained(path, quantization_config=quantization_config(device),
                                                     device_map={"": device}, dtype=torch.float32)
    keep_trainable_layout(model)
    return model


def keep_trainable_layout(model) -> None:
    """On CPUs with AVX512-BF16, bitsandbytes (0.50) repacks a 4-bit layer's weights for a faster
    kernel the first time it runs in eval mode without gradients (the base model's answers before
    training), and from then on runs that kernel in training too, where it has no backward: the
    gradients to every earlier layer's adapters would silently vanish. The repacking is turned off."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
