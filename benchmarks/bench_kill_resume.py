"""Kill a real run with SIGKILL at random moments, resume it each time, and check nothing was lost.

    python benchmarks/bench_kill_resume.py [--kills 12] [--rows 1000] [--max-steps 200] [--save-steps 5]

all-MiniLM-L6-v2 on the first ROWS rows of SST-2 (../shared/datasets/sst2/train.tsv), batch 16, max length
64, on the CPU. First an uninterrupted reference run; then the same run, killed with SIGKILL at a
random moment (mostly 0-6 s after the resumed process trained its first step, else 0.5-8 s into
its start-up: imports, reading, tokenizing, loading) and resumed with `workbench train --resume`,
KILLS times, then left to finish. Prints: kills recovered / tried, steps lost per kill (the steps
logged before the kill that had to be trained again: at most one save interval), and whether the
final per-step training losses equal the reference's, bit for bit.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "datasets" / "sst2" / "train.tsv"


def events(run_dir: Path) -> list[dict]:
    out = []
    try:
        for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass  # the line a kill cut short
    except FileNotFoundError:
        pass
    return out


def step_losses(run_dir: Path) -> list[tuple[int, float]]:
    return [(e["step"], e["loss"]) for e in events(run_dir) if e.get("event") == "StepMetrics"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=12)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--max-steps", type=int, default=200)
    ap.add_argument("--save-steps", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    args = ap.parse_args()
    if not SST2.exists():
        print(f"skipped: {SST2} not found (the shared datasets are optional)")
        return 0

    work = Path(tempfile.mkdtemp(prefix="bench-kill-resume-"))
    data = work / "sst2.tsv"
    with open(SST2, encoding="utf-8") as f:
        data.write_text("".join(line for _, line in zip(range(args.rows + 1), f)), encoding="utf-8")
    env = {**os.environ, "WORKBENCH_HOME": str(work / "home"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "workbench", "train", str(data), "--max-steps", str(args.max_steps),
           "--batch-size", "16", "--max-length", "64", "--save-steps", str(args.save_steps), "--device", "cpu",
           "--quiet"]

    t0 = time.perf_counter()
    ref = subprocess.run([*cmd, "--run-dir", str(work / "reference")], env=env, capture_output=True, text=True)
    if ref.returncode != 0:
        print(ref.stderr)
        return 1
    run_seconds = time.perf_counter() - t0
    reference = step_losses(work / "reference")
    print(f"reference run: {len(reference)} steps in {run_seconds:.0f} s (load {os.getloadavg()[0]:.1f})")

    rng = random.Random(args.seed)
    run_dir = work / "killed"
    recovered, lost, resumes = 0, [], 0
    proc = subprocess.Popen([*cmd, "--run-dir", str(run_dir)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    for kill in range(1, args.kills + 1):
        # The first kill waits for a first checkpoint (before it there is nothing to resume); later
        # ones may land anywhere: start-up, data reading, training, checkpoint writing.
        if kill == 1:
            while not (run_dir / "checkpoints").is_dir() or not any(
                    p.name.startswith("step-") for p in (run_dir / "checkpoints").iterdir()):
                if proc.poll() is not None:
                    break
                time.sleep(0.05)
        if rng.random() < 0.7:  # mostly while it trains: after a step logged by this process
            started = time.time()
            while proc.poll() is None and not any(e.get("event") == "StepMetrics" and e.get("time", 0) >= started - 0.5
                                                  for e in events(run_dir)[-5:]):
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 6.0))
        else:  # anywhere in start-up: imports, reading, tokenizing, loading the model
            time.sleep(rng.uniform(0.5, 8.0))
        if proc.poll() is not None:
            print(f"kill {kill}: the run had already finished; stopping the kills")
            break
        logged = max((s for s, _ in step_losses(run_dir)), default=0)
        phase = next((e.get("phase") or e.get("event") for e in reversed(events(run_dir))
                      if e.get("event") in ("PhaseChanged", "StepMetrics", "CheckpointSaved", "Resumed")), "start-up")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = time.time()
        proc = subprocess.Popen([sys.executable, "-m", "workbench", "train", "--resume", str(run_dir), "--quiet"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        resumes += 1
        # Recovered when the resumed process takes the run on: a Resumed event written after the kill
        # (earlier ones may be cut away with the steps after the checkpoint it goes on from).
        deadline = time.time() + 120
        resumed_at = None
        while time.time() < deadline:
            found = [e for e in events(run_dir) if e.get("event") == "Resumed" and e.get("time", 0) >= killed_at]
            if found:
                resumed_at = found[-1]["step"]
                break
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        if resumed_at is None:
            print(f"kill {kill}: NOT recovered: {proc.stderr.read() if proc.poll() is not None else 'no Resumed event'}")
            continue
        recovered += 1
        lost.append(max(0, logged - resumed_at))
        print(f"kill {kill}: at step {logged} (last event: {phase}), resumed from step {resumed_at} "
              f"({logged - resumed_at} steps again)")
    code = proc.wait()
    final = step_losses(run_dir)
    same = final == reference
    state = json.loads((run_dir / "status.json").read_text())["state"]
    print()
    print(f"kills recovered: {recovered} / {resumes}; final state {state} (exit {code})")
    if lost:
        print(f"steps lost per kill: median {statistics.median(lost):g}, max {max(lost)} "
              f"(save interval {args.save_steps} steps)")
    print(f"per-step losses equal to the uninterrupted run: {same} ({len(final)} vs {len(reference)} steps)")
    print(f"command: python benchmarks/bench_kill_resume.py --kills {args.kills} --rows {args.rows} "
          f"--max-steps {args.max_steps} --save-steps {args.save_steps} --seed {args.seed}")
    return 0 if same and recovered == resumes else 1


if __name__ == "__main__":
    sys.exit(main())
