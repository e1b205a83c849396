"""How close is the preflight estimate (``workbench train ... --preflight``) to the run it estimates?

For each case: the estimate in one process, then the real run in another, on the same data and
settings; printed side by side: the first pass's training time against the estimated training
time, the whole run's wall time against the estimated total, and the run's peak resident memory
(its process's ru_maxrss, from wait4) against the estimated peak.

    python benchmarks/bench_preflight.py [--cases sst2,conll] [--rows 2000] [--sentences 1000]

The estimate and the run use the machine one after the other: on a loaded machine both slow down,
but not necessarily by the same factor, so quote ratios from a quiet run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"


def _run(args: list[str], home: Path) -> tuple[int, str, str, float, int]:
    """(exit status, stdout, stderr, wall seconds, peak RSS bytes) of ``workbench ARGS``."""
    env = {**os.environ, "WORKBENCH_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "workbench", *args], stdout=out, stderr=err, env=env)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    err.seek(0)
    peak = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return p.returncode, out.read().decode(), err.read().decode(), wall, peak


def case(name: str, args: list[str], work: Path) -> dict:
    home = work / name
    code, out, err, pre_wall, pre_peak = _run(["train", *args, "--preflight", "-q"], home)
    if code:
        raise SystemExit(f"{name}: the estimate failed: {err}")
    est = json.loads(out.strip().splitlines()[-1])["preflight"]
    run_dir = home / "run"
    code, out, err, wall, peak = _run(["train", *args, "--run-dir", str(run_dir), "-q"], home)
    if code:
        raise SystemExit(f"{name}: the run failed: {err}")
    report = json.loads((run_dir / "report.json").read_text())
    first = report["training"]
    estimated_train = est["train_seconds_per_epoch"] * est["epochs"]
    row = {
        "case": name, "estimate_seconds": round(pre_wall, 1),
        "train_s": round(first["train_seconds"], 1), "train_s_estimated": round(estimated_train, 1),
        "train_ratio": round(estimated_train / first["train_seconds"], 2),
        "wall_s": round(wall, 1), "wall_s_estimated": round(est["total_seconds"], 1),
        "wall_ratio": round(est["total_seconds"] / wall, 2),
        "peak_mb": round(peak / 2**20), "peak_mb_estimated": round((est["peak_memory_bytes"] or 0) / 2**20),
        "memory_ratio": round((est["peak_memory_bytes"] or 0) / peak, 2),
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="sst2,conll")
    ap.add_argument("--rows", type=int, default=2000, help="SST-2 training rows (a stratified --sample)")
    ap.add_argument("--sentences", type=int, default=1000, help="CoNLL-2003 training sentences")
    a = ap.parse_args()
    import torch

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="bench-preflight-") as tmp:
        work = Path(tmp)
        rows = []
        if "sst2" in a.cases:
            rows.append(case("sst2", [str(SHARED / "sst2" / "train.tsv"), "--sample", str(a.rows),
                                      "--test", str(SHARED / "sst2" / "test.tsv"), "--epochs", "1",
                                      "--max-length", "64"], work))
        if "conll" in a.cases:
            lines = (SHARED / "conll2003" / "train.txt").read_text().split("\n\n")
            part = work / "conll-train.txt"
            part.write_text("\n\n".join(lines[:a.sentences + 1]) + "\n")
            rows.append(case("conll", [str(part), "--test", str(SHARED / "conll2003" / "test.txt"),
                                       "--epochs", "1"], work))
    print(f"load at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
