"""Multi-label text classification: Workbench (its defaults) against a plain `transformers.Trainer`
with ``problem_type="multi_label_classification"`` and the same hyper-parameters, on a real
multi-label set built from shared data.

The set: CoNLL-2003 sentences labelled with the entity types they contain (PER, LOC, ORG, MISC; a
sentence with no entity has the empty label set, a valid example). N seeded random sentences of
``train.txt`` train (default 3,000), M seeded random sentences of ``test.txt`` test (default 1,000);
written as ``text<TAB>labels`` with labels separated by ``|``, which Workbench detects.

Workbench runs with its defaults (`workbench train DATA --test TEST --task auto`: the task is
detected, epochs, learning rate, batch, max length, the 10% validation hold-out, its per-label
thresholds tuned on it, the refit on all rows). The Trainer then trains with the hyper-parameters
Workbench resolved (read back from the run's config.json: epochs, lr, batch size, max length,
warm-up, weight decay, clipping, seed) on all N sentences, and decides each label at 0.5 (it has no
validation split to tune on). Scores come from each system's test-set sigmoid outputs, computed
here with scikit-learn: micro-F1 and macro-F1 at 0.5 and (Workbench) at its tuned thresholds.
Speed: training samples per second as each reports it, and the wall time of the whole run. Each
run is its own process; runs of one repeat share the seed.

    python benchmarks/bench_multilabel.py [--train-sentences 3000] [--test-sentences 1000] [--repeats 3]
    # ablations of Workbench's settings alone (the Trainer skipped):
    python benchmarks/bench_multilabel.py --workbench-only --set precision=fp32 group_by_length=false
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "datasets"
SEPARATOR = "|"


# ---------------------------------------------------------------------------- the data
def conll_sentences(path: Path) -> list[tuple[list[str], list[str]]]:
    out, words, tags = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines() + [""]:
        parts = line.split()
        if not parts:
            if words and words[0] != "-DOCSTART-":
                out.append((words, tags))
            words, tags = [], []
            continue
        words.append(parts[0])
        tags.append(parts[-1])
    return out


def entity_types(tags: list[str]) -> list[str]:
    return sorted({t.split("-", 1)[1] for t in tags if "-" in t})


def write_set(sentences, n: int, seed: int, path: Path) -> Path:
    rng = random.Random(seed)
    chosen = rng.sample(sentences, min(n, len(sentences)))
    with open(path, "w", encoding="utf-8") as f:
        f.write("text\tlabels\n")
        for words, tags in chosen:
            # A lone '"' token would open a quoted field in a delimited file; both systems read this file.
            text = " ".join("''" if w == '"' else w for w in words)
            f.write(f"{text}\t{SEPARATOR.join(entity_types(tags))}\n")
    return path


def read_set(path: Path) -> tuple[list[str], list[list[str]]]:
    texts, labels = [], []
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        text, _, cell = line.partition("\t")
        texts.append(text)
        labels.append([x for x in cell.split(SEPARATOR) if x])
    return texts, labels


def scores(y_true, probs, thresholds) -> dict:
    import numpy as np
    from sklearn.metrics import f1_score

    pred = (np.asarray(probs) >= np.asarray(thresholds)[None, :]).astype(int)
    return {"micro_f1": float(f1_score(y_true, pred, average="micro", zero_division=0)),
            "macro_f1": float(f1_score(y_true, pred, average="macro", zero_division=0))}


# ---------------------------------------------------------------------------- one run (a child process)
def run_workbench(job: dict) -> dict:
    import numpy as np

    from workbench.core.config import DataConfig, RunConfig, TrainConfig
    from workbench.core.run.pipeline import run_training

    cfg = RunConfig(task="auto", data=DataConfig(train=job["train"], test=job["test"]), run_dir=job["run_dir"],
                    train=TrainConfig(seed=job["seed"], device=job["device"], **job.get("settings", {})))
    t0 = time.perf_counter()
    r = run_training(cfg)
    wall = time.perf_counter() - t0
    run = Path(job["run_dir"])
    resolved = json.loads((run / "config.json").read_text(encoding="utf-8"))
    meta = json.loads((run / "model" / "workbench.json").read_text(encoding="utf-8"))
    names = meta["labels"]
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    y = np.array([[int(n in row["labels"]) for n in names] for row in rows])
    probs = np.array([[row["scores"][n] for n in names] for row in rows])
    tuned = [meta["thresholds"][n] for n in names]
    return {"task": resolved.get("task"), "train": resolved["train"], "labels": names, "thresholds": tuned,
            "fallback": meta.get("thresholds_fallback", []), "at_0.5": scores(y, probs, [0.5] * len(names)),
            "tuned": scores(y, probs, tuned), "report_micro_f1": r.metrics.get("micro_f1"),
            "samples_per_second": r.samples_per_second, "train_seconds": r.train_seconds, "wall_seconds": wall}


def run_trainer(job: dict) -> dict:
    import datasets
    import numpy as np
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from workbench.core.backbones import resolve_backbone

    datasets.disable_progress_bars()
    hp = job["hyper"]
    t0 = time.perf_counter()
    path = resolve_backbone(None).path
    tok = AutoTokenizer.from_pretrained(path)
    names = job["labels"]

    def load(p):
        texts, labels = read_set(Path(p))
        d = datasets.Dataset.from_dict({"text": texts,
                                        "labels": [[float(n in ls) for n in names] for ls in labels]})
        return d.map(lambda b: tok(b["text"], truncation=True, max_length=hp["max_length"]), batched=True,
                     remove_columns=["text"])

    tr, te = load(job["train"]), load(job["test"])
    torch.manual_seed(hp["seed"])
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(names), problem_type="multi_label_classification",
        id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    on_gpu = torch.cuda.is_available() and job["device"] != "cpu"
    targs = TrainingArguments(
        output_dir=job["run_dir"], per_device_train_batch_size=hp["batch_size"], per_device_eval_batch_size=64,
        num_train_epochs=hp["epochs"], learning_rate=hp["lr"], warmup_steps=hp["warmup_ratio"],
        weight_decay=hp["weight_decay"], max_grad_norm=hp["max_grad_norm"], seed=hp["seed"], save_strategy="no",
        eval_strategy="no", logging_steps=50, report_to=[], disable_tqdm=True, use_cpu=not on_gpu, bf16=on_gpu,
        dataloader_num_workers=0)
    trainer = Trainer(model=model, args=targs, train_dataset=tr, data_collator=DataCollatorWithPadding(tok))
    res = trainer.train()
    pred = trainer.predict(te)
    probs = 1 / (1 + np.exp(-pred.predictions))
    y = np.asarray(pred.label_ids).astype(int)
    return {"at_0.5": scores(y, probs, [0.5] * len(names)), "samples_per_second": res.metrics["train_samples_per_second"],
            "train_seconds": res.metrics["train_runtime"], "wall_seconds": time.perf_counter() - t0}


def child(job: dict) -> None:
    out = run_trainer(job) if job["system"] == "trainer" else run_workbench(job)
    print("RESULT " + json.dumps(out), flush=True)


def run_child(job: dict) -> dict:
    p = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], capture_output=True, text=True)
    lines = [line for line in p.stdout.splitlines() if line.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        raise SystemExit(f"{job['system']} failed:\n{p.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


# ---------------------------------------------------------------------------- the comparison
def settings(pairs: list[str]) -> dict:
    """--set KEY=VALUE pairs as TrainConfig keywords (numbers, true/false, none parsed)."""
    out: dict = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        low = value.lower()
        out[key] = (True if low == "true" else False if low == "false" else None if low == "none"
                    else json.loads(value) if value.replace(".", "", 1).replace("e-", "", 1).isdigit() else value)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-sentences", type=int, default=3000)
    ap.add_argument("--test-sentences", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3, help="seeds 42, 43, ... (default 3)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="Workbench settings other than the defaults (TrainConfig fields), e.g. precision=fp32 "
                         "group_by_length=false; the Trainer gets the hyper-parameters Workbench resolved")
    ap.add_argument("--workbench-only", action="store_true", help="skip the Trainer (ablations of Workbench's settings)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(json.loads(args.child))
    if not SHARED.exists():
        sys.exit(f"needs {SHARED} (the shared datasets)")
    import torch

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cuda {torch.cuda.is_available()}", flush=True)
    results: dict[str, list[dict]] = {"workbench": [], "trainer": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        conll = SHARED / "conll2003"
        train = write_set(conll_sentences(conll / "train.txt"), args.train_sentences, 0, tmp_path / "train.tsv")
        test = write_set(conll_sentences(conll / "test.txt"), args.test_sentences, 1, tmp_path / "test.tsv")
        _, tr_labels = read_set(train)
        counts = {t: sum(t in ls for ls in tr_labels) for t in sorted({t for ls in tr_labels for t in ls})}
        print(f"train {len(tr_labels):,} sentences, label counts {counts}, "
              f"{sum(not ls for ls in tr_labels)} with no label, "
              f"{sum(len(ls) > 1 for ls in tr_labels)} with several", flush=True)
        for i in range(args.repeats):
            seed = 42 + i
            base = {"train": str(train), "test": str(test), "device": args.device}
            wb = run_child({**base, "system": "workbench", "seed": seed, "run_dir": str(tmp_path / f"wb-{i}"),
                            "settings": settings(args.set)})
            hp = {k: wb["train"][k] for k in ("epochs", "lr", "batch_size", "max_length", "warmup_ratio",
                                              "weight_decay", "max_grad_norm", "seed")}
            results["workbench"].append(wb)
            print(f"[seed {seed}] task {wb['task']}, {hp}", flush=True)
            print(f"  workbench  micro-F1 {wb['tuned']['micro_f1']:.4f} (0.5: {wb['at_0.5']['micro_f1']:.4f})  "
                  f"macro-F1 {wb['tuned']['macro_f1']:.4f} (0.5: {wb['at_0.5']['macro_f1']:.4f})  "
                  f"{wb['samples_per_second']:6.1f} samples/s  wall {wb['wall_seconds']:.0f}s  thresholds "
                  f"{dict(zip(wb['labels'], (round(t, 3) for t in wb['thresholds'])))}", flush=True)
            if args.workbench_only:
                continue
            tr = run_child({**base, "system": "trainer", "hyper": hp, "labels": wb["labels"],
                            "run_dir": str(tmp_path / f"tr-{i}")})
            results["trainer"].append(tr)
            print(f"  trainer    micro-F1 {tr['at_0.5']['micro_f1']:.4f}                  "
                  f"macro-F1 {tr['at_0.5']['macro_f1']:.4f}                  "
                  f"{tr['samples_per_second']:6.1f} samples/s  wall {tr['wall_seconds']:.0f}s", flush=True)

    if args.workbench_only:
        print(f"\nworkbench ({' '.join(args.set) or 'defaults'}), medians of {args.repeats} seeds: micro-F1 "
              f"{statistics.median(r['tuned']['micro_f1'] for r in results['workbench']):.4f}, macro-F1 "
              f"{statistics.median(r['tuned']['macro_f1'] for r in results['workbench']):.4f}, "
              f"{statistics.median(r['samples_per_second'] for r in results['workbench']):.1f} samples/s")
        print(json.dumps(results))
        return

    def med(system: str, key: str, sub: str | None = None) -> float:
        return statistics.median(r[key][sub] if sub else r[key] for r in results[system])

    print(f"\nmedians of {args.repeats} seeds")
    print(f"{'':10} {'micro-F1':>9} {'macro-F1':>9} {'micro@0.5':>10} {'macro@0.5':>10} {'samples/s':>10} {'wall s':>7}")
    print(f"{'workbench':10} {med('workbench', 'tuned', 'micro_f1'):9.4f} {med('workbench', 'tuned', 'macro_f1'):9.4f} "
          f"{med('workbench', 'at_0.5', 'micro_f1'):10.4f} {med('workbench', 'at_0.5', 'macro_f1'):10.4f} "
          f"{med('workbench', 'samples_per_second'):10.1f} {med('workbench', 'wall_seconds'):7.0f}")
    print(f"{'trainer':10} {'':9} {'':9} {med('trainer', 'at_0.5', 'micro_f1'):10.4f} "
          f"{med('trainer', 'at_0.5', 'macro_f1'):10.4f} {med('trainer', 'samples_per_second'):10.1f} "
          f"{med('trainer', 'wall_seconds'):7.0f}")
    print(f"micro-F1, Workbench (tuned) - Trainer: {100 * (med('workbench', 'tuned', 'micro_f1') - med('trainer', 'at_0.5', 'micro_f1')):+.2f} "
          f"points; speed {med('workbench', 'samples_per_second') / med('trainer', 'samples_per_second'):.2f}x")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
