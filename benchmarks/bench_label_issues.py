"""Label-issue ranking on real data with injected noise, and what cleaning buys.

For each dataset: flip 5% of the training labels (fixed seed, each to another class drawn at
random), rank every row with `workbench label-issues` (5-fold logistic regression on frozen
all-MiniLM-L6-v2 features + cleanlab self-confidence), and report precision and recall of the top-k
rows (k = number of flips) and of cleanlab's own flags, with the time taken. Then fine-tune the
backbone on the noisy file and on the corrected copy (flagged rows left out) with the same settings
and score both on the same test file; `workbench compare` counts what cleaning fixed and broke.

    nice -n 5 python benchmarks/bench_label_issues.py [--sst2-rows 4000] [--agnews-rows 3000] [--epochs 1]

Data: SST-2 train shuffled with pandas sample(frac=1, random_state=0), first N rows, tested on
SST-2 test.tsv; AG News dev.tsv first N rows, tested on the first 2,000 rows of AG News test.tsv.
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
SHARED = ROOT.parent / "shared" / "datasets"


def noisy_copy(df, label: str, out: Path, seed: int, rate: float = 0.05):
    import numpy as np

    rng = np.random.default_rng(seed)
    n = len(df)
    flips = np.sort(rng.choice(n, int(round(rate * n)), replace=False))
    classes = sorted(df[label].unique())
    noisy = df.copy()
    for i in flips:
        others = [c for c in classes if c != df[label].iloc[i]]
        noisy.iloc[i, noisy.columns.get_loc(label)] = others[rng.integers(len(others))]
    noisy.to_csv(out, sep="\t", index=False, quoting=3)
    return out, set((flips + 2).tolist())  # file lines: header on line 1


def datasets(args, tmp: Path):
    import pandas as pd

    out = []
    if args.sst2_rows:
        sst = pd.read_csv(SHARED / "sst2" / "train.tsv", sep="\t", quoting=3, keep_default_na=False)
        sst = sst.sample(frac=1, random_state=0).head(args.sst2_rows).reset_index(drop=True)
        sst["label"] = sst["label"].astype(str)
        out.append(("SST-2", sst, "sentence", "label", SHARED / "sst2" / "test.tsv"))
    if args.agnews_rows:
        ag = pd.read_csv(SHARED / "agnews" / "dev.tsv", sep="\t", quoting=3, header=None, names=["text", "label"],
                         keep_default_na=False).head(args.agnews_rows)
        test = pd.read_csv(SHARED / "agnews" / "test.tsv", sep="\t", quoting=3, header=None, names=["text", "label"],
                           keep_default_na=False).head(2000)
        test_path = tmp / "agnews-test-2000.tsv"
        test.to_csv(test_path, sep="\t", index=False, quoting=3)
        out.append(("AG News", ag, "text", "label", test_path))
    return out


def train(path: Path, test: Path, text: str, label: str, args, run_dir: Path):
    from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from workbench.core.run.pipeline import run_training

    cfg = RunConfig(
        data=DataConfig(train=str(path), test=str(test), val_fraction=0.0, text_column=text, label_column=label),
        model=ModelConfig(name="all-MiniLM-L6-v2"),
        train=TrainConfig(epochs=args.epochs, batch_size=32, lr=5e-5, max_length=64, seed=0),
        run_dir=str(run_dir))
    return run_training(cfg)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sst2-rows", type=int, default=4000)
    p.add_argument("--agnews-rows", type=int, default=3000)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--no-train", action="store_true", help="rank only; skip the noisy vs cleaned fine-tunes")
    args = p.parse_args()

    from workbench.core.analysis.compare import compare_runs
    from workbench.core.analysis.label_issues import find_label_issues
    from workbench.core.config import DataConfig
    from workbench.core.corrections import write_corrected_copy

    results = []
    with tempfile.TemporaryDirectory(prefix="bench-label-issues-") as tmp:
        tmp = Path(tmp)
        for name, df, text, label, test in datasets(args, tmp):
            path, flipped = noisy_copy(df, label, tmp / f"{name.replace(' ', '')}-noisy.tsv", seed=12)
            t0 = time.perf_counter()
            issues = find_label_issues(path, "all-MiniLM-L6-v2", "text-classification",
                                       data_config=DataConfig(text_column=text, label_column=label))
            seconds = time.perf_counter() - t0
            k = len(flipped)
            top = {r.line for r in issues.ranked()[:k]}
            flagged = {r.line for r in issues.rows if r.flagged}
            row = {"dataset": name, "rows": len(df), "classes": df[label].nunique(), "flips": k,
                   "seconds": round(seconds, 1), "cv_accuracy": round(issues.cv_accuracy, 4),
                   "top_k_precision": round(len(top & flipped) / k, 3), "top_k_recall": round(len(top & flipped) / k, 3),
                   "flagged": len(flagged),
                   "flagged_precision": round(len(flagged & flipped) / max(1, len(flagged)), 3),
                   "flagged_recall": round(len(flagged & flipped) / k, 3)}
            print(json.dumps(row), flush=True)
            if not args.no_train:
                copy = write_corrected_copy(issues, {line: None for line in flagged}, tmp / f"{path.stem}-cleaned.tsv")
                noisy_run = train(path, test, text, label, args, tmp / f"{name}-noisy-run")
                clean_run = train(copy, test, text, label, args, tmp / f"{name}-clean-run")
                diff = compare_runs(noisy_run.run_dir, clean_run.run_dir)
                acc = next(m for m in diff.metrics if m.name == "accuracy")
                row.update({"noisy_accuracy": round(noisy_run.metrics["accuracy"], 4),
                            "cleaned_accuracy": round(clean_run.metrics["accuracy"], 4),
                            "test_rows": diff.n, "fixed": len(diff.fixed), "broken": len(diff.broken),
                            "mcnemar_p": round(acc.p_value, 4),
                            "train_seconds": [round(noisy_run.train_seconds, 1), round(clean_run.train_seconds, 1)]})
                print(json.dumps(row), flush=True)
            results.append(row)
    print("\n| data | rows | flips (k) | time | top-k precision = recall | cleanlab flags | flag precision | "
          "flag recall | test acc. noisy | test acc. cleaned | fixed / broken (McNemar p) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        trained = (f"{r['noisy_accuracy']:.4f} | {r['cleaned_accuracy']:.4f} | {r['fixed']} / {r['broken']} "
                   f"(p={r['mcnemar_p']:.3g})") if "noisy_accuracy" in r else "- | - | -"
        print(f"| {r['dataset']} | {r['rows']:,} | {r['flips']} | {r['seconds']:.0f} s | {r['top_k_precision']:.3f} | "
              f"{r['flagged']} | {r['flagged_precision']:.3f} | {r['flagged_recall']:.3f} | {trained} |")


if __name__ == "__main__":
    main()
