"""How long Cancel takes to stop a run, in every phase.

    python benchmarks/bench_cancel.py [--delay 0.3]

all-MiniLM-L6-v2 on the whole SST-2 training file (../shared/datasets/sst2/train.tsv, 60,614 rows;
10% held out for validation and 10% for the test), max length 64, batch 32, an evaluation after step
5 and 6 steps in all, so that every phase takes long enough to be cancelled in its middle. For each
phase, a fresh run is cancelled DELAY seconds after the phase begins (as the app's Cancel button or
Ctrl+C does: the cancel token is set from another thread), and the time from the cancel to the run
having stopped is printed, with the phase the run was in when it stopped. Target: under 2 s.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "datasets" / "sst2" / "train.tsv"
PHASES = ("reading", "validating", "tokenizing", "loading_model", "training", "evaluating", "testing", "exporting")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--delay", type=float, default=0.3, help="seconds into the phase at which Cancel is pressed")
    ap.add_argument("--phases", default=",".join(PHASES), help="comma-separated phases to try")
    args = ap.parse_args()
    if not SST2.exists():
        print(f"skipped: {SST2} not found (the shared datasets are optional)")
        return 0
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["WORKBENCH_HOME"] = tempfile.mkdtemp(prefix="bench-cancel-")
    from workbench.core.cancel import CancelToken
    from workbench.core.config import DataConfig, RunConfig, TrainConfig
    from workbench.core.errors import Cancelled
    from workbench.core.events import Callbacks, PhaseChanged
    from workbench.core.run.pipeline import run_training

    worst = 0.0
    for phase in args.phases.split(","):
        cancel = CancelToken()
        state = {"phase": "", "cancelled_at": None}

        class Watch(Callbacks):
            def on_event(self, event) -> None:
                if isinstance(event, PhaseChanged):
                    state["phase"] = event.phase
                    if event.phase == phase and state["cancelled_at"] is None and not cancel.cancelled:
                        def press() -> None:
                            state["cancelled_at"] = time.perf_counter()
                            cancel.cancel()

                        threading.Timer(args.delay, press).start()

        cfg = RunConfig(data=DataConfig(train=str(SST2)),
                        train=TrainConfig(epochs=1, batch_size=32, max_length=64, eval_steps=5, max_steps=6,
                                          save_minutes=0))
        outcome = "finished"
        try:
            run_training(cfg, Watch(), cancel)
        except Cancelled:
            outcome = "cancelled"
        stopped = time.perf_counter()
        if state["cancelled_at"] is None:
            print(f"{phase:14s} not reached")
            continue
        took = stopped - state["cancelled_at"]
        worst = max(worst, took)
        print(f"{phase:14s} cancel pressed {args.delay:.1f} s in: stopped after {took:5.2f} s "
              f"(in phase {state['phase']}, {outcome})", flush=True)
    print(f"\nworst: {worst:.2f} s (load {os.getloadavg()[0]:.2f})")
    print(f"command: python benchmarks/bench_cancel.py --delay {args.delay}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
