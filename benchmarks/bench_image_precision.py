"""Image fine-tuning in fp32 and bf16: Workbench vs a plain transformers.Trainer, side by side.

Data: ../shared/datasets/hymenoptera (ants vs bees; 245 training and 153 validation photos; the
validation folder is the test split for every system). Backbone: EfficientNet-Lite0, ImageNet-
pretrained, every layer fine-tuned, the same weights and head for both systems. Settings: 3 epochs,
224 px, batch 32, lr 5e-4, 6% warm-up, weight decay 0.01, clipping 1.0, no refit.

Systems (``--systems``):
  wb-fp32       Workbench, --precision fp32
  wb-bf16       Workbench, --precision bf16 (what auto picks on a CPU with bf16 units)
  trainer-fp32  transformers.Trainer, its CPU default (fp32)
  trainer-bf16  transformers.Trainer with bf16=True
The Trainer reads the photos with PIL in its data loader (random resized crop and flip for training,
resize and centre crop for testing), as Hugging Face's image-classification example does.
Workbench uses its own defaults for the augmentation of photos. Runs alternate; repeat i uses seed
+ i for every system (paired seeds); the summary quotes medians and per-seed differences.

    python benchmarks/bench_image_precision.py [--repeats 3] [--epochs 3] [--image-size 224]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "datasets" / "hymenoptera"
HP = dict(epochs=3, batch_size=32, lr=5e-4, warmup_ratio=0.06, weight_decay=0.01, max_grad_norm=1.0)
SYSTEMS = {
    "wb-fp32": "Workbench, --precision fp32",
    "wb-bf16": "Workbench, --precision bf16",
    "trainer-fp32": "transformers.Trainer (fp32, its CPU default)",
    "trainer-bf16": "transformers.Trainer with bf16=True",
}


def run_ours(args, precision: str, seed: int, home: Path) -> dict:
    from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from workbench.core.run.pipeline import run_training

    cfg = RunConfig(data=DataConfig(train=str(DATA)), model=ModelConfig(name="efficientnet-lite0"),
                    train=TrainConfig(epochs=HP["epochs"], batch_size=HP["batch_size"], lr=HP["lr"],
                                      warmup_ratio=HP["warmup_ratio"], weight_decay=HP["weight_decay"],
                                      max_grad_norm=HP["max_grad_norm"], image_size=args.image_size, seed=seed,
                                      precision=precision, refit=False),
                    run_dir=str(home / f"wb-{precision}-{seed}"))
    t0 = time.perf_counter()
    result = run_training(cfg)
    return {"samples_per_second": result.samples_per_second, "accuracy": result.metrics["accuracy"],
            "train_seconds": result.train_seconds, "wall_seconds": time.perf_counter() - t0}


class Photos:
    """(pixel_values, label) of every photo of ``root``'s class folders, transformed when read."""

    def __init__(self, root: Path, size: int, train: bool, mean, std, seed: int) -> None:
        import numpy as np

        self.items = [(p, k) for k, d in enumerate(sorted(x for x in root.iterdir() if x.is_dir()))
                      for p in sorted(d.iterdir()) if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
        self.size, self.train = size, train
        self.mean, self.std = np.array(mean, np.float32), np.array(std, np.float32)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        import numpy as np
        import torch
        from PIL import Image

        path, label = self.items[i]
        img = Image.open(path).convert("RGB")
        s = self.size
        if self.train:  # torchvision's RandomResizedCrop(scale=(0.08, 1)) and RandomHorizontalFlip
            w, h = img.size
            for _ in range(10):
                area = w * h * self.rng.uniform(0.08, 1.0)
                ratio = np.exp(self.rng.uniform(np.log(3 / 4), np.log(4 / 3)))
                cw, ch = int(round((area * ratio) ** 0.5)), int(round((area / ratio) ** 0.5))
                if 0 < cw <= w and 0 < ch <= h:
                    x, y = self.rng.integers(0, w - cw + 1), self.rng.integers(0, h - ch + 1)
                    break
            else:
                cw = ch = min(w, h)
                x, y = (w - cw) // 2, (h - ch) // 2
            img = img.resize((s, s), Image.BILINEAR, box=(x, y, x + cw, y + ch))
            if self.rng.random() < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
        else:  # Resize(size * 256 / 224) then CenterCrop(size)
            short = int(s * 256 / 224)
            w, h = img.size
            scale = short / min(w, h)
            img = img.resize((max(s, round(w * scale)), max(s, round(h * scale))), Image.BILINEAR)
            w, h = img.size
            left, top = (w - s) // 2, (h - s) // 2
            img = img.crop((left, top, left + s, top + s))
        x = (np.asarray(img, np.float32) / 255.0 - self.mean) / self.std
        return {"pixel_values": torch.from_numpy(x.transpose(2, 0, 1).copy()), "labels": label}


def run_trainer(args, bf16: bool, seed: int, home: Path) -> dict:
    import numpy as np
    import torch
    from transformers import Trainer, TrainingArguments

    from workbench.core.backbones import resolve_image_backbone
    from workbench.core.tasks.image.models import ImageClassifier

    class WithLoss(torch.nn.Module):
        def __init__(self, model) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values, labels=None):
            logits = self.model(pixel_values=pixel_values)
            logits = logits.logits if hasattr(logits, "logits") else logits
            loss = torch.nn.functional.cross_entropy(logits.float(), labels) if labels is not None else None
            return {"loss": loss, "logits": logits}

    mean, std = args.mean, args.std
    train = Photos(DATA / "train", args.image_size, True, mean, std, seed)
    test = Photos(DATA / "val", args.image_size, False, mean, std, seed)
    torch.manual_seed(seed)
    model = WithLoss(ImageClassifier("efficientnet-lite0", 2, weights=resolve_image_backbone("efficientnet-lite0").path))
    targs = TrainingArguments(
        output_dir=str(home / f"trainer-{bf16}-{seed}"), per_device_train_batch_size=HP["batch_size"],
        per_device_eval_batch_size=64, num_train_epochs=HP["epochs"], learning_rate=HP["lr"],
        warmup_steps=HP["warmup_ratio"], weight_decay=HP["weight_decay"], max_grad_norm=HP["max_grad_norm"],
        seed=seed, save_strategy="no", eval_strategy="no", logging_steps=50, report_to=[], disable_tqdm=True,
        use_cpu=True, bf16=bf16, dataloader_num_workers=0, remove_unused_columns=False,
    )
    trainer = Trainer(model=model, args=targs, train_dataset=train)
    t0 = time.perf_counter()
    res = trainer.train()
    pred = trainer.predict(test)
    logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
    acc = float((np.argmax(logits, -1) == np.array([k for _, k in test.items])).mean())
    return {"samples_per_second": res.metrics["train_samples_per_second"], "accuracy": acc,
            "train_seconds": res.metrics["train_runtime"], "wall_seconds": time.perf_counter() - t0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=float, default=HP["epochs"])
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated: " + ", ".join(SYSTEMS))
    args = ap.parse_args()
    if not DATA.is_dir():
        print(f"{DATA} not found: the shared datasets are not on this machine", file=sys.stderr)
        return 2
    HP["epochs"] = args.epochs
    import torch

    from workbench.core.backbones import image_model_spec
    from workbench.core.device import choose_precision

    spec = image_model_spec("efficientnet-lite0")
    args.mean, args.std = spec.mean, spec.std  # the backbone's own normalisation, as Workbench uses
    picked, why = choose_precision("auto", torch.device("cpu"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; --precision auto here: {picked} ({why}); "
          f"hymenoptera, efficientnet-lite0, {args.image_size}px, {HP}", flush=True)
    systems = [k for k in args.systems.split(",") if k]
    results = {k: [] for k in systems}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        os.environ["WORKBENCH_HOME"] = str(home / "home")
        for i in range(args.repeats):
            seed = args.seed + i
            for k in systems:
                precision = k.split("-")[1]
                if k.startswith("trainer"):
                    r = run_trainer(args, precision == "bf16", seed, home)
                else:
                    r = run_ours(args, precision, seed, home)
                print(f"[{i}] seed {seed} {k}: {r['samples_per_second']:.1f} images/s, accuracy {r['accuracy']:.4f} "
                      f"(train {r['train_seconds']:.0f}s, wall {r['wall_seconds']:.0f}s)", flush=True)
                results[k].append(r)
    keys = ("samples_per_second", "accuracy", "wall_seconds")
    med = {k: {m: statistics.median(r[m] for r in v) for m in keys} for k, v in results.items()}
    print()
    print(f"{'':14} {'train images/s':>15} {'accuracy':>9} {'wall s':>7}   (medians of {args.repeats} paired seeds)")
    for k in systems:
        print(f"{k:14} {med[k]['samples_per_second']:15.1f} {med[k]['accuracy']:9.4f} {med[k]['wall_seconds']:7.0f}   "
              f"{SYSTEMS[k]}")
    summary = {"hyper": HP, "image_size": args.image_size, "medians": med, "runs": results}
    pairs = [("wb-bf16", "wb-fp32"), ("trainer-bf16", "trainer-fp32"), ("wb-fp32", "trainer-fp32"),
             ("wb-bf16", "trainer-bf16")]
    for a, b in pairs:
        if a in results and b in results:
            ratio = med[a]["samples_per_second"] / med[b]["samples_per_second"]
            diffs = [100 * (x["accuracy"] - y["accuracy"]) for x, y in zip(results[a], results[b])]
            print(f"{a} vs {b}: speed {ratio:.2f}x; accuracy per seed " + ", ".join(f"{d:+.2f}" for d in diffs)
                  + " points")
            summary[f"{a}_vs_{b}"] = {"ratio": ratio, "paired_delta_points": diffs}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
