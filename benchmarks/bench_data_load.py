"""Time reading and checking a large TSV: 1,000,000 SST-2-like rows (two columns, header).

    python benchmarks/bench_data_load.py [--rows N] [--keep DIR]

Prints seconds for each stage and the peak RSS of the process, next to the file size and what the
same rows would cost held as Python objects (a list of [text, label] lists), which is the memory
the streaming reader avoids.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.core.data import (  # noqa: E402
    build_labeled, choose_columns, read_table, stratified_split, validate_classification,
)

WORDS = (
    "the a and of to is it 's that in this film movie with as for but its an on you be story characters "
    "funny good bad best worst too more most one performance director plot comedy drama love life "
    "charming dull boring brilliant mess heart sweet hilarious tedious moving predictable original "
    "script acting cast , . -- ' `` n't never always"
).split()


def generate(path: Path, rows: int, seed: int = 0) -> None:
    """Write ``rows`` random sentences in chunks, so generating costs no memory to speak of."""
    rng = np.random.default_rng(seed)
    vocab = np.array(WORDS)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("sentence\tlabel\n")
        for start in range(0, rows, 50_000):
            n = min(50_000, rows - start)
            lengths = rng.integers(2, 40, size=n)
            words = vocab[rng.integers(0, len(vocab), size=int(lengths.sum()))]
            labels = rng.integers(0, 2, size=n)
            out, pos = [], 0
            for length, label in zip(lengths, labels):
                out.append(f"{' '.join(words[pos:pos + length])} \t{label}\n")
                pos += length
            f.write("".join(out))


def python_objects_mb(path: Path) -> float:
    """Bytes the rows would take as a list of lists of str, measured row by row without keeping them."""
    import csv

    total = 0
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.reader(f, delimiter="\t"):
            total += 8 + sys.getsizeof(row) + sum(sys.getsizeof(c) for c in row)  # list slot + row + cells
    return total / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--keep", type=Path, help="write the file and cache here instead of a temp dir")
    args = ap.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench-data-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "big.tsv"

    t0 = time.perf_counter()
    generate(path, args.rows)
    print(f"generated {args.rows:,} rows, {path.stat().st_size / 2**20:.1f} MB in {time.perf_counter() - t0:.1f} s")
    print(f"peak RSS before reading: {peak_rss_mb():.0f} MB")

    t0 = time.perf_counter()
    table = read_table(path, cache_dir=folder / "cache")
    read_s = time.perf_counter() - t0
    print(f"read:     {read_s:6.2f} s  ({table.n_rows:,} rows, {len(table.malformed)} malformed)")

    t0 = time.perf_counter()
    choice = choose_columns(table)
    labeled = build_labeled(table, choice)
    label_s = time.perf_counter() - t0
    print(f"label:    {label_s:6.2f} s  (text={choice.text!r}, label={choice.label!r})")

    t0 = time.perf_counter()
    train, validation = stratified_split(labeled, 0.1, seed=0)
    split_s = time.perf_counter() - t0
    print(f"split:    {split_s:6.2f} s  ({len(train):,} + {len(validation):,})")

    t0 = time.perf_counter()
    report = validate_classification({
        "train": (train, str(path), table.malformed),
        "validation": (validation, str(path), []),
    })
    validate_s = time.perf_counter() - t0
    print(f"validate: {validate_s:6.2f} s  ({len(report.findings)} findings: "
          f"{', '.join(f.code for f in report.findings) or 'none'})")
    print(f"read + validate: {read_s + label_s + validate_s:.2f} s (split excluded)")
    print(f"peak RSS: {peak_rss_mb():.0f} MB")
    print(f"the same rows as Python objects: {python_objects_mb(path):.0f} MB")


if __name__ == "__main__":
    main()
