"""One process against two (gloo, CPU) with the same effective batch, on SST-2.

Both runs train all-MiniLM-L6-v2 through the CLI on the same N rows of SST-2 train (drawn with
pandas sample(frac=1, random_state=0)), 1 epoch, max length 64, lr 5e-5, no hold-out, and test on
SST-2 `test.tsv` (the labelled GLUE dev set): one process with --batch-size 32, and
`--num-processes 2 --batch-size 16` (effective batch 32). Each process of the pair gets half the
cores (OMP_NUM_THREADS). Quoted: test accuracy (must agree within noise) and training samples/s.

    python benchmarks/bench_distributed.py [--rows 4000] [--repeats 1] [--seed 42]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SST2 = ROOT.parent / "shared" / "datasets" / "sst2"


def make_data(rows: int, out: Path) -> Path:
    import pandas as pd

    train = pd.read_csv(SST2 / "train.tsv", sep="\t", quoting=3, keep_default_na=False)
    path = out / f"sst2-train-{rows}.tsv"
    train.sample(frac=1, random_state=0).head(rows).to_csv(path, sep="\t", index=False, quoting=3)
    return path


def run(train: Path, run_dir: Path, processes: int, batch: int, seed: int) -> dict:
    cores = os.cpu_count() or 1
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS=str(max(1, cores // processes)))
    args = [sys.executable, "-m", "workbench", "train", str(train), "--test", str(SST2 / "test.tsv"),
            "--text-column", "sentence", "--label-column", "label", "--val-fraction", "0", "--epochs", "1",
            "--max-length", "64", "--lr", "5e-5", "--batch-size", str(batch), "--seed", str(seed),
            "--device", "cpu", "--run-dir", str(run_dir), "--quiet"]
    if processes > 1:
        args += ["--num-processes", str(processes)]
    t0 = time.perf_counter()
    proc = subprocess.run(args, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{processes}-process run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"accuracy": summary["metrics"]["accuracy"], "samples_per_second": summary["samples_per_second"],
            "train_seconds": summary["train_seconds"], "wall_seconds": wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=4000)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()
    if not SST2.exists():
        print(f"skipped: {SST2} not present")
        return
    results: dict[str, list[dict]] = {"1 process, batch 32": [], "2 processes, batch 16 each": []}
    with tempfile.TemporaryDirectory() as tmp:
        train = make_data(args.rows, Path(tmp))
        for i in range(args.repeats):
            for name, (n, batch) in zip(results, ((1, 32), (2, 16))):
                r = run(train, Path(tmp) / f"run-{n}-{i}", n, batch, args.seed + i)
                results[name].append(r)
                print(f"{name}, repeat {i + 1}: {json.dumps(r)}", flush=True)
    print(f"\nSST-2, {args.rows:,} training rows, 1 epoch, effective batch 32, {os.cpu_count()} CPU cores, "
          f"medians of {args.repeats}:")
    print(f"{'run':<28} {'test accuracy':>14} {'samples/s':>10} {'wall s':>8}")
    for name, rs in results.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        print(f"{name:<28} {med['accuracy']:>14.4f} {med['samples_per_second']:>10.1f} {med['wall_seconds']:>8.1f}")


if __name__ == "__main__":
    main()
