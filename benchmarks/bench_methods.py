"""Training methods side by side: full fine-tuning, a frozen backbone (head only) and LoRA, on the same
data, backbone (all-MiniLM-L6-v2) and machine; and Workbench's LoRA against a plain
`transformers.Trainer` + `peft` LoRA with the same settings.

* ``sst2``: N rows of SST-2 train (pandas sample(frac=1, random_state=0), as bench_text_classification),
  accuracy on SST-2 ``test.tsv`` (the labelled GLUE dev set); max length 64, batch 32.
* ``conll2003``: N seeded random sentences of CoNLL-2003 ``train.txt`` (as bench_token_classification),
  entity-level F1 (seqeval) on ``test.txt``; max length 128, batch 16.

Learning rates: full 5e-5 (SST-2) / 1e-4 (CoNLL), frozen 1e-3, LoRA 5e-4 (Workbench's suggestions for
each method); LoRA r=8, alpha=16, dropout 0.1 on query and value, the head trained; 1 epoch, 6%
warm-up, weight decay 0.01, clipping 1.0. Each run is its own process, so its peak resident memory
(ru_maxrss; on a GPU torch's peak allocation) is its own. Runs of one repeat share the seed.

    python benchmarks/bench_methods.py [--datasets sst2 conll2003] [--rows 4000] [--sentences 3000]
        [--methods full frozen lora trainer-lora] [--repeats 1] [--epochs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
SHARED = ROOT.parent / "shared" / "datasets"
LR = {"sst2": {"full": 5e-5, "frozen": 1e-3, "lora": 5e-4}, "conll2003": {"full": 1e-4, "frozen": 1e-3, "lora": 5e-4}}
SHAPE = {"sst2": dict(max_length=64, batch_size=32), "conll2003": dict(max_length=128, batch_size=16)}
LORA = dict(r=8, alpha=16, dropout=0.1, targets=["query", "value"])
METRIC = {"sst2": ("accuracy", "accuracy"), "conll2003": ("f1", "entity F1")}


def peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available() and torch.cuda.max_memory_allocated():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


# ---------------------------------------------------------------------------- one run (a child process)
def run_workbench(job: dict) -> dict:
    from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from workbench.core.run.pipeline import run_training

    ds, method = job["dataset"], job["method"]
    if ds == "sst2":
        data = DataConfig(train=job["train"], test=job["test"], val_fraction=0.0, text_column="sentence",
                          label_column="label")
        task = "text-classification"
    else:
        data = DataConfig(train=job["train"], test=job["test"], val_fraction=0.0)
        task = "token-classification"
    model = ModelConfig(name="all-MiniLM-L6-v2", method=method, lora_rank=LORA["r"], lora_alpha=LORA["alpha"],
                        lora_dropout=LORA["dropout"], lora_targets=LORA["targets"] if method == "lora" else None)
    cfg = RunConfig(task=task, data=data, model=model, run_dir=job["run_dir"],
                    train=TrainConfig(epochs=job["epochs"], lr=LR[ds][method], warmup_ratio=0.06, weight_decay=0.01,
                                      seed=job["seed"], device=job["device"], **SHAPE[ds]))
    t0 = time.perf_counter()
    r = run_training(cfg)
    return {"samples_per_second": r.samples_per_second, "metric": r.metrics[METRIC[ds][0]],
            "train_seconds": r.train_seconds, "wall_seconds": time.perf_counter() - t0,
            "trainable_parameters": r.trainable_parameters}


def run_trainer_lora(job: dict) -> dict:
    """transformers.Trainer on a peft LoRA model: the recipe from peft's documentation."""
    import datasets
    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, Trainer, TrainingArguments

    from workbench.core.backbones import resolve_backbone

    datasets.disable_progress_bars()
    ds = job["dataset"]
    path = resolve_backbone("all-MiniLM-L6-v2").path
    tok = AutoTokenizer.from_pretrained(path)
    shape = SHAPE[ds]
    if ds == "sst2":
        import pandas as pd
        from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

        def load(p):
            df = pd.read_csv(p, sep="\t", quoting=3, keep_default_na=False)
            d = datasets.Dataset.from_pandas(df[["sentence", "label"]].astype({"label": int}))
            return d.map(lambda b: tok(b["sentence"], truncation=True, max_length=shape["max_length"]), batched=True,
                         remove_columns=["sentence"])
        tr, te = load(job["train"]), load(job["test"])
        torch.manual_seed(job["seed"])
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
        collator = DataCollatorWithPadding(tok)
    else:
        from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification

        from workbench.core.data.conll import read_tagged
        from workbench.core.labels import build_label_map

        tr_rows = read_tagged(job["train"], cache_dir=Path(job["run_dir"]) / "read").dataset
        te_rows = read_tagged(job["test"], cache_dir=Path(job["run_dir"]) / "read").dataset
        labels = build_label_map(t for s in tr_rows.data.table.column("tags").to_pylist() for t in s)

        def encode(batch):
            enc = tok(batch["tokens"], is_split_into_words=True, truncation=True, max_length=shape["max_length"])
            enc["labels"] = []
            for i, tags in enumerate(batch["tags"]):
                prev, ids = None, []
                for w in enc.word_ids(i):
                    ids.append(-100 if w is None or w == prev else labels.label2id.get(tags[w], -100))
                    prev = w
                enc["labels"].append(ids)
            return enc

        tr = tr_rows.map(encode, batched=True, remove_columns=tr_rows.column_names)
        te = te_rows.map(encode, batched=True, remove_columns=te_rows.column_names)
        torch.manual_seed(job["seed"])
        model = AutoModelForTokenClassification.from_pretrained(path, num_labels=len(labels), id2label=labels.id2label,
                                                                label2id=labels.label2id)
        collator = DataCollatorForTokenClassification(tok)
    model = get_peft_model(model, LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                                             target_modules=LORA["targets"], modules_to_save=["classifier"]))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    on_gpu = torch.cuda.is_available() and job["device"] != "cpu"
    targs = TrainingArguments(
        output_dir=job["run_dir"], per_device_train_batch_size=shape["batch_size"], per_device_eval_batch_size=64,
        num_train_epochs=job["epochs"], learning_rate=LR[ds]["lora"], warmup_steps=0.06, weight_decay=0.01,
        max_grad_norm=1.0, seed=job["seed"], save_strategy="no", eval_strategy="no", logging_steps=50, report_to=[],
        disable_tqdm=True, use_cpu=not on_gpu, bf16=on_gpu, dataloader_num_workers=0, label_names=["labels"],
    )
    trainer = Trainer(model=model, args=targs, train_dataset=tr, data_collator=collator)
    t0 = time.perf_counter()
    res = trainer.train()
    pred = trainer.predict(te)
    if ds == "sst2":
        metric = float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())
    else:
        from seqeval.metrics import f1_score

        names = labels.names
        te_tags = te_rows.data.table.column("tags").to_pylist()
        enc = tok(te_rows.data.table.column("tokens").to_pylist(), is_split_into_words=True, truncation=True,
                  max_length=shape["max_length"])
        gold, predicted = [], []
        for i, (logits, tags) in enumerate(zip(pred.predictions, te_tags)):
            wids = enc.word_ids(i)
            first = [j for j, w in enumerate(wids) if w is not None and (j == 0 or wids[j - 1] != w)]
            p = [names[k] for k in np.argmax(logits[first], -1)]
            predicted.append(p + ["O"] * (len(tags) - len(p)))  # words past max length: never seen
            gold.append(list(tags))
        metric = float(f1_score(gold, predicted))
    return {"samples_per_second": res.metrics["train_samples_per_second"], "metric": metric,
            "train_seconds": res.metrics["train_runtime"], "wall_seconds": time.perf_counter() - t0,
            "trainable_parameters": trainable}


def child(job: dict) -> None:
    out = run_trainer_lora(job) if job["method"] == "trainer-lora" else run_workbench(job)
    out["peak_memory_mb"] = peak_memory_mb()
    print("RESULT " + json.dumps(out), flush=True)


# ---------------------------------------------------------------------------- the comparison
def make_data(dataset: str, args, tmp: Path) -> tuple[str, str, int]:
    if dataset == "sst2":
        import bench_text_classification

        train, test = bench_text_classification.make_data(args.rows, tmp)
        return str(train), str(test), args.rows
    import bench_token_classification

    train = bench_token_classification.make_train(SHARED / "conll2003" / "train.txt", args.sentences, tmp, args.seed)
    return str(train), str(SHARED / "conll2003" / "test.txt"), int(train.stem.split("-")[-1])


def run_child(job: dict) -> dict:
    p = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], capture_output=True, text=True)
    lines = [line for line in p.stdout.splitlines() if line.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        raise SystemExit(f"{job['method']} on {job['dataset']} failed:\n{p.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["sst2", "conll2003"], choices=["sst2", "conll2003"])
    ap.add_argument("--methods", nargs="+", default=["full", "frozen", "lora", "trainer-lora"],
                    choices=["full", "frozen", "lora", "trainer-lora"])
    ap.add_argument("--rows", type=int, default=4000, help="SST-2 training rows (default 4000)")
    ap.add_argument("--sentences", type=int, default=3000, help="CoNLL-2003 training sentences (default 3000)")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(json.loads(args.child))
    if not SHARED.exists():
        sys.exit(f"needs {SHARED} (the shared datasets)")
    import torch

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cuda {torch.cuda.is_available()}; "
          f"epochs {args.epochs}, LoRA {LORA}", flush=True)
    summary = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for ds in args.datasets:
            train, test, n = make_data(ds, args, tmp)
            name = METRIC[ds][1]
            print(f"\n{ds}: {n:,} training {'rows' if ds == 'sst2' else 'sentences'}, {SHAPE[ds]}", flush=True)
            results: dict[str, list[dict]] = {m: [] for m in args.methods}
            for i in range(args.repeats):
                for m in args.methods:
                    job = {"dataset": ds, "method": m, "train": train, "test": test, "seed": args.seed + i,
                           "epochs": args.epochs, "device": args.device, "run_dir": str(tmp / f"{ds}-{m}-{i}")}
                    r = run_child(job)
                    results[m].append(r)
                    print(f"[{i}] {m:13} {name} {r['metric']:.4f}  {r['samples_per_second']:6.1f} samples/s  "
                          f"peak {r['peak_memory_mb']:6.0f} MB  trainable {r['trainable_parameters']:,}  "
                          f"(train {r['train_seconds']:.0f}s, wall {r['wall_seconds']:.0f}s)", flush=True)
            med = {m: {k: statistics.median(r[k] for r in v) for k in ("metric", "samples_per_second", "peak_memory_mb",
                                                                       "trainable_parameters")}
                   for m, v in results.items()}
            print(f"\n{'method':13} {name:>10} {'samples/s':>10} {'peak MB':>8} {'trainable':>12}   "
                  f"(medians of {args.repeats})")
            for m, v in med.items():
                print(f"{m:13} {v['metric']:10.4f} {v['samples_per_second']:10.1f} {v['peak_memory_mb']:8.0f} "
                      f"{int(v['trainable_parameters']):12,}")
            if "lora" in med and "trainer-lora" in med:
                ratio = med["lora"]["samples_per_second"] / med["trainer-lora"]["samples_per_second"]
                delta = 100 * (med["lora"]["metric"] - med["trainer-lora"]["metric"])
                print(f"LoRA, Workbench vs Trainer+peft: speed {ratio:.2f}x, {name} {delta:+.2f} points")
            if "lora" in med and "full" in med:
                print(f"LoRA vs full: speed {med['lora']['samples_per_second'] / med['full']['samples_per_second']:.2f}x, "
                      f"{name} {100 * (med['lora']['metric'] - med['full']['metric']):+.2f} points, trainable "
                      f"{med['lora']['trainable_parameters'] / med['full']['trainable_parameters']:.2%}")
            summary[ds] = {"n": n, "medians": med, "runs": results}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
