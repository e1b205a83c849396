"""CPU precision: MiniLM forward + backward + fused AdamW at batch 32, length 64, in fp32 and under
bf16 autocast, alternating, with what ``--precision auto`` picks on this CPU and why.

On CPUs with bf16 units (Intel AMX, AVX512-BF16) bf16 autocast multiplies on them; elsewhere torch
emulates bf16 through fp32 and it is slower, which is why auto keeps fp32 there.

    python benchmarks/bench_precision.py [--steps 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def samples_per_second(model, batch, precision: str, steps: int) -> float:
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    cast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    for i in range(steps + 2):  # two warm-up steps (kernel selection, oneDNN primitives)
        if i == 2:
            t0 = time.perf_counter()
        with cast:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), batch["labels"])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return steps * batch["input_ids"].shape[0] / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--length", type=int, default=64)
    args = ap.parse_args()
    import torch
    from transformers import AutoModelForSequenceClassification

    from workbench.core.backbones import resolve_backbone
    from workbench.core.device import choose_precision

    picked, why = choose_precision("auto", torch.device("cpu"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, capability "
          f"{torch.backends.cpu.get_cpu_capability()}; --precision auto on this CPU: {picked} ({why})")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(resolve_backbone("all-MiniLM-L6-v2").path, num_labels=2)
    model.train()
    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(1000, 20000, (args.batch_size, args.length), generator=g),
             "attention_mask": torch.ones(args.batch_size, args.length, dtype=torch.long),
             "labels": torch.randint(0, 2, (args.batch_size,), generator=g)}
    results = {"fp32": [], "bf16": []}
    for i in range(args.repeats):
        for precision in results:
            sps = samples_per_second(model, batch, precision, args.steps)
            results[precision].append(sps)
            print(f"[{i}] {precision}: {sps:.1f} samples/s", flush=True)
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"medians: fp32 {med['fp32']:.1f}, bf16 {med['bf16']:.1f} samples/s; bf16/fp32 {med['bf16'] / med['fp32']:.2f}x")
    print(json.dumps({"auto": picked, "why": why, "medians": med, "runs": results}))


if __name__ == "__main__":
    main()
