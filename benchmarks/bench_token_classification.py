"""Workbench's tagging engine vs a plain transformers.Trainer, side by side on the same machine.

Two real datasets (the shared folder, never copied into the repo):

* ``conll2003``: named entities. Train on N sentences of CoNLL-2003 ``train.txt`` (a seeded random
  sample), report entity-level micro F1 (seqeval, conlleval rules) on the full ``test.txt``.
* ``ud-ewt``: part-of-speech tags (UPOS) from UD English EWT. The shared copy has no train file, so
  train on ``en_ewt-ud-dev.conllu`` (or N sentences of it) and report UPOS accuracy on
  ``en_ewt-ud-test.conllu``; multi-word token ranges are skipped for their syntactic words.

Both systems get the same sentences, backbone (all-MiniLM-L6-v2), labels and hyper-parameters
(1 epoch, max length 128, batch 16, lr 1e-4, 6% warm-up, weight decay 0.01, clipping 1.0, the
first sub-word of each word labelled, dynamic padding). The Trainer's inputs are cut at 128 tokens
as its examples do it; words it never sees count as wrong (predicted "O" for entities), and the
number of such words is printed. Workbench uses its default for tagging, random batches, unless
``--group-by-length`` asks for token-balanced length-grouped ones. Runs alternate (ours, Trainer, ...); repeat i uses seed + i for
both, on the same sentences, and the summary quotes medians.

    python benchmarks/bench_token_classification.py --dataset conll2003 [--sentences 3000] [--repeats 3]
    python benchmarks/bench_token_classification.py --dataset ud-ewt [--sentences 0 (all 2,001)]
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
SHARED = ROOT.parent / "shared" / "datasets"
DATASETS = {
    "conll2003": (SHARED / "conll2003" / "train.txt", SHARED / "conll2003" / "test.txt", "f1", "entity F1"),
    "ud-ewt": (SHARED / "ud-english-ewt" / "en_ewt-ud-dev.conllu", SHARED / "ud-english-ewt" / "en_ewt-ud-test.conllu",
               "accuracy", "UPOS accuracy"),
}
HP = dict(epochs=1, batch_size=16, lr=1e-4, warmup_ratio=0.06, weight_decay=0.01, max_length=128)


def make_train(source: Path, sentences: int, out: Path, seed: int) -> Path:
    """A CoNLL file of ``sentences`` randomly drawn sentences of ``source`` (0: all of them)."""
    import numpy as np

    from workbench.core.data.conll import read_tagged

    ds = read_tagged(source, cache_dir=out / "read").dataset
    if sentences and sentences < len(ds):
        ds = ds.select(np.sort(np.random.default_rng(seed).permutation(len(ds))[:sentences]))
    path = out / f"train-{len(ds)}.conll"
    with open(path, "w", encoding="utf-8") as f:
        for row in ds:
            f.writelines(f"{t}\t{g}\n" for t, g in zip(row["tokens"], row["tags"]))
            f.write("\n")
    return path


def make_test(source: Path, sentences: int, out: Path) -> Path:
    """The first ``sentences`` sentences of the test file (0: the file itself)."""
    if not sentences:
        return source
    from workbench.core.data.conll import read_tagged

    ds = read_tagged(source, cache_dir=out / "read-test").dataset
    ds = ds.select(range(min(sentences, len(ds))))
    path = out / f"test-{len(ds)}.conll"
    with open(path, "w", encoding="utf-8") as f:
        for row in ds:
            f.writelines(f"{t}\t{g}\n" for t, g in zip(row["tokens"], row["tags"]))
            f.write("\n")
    return path


def run_ours(train: Path, test: Path, args, run_dir: Path, defaults: bool = False, precision: str = "auto") -> dict:
    """Workbench on the Trainer's sentences (no hold-out), or with its defaults: only --test given."""
    from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from workbench.core.run.pipeline import run_training

    cfg = RunConfig(
        task="token-classification",
        data=DataConfig(train=str(train), test=str(test), val_fraction=DataConfig.val_fraction if defaults else 0.0),
        model=ModelConfig(name="all-MiniLM-L6-v2"),
        train=TrainConfig(**HP, seed=args.seed, device=args.device, group_by_length=args.group_by_length,
                          precision=precision),
        run_dir=str(run_dir),
    )
    t0 = time.perf_counter()
    r = run_training(cfg)
    return {"samples_per_second": r.samples_per_second, "metric": r.metrics[args.metric], "metrics": r.metrics,
            "train_seconds": r.train_seconds, "wall_seconds": time.perf_counter() - t0}


def run_trainer(train: Path, test: Path, args, out: Path, bf16: bool | None = None) -> dict:
    """The Trainer with its defaults (bf16 on a GPU, fp32 on the CPU), or ``bf16`` forced."""
    import datasets
    import numpy as np
    import torch
    from seqeval.metrics import f1_score
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
    )

    from workbench.core.backbones import resolve_backbone
    from workbench.core.data.conll import read_tagged
    from workbench.core.labels import build_label_map

    datasets.disable_progress_bars()
    path = resolve_backbone("all-MiniLM-L6-v2").path
    tok = AutoTokenizer.from_pretrained(path)
    tr_rows = read_tagged(train, cache_dir=out / "read").dataset
    te_rows = read_tagged(test, cache_dir=out / "read").dataset
    labels = build_label_map(t for s in tr_rows.data.table.column("tags").to_pylist() for t in s)
    l2i = labels.label2id

    def encode(batch):
        enc = tok(batch["tokens"], is_split_into_words=True, truncation=True, max_length=HP["max_length"])
        enc["labels"] = []
        for i, tags in enumerate(batch["tags"]):
            prev, ids = None, []
            for w in enc.word_ids(i):
                ids.append(-100 if w is None or w == prev else l2i.get(tags[w], -100))
                prev = w
            enc["labels"].append(ids)
        return enc

    cols = tr_rows.column_names
    tr = tr_rows.map(encode, batched=True, remove_columns=cols)
    te = te_rows.map(encode, batched=True, remove_columns=cols)
    torch.manual_seed(args.seed)
    model = AutoModelForTokenClassification.from_pretrained(path, num_labels=len(labels), id2label=labels.id2label,
                                                            label2id=l2i)
    on_gpu = torch.cuda.is_available() and args.device != "cpu"
    targs = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=HP["batch_size"], per_device_eval_batch_size=64,
        num_train_epochs=HP["epochs"], learning_rate=HP["lr"], warmup_steps=HP["warmup_ratio"],
        weight_decay=HP["weight_decay"], max_grad_norm=1.0, seed=args.seed, save_strategy="no", eval_strategy="no",
        logging_steps=50, report_to=[], disable_tqdm=True, use_cpu=not on_gpu, bf16=on_gpu if bf16 is None else bf16,
        dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=targs, train_dataset=tr, data_collator=DataCollatorForTokenClassification(tok))
    t0 = time.perf_counter()
    res = trainer.train()
    pred = trainer.predict(te)
    names = labels.names
    te_tokens = te_rows.data.table.column("tokens").to_pylist()
    te_tags = te_rows.data.table.column("tags").to_pylist()
    enc = tok(te_tokens, is_split_into_words=True, truncation=True, max_length=HP["max_length"])
    gold_all, pred_all, unseen = [], [], 0
    for i, (logits, tags) in enumerate(zip(pred.predictions, te_tags)):
        wids = enc.word_ids(i)
        first = [j for j, w in enumerate(wids) if w is not None and (j == 0 or wids[j - 1] != w)]
        p = [names[k] for k in np.argmax(logits[first], -1)]
        unseen += len(tags) - len(p)
        # Words cut off by max_length were never seen by the model: scored as "O" (wrong for POS).
        pred_all.append(p + ["O"] * (len(tags) - len(p)))
        gold_all.append(list(tags))
    if args.metric == "f1":
        metric = float(f1_score(gold_all, pred_all))
    else:
        flat_g = [t for s in gold_all for t in s]
        flat_p = [t for s in pred_all for t in s]
        metric = float(np.mean([g == p for g, p in zip(flat_g, flat_p)]))
    return {"samples_per_second": res.metrics["train_samples_per_second"], "metric": metric,
            "train_seconds": res.metrics["train_runtime"], "wall_seconds": time.perf_counter() - t0,
            "words_not_seen": unseen}


SYSTEMS = {
    "tuned": "Workbench, the Trainer's sentences (--val-fraction 0)",
    "defaults": "Workbench with its defaults (only --test given)",
    "trainer": "transformers.Trainer",
    "tuned-fp32": "Workbench, the Trainer's sentences, --precision fp32",
    "tuned-bf16": "Workbench, the Trainer's sentences, --precision bf16",
    "trainer-bf16": "transformers.Trainer with bf16=True",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="conll2003")
    ap.add_argument("--sentences", type=int, default=None, help="training sentences (default 3000 for conll2003, all for ud-ewt)")
    ap.add_argument("--test-sentences", type=int, default=0, help="score on the first N test sentences (default: all)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--sample-seed", type=int, default=42, help="seed of the random sample of training sentences")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=float, default=HP["epochs"])
    ap.add_argument("--batch-size", type=int, default=HP["batch_size"])
    ap.add_argument("--lr", type=float, default=HP["lr"])
    ap.add_argument("--systems", default="tuned,defaults,trainer",
                    help="which to run, comma-separated: " + ", ".join(SYSTEMS))
    ap.add_argument("--group-by-length", action="store_true", default=None,
                    help="Workbench on length-grouped (token-balanced) batches instead of tagging's default random ones")
    args = ap.parse_args()
    HP.update(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    systems = [k for k in args.systems.split(",") if k]
    source, test, args.metric, metric_name = DATASETS[args.dataset]
    if not source.exists():
        sys.exit(f"needs {source} (the shared datasets)")
    sentences = args.sentences if args.sentences is not None else (3000 if args.dataset == "conll2003" else 0)
    import torch

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cuda {torch.cuda.is_available()}")
    results = {k: [] for k in systems}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train = make_train(source, sentences, tmp, args.sample_seed)
        test = make_test(test, args.test_sentences, tmp)
        n_train = int(train.stem.split("-")[-1])
        batches = "length-grouped" if args.group_by_length else "random"
        print(f"{args.dataset}: train on {n_train:,} sentences of {source.name}, test on {test.name}; "
              f"all-MiniLM-L6-v2, {HP}; Workbench on {batches} batches; metric: {metric_name}", flush=True)
        base_seed = args.seed
        for i in range(args.repeats):
            # Same sentences every time; each repeat a new seed (head initialisation, batch order)
            # for every system: a few thousand sentences vary by a few F1 points from seed to seed.
            args.seed = base_seed + i
            for k in systems:
                if k.startswith("trainer"):
                    r = run_trainer(train, test, args, tmp / f"{k}-{i}", bf16=True if k == "trainer-bf16" else None)
                    extra = f"; {r['words_not_seen']} test words beyond its max length"
                else:
                    r = run_ours(train, test, args, tmp / f"{k}-{i}", defaults=k == "defaults",
                                 precision=k.split("-")[1] if "-" in k else "auto")
                    extra = ""
                print(f"[{i}] seed {args.seed} {k}: {r['samples_per_second']:.1f} samples/s, {metric_name} "
                      f"{r['metric']:.4f} (train {r['train_seconds']:.0f}s, wall {r['wall_seconds']:.0f}s{extra})", flush=True)
                results[k].append(r)
    keys = ("samples_per_second", "metric", "wall_seconds")
    med = {k: {m: statistics.median(r[m] for r in v) for m in keys} for k, v in results.items()}
    means = {k: statistics.fmean(r["metric"] for r in v) for k, v in results.items()}
    print()
    print(f"{'':12} {'train samples/s':>16} {metric_name:>16} {'mean':>8} {'wall s':>8}   (medians of {args.repeats} paired seeds)")
    for k in systems:
        print(f"{k:12} {med[k]['samples_per_second']:16.1f} {med[k]['metric']:16.4f} {means[k]:8.4f} "
              f"{med[k]['wall_seconds']:8.0f}   {SYSTEMS[k]}")
    summary = {"dataset": args.dataset, "train_sentences": n_train, "hyper": HP, "medians": med, "means": means,
               "runs": results}
    for base in ("trainer", "trainer-bf16"):  # each Workbench system against each Trainer that ran
        if base not in results:
            continue
        for k in systems:
            if k.startswith("trainer"):
                continue
            ratio = med[k]["samples_per_second"] / med[base]["samples_per_second"]
            # Same seed, same sentences: the per-seed differences say more than the medians.
            diffs = [100 * (o["metric"] - b["metric"]) for o, b in zip(results[k], results[base])]
            print(f"{k} vs {base}: speed {ratio:.2f}x; {metric_name} {100 * (med[k]['metric'] - med[base]['metric']):+.2f} "
                  f"points (medians); per seed " + ", ".join(f"{d:+.2f}" for d in diffs))
            summary[f"{k}_vs_{base.replace('-', '_')}"] = {"ratio": ratio, "paired_delta_points": diffs}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
