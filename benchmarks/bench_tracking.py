"""The cost of logging: a run with `--report-to tensorboard,mlflow` against one without, on SST-2
(1,000 rows) with all-MiniLM-L6-v2, one epoch; training samples/s, median of 3 each (alternating).
The target: within 3%.

    python benchmarks/bench_tracking.py            # 3 + 3 runs
    python benchmarks/bench_tracking.py --quick    # does it start: 200 rows, one run each

Last line JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "datasets" / "sst2" / "train.tsv"


def run(data: Path, report_to: list[str]) -> float:
    from workbench.core.config import DataConfig, RunConfig, TrainConfig
    from workbench.core.run.pipeline import run_training

    config = RunConfig(data=DataConfig(train=str(data)), report_to=report_to,
                       train=TrainConfig(epochs=1.0, batch_size=32, max_length=64, seed=0, device="cpu", refit=False))
    return run_training(config).samples_per_second


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200 rows, one run each: does it start")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rows", type=int, default=1000)
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.rows = 1, 200
    if not SST2.exists():
        raise SystemExit(f"{SST2} is not there")
    work = Path(tempfile.mkdtemp(prefix="bench-tracking-"))
    os.environ["WORKBENCH_HOME"] = str(work / "home")
    data = work / "sst2.tsv"
    data.write_text("\n".join(SST2.read_text(encoding="utf-8").splitlines()[:args.rows + 1]) + "\n", encoding="utf-8")
    run(data, [])  # a first run warms the caches (files, allocator, kernels) for both
    plain, tracked = [], []
    for _ in range(args.repeats):  # alternating, so a machine that slows down costs both alike
        plain.append(run(data, []))
        tracked.append(run(data, ["tensorboard", "mlflow"]))
        print(f"without {plain[-1]:.1f} samples/s, with {tracked[-1]:.1f}", file=sys.stderr)
    a, b = statistics.median(plain), statistics.median(tracked)
    overhead = (a - b) / a * 100
    print(json.dumps({"samples_per_second": {"without": a, "with": b}, "overhead_percent": round(overhead, 2),
                      "within_3_percent": overhead <= 3.0, "runs": {"without": plain, "with": tracked}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
