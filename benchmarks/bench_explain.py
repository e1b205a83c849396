"""Time of one explanation on this machine: integrated gradients (48 steps) over a sentence with
all-MiniLM-L6-v2 + a classification head, and gradient saliency of one 224-pixel image with
EfficientNet-Lite0. The heads are untrained: the cost does not depend on the weights.

    nice -n 5 python benchmarks/bench_explain.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=48)
    args = p.parse_args()
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from workbench.core.analysis.explain import image_saliency, integrated_gradients
    from workbench.core.backbones import resolve_backbone, resolve_image_backbone
    from workbench.core.tasks.image.models import ImageClassifier

    torch.set_num_threads(max(1, (os.cpu_count() or 2)))
    text_path = resolve_backbone("all-MiniLM-L6-v2").path
    tok = AutoTokenizer.from_pretrained(text_path)
    model = AutoModelForSequenceClassification.from_pretrained(text_path, num_labels=2).eval()
    sentence = "a gripping , beautifully acted film whose quiet ending stays with you long after the credits"
    text_times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        att = integrated_gradients(model, tok, sentence, steps=args.steps)
        text_times.append(time.perf_counter() - t0)
    image = ImageClassifier("efficientnet-lite0", 2, weights=resolve_image_backbone("efficientnet-lite0").path).eval()
    pixels = np.random.default_rng(0).normal(size=(1, 3, 224, 224)).astype(np.float32)
    image_times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        image_saliency(image, pixels)
        image_times.append(time.perf_counter() - t0)
    print(json.dumps({"text_tokens": len(att.tokens), "ig_steps": args.steps,
                      "text_seconds_median": round(statistics.median(text_times), 3),
                      "text_completeness_gap": round(att.delta, 5),
                      "image_side": 224, "image_seconds_median": round(statistics.median(image_times), 3),
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
