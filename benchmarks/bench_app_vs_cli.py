"""The same short training run started from the desktop app and from the CLI: samples/s of both.

    python benchmarks/bench_app_vs_cli.py [--rows 2000] [--repeats 3]

all-MiniLM-L6-v2 (the packaged default), the first ROWS rows of SST-2 (../shared/datasets/sst2/
train.tsv), 1 epoch, batch 32, max length 64, seed 0, on the CPU. Each measurement is a fresh
process, as a user would start it:

* CLI: `workbench train DATA --epochs 1 --batch-size 32 --max-length 64 --seed 0 --quiet`, whose
  JSON line gives the engine's training samples/s;
* app: this script with `--app-child`: the real MainWindow (offscreen), the file loaded through
  the Data page, the same settings set on the Model page's config, Start pressed on the Train
  page, and the run's samples/s taken from its result when the controller says it finished.

The two alternate (app, CLI, app, CLI, ...), so load from other jobs on the machine falls on both;
the medians and their ratio are printed, with the load average at each measurement. Target: the
app within 10% of the CLI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "datasets" / "sst2" / "train.tsv"
SETTINGS = {"epochs": 1.0, "batch_size": 32, "max_length": 64, "seed": 0}


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "WORKBENCH_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT),
            "QT_QPA_PLATFORM": "offscreen"}


def run_cli(data: Path, home: Path) -> float:
    cmd = [sys.executable, "-m", "workbench", "train", str(data), "--epochs", "1", "--batch-size", "32",
           "--max-length", "64", "--seed", "0", "--device", "cpu", "--quiet"]
    p = subprocess.run(cmd, env=_env(home), capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"CLI run failed:\n{p.stderr}")
    return float(json.loads(p.stdout.strip().splitlines()[-1])["samples_per_second"])


def run_app(data: Path, home: Path) -> float:
    p = subprocess.run([sys.executable, __file__, "--app-child", str(data)], env=_env(home), capture_output=True,
                       text=True)
    if p.returncode != 0:
        raise SystemExit(f"app run failed:\n{p.stderr}")
    return float(json.loads(p.stdout.strip().splitlines()[-1])["samples_per_second"])


async def _drive(window, data: str) -> float:
    loop = asyncio.get_event_loop()

    def future_of(signal):
        fut = loop.create_future()
        signal.connect(lambda *args: fut.done() or fut.set_result(args))
        return fut

    await window.open_path(data)
    await window.model_page.refresh_task()
    t = window.state.config.train
    for k, v in SETTINGS.items():
        setattr(t, k, v)
    t.device = "cpu"
    window.model_page.sync_from_config()
    window.state.touch_config()
    window.go_to("train")
    while window.train_page is None or not window.train_page.start_button.isEnabled():
        await asyncio.sleep(0.1)
    finished = future_of(window.controller.stopped)
    result = future_of(window.controller.finished)
    window.train_page.start()
    outcome = (await finished)[0]
    if outcome != "finished":
        raise SystemExit(f"the app's run {outcome}")
    return float((await result)[0].samples_per_second)


def app_child(data: str) -> int:
    import qasync
    from PySide6.QtWidgets import QApplication

    app = QApplication(sys.argv[:1])
    from workbench.app.window import MainWindow

    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    window = MainWindow()
    window.resize(1280, 800)
    window.show()  # painted offscreen, as a user's window is: the live plots redraw during the run
    with loop:
        sps = loop.run_until_complete(_drive(window, data))
    window.close()
    print(json.dumps({"samples_per_second": sps}))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--app-child", metavar="DATA", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.app_child:
        return app_child(args.app_child)
    if not SST2.exists():
        print(f"skipped: {SST2} not found (the shared datasets are optional)")
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-app-vs-cli-"))
    data = work / "sst2.tsv"
    with open(SST2, encoding="utf-8") as f:
        data.write_text("".join(line for _, line in zip(range(args.rows + 1), f)), encoding="utf-8")
    print(f"all-MiniLM-L6-v2, {args.rows} SST-2 rows, 1 epoch, batch 32, max length 64, seed 0, CPU "
          f"({os.cpu_count()} cores)")
    app, cli = [], []
    for i in range(args.repeats):
        for name, run, out in (("app", run_app, app), ("cli", run_cli, cli)):
            t0 = time.perf_counter()
            sps = run(data, work / f"home-{name}-{i}")
            out.append(sps)
            print(f"repeat {i + 1} {name}: {sps:6.1f} samples/s  ({time.perf_counter() - t0:.0f} s wall, "
                  f"load {os.getloadavg()[0]:.2f})", flush=True)
    a, c = statistics.median(app), statistics.median(cli)
    print(f"\nmedian samples/s: app {a:.1f}, CLI {c:.1f}; app/CLI = {a / c:.3f}")
    print(f"command: python benchmarks/bench_app_vs_cli.py --rows {args.rows} --repeats {args.repeats}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
