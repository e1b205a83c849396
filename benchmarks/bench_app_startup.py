"""Time from launching `workbench` to the main window's first paint, in a fresh process each time.

    python benchmarks/bench_app_startup.py                      # 5 launches; Xvfb/X11 when DISPLAY is set
    xvfb-run -s "-screen 0 1400x900x24" python benchmarks/bench_app_startup.py
    python benchmarks/bench_app_startup.py --importtime         # also list the slowest imports

The app prints the wall-clock time of its first paint when WORKBENCH_STARTUP_PROBE=1 is set (and
quits); the time counted here runs from just before the process is spawned, so it includes the
interpreter's own start-up. Target: under 1.5 s on a 2-core machine, with torch, transformers and
datasets not imported before the first paint.
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
TARGET_S = 1.5
FORBIDDEN = {"torch", "transformers", "datasets"}


def launch(env: dict) -> tuple[float, list[str]]:
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "workbench"], capture_output=True, text=True, env=env, cwd=ROOT,
                       timeout=120)
    lines = [line for line in p.stdout.splitlines() if line.startswith("{")]
    if p.returncode != 0 or not lines:
        raise SystemExit(f"the app did not report its first paint (exit {p.returncode}):\n{p.stderr}")
    probe = json.loads(lines[-1])
    return probe["first_paint_time"] - t0, probe["heavy_modules_loaded"]


def import_profile(env: dict, top: int) -> list[tuple[float, str]]:
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "workbench"], capture_output=True, text=True,
                       env=env, cwd=ROOT, timeout=120)
    rows = []
    for line in p.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = line.split("|")
            try:
                rows.append((int(cumulative) / 1e6, name.rstrip()))
            except ValueError:
                continue
    return sorted(rows, reverse=True)[:top]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--importtime", action="store_true", help="also print the slowest imports (cumulative)")
    a = ap.parse_args()
    env = {**os.environ, "WORKBENCH_STARTUP_PROBE": "1", "WORKBENCH_HOME": tempfile.mkdtemp(prefix="wb-startup-")}
    if not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY"):
        env.setdefault("QT_QPA_PLATFORM", "offscreen")
    platform = env.get("QT_QPA_PLATFORM") or ("xcb" if env.get("DISPLAY") else "wayland")
    print(f"platform: {platform}, {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    launch(env)  # warm the file cache once, as a second launch of an installed app would be
    times, loaded = [], set()
    for i in range(a.runs):
        t, heavy = launch(env)
        times.append(t)
        loaded.update(heavy)
        print(f"launch {i + 1}: first paint after {t:.3f} s")
    med = statistics.median(times)
    print(f"first paint: median {med:.3f} s, min {min(times):.3f} s, max {max(times):.3f} s "
          f"(target < {TARGET_S} s: {'met' if med < TARGET_S else 'NOT met'})")
    bad = sorted(loaded & FORBIDDEN)
    print(f"heavy modules imported before the first paint: {sorted(loaded) or 'none'}"
          + (f"  <-- {bad} must not be" if bad else ""))
    if a.importtime:
        print("slowest imports before the first paint (cumulative seconds):")
        for seconds, name in import_profile(env, 15):
            print(f"  {seconds:6.3f}  {name}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
