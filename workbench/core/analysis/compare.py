"""What changed between two runs scored on the same test data.

    diff = compare_runs(RUN_A, RUN_B)
    diff.fixed, diff.broken     # examples A got wrong and B right, and the reverse
    diff.metrics                # deltas with paired significance tests

Paired tests, because both runs scored the same examples: McNemar's test on the examples the runs
disagree about (exact binomial below 1,000 discordant pairs, chi-squared with continuity
correction above) for accuracy; a paired bootstrap (the same resampled examples for both runs) for
macro F1 and regression errors. Tagging compares whole sentences (right = every tag right) and
lists per-entity-type F1 deltas; regression counts a prediction right within a quarter of the gold
scores' standard deviation, and compares absolute errors row by row. Multi-label runs compare label
sets: a row is right when its whole set is (McNemar on exact-match accuracy), micro/macro F1 and
Hamming loss get a paired bootstrap, every changed row lists the labels B gained and lost relative to
A (and which of them are now right or wrong against the gold), and every label how many rows B
fixed and broke. Text-generation runs compare their generated answers by each example's headline
score (predictions.jsonl's ``score``): an example is right at 1.0 (McNemar), the mean score gets a
paired bootstrap, and an example counts as fixed when B's score is higher, broken when lower (largest
changes first), with both answers; every generation metric of the two reports gets its delta.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..run.history import RunData, load_run
from ..tasks.table import DEFAULT_TASK, RUN_DIFF, prediction_kind, spec_or_none

BOOTSTRAP = 1000
REGRESSION_TOLERANCE = 0.25  # of the gold scores' standard deviation


def mcnemar(b: int, c: int) -> float:
    """Two-sided p-value of McNemar's test for b and c discordant pairs (A right only, B right only)."""
    n = b + c
    if n == 0:
        return 1.0
    if n > 1000:  # the binomial is close to normal here: chi-squared with continuity correction
        chi2 = (abs(b - c) - 1) ** 2 / n
        return float(min(1.0, math.erfc(math.sqrt(chi2 / 2))))
    k = min(b, c)
    # P(X <= k) for X ~ Binomial(n, 1/2), summed in log space so that large n does not overflow.
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2) for i in range(k + 1)]
    top = max(logs)
    tail = math.exp(top) * sum(math.exp(v - top) for v in logs)
    return float(min(1.0, 2 * tail))


def _resample_weights(n: int, rounds: int, seed: int) -> np.ndarray:
    """(rounds, n) counts: how often each example is drawn in each bootstrap resample."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=rounds).astype(np.float32)


def _macro_f1(weights: np.ndarray, gold: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """Macro F1 over ``k`` classes of each weighted resample (rows of ``weights``), as sklearn computes
    it with labels=range(k) and zero_division=0."""
    g = np.eye(k, dtype=np.float32)[gold]
    p = np.eye(k, dtype=np.float32)[pred]
    tp = weights @ (g * p)
    denom = weights @ g + weights @ p
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return f1.mean(1)


def bootstrap_delta(stat_a: np.ndarray, stat_b: np.ndarray, observed: float) -> tuple[float, tuple[float, float]]:
    """(two-sided p-value, 95% interval) of B - A from paired resampled statistics."""
    deltas = stat_b - stat_a
    if observed == 0:
        p = 1.0
    else:
        opposite = int((deltas <= 0).sum() if observed > 0 else (deltas >= 0).sum())
        # (count + 1) / (resamples + 1): never 0 from a finite number of resamples
        p = float(min(1.0, 2 * (opposite + 1) / (len(deltas) + 1)))
    return p, (float(np.percentile(deltas, 2.5)), float(np.percentile(deltas, 97.5)))


@dataclass
class MetricDelta:
    name: str
    title: str
    a: float | None
    b: float | None
    p_value: float | None = None
    test: str = ""
    interval: tuple[float, float] | None = None
    greater_is_better: bool = True

    @property
    def delta(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "a": self.a, "b": self.b, "delta": self.delta,
                "p_value": self.p_value, "test": self.test, "interval": self.interval,
                "greater_is_better": self.greater_is_better}


@dataclass
class RunDiff:
    run_a: str
    run_b: str
    task: str
    split: str
    n: int
    metrics: list[MetricDelta]
    changed: list[dict[str, Any]]  # every example fixed or broken: row, change, gold, a, b, text, ...
    per_class: list[dict[str, Any]] = field(default_factory=list)  # label, f1_a, f1_b, delta, support
    labels: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    errors: dict[str, list[float]] | None = None  # regression: per-row errors of A and B, for a scatter
    unit: str = "examples"

    @property
    def fixed(self) -> list[dict[str, Any]]:
        return [e for e in self.changed if e["change"] == "fixed"]

    @property
    def broken(self) -> list[dict[str, Any]]:
        return [e for e in self.changed if e["change"] == "broken"]

    def summary(self) -> dict[str, Any]:
        return {"run_a": self.run_a, "run_b": self.run_b, "task": self.task, "split": self.split, "n": self.n,
                "fixed": len(self.fixed), "broken": len(self.broken),
                "metrics": {m.name: {"a": m.a, "b": m.b, "delta": m.delta, "p_value": m.p_value}
                            for m in self.metrics}}

    def text(self, examples: int = 10) -> str:
        from ..escaping import one_line

        lines = [f"A: {self.run_a}", f"B: {self.run_b}",
                 f"{self.task}, {self.split} split, {self.n:,} {self.unit} scored by both", ""]
        lines.append(f"{'metric':<22} {'A':>9} {'B':>9} {'B - A':>9}  p-value")
        for m in self.metrics:
            if m.a is None or m.b is None:
                continue
            p = f"{m.p_value:.4g} ({m.test})" if m.p_value is not None else ""
            lines.append(f"{m.title[:22]:<22} {m.a:9.4f} {m.b:9.4f} {m.delta:+9.4f}  {p}")
        kind = prediction_kind(self.task)
        if self.per_class:
            head = {"tags": "entity/tag", "labels": "label"}.get(kind or "", "class")
            flips = "  fixed  broke" if kind == "labels" else ""
            lines += ["", f"{head:<22} {'F1 A':>9} {'F1 B':>9} {'B - A':>9}  support{flips}"]
            for r in self.per_class:
                support = f"{r['support']:>7}  {r['fixed']:>5}  {r['broken']:>5}" if kind == "labels" else r["support"]
                lines.append(f"{one_line(r['label'])[:22]:<22} {r['f1_a']:9.4f} {r['f1_b']:9.4f} {r['delta']:+9.4f}  "
                             f"{support}")
        if kind == "text":  # generated answers move by degrees: higher and lower scores, not right and wrong
            lines += ["", f"B scored {len(self.fixed):,} {self.unit} higher than A (fixed) and {len(self.broken):,} "
                          "lower (broken), largest changes first"]
        else:
            lines += ["", f"B fixed {len(self.fixed):,} {self.unit} that A got wrong and broke {len(self.broken):,} "
                          "that A got right"]
        for change, group in (("fixed", self.fixed), ("broken", self.broken)):
            lines += [_generation_line(change, e) if kind == "text" else _example_line(change, e)
                      for e in group[:examples]]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _shown(value: Any) -> str:
    """A gold or predicted value on one line: a label set joined by "|" ("-" when empty)."""
    if isinstance(value, list) and (not value or isinstance(value[0], str)):
        return "|".join(value) or "-"
    return str(value)


def _example_line(change: str, e: dict[str, Any]) -> str:
    from ..escaping import one_line

    text = one_line(str(e.get("text", "")))
    moved = "".join(f" +{x}" for x in e.get("gained", [])) + "".join(f" -{x}" for x in e.get("lost", []))
    return (f"  {change:<6} row {e['row']:>6}  gold {one_line(_shown(e['gold']))[:16]:<16} "
            f"A {one_line(_shown(e['a']))[:16]:<16} B {one_line(_shown(e['b']))[:16]:<16}{one_line(moved)[:30]} "
            f"{text[:60]}")


def _generation_line(change: str, e: dict[str, Any]) -> str:
    from ..escaping import one_line

    def cut(value: Any, width: int) -> str:
        text = one_line(str(value))
        return text if len(text) <= width else text[: width - 1] + "…"

    return (f"  {change:<6} row {e['row']:>6}  {e['score_a']:.2f} -> {e['score_b']:.2f}  {cut(e['prompt'], 40)!r}  "
            f"reference {cut(e['reference'], 24)!r}  A {cut(e['a'], 24)!r}  B {cut(e['b'], 24)!r}")


def _table(run: RunData) -> dict[str, list]:
    t = run.predictions()
    if t.num_rows == 0:
        raise InputError("has no predictions.jsonl (the run did not finish its test evaluation)", path=run.path)
    return t.to_pydict()


def _text_of(row: dict[str, list], i: int) -> str:
    if "text" in row:
        text = row["text"][i]
        if "text_pair" in row:
            text = f"{text} ⟶ {row['text_pair'][i]}"
        return text
    if "tokens" in row:
        return " ".join(row["tokens"][i])
    return str(row.get("path", [""] * (i + 1))[i])


def _source(run: RunData) -> str | None:
    split = (run.report or {}).get("split", "test")
    return ((run.config.get("resolved") or {}).get("sources") or {}).get(split)


def compare_runs(run_a: str | Path | RunData, run_b: str | Path | RunData, seed: int = 0) -> RunDiff:
    a = run_a if isinstance(run_a, RunData) else load_run(run_a)
    b = run_b if isinstance(run_b, RunData) else load_run(run_b)
    if a.task != b.task:
        raise InputError(f"the runs trained different tasks ({a.task} and {b.task}); compare runs of one task",
                         path=b.path)
    spec = spec_or_none(a.task or DEFAULT_TASK)  # runs written before runs recorded a task were classifiers
    if spec is not None and not spec.supports(RUN_DIFF):
        raise InputError(f"runs of {spec.name} have no per-row predictions to compare", path=a.path)
    ta, tb = _table(a), _table(b)
    notes = []
    if _source(a) != _source(b):
        notes.append(f"the test data came from different places ({_source(a)} and {_source(b)}) but holds the same "
                     "rows and labels")
    kind = prediction_kind(a.task or DEFAULT_TASK)
    if kind == "text":  # generated answers: matched by row, prompt and reference, compared by their scores
        return _generation(a, b, ta, tb, notes, seed)
    key = "tokens" if "tokens" in ta else ("text" if "text" in ta else "path")

    def index(t: dict[str, list]) -> dict[int, int]:
        return {int(r): i for i, r in enumerate(t["row"])}

    ia, ib = index(ta), index(tb)
    gold = "labels" if kind == "labels" else "gold"  # predictions.jsonl's column of the right answer
    same = set(ia) == set(ib) and all(_same_gold(ta[gold][ia[r]], tb[gold][ib[r]], kind == "labels") and
                                      ta.get(key, [None] * len(ia))[ia[r]] == tb.get(key, [None] * len(ib))[ib[r]]
                                      for r in ia)
    if not same:
        raise InputError(
            f"the runs were not scored on the same test data ({len(ia):,} rows from {_source(a)}, {len(ib):,} rows "
            f"from {_source(b)}, with different rows or labels); give both runs the same --test file to compare them",
            path=b.path)
    rows = sorted(ia)
    oa = [ia[r] for r in rows]
    ob = [ib[r] for r in rows]
    if kind == "labels":
        return _multilabel(a, b, ta, tb, rows, oa, ob, notes, seed)
    if kind == "values":
        return _regression(a, b, ta, tb, rows, oa, ob, notes)
    if kind == "tags":
        return _tagging(a, b, ta, tb, rows, oa, ob, notes)
    return _classification(a, b, ta, tb, rows, oa, ob, notes, seed)


def _same_gold(x, y, as_sets: bool) -> bool:
    """One row's gold in both runs (a label set is the same in any order; tags are not)."""
    if as_sets and isinstance(x, list) and isinstance(y, list):
        return sorted(map(str, x)) == sorted(map(str, y))
    return x == y


def _example(t: dict[str, list], tb: dict[str, list], i: int, j: int, row: int, change: str) -> dict[str, Any]:
    return {"row": row, "change": change, "gold": t["gold"][i], "a": t["predicted"][i], "b": tb["predicted"][j],
            "text": _text_of(t, i)}


def _metric(run: RunData, name: str) -> float | None:
    v = ((run.report or {}).get("metrics") or {}).get(name)
    return float(v) if isinstance(v, (int, float)) else None


def _classification(a, b, ta, tb, rows, oa, ob, notes, seed) -> RunDiff:
    labels = list((a.report or {}).get("labels") or sorted(set(ta["gold"])))
    ids = {n: i for i, n in enumerate(labels)}
    for n in set(ta["predicted"]) | set(tb["predicted"]) | set(ta["gold"]):
        ids.setdefault(n, len(ids))
    gold = np.array([ids[ta["gold"][i]] for i in oa])
    pa = np.array([ids[ta["predicted"][i]] for i in oa])
    pb = np.array([ids[tb["predicted"][j]] for j in ob])
    ca, cb = pa == gold, pb == gold
    fixed, broken = int((~ca & cb).sum()), int((ca & ~cb).sum())
    weights = _resample_weights(len(gold), BOOTSTRAP if len(gold) <= 50_000 else 200, seed)
    fa, fb = _macro_f1(weights, gold, pa, len(labels)), _macro_f1(weights, gold, pb, len(labels))
    from sklearn.metrics import f1_score

    f1a = float(f1_score(gold, pa, labels=list(range(len(labels))), average="macro", zero_division=0))
    f1b = float(f1_score(gold, pb, labels=list(range(len(labels))), average="macro", zero_division=0))
    p_f1, ci = bootstrap_delta(fa, fb, f1b - f1a)
    metrics = [MetricDelta("accuracy", "Accuracy", float(ca.mean()), float(cb.mean()), mcnemar(broken, fixed),
                           "McNemar"),
               MetricDelta("macro_f1", "Macro F1", f1a, f1b, p_f1, "paired bootstrap", ci)]
    for name, title in (("weighted_f1", "Weighted F1"), ("loss", "Test loss")):
        metrics.append(MetricDelta(name, title, _metric(a, name), _metric(b, name), greater_is_better=name != "loss"))
    per_class = _per_class(a, b)
    changed = [_example(ta, tb, i, j, r, "fixed" if not x and y else "broken")
               for r, i, j, x, y in zip(rows, oa, ob, ca, cb) if x != y]
    return RunDiff(str(a.path), str(b.path), a.task, (a.report or {}).get("split", "test"), len(rows), metrics,
                   changed, per_class, labels, notes)


def _per_class(a: RunData, b: RunData) -> list[dict[str, Any]]:
    return _per_class_rows((a.report or {}).get("per_class") or [], (b.report or {}).get("per_class") or [])


def _per_class_rows(rows_a: list[dict[str, Any]], rows_b: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each class's F1 in A and B (the classes of A, then those only B has), from two reports' per_class."""
    pa = {r["label"]: r for r in rows_a}
    pb = {r["label"]: r for r in rows_b}
    out = []
    for label in list(pa) + [x for x in pb if x not in pa]:
        ra, rb = pa.get(label, {}), pb.get(label, {})
        f1a, f1b = float(ra.get("f1", 0.0)), float(rb.get("f1", 0.0))
        out.append({"label": label, "f1_a": f1a, "f1_b": f1b, "delta": f1b - f1a,
                    "support": int(ra.get("support", rb.get("support", 0)))})
    return out


def _tagging(a, b, ta, tb, rows, oa, ob, notes) -> RunDiff:
    ca = np.array([ta["predicted"][i] == ta["gold"][i] for i in oa])
    cb = np.array([tb["predicted"][j] == tb["gold"][j] for j in ob])
    fixed, broken = int((~ca & cb).sum()), int((ca & ~cb).sum())
    metrics = [MetricDelta("sentence_accuracy", "Sentences all right", float(ca.mean()), float(cb.mean()),
                           mcnemar(broken, fixed), "McNemar")]
    for m in a.metric_specs:
        metrics.append(MetricDelta(m.name, m.title, _metric(a, m.name), _metric(b, m.name),
                                   greater_is_better=m.greater_is_better))
    changed = []
    for r, i, j, x, y in zip(rows, oa, ob, ca, cb):
        if x != y:
            e = _example(ta, tb, i, j, r, "fixed" if y else "broken")
            e["gold"], e["a"], e["b"] = (" ".join(v) for v in (e["gold"], e["a"], e["b"]))
            changed.append(e)
    return RunDiff(str(a.path), str(b.path), a.task, (a.report or {}).get("split", "test"), len(rows), metrics,
                   changed, _per_class(a, b), [], notes, unit="sentences")


def _regression(a, b, ta, tb, rows, oa, ob, notes, seed: int = 0) -> RunDiff:
    gold = np.array([ta["gold"][i] for i in oa], np.float64)
    ea = np.array([ta["predicted"][i] for i in oa], np.float64) - gold
    eb = np.array([tb["predicted"][j] for j in ob], np.float64) - gold
    tol = REGRESSION_TOLERANCE * float(gold.std()) if len(gold) > 1 and gold.std() > 0 else 1e-9
    ca, cb = np.abs(ea) <= tol, np.abs(eb) <= tol
    fixed, broken = int((~ca & cb).sum()), int((ca & ~cb).sum())
    weights = _resample_weights(len(gold), BOOTSTRAP, seed)
    total = weights.sum(1)
    metrics = [MetricDelta("within_tolerance", f"Within ±{tol:.3g}", float(ca.mean()), float(cb.mean()),
                           mcnemar(broken, fixed), "McNemar")]
    for name, title, fn in (("mse", "MSE", np.square), ("mae", "MAE", np.abs)):
        va, vb = float(fn(ea).mean()), float(fn(eb).mean())
        p, ci = bootstrap_delta((weights @ fn(ea)) / total, (weights @ fn(eb)) / total, vb - va)
        metrics.append(MetricDelta(name, title, va, vb, p, "paired bootstrap", ci, greater_is_better=False))
    for m in a.metric_specs:
        if m.name not in ("mse", "mae"):
            metrics.append(MetricDelta(m.name, m.title, _metric(a, m.name), _metric(b, m.name),
                                       greater_is_better=m.greater_is_better))
    changed = [_example(ta, tb, i, j, r, "fixed" if y else "broken")
               for r, i, j, x, y in zip(rows, oa, ob, ca, cb) if x != y]
    notes.append(f"a prediction counts as right within ±{tol:.3g} ({REGRESSION_TOLERANCE} x the gold scores' "
                 "standard deviation)")
    return RunDiff(str(a.path), str(b.path), a.task, (a.report or {}).get("split", "test"), len(rows), metrics,
                   changed, [], [], notes, errors={"a": ea.tolist(), "b": eb.tolist()})



# ---- label sets (multi-label runs) ---------------------------------------------------------------


def _multi_hot(sets: list[list[str]], ids: dict[str, int]) -> np.ndarray:
    out = np.zeros((len(sets), len(ids)), bool)
    for i, labels in enumerate(sets):
        out[i, [ids[x] for x in labels or []]] = True
    return out


def _set_f1(weights: np.ndarray, gold: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(micro F1, macro F1) of each weighted resample of multi-hot rows (zero_division=0, as sklearn)."""
    g, p = gold.astype(np.float32), pred.astype(np.float32)
    tp, fp, fn = weights @ (g * p), weights @ ((1 - g) * p), weights @ (g * (1 - p))
    per_label = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=(2 * tp + fp + fn) > 0)
    tp_all, wrong = tp.sum(1), fp.sum(1) + fn.sum(1)
    micro = np.divide(2 * tp_all, 2 * tp_all + wrong, out=np.zeros_like(tp_all), where=(2 * tp_all + wrong) > 0)
    return micro, per_label.mean(1)


def _set_metrics(a: RunData, b: RunData, gold: np.ndarray, pa: np.ndarray, pb: np.ndarray,
                 seed: int) -> list[MetricDelta]:
    """Exact match (McNemar), micro/macro F1 and Hamming loss (paired bootstrap over rows), and the
    run's own LRAP and loss (no test: the scores behind them are rounded in predictions.jsonl)."""
    ca, cb = (pa == gold).all(1), (pb == gold).all(1)
    fixed, broken = int((~ca & cb).sum()), int((ca & ~cb).sum())
    metrics = [MetricDelta("subset_accuracy", "Exact-match accuracy", float(ca.mean()), float(cb.mean()),
                           mcnemar(broken, fixed), "McNemar")]
    weights = _resample_weights(len(gold), BOOTSTRAP if len(gold) <= 50_000 else 200, seed)
    one = np.ones((1, len(gold)), np.float32)
    (micro_a, macro_a), (micro_b, macro_b) = _set_f1(weights, gold, pa), _set_f1(weights, gold, pb)
    (oma, oca), (omb, ocb) = _set_f1(one, gold, pa), _set_f1(one, gold, pb)
    for name, title, sa, sb, va, vb in (("micro_f1", "Micro F1", micro_a, micro_b, oma[0], omb[0]),
                                        ("macro_f1", "Macro F1", macro_a, macro_b, oca[0], ocb[0])):
        p, ci = bootstrap_delta(sa, sb, float(vb - va))
        metrics.append(MetricDelta(name, title, float(va), float(vb), p, "paired bootstrap", ci))
    wrong_a, wrong_b = (pa != gold).sum(1).astype(np.float32), (pb != gold).sum(1).astype(np.float32)
    scale = weights.sum(1) * max(1, gold.shape[1])
    ha, hb = float(wrong_a.mean() / max(1, gold.shape[1])), float(wrong_b.mean() / max(1, gold.shape[1]))
    p, ci = bootstrap_delta((weights @ wrong_a) / scale, (weights @ wrong_b) / scale, hb - ha)
    metrics.append(MetricDelta("hamming_loss", "Hamming loss", ha, hb, p, "paired bootstrap", ci,
                               greater_is_better=False))
    for name, title in (("lrap", "Label-ranking average precision"), ("loss", "Test loss")):
        metrics.append(MetricDelta(name, title, _metric(a, name), _metric(b, name), greater_is_better=name != "loss"))
    return metrics


def _per_label_changes(labels: list[str], gold: np.ndarray, pa: np.ndarray, pb: np.ndarray) -> list[dict[str, Any]]:
    """Per label: F1 in A and B, and the rows whose decision of it B fixed (now right) and broke (now wrong)."""
    from sklearn.metrics import f1_score

    out = []
    for j, label in enumerate(labels):
        g, x, y = gold[:, j], pa[:, j], pb[:, j]
        f1a = float(f1_score(g, x, zero_division=0))
        f1b = float(f1_score(g, y, zero_division=0))
        out.append({"label": label, "f1_a": f1a, "f1_b": f1b, "delta": f1b - f1a, "support": int(g.sum()),
                    "fixed": int(((x != g) & (y == g)).sum()), "broken": int(((x == g) & (y != g)).sum()),
                    "gained": int((~x & y).sum()), "lost": int((x & ~y).sum())})
    return out


def _set_change(labels: list[str], g: np.ndarray, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """One row's change from A's set ``x`` to B's ``y`` against the gold ``g``: the labels B gained and
    lost, and which of those changes made the label right or wrong. ``change``: fixed/broken by the
    whole set, else better/worse/mixed by how many labels B made right against wrong."""
    def names(mask: np.ndarray) -> list[str]:
        return [labels[j] for j in np.flatnonzero(mask)]

    right_now, wrong_now = (x != g) & (y == g), (x == g) & (y != g)
    a_right, b_right = bool((x == g).all()), bool((y == g).all())
    if a_right != b_right:
        change = "fixed" if b_right else "broken"
    else:
        n_right, n_wrong = int(right_now.sum()), int(wrong_now.sum())
        change = "better" if n_right > n_wrong else ("worse" if n_wrong > n_right else "mixed")
    return {"change": change, "gold": names(g), "a": names(x), "b": names(y), "gained": names(~x & y),
            "lost": names(x & ~y), "right_now": names(right_now), "wrong_now": names(wrong_now)}


def _multilabel(a, b, ta, tb, rows, oa, ob, notes, seed) -> RunDiff:
    labels = list((a.report or {}).get("labels") or [])
    labels += [x for x in (b.report or {}).get("labels") or [] if x not in labels]
    ids = {n: i for i, n in enumerate(labels)}
    for t, order in ((ta, oa), (tb, ob)):
        for key in ("labels", "predicted"):
            for i in order:
                for x in t[key][i] or []:
                    if x not in ids:
                        ids[x] = len(ids)
                        labels.append(x)
    gold = _multi_hot([ta["labels"][i] for i in oa], ids)
    pa = _multi_hot([ta["predicted"][i] for i in oa], ids)
    pb = _multi_hot([tb["predicted"][j] for j in ob], ids)
    metrics = _set_metrics(a, b, gold, pa, pb, seed)
    changed = []
    for k, (r, i) in enumerate(zip(rows, oa)):
        if (pa[k] != pb[k]).any():
            changed.append({"row": r, **_set_change(labels, gold[k], pa[k], pb[k]), "text": _text_of(ta, i)})
    gained, lost = int((~pa & pb).sum()), int((pa & ~pb).sum())
    notes.append(f"B decided {gained:,} labels A did not and dropped {lost:,} that A decided, on "
                 f"{len(changed):,} rows; a row counts as right when its whole label set is")
    return RunDiff(str(a.path), str(b.path), a.task, (a.report or {}).get("split", "test"), len(rows), metrics,
                   changed, _per_label_changes(labels, gold, pa, pb), labels, notes)


# ---- generated answers (text-generation runs) ------------------------------------------------------

GENERATION_TITLES = {"exact_match": "Exact match", "token_f1": "Token F1", "chrf": "chrF", "bleu": "BLEU",
                     "rouge_l": "ROUGE-L", "entity_f1": "Entity F1"}
MEAN_METRICS = frozenset({"exact_match", "token_f1", "rouge_l"})  # the corpus value is the examples' mean
RIGHT = 1.0 - 1e-9  # an example's score at (or a rounding error below) 1.0 is right
MOVED = 1e-9  # smaller differences between two scores are rounding, not a change


def _generation_index(run: RunData, t: dict[str, list]) -> dict[int, int]:
    """row -> line index of a generation run's scored examples; InputError for a file without them."""
    path = run.predictions_path
    missing = [c for c in ("row", "prompt", "reference", "output", "score") if c not in t]
    if missing:
        raise InputError(f"has no {', '.join(missing)} column(s): not the predictions of a text-generation run "
                         "that finished its test evaluation", path=path)
    out = {}
    for i, (row, output, score) in enumerate(zip(t["row"], t["output"], t["score"])):
        if output is None or not isinstance(score, (int, float)):
            raise InputError("an example without a generated answer or its score (the run did not finish scoring "
                             "its test answers)", path=path, line=i + 1)
        out[int(row)] = i
    return out


def _generation_pairs(a: RunData, b: RunData, ta: dict[str, list], tb: dict[str, list],
                      notes: list[str]) -> tuple[list[int], list[int], list[int], bool]:
    """(rows, A's line indices, B's, whether both scored exactly these rows): the examples both runs
    scored, each with the same prompt and reference in both; InputError when that is none of them."""
    ia, ib = _generation_index(a, ta), _generation_index(b, tb)
    shared = sorted(set(ia) & set(ib))
    differ = next((r for r in shared if (ta["prompt"][ia[r]], ta["reference"][ia[r]])
                   != (tb["prompt"][ib[r]], tb["reference"][ib[r]])), None)
    if not shared or differ is not None:
        from ..escaping import one_line

        why = "no row in common" if differ is None else (
            f"row {differ} asks {one_line(ta['prompt'][ia[differ]])[:60]!r} for {one_line(ta['reference'][ia[differ]])[:40]!r} "
            f"in A but {one_line(tb['prompt'][ib[differ]])[:60]!r} for {one_line(tb['reference'][ib[differ]])[:40]!r} "
            "in B")
        raise InputError(f"the runs were not scored on the same test data ({len(ia):,} examples from {_source(a)}, "
                         f"{len(ib):,} from {_source(b)}: {why}); give both runs the same data and --test file to "
                         "compare them", path=b.path)
    same_rows = set(ia) == set(ib)
    if not same_rows:  # e.g. a different --eval-limit: the examples both answered still compare pair by pair
        notes.append(f"A answered {len(ia):,} test examples and B {len(ib):,}: compared on the {len(shared):,} both "
                     "answered, their scores computed again on those")
    return shared, [ia[r] for r in shared], [ib[r] for r in shared], same_rows


def _generation_scores(a: RunData, b: RunData, ta: dict[str, list], tb: dict[str, list], oa: list[int],
                       ob: list[int], same_rows: bool
                       ) -> tuple[str, dict[str, float], dict[str, float], np.ndarray, np.ndarray]:
    """(headline metric, A's and B's corpus metrics, A's and B's per-example headline scores): the runs'
    own when both scored the same examples by the same headline, else scored again on the shared ones."""
    ga, gb = ((r.report or {}).get("generation") or {} for r in (a, b))
    if same_rows and ga.get("headline") and ga.get("headline") == gb.get("headline") \
            and isinstance(ga.get("metrics"), dict) and isinstance(gb.get("metrics"), dict):
        sa = np.array([float(ta["score"][i]) for i in oa])
        sb = np.array([float(tb["score"][j]) for j in ob])
        return str(ga["headline"]), ga["metrics"], gb["metrics"], sa, sb
    from ..tasks.generation.scoring import score_generations

    references = [str(ta["reference"][i]) for i in oa]
    prompts = [str(ta["prompt"][i]) for i in oa]
    xa = score_generations([str(ta["output"][i]) for i in oa], references, prompts=prompts)
    xb = score_generations([str(tb["output"][j]) for j in ob], references, prompts=prompts)
    return (xa.headline, xa.metrics, xb.metrics, np.array(xa.example_score, np.float64),
            np.array([row[xa.headline] for row in xb.per_example], np.float64))


def _generation_metrics(a: RunData, b: RunData, headline: str, ma: dict[str, float], mb: dict[str, float],
                        sa: np.ndarray, sb: np.ndarray, seed: int) -> list[MetricDelta]:
    """The share of examples right (headline score 1; McNemar), every generation metric with the
    headline's mean tested by a paired bootstrap, then the run's own metrics (loss, perplexity)."""
    title = GENERATION_TITLES.get(headline, headline)
    ra, rb = sa >= RIGHT, sb >= RIGHT
    p_right = mcnemar(int((ra & ~rb).sum()), int((~ra & rb).sum()))
    weights = _resample_weights(len(sa), BOOTSTRAP if len(sa) <= 50_000 else 200, seed)
    total = weights.sum(1)
    p_mean, ci = bootstrap_delta((weights @ sa) / total, (weights @ sb) / total, float(sb.mean() - sa.mean()))
    metrics = []
    if headline != "exact_match":  # exact match's own row is this share
        metrics.append(MetricDelta("right", f"Right ({title} = 1)", float(ra.mean()), float(rb.mean()), p_right, "McNemar"))
    names = [headline] + [n for n in list(ma) + [x for x in mb if x not in ma] if n != headline]
    for name in names:
        va, vb = ma.get(name), mb.get(name)
        m = MetricDelta(name, GENERATION_TITLES.get(name, name), float(va) if isinstance(va, (int, float)) else None,
                        float(vb) if isinstance(vb, (int, float)) else None)
        if name == headline == "exact_match":
            m.p_value, m.test = p_right, "McNemar"
        elif name == headline and name in MEAN_METRICS:
            m.p_value, m.test, m.interval = p_mean, "paired bootstrap", ci
        metrics.append(m)
    if headline not in MEAN_METRICS:  # a corpus metric (chrF, BLEU, micro entity F1): test the examples' mean
        metrics.insert(len(metrics) - len(names) + 1, MetricDelta(
            "example_score", f"Mean example {title}", float(sa.mean()), float(sb.mean()), p_mean, "paired bootstrap",
            ci))
    for spec in a.metric_specs:
        if spec.name not in names:
            metrics.append(MetricDelta(spec.name, spec.title, _metric(a, spec.name), _metric(b, spec.name),
                                       greater_is_better=spec.greater_is_better))
    return metrics


def _generation_change(ta: dict[str, list], tb: dict[str, list], i: int, j: int, row: int, x: float,
                       y: float) -> dict[str, Any]:
    """One example whose score moved: fixed when B's is higher. ``gold``, ``a``, ``b`` and ``text`` are the
    shape every diff's examples share (the reference, the two answers, the prompt)."""
    line = ta.get("line")
    return {"row": row, "line": int(line[i]) if line and line[i] is not None else None,
            "change": "fixed" if y > x else "broken", "delta": y - x, "score_a": x, "score_b": y,
            "prompt": ta["prompt"][i], "reference": ta["reference"][i], "gold": ta["reference"][i],
            "a": ta["output"][i], "b": tb["output"][j], "text": ta["prompt"][i]}


def _generation(a, b, ta, tb, notes, seed) -> RunDiff:
    rows, oa, ob, same_rows = _generation_pairs(a, b, ta, tb, notes)
    settings_a, settings_b = (((r.report or {}).get("generation") or {}).get("settings") or {} for r in (a, b))
    differ = [k for k in settings_a if k in settings_b and settings_a[k] != settings_b[k]]
    if differ:
        notes.append("the runs generated with different settings: " + ", ".join(
            f"{k} {settings_a[k]} in A, {settings_b[k]} in B" for k in differ))
    headline, ma, mb, sa, sb = _generation_scores(a, b, ta, tb, oa, ob, same_rows)
    metrics = _generation_metrics(a, b, headline, ma, mb, sa, sb, seed)
    changed = [_generation_change(ta, tb, i, j, r, float(x), float(y))
               for r, i, j, x, y in zip(rows, oa, ob, sa, sb) if abs(y - x) > MOVED]
    changed.sort(key=lambda e: (-abs(e["delta"]), e["row"]))  # the largest changes first
    ra, rb = sa >= RIGHT, sb >= RIGHT
    title = GENERATION_TITLES.get(headline, headline)
    notes.append(f"an example's score is its {title} (1 = right); B made {int((~ra & rb).sum()):,} examples right "
                 f"that A did not and {int((ra & ~rb).sum()):,} wrong that A had right")
    per_class: list[dict[str, Any]] = []
    ca, cb = (((r.report or {}).get("generation") or {}).get("classes") for r in (a, b))
    if same_rows and isinstance(ca, dict) and isinstance(cb, dict):  # the answers are a few class names
        per_class = _per_class_rows(ca.get("per_class") or [], cb.get("per_class") or [])
    return RunDiff(str(a.path), str(b.path), a.task, (a.report or {}).get("split", "test"), len(rows), metrics,
                   changed, per_class, [], notes)
