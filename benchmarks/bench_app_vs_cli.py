"""The same short training run started from the desktop app and from the CLI: samples/s of both.

    python benchmarks/bench_app_vs_cli.py [--rows 2000] [--repeats 3]

all-MiniLM-L6-v2 (the packaged default), the first ROWS rows of SST-2 (../shared/datasets/sst2/
train.tsv), 1 epoch, batch 32, max length 64, seed 0, best model by macro F1, on the CPU. Each
measurement is a fresh process, as a user would start it:

* CLI: `workbench train DATA --epochs 1 --batch-size 32 --max-length 64 --seed 0 --metric macro_f1
  --device cpu --quiet`, run as a subprocess (not the engine in-process) because that is what a user
  runs: the same interpreter start, imports and main-thread training as `workbench train`. The child
  is this script with `--cli-child`, which calls `workbench.cli.main.main` with those arguments after
  installing the probe below; the engine's JSON line gives the training samples/s.
* app: this script with `--app-child`: the real MainWindow (offscreen, shown, so it paints), the file
  loaded through the Data page, the same settings set on the Model page's config, the Start button
  clicked on the Train page, and the run's samples/s taken from its result when the controller's
  `finished` signal comes.

Both report the engine's own `samples_per_second` (samples seen / seconds in the training loop,
evaluations and checkpoints excluded). The two alternate (app, CLI, app, CLI, ...), so load from
other jobs on the machine falls on both; each line carries the load averages (1, 5, 15 min) read
before and after it, and the medians and their ratio close the output. After each pair the resolved
`train` settings of the two runs (their config.json) are compared. Target: the app within 10% of
the CLI.

The probe (benchmark only; it changes nothing the run does) wraps the training loop in both
children and records, for the loop's duration, the CPU seconds of each thread of the process
(/proc/self/task): the training thread, the main thread (the GUI thread in the app), and the rest
(torch's OpenMP workers, Qt's threads), with the training thread's nice value, torch's thread
counts as seen from the training thread, and `sys.getswitchinterval()`.
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
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "datasets" / "sst2" / "train.tsv"
SETTINGS = {"epochs": 1.0, "batch_size": 32, "max_length": 64, "seed": 0, "metric": "macro_f1", "device": "cpu"}
CLI_ARGS = ["--epochs", "1", "--batch-size", "32", "--max-length", "64", "--seed", "0", "--metric", "macro_f1",
            "--device", "cpu", "--quiet"]
PROBE_ENV = "WORKBENCH_BENCH_PROBE"  # the file the child's probe writes its JSON to
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# ---- the probe (runs in the children) ------------------------------------------------------------
def _threads() -> dict[int, dict]:
    """tid -> {name, nice, cpu (s), wait (s runnable but not running), vcs/ics (voluntary/involuntary
    context switches)} for every thread of this process (Linux; {} elsewhere)."""
    out = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        base = f"/proc/self/task/{tid}"
        try:
            with open(f"{base}/stat", encoding="utf-8") as f:
                stat = f.read()
            with open(f"{base}/schedstat", encoding="utf-8") as f:
                wait = int(f.read().split()[1]) / 1e9
            with open(f"{base}/status", encoding="utf-8") as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
        except (OSError, IndexError, ValueError):
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # fields[0] is stat's field 3 (state)
        out[int(tid)] = {"name": stat[stat.index("(") + 1:stat.rindex(")")], "nice": int(fields[16]),
                         "cpu": (int(fields[11]) + int(fields[12])) / _TICK, "sys": int(fields[12]) / _TICK,
                         "faults": int(fields[7]), "wait": wait,
                         "vcs": int(status["voluntary_ctxt_switches"]), "ics": int(status["nonvoluntary_ctxt_switches"])}
    return out


_COUNTERS = ("cpu", "sys", "faults", "wait", "vcs", "ics")


def install_probe(path: str) -> None:
    from workbench.core.training import loop as loop_module

    original = loop_module.TrainingLoop.run

    def run(self, resume=None):
        import torch

        me, main = threading.get_native_id(), os.getpid()
        facts = {"switch_interval_ms": sys.getswitchinterval() * 1000, "torch_threads": torch.get_num_threads(),
                 "torch_interop_threads": torch.get_num_interop_threads(), "training_thread_is_main": me == main}
        before, t0 = _threads(), time.perf_counter()
        try:
            return original(self, resume)
        finally:
            wall, after = time.perf_counter() - t0, _threads()
            zero = {k: 0 for k in _COUNTERS}
            delta = {tid: {**t, **{k: t[k] - before.get(tid, zero)[k] for k in _COUNTERS}} for tid, t in after.items()}

            def total(tids):
                return {k: round(sum(delta[t][k] for t in tids), 3) for k in _COUNTERS}

            others = [t for t in delta if t not in (me, main)]
            facts.update(
                loop_wall_s=wall, training_thread_nice=after.get(me, {"nice": 0})["nice"],
                training=total([me]), main=total([main]) if me != main else None, others=total(others),
                busy_others=sorted(((delta[t]["name"], delta[t]["nice"], round(delta[t]["cpu"], 2)) for t in others
                                    if delta[t]["cpu"] >= 0.05), key=lambda x: -x[2]),
            )
            with open(path, "w", encoding="utf-8") as f:
                json.dump(facts, f)

    loop_module.TrainingLoop.run = run


def cli_child(argv: list[str]) -> int:
    if os.environ.get(PROBE_ENV):
        install_probe(os.environ[PROBE_ENV])
    from workbench.cli.main import main

    return main(argv)


async def _drive(window, data: str) -> float:
    from workbench.app import warmup

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
    window.model_page.sync_from_config()
    window.state.touch_config()
    window.go_to("train")
    while window.train_page is None or not window.train_page.start_button.isEnabled() or not warmup.done.is_set():
        await asyncio.sleep(0.1)
    if os.environ.get(PROBE_ENV):  # the warm-up has imported the loop's module by now: no import on this thread
        install_probe(os.environ[PROBE_ENV])
    await asyncio.sleep(1.0)  # the page is on screen before Start is pressed, as when a person uses it
    finished = future_of(window.controller.stopped)
    result = future_of(window.controller.finished)
    window.train_page.start_button.click()
    outcome = (await finished)[0]
    if outcome != "finished":
        raise SystemExit(f"the app's run {outcome}")
    return float((await result)[0].samples_per_second)


def app_child(data: str) -> int:
    import qasync
    from PySide6.QtWidgets import QApplication

    app = QApplication(sys.argv[:1])
    from workbench.app.look import apply_style
    from workbench.app.window import MainWindow

    apply_style(app)
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


# ---- the parent -----------------------------------------------------------------------------------
def _env(home: Path, probe: Path) -> dict[str, str]:
    return {**os.environ, "WORKBENCH_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT),
            "QT_QPA_PLATFORM": "offscreen", "TOKENIZERS_PARALLELISM": "false", PROBE_ENV: str(probe)}


def measure(name: str, data: Path, home: Path) -> tuple[float, dict]:
    probe = home / "probe.json"
    home.mkdir(parents=True)
    child = ["--app-child", str(data)] if name == "app" else ["--cli-child", "train", str(data), *CLI_ARGS]
    p = subprocess.run([sys.executable, __file__, *child], env=_env(home, probe), capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{name} run failed:\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}")
    sps = float(json.loads(p.stdout.strip().splitlines()[-1])["samples_per_second"])
    return sps, json.loads(probe.read_text()) if probe.exists() else {}


def train_settings(home: Path) -> dict:
    (config,) = home.glob("runs/*/config.json")
    return json.loads(config.read_text())["train"]


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def describe(probe: dict) -> str:
    if not probe:
        return "(no probe)"

    def group(name, g):
        return (f"{name} cpu {g['cpu']:.1f} s ({g['sys']:.1f} in the kernel, {g['faults']} page faults), "
                f"runnable-waiting {g['wait']:.1f} s, "
                f"switches {g['vcs']} vol/{g['ics']} invol")

    busy = ", ".join(f"{n}[nice {ni}] {c:.1f}" for n, ni, c in probe["busy_others"][:4])
    lines = [f"loop {probe['loop_wall_s']:.1f} s; training thread nice {probe['training_thread_nice']}, torch threads "
             f"{probe['torch_threads']} intra/{probe['torch_interop_threads']} inter-op, switch interval "
             f"{probe['switch_interval_ms']:g} ms", group("training thread", probe["training"])]
    if probe["main"]:
        lines.append(group("GUI thread", probe["main"]))
    lines.append(group("other threads", probe["others"]) + f" ({busy})")
    return "\n    ".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2000, help="the first ROWS rows of SST-2 train.tsv")
    ap.add_argument("--repeats", type=int, default=3, help="app/CLI pairs")
    ap.add_argument("--app-child", metavar="DATA", help=argparse.SUPPRESS)
    ap.add_argument("--cli-child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.app_child:
        return app_child(args.app_child)
    if args.cli_child:
        return cli_child(args.cli_child)
    if not SST2.exists():
        print(f"skipped: {SST2} not found (the shared datasets are optional); nothing was measured")
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-app-vs-cli-"))
    data = work / "sst2.tsv"
    with open(SST2, encoding="utf-8") as f:
        data.write_text("".join(line for _, line in zip(range(args.rows + 1), f)), encoding="utf-8")
    command = f"python benchmarks/bench_app_vs_cli.py --rows {args.rows} --repeats {args.repeats}"
    env_notes = " ".join(f"{k}={os.environ[k]}" for k in ("WORKBENCH_TRAIN_NICE", "OMP_NUM_THREADS") if k in os.environ)
    print(f"all-MiniLM-L6-v2, first {args.rows} SST-2 rows, 1 epoch, batch 32, max length 64, seed 0, CPU "
          f"({os.cpu_count()} cores){'; ' + env_notes if env_notes else ''}; runs in {work}", flush=True)
    results: dict[str, list[float]] = {"app": [], "cli": []}
    for i in range(args.repeats):
        for name in ("app", "cli"):
            before, t0 = load(), time.perf_counter()
            sps, probe = measure(name, data, work / f"home-{name}-{i}")
            results[name].append(sps)
            print(f"repeat {i + 1} {name}: {sps:6.1f} samples/s  ({time.perf_counter() - t0:.0f} s wall, load "
                  f"{before} -> {load()})\n    {describe(probe)}", flush=True)
        a, c = train_settings(work / f"home-app-{i}"), train_settings(work / f"home-cli-{i}")
        diff = {k: (a.get(k), c.get(k)) for k in sorted(set(a) | set(c)) if a.get(k) != c.get(k)}
        if diff:
            print(f"    WARNING: the two runs' train settings differ (app, CLI): {diff}")
    a, c = statistics.median(results["app"]), statistics.median(results["cli"])
    print(f"\nsamples/s app: {', '.join(f'{x:.1f}' for x in results['app'])}; "
          f"CLI: {', '.join(f'{x:.1f}' for x in results['cli'])}")
    print(f"median samples/s: app {a:.1f}, CLI {c:.1f}; app/CLI = {a / c:.3f} "
          f"(target >= 0.90: {'met' if a / c >= 0.9 else 'NOT met'}); load now {load()}")
    print(f"command: {env_notes + ' ' if env_notes else ''}{command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
