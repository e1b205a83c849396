"""Take a screenshot of every page of the app, before and after a short real training run.

    xvfb-run -s "-screen 0 1400x900x24" python packaging/screenshots.py            # light and dark
    python packaging/screenshots.py --scheme dark --data PATH --out docs/screenshots
    # the other tasks' pages, e.g. entity tagging and images (the shared datasets):
    python packaging/screenshots.py --scheme light --prefix tagging- --steps 150 --lr 1e-4 \
        --data ../shared/datasets/conll2003/train.txt
    python packaging/screenshots.py --scheme light --prefix images- --steps 12 --data ../shared/datasets/hymenoptera
    # the Export page's Predict section on a finished run (no training): a file of INPUT's first rows
    python packaging/screenshots.py --scheme light --predict RUN_DIR --data INPUT.tsv
    # the Runs page after Import Run of a packed run (`workbench pack`), then Help > About
    python packaging/screenshots.py --scheme light --import-run RUN.wbrun
    # another window size (default 1280x800, what every page must fit), e.g. a 1920x1080 screen's
    xvfb-run -s "-screen 0 1920x1080x24" python packaging/screenshots.py --size 1920x1080 --suffix -1920

Data: the shared SST-2 training file when present, else the bundled tweets sample. The run fine-
tunes the default backbone (all-MiniLM-L6-v2) for a few dozen steps on a few hundred rows, so the
plots, report and export pages show real results. Runs go to a temporary WORKBENCH_HOME.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUFFIX = ""  # --suffix: after the scheme in every file name (-1920 for another window size)
SHARED_SST2 = ROOT.parent / "shared" / "datasets" / "sst2" / "train.tsv"


def default_data() -> str:
    if SHARED_SST2.exists():
        return str(SHARED_SST2)
    from workbench.samples import tweets_corpus

    return str(tweets_corpus())


def signal_future(signal) -> asyncio.Future:
    fut = asyncio.get_event_loop().create_future()

    def done(*args):
        if not fut.done():
            fut.set_result(args)

    signal.connect(done)
    return fut


async def settle(seconds: float = 0.6) -> None:
    await asyncio.sleep(seconds)  # lets queued paints and layout passes run


async def walk(window, data: str, out: Path, scheme: str, rows: int, steps: int, prefix: str = "",
               lr: float | None = None, methods: bool = False, preflight: bool = False, frozen: bool = False) -> None:
    def shot(name: str) -> None:
        path = out / f"{prefix}{name}-{scheme}{SUFFIX}.png"
        window.grab().save(str(path))
        print(f"wrote {path}", flush=True)

    await settle(1.0)
    shot("01-data-empty")

    task = window.open_path(data)
    if task is None:  # an image folder: its thumbnail view says when it has read the folder
        await signal_future(window.data_page.images.view.loaded)
    else:
        await task
        window.data_page.sample_rows.setValue(rows)
        window.data_page.jump_to_line(2)
    await settle()
    shot("02-data")

    window.go_to("model")
    await window.model_page.load_catalog()
    await window.model_page.refresh_task()  # the task, backbone list and suggested settings for this data
    while not window.model_page.devices_loaded:
        await settle(0.2)
    t = window.state.config.train
    t.batch_size = 16
    if window.model_page.effective_task != "image-classification":
        t.epochs, t.max_length, t.lr = 1.0, 48, 1e-4  # images: the automatic epochs the Model page explains
    if lr is not None:
        t.lr = lr
    t.eval_steps, t.max_steps = max(steps // 4, 1), steps
    window.model_page.sync_from_config()
    window.state.touch_config()
    await settle()
    shot("03-model")
    if frozen:  # the Model page with a frozen backbone (cached views); then the estimate, with --preflight
        page = window.model_page
        page.method.setCurrentIndex(page.method.findData("frozen"))
        await page.refresh_trainable()
        await settle()
        shot("03-model-frozen")
        if not preflight:
            return
    if methods:  # the Model page with LoRA and adaptation chosen, then stop (no training run)
        page = window.model_page
        page.method.setCurrentIndex(page.method.findData("lora"))
        page.adapt.setChecked(True)
        await page.refresh_trainable()
        await settle()
        shot("03-model-lora-adapt")
        return

    if preflight:  # the Train page with the measured estimate of one whole epoch, then stop
        t.eval_steps, t.max_steps = None, None
        window.model_page.sync_from_config()
        window.state.touch_config()
        window.go_to("train")
        estimated = signal_future(window.train_page.preflight.finished)
        window.train_page.estimate()
        await estimated
        await settle(1.0)
        shot("04-train-estimate")
        return

    window.go_to("train")
    finished = signal_future(window.controller.stopped)
    window.train_page.start()
    await settle(8.0)
    shot("04-train-running")
    outcome = (await finished)[0]
    if outcome != "finished":
        raise SystemExit(f"the training run {outcome}; see the Train page log")
    await settle(1.0)
    shot("05-train-finished")

    for i, key in enumerate(("evaluate", "export", "runs"), start=6):
        window.go_to(key)
        await settle(1.5)
        shot(f"{i:02d}-{key}")


async def predict_walk(window, run_dir: str, data: str, out: Path, scheme: str, prefix: str = "") -> None:
    """The Export page of a finished run, after predicting the first rows of ``data`` (copied to a
    temporary folder: the shot never writes beside the user's data)."""
    await settle(1.0)
    window.open_run(run_dir)
    window.go_to("export")
    await settle(1.0)
    panel = window.export_page.predict_panel
    work = Path(tempfile.mkdtemp(prefix="workbench-shots-predict-"))
    source = work / Path(data).name
    with open(data, encoding="utf-8") as f, open(source, "w", encoding="utf-8") as g:
        for _, line in zip(range(300), f):
            g.write(line)
    panel.set_source(source)
    done = signal_future(panel.finished)
    panel.start()
    await done
    await settle(1.0)
    window.export_page.body.setSizes([260, 420, 120])
    await settle(0.5)
    path = out / f"{prefix}09-export-predict-{scheme}{SUFFIX}.png"
    window.grab().save(str(path))
    print(f"wrote {path}", flush=True)


async def import_walk(window, pack: str, out: Path, scheme: str, prefix: str = "") -> None:
    """The Runs page once ``pack`` is imported (into the temporary runs home), then Help > About."""
    await settle(1.0)
    page = window.runs_page
    window.go_to("runs")
    page.import_run(pack)
    while page.message is None:
        await settle(0.2)
    page.message.close()
    await settle(1.0)
    path = out / f"{prefix}10-runs-imported-{scheme}{SUFFIX}.png"
    window.grab().save(str(path))
    print(f"wrote {path}", flush=True)
    dialog = window._about()
    while not dialog.ready:
        await settle(0.2)
    await settle(0.5)
    path = out / f"{prefix}11-about-{scheme}{SUFFIX}.png"
    dialog.grab().save(str(path))
    print(f"wrote {path}", flush=True)
    dialog.close()


def run_one(scheme: str, data: str, out: Path, rows: int, steps: int, prefix: str = "", lr: float | None = None,
            predict: str | None = None, methods: bool = False, import_run: str | None = None,
            preflight: bool = False, frozen: bool = False, size: tuple[int, int] = (1280, 800)) -> int:
    os.environ["WORKBENCH_COLOR_SCHEME"] = scheme
    os.environ.setdefault("WORKBENCH_HOME", tempfile.mkdtemp(prefix="workbench-shots-"))
    import qasync
    from PySide6.QtWidgets import QApplication

    app = QApplication(sys.argv[:1])
    app.setApplicationName("Workbench")
    from workbench.app.look import app_icon, apply_style
    from workbench.app.window import MainWindow

    apply_style(app)
    app.setWindowIcon(app_icon())
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    window = MainWindow()
    window.resize(*size)
    window.show()
    window.ensure_pages()
    out.mkdir(parents=True, exist_ok=True)
    with loop:
        if import_run:
            loop.run_until_complete(import_walk(window, import_run, out, scheme, prefix))
        elif predict:
            loop.run_until_complete(predict_walk(window, predict, data, out, scheme, prefix))
        else:
            loop.run_until_complete(walk(window, data, out, scheme, rows, steps, prefix, lr, methods, preflight, frozen))
    window.close()
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scheme", choices=("light", "dark", "both"), default="both")
    p.add_argument("--data", default=None, help="data file or folder to load (default: shared SST-2 or the sample)")
    p.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    p.add_argument("--rows", type=int, default=600, help="rows sampled for the short training run")
    p.add_argument("--steps", type=int, default=40, help="optimizer steps of the short training run")
    p.add_argument("--prefix", default="", help="prefix of the file names (another task's set of screenshots)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: 1e-4 for text, the app's for images)")
    p.add_argument("--predict", metavar="RUN_DIR", help="only the Export page's Predict section on this finished run, "
                   "predicting the first rows of --data")
    p.add_argument("--frozen", action="store_true", help="the Model page with a frozen backbone (with --preflight: "
                   "then the Train page's estimate)")
    p.add_argument("--methods", action="store_true", help="only the Model page with LoRA and domain adaptation "
                   "chosen (03-model-lora-adapt), no training run")
    p.add_argument("--preflight", action="store_true", help="only the Train page with the measured estimate of "
                   "one epoch (04-train-estimate), no training run")
    p.add_argument("--import-run", metavar="PACK", help="only the Runs page after importing this .wbrun, and "
                   "Help > About (10-runs-imported, 11-about)")
    p.add_argument("--size", default="1280x800", help="the window's size, WIDTHxHEIGHT (default 1280x800)")
    p.add_argument("--suffix", default="", help="added after the scheme to every file name, e.g. -1920")
    a = p.parse_args()
    global SUFFIX
    SUFFIX = a.suffix
    try:
        size = tuple(int(v) for v in a.size.lower().split("x"))
        if len(size) != 2 or min(size) < 200:
            raise ValueError
    except ValueError:
        p.error(f"--size {a.size}: give the window's size as WIDTHxHEIGHT, e.g. 1920x1080")
    data = a.data or default_data()
    if a.scheme == "both" and not (a.predict or a.import_run):
        for scheme in ("light", "dark"):  # one process each: the palette is chosen at start-up
            args = [sys.executable, __file__, "--scheme", scheme, "--data", data, "--out", a.out,
                    "--rows", str(a.rows), "--steps", str(a.steps), "--prefix", a.prefix, "--size", a.size,
                    "--suffix", a.suffix]
            if a.lr is not None:
                args += ["--lr", str(a.lr)]
            if a.methods:
                args.append("--methods")
            if a.preflight:
                args.append("--preflight")
            if a.frozen:
                args.append("--frozen")
            rc = subprocess.call(args)
            if rc:
                return rc
        return 0
    scheme = "light" if a.scheme == "both" else a.scheme
    return run_one(scheme, data, Path(a.out), a.rows, a.steps, a.prefix, a.lr, a.predict, a.methods, a.import_run,
                   a.preflight, a.frozen, size)  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
