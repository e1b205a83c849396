"""Time reading and checking a large TSV: 1,000,000 SST-2-like rows (``sentence<TAB>label``, header).

    python benchmarks/bench_data_load.py [--rows N] [--keep DIR]

Prints seconds per stage and the process's peak RSS, next to what the same rows cost when held as
Python objects (csv.reader into a list, measured in a separate process), the memory a streaming
reader avoids. The file is generated in a child process so that generating costs this one nothing.
"""

from __future__ import annotations

import argparse
import csv
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = (
    "the a and of to is it 's that in this film movie with as for but its an on you be story characters "
    "funny good bad best worst too more most one performance director plot comedy drama love life "
    "charming dull boring brilliant mess heart sweet hilarious tedious moving predictable original "
    "script acting cast , . -- ' `` n't never always"
).split()


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, because ru_maxrss survives exec: a child would report its parent's."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, bytes on macOS


def generate(path: Path, rows: int, seed: int = 0) -> None:
    """Random 2-40 word sentences with 0/1 labels, written 50k rows at a time."""
    import numpy as np

    rng = np.random.default_rng(seed)
    vocab = np.array(WORDS, dtype=object)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("sentence\tlabel\n")
        for start in range(0, rows, 50_000):
            n = min(50_000, rows - start)
            lengths = rng.integers(2, 41, size=n)
            words = vocab[rng.integers(0, len(vocab), size=int(lengths.sum()))]
            ends = np.cumsum(lengths)
            labels = rng.integers(0, 2, size=n)
            f.write("".join(f"{' '.join(words[e - k:e])} \t{y}\n" for e, k, y in zip(ends, lengths, labels)))


def hold_as_python(path: Path) -> None:
    """Child process: load every row as a list of str, print the RSS that cost."""
    before = peak_rss_mb()
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    print(f"{peak_rss_mb() - before:.0f} {len(rows)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--keep", type=Path, help="write the file and the Arrow cache here instead of a temp dir")
    ap.add_argument("--child", choices=["generate", "python-objects"], help=argparse.SUPPRESS)
    ap.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "generate":
        return generate(args.path, args.rows)
    if args.child == "python-objects":
        return hold_as_python(args.path)

    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench-data-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "big.tsv"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--child", "generate", "--path", str(path), "--rows", str(args.rows)],
                   check=True)
    print(f"file: {args.rows:,} rows, {path.stat().st_size / 2**20:.1f} MB (generated in {time.perf_counter() - t0:.1f} s)")

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from workbench.core.data import (
        build_labeled,
        choose_columns,
        read_table,
        stratified_split,
        validate_classification,
    )

    base = peak_rss_mb()
    print(f"RSS after imports: {base:.0f} MB")

    def stage(name: str, fn):
        t = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t
        print(f"{name:<28} {seconds:6.2f} s   peak RSS {peak_rss_mb():5.0f} MB")
        return result, seconds

    table, read_s = stage("read_table", lambda: read_table(path, cache_dir=folder / "cache"))
    print(f"    {table.n_rows:,} rows, {len(table.malformed)} malformed, format {table.format}")
    (choice, labeled), label_s = stage(
        "choose_columns+build_labeled", lambda: (c := choose_columns(table), build_labeled(table, c)))
    print(f"    text={choice.text!r} label={choice.label!r} ambiguous={choice.ambiguous}")
    report, validate_s = stage("validate (train)", lambda: validate_classification(
        {"train": (labeled, str(path), table.malformed)}))
    print(f"    findings: {', '.join(f.code for f in report.findings) or 'none'}")
    peak_read_validate = peak_rss_mb()
    (train, held), _ = stage("stratified_split 10%", lambda: stratified_split(labeled, 0.1, seed=0))
    report, _ = stage("validate (train+validation)", lambda: validate_classification(
        {"train": (train, str(path), []), "validation": (held, str(path), [])}))
    print(f"    findings: {', '.join(f.code for f in report.findings) or 'none'}")

    out = subprocess.run([sys.executable, __file__, "--child", "python-objects", "--path", str(path)],
                         check=True, capture_output=True, text=True).stdout.split()
    print()
    print(f"read + validate: {read_s + label_s + validate_s:.2f} s")
    print(f"peak RSS for read + validate: {peak_read_validate:.0f} MB "
          f"({peak_read_validate - base:.0f} MB above the {base:.0f} MB after imports)")
    print(f"peak RSS including split and a second validation: {peak_rss_mb():.0f} MB")
    print(f"the same rows held as Python lists: {out[0]} MB more RSS ({int(out[1]):,} rows, separate process)")


if __name__ == "__main__":
    main()
