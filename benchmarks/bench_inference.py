"""Inference with an exported model: PyTorch vs ONNX Runtime fp32 vs ONNX Runtime int8, and `workbench
predict` on a 100,000-row file.

1. Trains (through the engine, with --quantize int8) an SST-2 model (all-MiniLM-L6-v2 on --rows 4,000 rows of
   ../shared/datasets/sst2/train.tsv, 1 epoch, max length 64, tested on the 872 rows of test.tsv) and
   an image model (EfficientNet-Lite0, frozen backbone, on hymenoptera train/, tested on val/); or
   reuses run folders given with --text-run / --image-run.
2. For each export and backend: examples/s at batch 1 and batch 32 (text: tokenizing included; images:
   on decoded, preprocessed pixels), model size on disk, accuracy on the test split.
3. `workbench predict` (a subprocess, default backend) on 10,000 and 100,000 rows made of SST-2
   sentences: wall time and peak resident memory, to show memory does not grow with the file.

    nice -n 5 python benchmarks/bench_inference.py [--work DIR] [--text-run RUN] [--image-run RUN]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from workbench.core.predict.predictor import Predictor  # noqa: E402
from workbench.core.run.pipeline import run_training  # noqa: E402

SHARED = ROOT.parent / "shared" / "datasets"
SST2, HYMENOPTERA = SHARED / "sst2", SHARED / "hymenoptera"


def train_text(work: Path, rows: int) -> Path:
    cfg = RunConfig(data=DataConfig(train=str(SST2 / "train.tsv"), test=str(SST2 / "test.tsv"), sample=rows,
                                    val_fraction=0.0),
                    model=ModelConfig(), train=TrainConfig(epochs=1, max_length=64, batch_size=32, lr=5e-5),
                    run_dir=str(work / "sst2-run"), quantize="int8")
    t = time.perf_counter()
    result = run_training(cfg)
    print(f"SST-2 run trained in {time.perf_counter() - t:.0f} s: {result.metrics}", flush=True)
    return Path(result.run_dir)


def train_image(work: Path) -> Path:
    cfg = RunConfig(data=DataConfig(train=str(HYMENOPTERA)), model=ModelConfig(name="efficientnet-lite0", method="frozen"),
                    train=TrainConfig(epochs=2, batch_size=32, lr=1e-3), run_dir=str(work / "image-run"),
                    quantize="int8")
    t = time.perf_counter()
    result = run_training(cfg)
    print(f"hymenoptera run trained in {time.perf_counter() - t:.0f} s: {result.metrics}", flush=True)
    return Path(result.run_dir)


def text_examples() -> tuple[list[str], list[str]]:
    with open(SST2 / "test.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["sentence"] for r in rows], [r["label"] for r in rows]


def image_examples(p: Predictor):
    import numpy as np

    paths = sorted(q for q in (HYMENOPTERA / "val").rglob("*") if q.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return np.stack([p.pixels(q) for q in paths]), [q.parent.name for q in paths]


def throughput(run_batch, inputs, batch: int, limit: int) -> float:
    n = min(len(inputs), limit)
    run_batch(inputs[:batch])  # warm-up: first calls allocate
    t = time.perf_counter()
    for i in range(0, n, batch):
        run_batch(inputs[i:i + batch])
    return n / (time.perf_counter() - t)


def measure(model_dir: Path, kind: str) -> list[dict]:
    rows = []
    for name, backend, int8, file in (("PyTorch", "torch", False, "model.safetensors"),
                                      ("ONNX fp32", "onnx", False, "model.onnx"),
                                      ("ONNX int8", "onnx", True, "model.int8.onnx")):
        p = Predictor(model_dir, backend=backend, int8=int8)
        if kind == "text":
            inputs, gold = text_examples()

            def run_batch(batch, p=p):
                return p.text_logits(batch, None, batch_size=len(batch))

            logits = p.text_logits(inputs, None, 32)
        else:
            inputs, gold = image_examples(p)

            def run_batch(batch, p=p):
                return p.image_logits(batch, batch_size=len(batch))

            logits = p.image_logits(inputs, 32)
        predicted = [p.labels[k] for k in logits.argmax(-1)]
        accuracy = sum(a == b for a, b in zip(predicted, gold)) / len(gold)
        row = {"model": name, "size_mb": round((model_dir / file).stat().st_size / 1e6, 1),
               "batch1_per_s": round(throughput(run_batch, inputs, 1, 200), 1),
               "batch32_per_s": round(throughput(run_batch, inputs, 32, 640), 1),
               "test_accuracy": round(accuracy, 4), "test_rows": len(gold)}
        print(f"  {kind} {row}", flush=True)
        rows.append(row)
    return rows


def predict_file_figures(model_dir: Path, work: Path, sizes: tuple[int, ...]) -> list[dict]:
    texts, _ = text_examples()
    with open(SST2 / "train.tsv", encoding="utf-8", newline="") as f:
        texts += [r["sentence"] for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    out = []
    for n in sizes:
        src = work / f"sst2-{n}.tsv"
        with open(src, "w", encoding="utf-8") as f:
            f.write("sentence\n")
            for i in range(n):
                f.write(texts[i % len(texts)] + "\n")
        code = ("import resource, sys, time; from workbench.cli.main import main; t = time.perf_counter(); "
                "rc = main(sys.argv[1:]); print(time.perf_counter() - t); "
                "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
        p = subprocess.run([sys.executable, "-c", code, "predict", str(model_dir), str(src), "-q", "--overwrite"],
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        if p.returncode:
            raise SystemExit(p.stderr)
        lines = p.stdout.strip().splitlines()
        summary = json.loads(lines[-3])
        row = {"rows": n, "seconds": round(float(lines[-2]), 1), "rows_per_s": summary["rows_per_second"],
               "peak_rss_mb": round(int(lines[-1]) / 1024), "backend": summary["backend"]}
        print(f"  predict {row}", flush=True)
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", help="folder for the runs and generated files (default: a new temporary folder)")
    ap.add_argument("--text-run", help="reuse this SST-2 run folder (trained with --quantize int8)")
    ap.add_argument("--image-run", help="reuse this image run folder (trained with --quantize int8)")
    ap.add_argument("--rows", type=int, default=4000, help="SST-2 training rows (default 4000)")
    ap.add_argument("--predict-rows", type=int, nargs="+", default=[10_000, 100_000],
                    help="file sizes for the predict figures (default 10000 100000)")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-inference-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WORKBENCH_HOME", str(work / "home"))
    text_run = Path(args.text_run) if args.text_run else train_text(work, args.rows)
    image_run = Path(args.image_run) if args.image_run else train_image(work)
    results = {"cpus": os.cpu_count(), "text": measure(text_run / "model", "text"),
               "image": measure(image_run / "model", "image"),
               "int8_check": {k: json.loads((r / "model" / "onnx_check.json").read_text())["int8"]
                              for k, r in (("text", text_run), ("image", image_run))},
               "predict": predict_file_figures(text_run / "model", work, tuple(args.predict_rows))}
    (work / "bench_inference.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print(f"written: {work / 'bench_inference.json'}")


if __name__ == "__main__":
    main()
