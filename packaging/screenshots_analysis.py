"""Screenshots of the analysis views: suspicious labels (Data page), the diff of two runs (Runs
page), calibration and a token explanation (Evaluate page).

    xvfb-run -a -s "-screen 0 1400x900x24" python packaging/screenshots_analysis.py [--rows 400]

Data: the first ROWS of shuffled SST-2 train (shared datasets) with 5% of the labels flipped (seed
12); two short real runs of all-MiniLM-L6-v2 (A: 10 steps, B: 40 steps) scored on the same 300 rows
of SST-2 test. Runs go to a temporary WORKBENCH_HOME.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
SST2 = ROOT.parent / "shared" / "datasets" / "sst2"


def make_data(rows: int, folder: Path) -> tuple[Path, Path]:
    import numpy as np
    import pandas as pd

    df = pd.read_csv(SST2 / "train.tsv", sep="\t", quoting=3, keep_default_na=False)
    df = df.sample(frac=1, random_state=0).head(rows).reset_index(drop=True)
    df["label"] = df["label"].map({0: "negative", 1: "positive"})
    flips = np.random.default_rng(12).choice(rows, rows // 20, replace=False)
    df.loc[flips, "label"] = df.loc[flips, "label"].map({"negative": "positive", "positive": "negative"})
    train = folder / "reviews-noisy.tsv"
    df.to_csv(train, sep="\t", index=False, quoting=3)
    test = pd.read_csv(SST2 / "test.tsv", sep="\t", quoting=3, keep_default_na=False).head(300)
    test["label"] = test["label"].map({0: "negative", 1: "positive"})
    test_path = folder / "reviews-test.tsv"
    test.to_csv(test_path, sep="\t", index=False, quoting=3)
    return train, test_path


def two_runs(train: Path, test: Path) -> tuple[str, str]:
    from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from workbench.core.run.pipeline import run_training

    out = []
    for steps in (10, 40):
        cfg = RunConfig(data=DataConfig(train=str(train), test=str(test), val_fraction=0.15),
                        model=ModelConfig(name="all-MiniLM-L6-v2"),
                        train=TrainConfig(max_steps=steps, batch_size=16, lr=1e-4, max_length=48, seed=0))
        out.append(run_training(cfg).run_dir)
    return out[0], out[1]


async def walk(window, train: Path, runs: tuple[str, str], out: Path) -> None:
    from screenshots import settle

    def shot(widget, name: str) -> None:
        path = out / f"analysis-{name}.png"
        widget.grab().save(str(path))
        print(f"wrote {path}", flush=True)

    await window.open_path(str(train))
    page = window.data_page
    view = page.label_issues
    page.tabs.setCurrentWidget(view)
    view.find_button.click()
    while view.result is None:
        await settle(0.5)
    view.set_action(0, "Exclude")
    if view.table.rowCount() > 1:
        view.set_action(1, view.shown_rows()[1].suggested)
    await settle()
    shot(window, "01-suspicious-labels")

    window.go_to("runs")
    await settle(1.5)
    dialog = window.runs_page.diff(*runs)
    while dialog.diff is None:
        await settle(0.3)
    await settle()
    shot(dialog, "02-run-diff")
    dialog.close()

    window.open_run(runs[1])
    window.go_to("evaluate")
    await settle(3.0)
    box = window.evaluate_page.view.try_it
    box.input.setText("a gripping , beautifully acted film with a dull , predictable ending")
    box.explain()
    while not box.explanation.isVisible():
        await settle(0.3)
    await settle()
    shot(window, "03-evaluate-calibration-explain")

    view = window.evaluate_page.view  # a mistake of the predictions list, explained
    view.errors_only.setChecked(True)
    await settle()
    view.predictions.selectRow(0)
    view.explain_button.click()
    while "Line" not in box.explanation.text():
        await settle(0.3)
    await settle()
    shot(window, "04-evaluate-explain-listed")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=400)
    p.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    args = p.parse_args()
    os.environ.setdefault("WORKBENCH_HOME", tempfile.mkdtemp(prefix="workbench-shots-"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = Path(tempfile.mkdtemp(prefix="workbench-shots-data-"))
    train, test = make_data(args.rows, folder)
    runs = two_runs(train, test)
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
    window.show()
    window.ensure_pages()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with loop:
        loop.run_until_complete(walk(window, train, runs, out))
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
