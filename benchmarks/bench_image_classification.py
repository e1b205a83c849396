"""Image classification on real photos: ../shared/datasets/hymenoptera (ants vs bees; 245 training and
153 validation images), the PyTorch transfer-learning tutorial's data set.

Three runs through the engine, as `workbench train` makes them:
  1. EfficientNet-Lite0, ImageNet-pretrained (the offline default), every layer fine-tuned;
  2. the same backbone frozen, only the new head trained;
  3. the small CNN trained from scratch, for contrast.
For each: validation accuracy and macro-F1, training images/s (forward + backward + augmentation),
evaluation images/s (forward on cached centre crops) and the one-off decode time.

Reference: about 0.94-0.95 validation accuracy fine-tuning an ImageNet ResNet-18 (11.7M parameters,
the tutorial). Usage:

    python benchmarks/bench_image_classification.py [--epochs 3] [--image-size 224] [--only lite0,frozen,cnn]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from workbench.core.events import Callbacks, EvalMetrics, PhaseChanged, StepMetrics  # noqa: E402
from workbench.core.run import run_training  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets" / "hymenoptera"


class Clock(Callbacks):
    """Times the phases of a run from its events."""

    def __init__(self) -> None:
        self.marks: dict[str, float] = {}
        self.eval_seconds: float | None = None
        self.last_step = None

    def on_event(self, event) -> None:
        now = time.perf_counter()
        if isinstance(event, PhaseChanged):
            self.marks.setdefault(event.phase, now)
        elif isinstance(event, StepMetrics):
            self.last_step = event
            print(f"    step {event.step}/{event.total_steps} loss {event.loss:.4f} "
                  f"{event.samples_per_second:.1f} img/s", flush=True)
        elif isinstance(event, EvalMetrics):
            if event.split != "validation" or "testing" in self.marks:
                self.eval_seconds = now - self.marks["testing"]
            print(f"    eval {event.split} @ {event.step}: accuracy {event.metrics['accuracy']:.4f}", flush=True)


def run(name: str, model: str, image_size: int, epochs: float, lr: float, freeze: bool, batch_size: int,
        home: Path) -> dict:
    print(f"== {name}: {model}{' (frozen)' if freeze else ''}, {image_size}px, {epochs} epochs, lr {lr}", flush=True)
    cfg = RunConfig(
        data=DataConfig(train=str(DATA)),
        model=ModelConfig(name=model, method="frozen" if freeze else "full"),
        train=TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, image_size=image_size, seed=0),
        run_dir=str(home / name),
    )
    clock = Clock()
    t0 = time.perf_counter()
    result = run_training(cfg, clock)
    total = time.perf_counter() - t0
    n_eval = json.loads((Path(result.run_dir) / "report.json").read_text())["n"]
    check = json.loads((Path(result.run_dir) / "model" / "onnx_check.json").read_text())
    row = {
        "run": name,
        "backbone": model,
        "frozen": freeze,
        "image_size": image_size,
        "epochs": epochs,
        "lr": lr,
        "val_accuracy": round(result.metrics["accuracy"], 4),
        "val_macro_f1": round(result.metrics["macro_f1"], 4),
        "train_images_per_s": round(result.samples_per_second, 2),
        "eval_images_per_s": round(n_eval / clock.eval_seconds, 2) if clock.eval_seconds else None,
        "decode_seconds": round(clock.marks["validating"] - clock.marks["decoding"], 2),
        "train_seconds": round(result.train_seconds, 1),
        "total_seconds": round(total, 1),
        "onnx_top1_agreement": check.get("top1_agreement"),
        "parameters": result.backbone["parameters"],
    }
    print("   ", json.dumps(row), flush=True)
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=float, default=3)
    p.add_argument("--image-size", type=int, default=224, help="EfficientNet-Lite0 input size")
    p.add_argument("--cnn-epochs", type=float, default=15)
    p.add_argument("--cnn-image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--only", default="lite0,frozen,cnn")
    args = p.parse_args()
    if not DATA.is_dir():
        print(f"{DATA} not found: the shared datasets are not on this machine", file=sys.stderr)
        return 2
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs", flush=True)
    wanted = set(args.only.split(","))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        if "lite0" in wanted:
            rows.append(run("lite0-finetune", "efficientnet-lite0", args.image_size, args.epochs, 5e-4, False,
                            args.batch_size, home))
        if "frozen" in wanted:
            rows.append(run("lite0-frozen", "efficientnet-lite0", args.image_size, args.epochs, 1e-3, True,
                            args.batch_size, home))
        if "cnn" in wanted:
            rows.append(run("small-cnn-scratch", "small-cnn", args.cnn_image_size, args.cnn_epochs, 2e-3, False,
                            args.batch_size, home))
    print()
    print(f"{'run':<20} {'size':>4} {'epochs':>6} {'val acc':>8} {'macro F1':>8} {'train img/s':>11} "
          f"{'eval img/s':>10} {'decode s':>8}")
    for r in rows:
        print(f"{r['run']:<20} {r['image_size']:>4} {r['epochs']:>6} {r['val_accuracy']:>8.4f} {r['val_macro_f1']:>8.4f} "
              f"{r['train_images_per_s']:>11.2f} {r['eval_images_per_s'] or 0:>10.2f} {r['decode_seconds']:>8.2f}")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
