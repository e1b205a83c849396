"""How the Evaluate page copes with a large predictions file.

Writes a run directory with N predictions (default 100,000; texts drawn from SST-2 when the shared
copy is there, else generated; 2 labels, about 30% mistakes), then, with the page on screen:
load time (the run is read on a worker thread) and how late a 10 ms GUI timer fires meanwhile,
repaint time after random scroll jumps, and the time of each filter and sort.

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_evaluate_page.py [--rows 100000]
    xvfb-run -a python benchmarks/bench_evaluate_page.py          # with a real X server
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SST2 = ROOT.parent / "shared" / "datasets" / "sst2" / "test.tsv"


def make_run(folder: Path, rows: int) -> Path:
    from workbench.core.run.directory import RunDirectory

    rng = random.Random(0)
    if SST2.exists():
        texts = [l.split("\t")[0] for l in SST2.read_text(encoding="utf-8").splitlines()[1:] if "\t" in l]
    else:
        words = "good bad film plot actor scene story music ending boring lovely dull superb".split()
        texts = [" ".join(rng.choices(words, k=rng.randint(5, 30))) for _ in range(1000)]
    rd = RunDirectory.create(str(folder / "run"), "bench", "text-classification")
    rd.write_json("config.json", {"task": "text-classification", "data": {"train": str(SST2)}, "model": {"name": "bench"}})
    labels = ["negative", "positive"]
    cm = [[0, 0], [0, 0]]
    with open(rd.path / "predictions.jsonl", "w", encoding="utf-8") as f:
        for i in range(rows):
            gold = rng.randrange(2)
            pred = gold if rng.random() > 0.3 else 1 - gold
            conf = rng.uniform(0.5, 1.0)
            cm[gold][pred] += 1
            probs = {labels[pred]: round(conf, 6), labels[1 - pred]: round(1 - conf, 6)}
            f.write(json.dumps({"row": i + 2, "text": rng.choice(texts), "gold": labels[gold], "predicted": labels[pred],
                                "confidence": round(conf, 6), "probabilities": probs}) + "\n")
    n = rows
    acc = (cm[0][0] + cm[1][1]) / n
    rd.write_json("report.json", {
        "task": "text-classification", "split": "test", "metrics": {"accuracy": acc, "macro_f1": acc, "weighted_f1": acc},
        "labels": labels, "confusion_matrix": cm, "n": n,
        "per_class": [{"label": l, "precision": acc, "recall": acc, "f1": acc, "support": sum(cm[i])} for i, l in enumerate(labels)],
    })
    rd.set_status("finished", metrics={"accuracy": acc})
    rd.close()
    return rd.path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()

    from PySide6.QtCore import QEventLoop, Qt, QTimer
    from PySide6.QtWidgets import QApplication

    app = QApplication(sys.argv[:1])
    from workbench.app.pages.evaluate import EvaluatePage

    def wait(ms: int) -> None:
        loop = QEventLoop()
        QTimer.singleShot(ms, loop.quit)
        loop.exec()

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = make_run(Path(tmp), args.rows)
        size = (run_dir / "predictions.jsonl").stat().st_size / 1e6
        page = EvaluatePage()
        page.resize(1200, 800)
        page.show()
        wait(200)

        lateness: list[float] = []
        last = [time.perf_counter()]

        def tick() -> None:
            now = time.perf_counter()
            lateness.append(max(0.0, now - last[0] - 0.010))
            last[0] = now

        timer = QTimer()
        timer.setInterval(10)
        timer.timeout.connect(tick)
        timer.start()
        start = time.perf_counter()
        page.show_run(str(run_dir))
        while page.run is None:
            wait(5)
        load = time.perf_counter() - start
        timer.stop()
        print(f"{args.rows:,} predictions ({size:.1f} MB): loaded and shown in {load:.2f} s; "
              f"GUI timer late by worst {max(lateness) * 1000:.0f} ms meanwhile ({len(lateness)} ticks)")

        view = page.view
        table = view.predictions
        bar = table.verticalScrollBar()
        rng = random.Random(0)
        paints = []
        for _ in range(200):
            bar.setValue(rng.randint(0, bar.maximum()))
            t = time.perf_counter()
            table.viewport().repaint()
            paints.append(time.perf_counter() - t)
        print(f"repaint after a random scroll jump: median {statistics.median(paints) * 1000:.1f} ms, "
              f"worst {max(paints) * 1000:.1f} ms (200 jumps)")
        labels = view.confusion.matrix.labels
        steps = [
            ("sort by confidence", lambda: table.sortByColumn(4, Qt.SortOrder.DescendingOrder)),
            ("errors only", lambda: view.errors_only.setChecked(True)),
            ("confusion-matrix cell", lambda: view.confusion.choose(labels[0], labels[1])),
            ("sort by input text", lambda: table.sortByColumn(1, Qt.SortOrder.AscendingOrder)),
            ("show all", view.show_all.click),
            ("search 'film'", lambda: view.search.setText("film")),
        ]
        for name, action in steps:
            t = time.perf_counter()
            action()
            table.viewport().repaint()
            print(f"{name}: {(time.perf_counter() - t) * 1000:.0f} ms -> {view.predictions_model.rowCount():,} rows")
        page.shutdown()
        page.deleteLater()
        wait(50)
    del app
    return 0


if __name__ == "__main__":
    sys.exit(main())
