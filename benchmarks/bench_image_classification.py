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
        [--precisions auto,fp32,bf16]

``--precisions`` runs each of lite0, frozen and cnn once per precision: the bf16 rows (bf16 autocast on
the CPU pays only where it has bf16 units, AMX or AVX512-BF16; elsewhere torch emulates it, slowly).

``--dataset digits``: small low-resolution greyscale images, generated offline: scikit-learn's 8x8
digits upscaled to 28x28 PNGs, 100 per class for training and 50 per class as --test (1,000 and 500
images). Two runs of EfficientNet-Lite0, fine-tuned: "before", the defaults tuned on photos, given
explicitly (--image-size 224 --augment strong --epochs 3), and "after", the data-dependent defaults
(workbench/core/tasks/image/policy.py; nothing given but the learning rate the CLI suggests). Each prints
the test accuracy, the frozen-feature baseline's, and a logistic regression on the raw pixels:

    python benchmarks/bench_image_classification.py --dataset digits [--no-refit] [--only sizes,before,after]

``--only sizes`` measures what chose the small-image input size: a logistic regression on frozen
EfficientNet-Lite0 features of the whole images at 64, 96, 128 and 224 pixels (accuracy, images/s).
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
from workbench.core.run.pipeline import run_training  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets" / "hymenoptera"


class Clock(Callbacks):
    """Times the phases of a run from its events."""

    def __init__(self) -> None:
        self.marks: dict[str, float] = {}
        self.eval_seconds: float | None = None
        self.last_step = None
        self.steps: list[tuple[float, float]] = []  # (epoch, training seconds so far) at each step

    def epoch_seconds(self) -> list[float]:
        """Training seconds of each whole epoch of the first pass, from the step events."""
        out, last, done = [], 0.0, 1
        for epoch, elapsed in self.steps:
            if epoch >= done - 1e-9:
                out.append(elapsed - last)
                last, done = elapsed, done + 1
        return out

    def on_event(self, event) -> None:
        now = time.perf_counter()
        if isinstance(event, PhaseChanged):
            self.marks.setdefault(event.phase, now)
        elif isinstance(event, StepMetrics):
            if self.last_step is None or event.step > self.last_step.step:  # a refit's second pass restarts
                self.steps.append((event.epoch, event.elapsed_s))
            self.last_step = event
            print(f"    step {event.step}/{event.total_steps} loss {event.loss:.4f} "
                  f"{event.samples_per_second:.1f} img/s", flush=True)
        elif isinstance(event, EvalMetrics):
            if event.split != "validation" or "testing" in self.marks:
                self.eval_seconds = now - self.marks["testing"]
            print(f"    eval {event.split} @ {event.step}: accuracy {event.metrics['accuracy']:.4f}", flush=True)


def run(name: str, model: str, image_size: int | None, epochs: float | None, lr: float, freeze: bool,
        batch_size: int, home: Path, data: DataConfig | None = None, **train) -> dict:
    shown = lambda v, unit="": "auto" if v is None else f"{v}{unit}"  # noqa: E731
    print(f"== {name}: {model}{' (frozen)' if freeze else ''}, {shown(image_size, 'px')}, {shown(epochs)} epochs, "
          f"lr {lr}", flush=True)
    cfg = RunConfig(
        data=data or DataConfig(train=str(DATA)),
        model=ModelConfig(name=model, method="frozen" if freeze else "full"),
        train=TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, image_size=image_size, seed=0, **train),
        run_dir=str(home / name),
    )
    clock = Clock()
    t0 = time.perf_counter()
    result = run_training(cfg, clock)
    total = time.perf_counter() - t0
    report = json.loads((Path(result.run_dir) / "report.json").read_text())
    n_eval = report["n"]
    config = json.loads((Path(result.run_dir) / "config.json").read_text())
    pinned = config["train"]
    check = json.loads((Path(result.run_dir) / "model" / "onnx_check.json").read_text())
    baseline = report.get("baseline") or {}
    fwd = forward_gflops(model, pinned["image_size"], len(report.get("labels") or []) or 2)
    epochs_s = clock.epoch_seconds()
    n_train = report["trained_on"]["rows"] if not report["trained_on"].get("refit") else None
    per_epoch_rate = [round(n_train / e, 1) for e in epochs_s] if n_train and epochs_s else []
    row = {
        "run": name,
        "backbone": model,
        "frozen": freeze,
        "image_size": pinned["image_size"],
        "precision": (config.get("resolved") or {}).get("precision"),
        "augment": pinned.get("augment"),
        "epochs": pinned["epochs"],
        "epochs_trained": round(report["training"]["steps"] / max(1, -(-report["trained_on"]["rows"] // batch_size)), 2)
        if not report["trained_on"].get("refit") else report["trained_on"]["epochs"],
        "refit": report["trained_on"].get("refit"),
        "lr": lr,
        "split": report["split"],
        "val_accuracy": round(result.metrics["accuracy"], 4),
        "val_macro_f1": round(result.metrics["macro_f1"], 4),
        "baseline_accuracy": round(baseline["accuracy"], 4) if "accuracy" in baseline else None,
        "baseline_seconds": baseline.get("seconds"),
        "train_images_per_s": round(result.samples_per_second, 2),
        "eval_images_per_s": round(n_eval / clock.eval_seconds, 2) if clock.eval_seconds else None,
        "decode_seconds": round(clock.marks["validating"] - clock.marks["decoding"], 2),
        "train_seconds": round(result.train_seconds, 1),
        "total_seconds": round(total, 1),
        "onnx_top1_agreement": check.get("top1_agreement"),
        "parameters": result.backbone["parameters"],
        "forward_gflops_per_image": round(fwd, 3),
        # Training costs about 3 forward passes (forward, and a backward of twice its work); a frozen
        # backbone only its forward pass (the head is negligible).
        "train_gflop_per_s": round(result.samples_per_second * fwd * (1 if freeze else 3), 2),
        "epoch_seconds": [round(e, 1) for e in epochs_s],
        "epoch_images_per_s": per_epoch_rate,
        "onnx_eval_images_per_s": onnx_rate(Path(result.run_dir) / "model" / "model.onnx", pinned["image_size"],
                                            batch_size),
    }
    print("   ", json.dumps(row), flush=True)
    return row


def forward_gflops(model: str, size: int, classes: int) -> float:
    """FLOPs of one image's forward pass (a multiply-add counts 2), by torch's FLOP counter."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from workbench.core.tasks.image.models import ImageClassifier

    kind = "small-cnn" if model == "small-cnn" else "efficientnet-lite0"
    net = ImageClassifier(kind, classes).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def onnx_rate(path: Path, size: int, batch: int, repeats: int = 3) -> float | None:
    """Images/s of the exported ONNX model in ONNX Runtime (CPU, default threads), median of runs."""
    if not path.is_file():
        return None
    import numpy as np

    from workbench.core.export.onnx_export import open_session

    session = open_session(path)
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
    session.run(None, {name: x})
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        session.run(None, {name: x})
        times.append(time.perf_counter() - t)
    return round(batch / sorted(times)[len(times) // 2], 2)


def plain_loop(size: int, batch: int, steps: int = 4) -> list[dict]:
    """The same EfficientNet-Lite0 in a plain PyTorch loop (random pixels, fused AdamW, no engine):
    training and inference images/s with NCHW and with channels-last inputs, median of ``steps``."""
    import torch

    from workbench.core.backbones import resolve_image_backbone
    from workbench.core.tasks.image.models import ImageClassifier, fold_batch_norms

    weights = resolve_image_backbone("efficientnet-lite0").path
    fwd = forward_gflops("efficientnet-lite0", size, 2)
    rows = []
    for layout in ("nchw", "channels_last"):
        torch.manual_seed(0)
        model = ImageClassifier("efficientnet-lite0", 2, weights=weights)
        x = torch.randn(batch, 3, size, size)
        y = torch.randint(0, 2, (batch,))
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
            forward = model
        else:
            forward = lambda pixels: model.head(model.backbone(pixels))  # noqa: E731 - NCHW all the way
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        model.train()
        times = []
        for i in range(steps + 1):
            t = time.perf_counter()
            torch.nn.functional.cross_entropy(forward(x), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i:  # the first step sets up the kernels
                times.append(time.perf_counter() - t)
        train_rate = batch / sorted(times)[len(times) // 2]
        infer = {}
        for name, net in (("eval", model.eval()), ("eval_folded", fold_batch_norms(model))):
            run = net if layout == "channels_last" else (lambda pixels, n=net: n.head(n.backbone(pixels)))
            with torch.inference_mode():
                run(x)
                times = []
                for _ in range(steps):
                    t = time.perf_counter()
                    run(x)
                    times.append(time.perf_counter() - t)
            infer[name] = round(batch / sorted(times)[len(times) // 2], 2)
        row = {"run": f"plain-{layout}", "image_size": size, "train_images_per_s": round(train_rate, 2),
               "train_gflop_per_s": round(train_rate * fwd * 3, 2), "eval_images_per_s": infer["eval"],
               "eval_folded_images_per_s": infer["eval_folded"]}
        print("   ", json.dumps(row), flush=True)
        rows.append(row)
    return rows


def write_digits(root: Path, train_per_class: int = 100, test_per_class: int = 50, side: int = 28,
                 seed: int = 0) -> Path:
    """scikit-learn's 8x8 digits (0-16 grey levels) upscaled to ``side`` x ``side`` greyscale PNGs in
    ROOT/train/DIGIT and ROOT/test/DIGIT, drawn without overlap."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    for label in range(10):
        idx = rng.permutation(np.flatnonzero(digits.target == label))
        for split, rows in (("train", idx[:train_per_class]),
                            ("test", idx[train_per_class:train_per_class + test_per_class])):
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            for i in rows:
                px = (digits.images[i] * (255 / 16)).clip(0, 255).astype(np.uint8)
                Image.fromarray(px, "L").resize((side, side), Image.Resampling.BICUBIC).save(folder / f"{i}.png")
    return root


def raw_pixel_baseline(root: Path) -> float:
    """Test accuracy of a logistic regression on the raw pixels: the floor a network should clear."""
    import numpy as np
    from PIL import Image
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def load(split):
        files = sorted((root / split).glob("*/*.png"))
        return (np.stack([np.asarray(Image.open(f), np.float32).ravel() / 255 for f in files]),
                np.array([int(f.parent.name) for f in files]))

    (x, y), (xt, yt) = load("train"), load("test")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x, y)
    return float((clf.predict(xt) == yt).mean())


def frozen_feature_sizes(root: Path, sizes: list[int]) -> list[dict]:
    """Test accuracy of a logistic regression on frozen EfficientNet-Lite0 features of the whole
    images at each input size, and the forward passes' images/s: how small an input small images need."""
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from workbench.core.backbones import image_model_spec, resolve_image_backbone
    from workbench.core.data.images import decode_to_cache, scan_image_folders
    from workbench.core.tasks.image.models import ImageClassifier
    from workbench.core.tasks.image.transforms import center_crops, to_pixels

    found = scan_image_folders(root / "train", test=root / "test")
    train, test = found.items["train"], found.items["test"]
    y = np.array([int(i.label) for i in train + test])
    spec = image_model_spec("efficientnet-lite0")
    model = ImageClassifier("efficientnet-lite0", 10, weights=resolve_image_backbone("efficientnet-lite0").path).eval()
    out = []
    for size in sizes:
        decoded = decode_to_cache([i.path for i in train + test], size, root / f"cache-{size}.npy")
        t0 = time.perf_counter()
        feats = []
        with torch.inference_mode():
            for start in range(0, len(y), 64):
                idx = np.arange(start, min(start + 64, len(y)))
                px = to_pixels(center_crops(decoded.array, idx, size), spec.mean, spec.std)
                feats.append(model.backbone(torch.from_numpy(px)).numpy())
        seconds = time.perf_counter() - t0
        x = np.concatenate(feats)
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x[:len(train)], y[:len(train)])
        row = {"image_size": size, "frozen_lr_accuracy": round(float((clf.predict(x[len(train):]) == y[len(train):]).mean()), 4),
               "forward_images_per_s": round(len(y) / seconds, 1)}
        print("   ", json.dumps(row), flush=True)
        out.append(row)
    return out


def digits_main(args) -> int:
    """Before and after the data-dependent defaults, on small greyscale digits."""
    from workbench.core.tasks import get_task

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        root = write_digits(home / "digits", args.train_per_class, args.test_per_class)
        data = DataConfig(train=str(root / "train"), test=str(root / "test"))
        pixels = raw_pixel_baseline(root)
        print(f"logistic regression on the raw pixels: test accuracy {pixels:.4f}", flush=True)
        probe = RunConfig(data=data, model=ModelConfig(name="efficientnet-lite0"))
        lr = get_task("image-classification").suggested_settings(probe)["lr"]  # what the CLI applies
        refit = {} if args.refit is None else {"refit": args.refit}
        if "sizes" in args.only:
            print("frozen EfficientNet-Lite0 features + logistic regression, by input size:", flush=True)
            frozen_feature_sizes(root, [64, 96, 128, 224])
        if "before" in args.only:
            rows.append(run("before", "efficientnet-lite0", 224, 3.0, lr, False, args.batch_size, home, data,
                            augment="strong", **refit))
        if "after" in args.only:
            rows.append(run("after", "efficientnet-lite0", None, None, lr, False, args.batch_size, home, data, **refit))
    print()
    print(f"{'run':<8} {'size':>4} {'augment':>7} {'epochs':>6} {'trained':>7} {'test acc':>8} {'macro F1':>8} "
          f"{'baseline':>8} {'train img/s':>11} {'train s':>7} {'total s':>7}")
    for r in rows:
        print(f"{r['run']:<8} {r['image_size']:>4} {r['augment']:>7} {r['epochs']:>6g} {r['epochs_trained']:>7} "
              f"{r['val_accuracy']:>8.4f} {r['val_macro_f1']:>8.4f} {r['baseline_accuracy'] or 0:>8.4f} "
              f"{r['train_images_per_s']:>11.2f} {r['train_seconds']:>7.1f} {r['total_seconds']:>7.1f}")
    print(f"raw-pixel logistic regression: {pixels:.4f}")
    print(json.dumps({"raw_pixel_logistic_regression": pixels, "runs": rows}))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=("hymenoptera", "digits"), default="hymenoptera")
    p.add_argument("--train-per-class", type=int, default=100, help="digits: training images per class")
    p.add_argument("--test-per-class", type=int, default=50, help="digits: test images per class")
    p.add_argument("--refit", action=argparse.BooleanOptionalAction, default=None,
                   help="digits: --no-refit skips the second pass on all rows (halves the time); default: the engine's")
    p.add_argument("--epochs", type=float, default=3)
    p.add_argument("--image-size", type=int, default=224, help="EfficientNet-Lite0 input size")
    p.add_argument("--frozen-epochs", type=float, default=None, help="frozen backbone: epochs (default: --epochs)")
    p.add_argument("--cnn-epochs", type=float, default=15)
    p.add_argument("--cnn-image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--precisions", default="auto",
                   help="hymenoptera: comma-separated precisions (auto, fp32, bf16); each run once per precision")
    p.add_argument("--only", default=None, help="hymenoptera: lite0,frozen,cnn; digits: before,after (and sizes: "
                   "frozen-feature accuracy and speed at 64/96/128/224 px)")
    args = p.parse_args()
    if args.dataset == "digits":
        args.only = set((args.only or "before,after").split(","))
        return digits_main(args)
    args.only = args.only or "plain,lite0,frozen,cnn"
    if not DATA.is_dir():
        print(f"{DATA} not found: the shared datasets are not on this machine", file=sys.stderr)
        return 2
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs", flush=True)
    wanted = set(args.only.split(","))
    if args.frozen_epochs is None:
        args.frozen_epochs = args.epochs
    rows, plain = [], []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        if "plain" in wanted:
            plain = plain_loop(args.image_size, args.batch_size)
        for precision in args.precisions.split(","):
            tag = "" if precision == "auto" else f"-{precision}"
            if "lite0" in wanted:
                rows.append(run(f"lite0-finetune{tag}", "efficientnet-lite0", args.image_size, args.epochs, 5e-4,
                                False, args.batch_size, home, precision=precision))
            if "frozen" in wanted:
                rows.append(run(f"lite0-frozen{tag}", "efficientnet-lite0", args.image_size, args.frozen_epochs, 1e-3,
                                True, args.batch_size, home, precision=precision))
            if "cnn" in wanted:
                rows.append(run(f"small-cnn-scratch{tag}", "small-cnn", args.cnn_image_size, args.cnn_epochs, 2e-3,
                                False, args.batch_size, home, precision=precision))
    print()
    print(f"{'run':<24} {'prec':>4} {'size':>4} {'epochs':>6} {'val acc':>8} {'macro F1':>8} {'train img/s':>11} {'GFLOP/s':>8} "
          f"{'eval img/s':>10} {'ONNX img/s':>10} {'decode s':>8}  epoch seconds")
    for r in rows:
        print(f"{r['run']:<24} {r['precision'] or '':>4} {r['image_size']:>4} {r['epochs']:>6} {r['val_accuracy']:>8.4f} {r['val_macro_f1']:>8.4f} "
              f"{r['train_images_per_s']:>11.2f} {r['train_gflop_per_s']:>8.2f} {r['eval_images_per_s'] or 0:>10.2f} "
              f"{r['onnx_eval_images_per_s'] or 0:>10.2f} {r['decode_seconds']:>8.2f}  {r['epoch_seconds']}")
    for r in plain:
        print(f"{r['run']:<24} {'':>4} {r['image_size']:>4} {'':>6} {'':>8} {'':>8} {r['train_images_per_s']:>11.2f} "
              f"{r['train_gflop_per_s']:>8.2f} {r['eval_images_per_s']:>10.2f} (folded {r['eval_folded_images_per_s']})")
    print(json.dumps(rows + plain))
    return 0


if __name__ == "__main__":
    sys.exit(main())
