"""Does a search beat the defaults? A 12-trial `workbench search` against the default settings on
SST-2 (1,000 rows) and CoNLL-2003 (1,000 sentences) with all-MiniLM-L6-v2, three seeds.

    python benchmarks/bench_search.py            # the issue's figures (long: 2 datasets x 3 seeds x 13+ runs)
    python benchmarks/bench_search.py --quick    # does it start: SST-2 200 rows, 3 trials, one seed
    python benchmarks/bench_search.py --datasets sst2 --official-test   # tested on SST-2's own 872-row test split

Per dataset and seed: the defaults' test score, the final run's test score (the best trial's settings,
tested once), the search's wall time, the trials pruned, and the time pruning saved (each pruned
trial counted at the mean time of a complete trial, less what it took). The search must not score
below the defaults on test (median of seeds) and pruning must save time. Last line JSON.
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

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
SETS = {"sst2": (SHARED / "sst2" / "train.tsv", "macro_f1"), "conll2003": (SHARED / "conll2003" / "train.txt", "f1")}
OFFICIAL_TEST = {"sst2": SHARED / "sst2" / "test.tsv", "conll2003": SHARED / "conll2003" / "test.txt"}


def first_rows(source: Path, target: Path, n: int) -> Path:
    """The first n rows (TSV, after its header) or sentences (CoNLL, blank-line separated) of ``source``."""
    lines = source.read_text(encoding="utf-8").splitlines()
    if source.suffix == ".tsv":
        out = lines[:n + 1]
    else:
        out, sentences = [], 0
        for line in lines:
            if line.startswith("-DOCSTART-"):
                continue
            if not line.strip():
                if out and out[-1].strip():
                    sentences += 1
                    if sentences >= n:
                        break
            out.append(line)
    target.write_text("\n".join(out) + "\n", encoding="utf-8")
    return target


def one(name: str, data: Path, metric: str, seed: int, trials: int, folder: Path, test: Path | None = None) -> dict:
    from workbench.core.config import DataConfig, RunConfig, TrainConfig
    from workbench.core.run.pipeline import run_training
    from workbench.core.search.study import plan_search, run_search, train_best

    def config() -> RunConfig:
        return RunConfig(data=DataConfig(train=str(data), test=str(test) if test else None),
                         train=TrainConfig(seed=seed, device="cpu", metric=metric))

    defaults = run_training(config())
    search = plan_search(config(), trials, name=f"{name}-seed{seed}")
    began = time.monotonic()
    result = run_search(search)
    wall = time.monotonic() - began
    final = train_best(search)
    import optuna

    study = optuna.load_study(study_name=search.name, storage=search.storage)
    seconds = {s: [t.user_attrs.get("seconds") or 0.0 for t in study.trials if t.state.name == s]
               for s in ("COMPLETE", "PRUNED")}
    mean_complete = statistics.mean(seconds["COMPLETE"]) if seconds["COMPLETE"] else 0.0
    saved = sum(max(0.0, mean_complete - s) for s in seconds["PRUNED"])
    return {"dataset": name, "seed": seed, "metric": metric, "defaults_test": defaults.metrics.get(metric),
            "search_test": final.metrics.get(metric), "search_wall_s": round(wall, 1), "trials": result.trials,
            "pruned": result.pruned, "pruning_saved_s": round(saved, 1), "best_params": result.best["params"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="SST-2 200 rows, 3 trials, one seed: does it start")
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--datasets", nargs="+", choices=sorted(SETS), default=list(SETS))
    ap.add_argument("--official-test", action="store_true", help="test on the data set's own test split (SST-2: "
                    "872 rows) instead of 10%% of the 1,000 rows: a test score with a third of the noise")
    args = ap.parse_args()
    if args.quick:
        args.trials, args.seeds, args.rows = 3, [0], 200
    work = Path(tempfile.mkdtemp(prefix="bench-search-"))
    os.environ["WORKBENCH_HOME"] = str(work / "home")
    out = []
    for name in (args.datasets[:1] if args.quick else args.datasets):
        source, metric = SETS[name]
        if not source.exists():
            print(f"skipped {name}: {source} is not there", file=sys.stderr)
            continue
        data = first_rows(source, work / f"{name}{source.suffix}", args.rows)
        for seed in args.seeds:
            row = one(name, data, metric, seed, args.trials, work, OFFICIAL_TEST[name] if args.official_test else None)
            print(json.dumps(row), file=sys.stderr)
            out.append(row)
    summary = {}
    for name in {r["dataset"] for r in out}:
        rows = [r for r in out if r["dataset"] == name]
        summary[name] = {"defaults_test_median": statistics.median(r["defaults_test"] for r in rows),
                         "search_test_median": statistics.median(r["search_test"] for r in rows),
                         "pruned": sum(r["pruned"] for r in rows),
                         "pruning_saved_s": round(sum(r["pruning_saved_s"] for r in rows), 1)}
    print(json.dumps({"runs": out, "summary": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
