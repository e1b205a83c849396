"""workbench compare: paired deltas, McNemar, and exactly the examples a run fixed or broke."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from workbench.cli.main import main
from workbench.core.analysis.compare import compare_runs, mcnemar
from workbench.core.errors import InputError

LABELS = ["neg", "pos"]


def make_run(folder: Path, preds: list[str], gold: list[str], source="/data/test.tsv", task="text-classification",
             extra=None) -> Path:
    folder.mkdir(parents=True)
    (folder / "status.json").write_text(json.dumps({"state": "finished"}))
    (folder / "config.json").write_text(json.dumps({"task": task, "resolved": {"sources": {"test": source}}}))
    acc = sum(p == g for p, g in zip(preds, gold)) / len(gold)
    (folder / "report.json").write_text(json.dumps({"task": task, "split": "test", "labels": LABELS,
                                                    "metrics": {"accuracy": acc}, "per_class": []}))
    with open(folder / "predictions.jsonl", "w") as f:
        for i, (p, g) in enumerate(zip(preds, gold)):
            f.write(json.dumps({"row": i + 2, "text": f"text {i}", "gold": g, "predicted": p,
                                "confidence": 0.9, **(extra or {})}) + "\n")
    return folder


def test_mcnemar_exact_matches_binomial():
    # b=1, c=9: 2 * P(X <= 1), X ~ Bin(10, 1/2) = 2 * 11/1024
    assert mcnemar(1, 9) == pytest.approx(22 / 1024)
    assert mcnemar(5, 5) == 1.0
    assert mcnemar(0, 0) == 1.0
    # large counts: chi-squared with continuity correction
    assert mcnemar(600, 500) == pytest.approx(math.erfc(math.sqrt(((100 - 1) ** 2 / 1100) / 2)))


def test_compare_lists_exactly_the_flipped_examples(tmp_path):
    gold = ["pos", "neg"] * 50
    a = list(gold)
    b = list(gold)
    broke = {3, 17, 40}
    fixed = {5, 8, 22, 61, 90}
    for i in fixed:
        a[i] = "neg" if gold[i] == "pos" else "pos"  # A wrong, B right
    for i in broke:
        b[i] = "neg" if gold[i] == "pos" else "pos"
    ra = make_run(tmp_path / "a", a, gold)
    rb = make_run(tmp_path / "b", b, gold)
    diff = compare_runs(ra, rb)
    assert {e["row"] - 2 for e in diff.fixed} == fixed
    assert {e["row"] - 2 for e in diff.broken} == broke
    acc = next(m for m in diff.metrics if m.name == "accuracy")
    assert acc.delta == pytest.approx(0.02)
    assert acc.p_value == pytest.approx(mcnemar(3, 5))
    f1 = next(m for m in diff.metrics if m.name == "macro_f1")
    assert f1.delta > 0 and 0 < f1.p_value <= 1 and f1.interval[0] <= f1.delta <= f1.interval[1]
    e = diff.fixed[0]
    assert e["gold"] != e["a"] and e["gold"] == e["b"]


def test_cli_compare_last_line_json(tmp_path, capsys):
    gold = ["pos", "neg"] * 10
    b = list(gold)
    b[0] = "neg"
    ra, rb = make_run(tmp_path / "a", gold, gold), make_run(tmp_path / "b", b, gold)
    assert main(["compare", str(ra), str(rb), "-o", str(tmp_path / "changed.jsonl")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(out[-1])
    assert summary["fixed"] == 0 and summary["broken"] == 1
    assert len((tmp_path / "changed.jsonl").read_text().splitlines()) == 1
    # -o never replaces a file without --overwrite
    assert main(["compare", str(ra), str(rb), "-o", str(tmp_path / "changed.jsonl")]) == 2


def test_compare_refuses_different_test_data(tmp_path, capsys):
    gold = ["pos", "neg"] * 10
    ra = make_run(tmp_path / "a", gold, gold)
    other = list(gold)
    other[4] = "pos" if other[4] == "neg" else "neg"
    rb = make_run(tmp_path / "b", other, other, source="/data/other.tsv")
    with pytest.raises(InputError, match="same test data"):
        compare_runs(ra, rb)
    assert main(["compare", str(ra), str(rb)]) == 2
    assert "same test data" in capsys.readouterr().err


def test_compare_regression_error_deltas(tmp_path):
    def reg(folder, preds, gold):
        folder.mkdir()
        (folder / "status.json").write_text(json.dumps({"state": "finished"}))
        (folder / "config.json").write_text(json.dumps({"task": "text-regression"}))
        (folder / "report.json").write_text(json.dumps({"task": "text-regression", "split": "test", "metrics": {}}))
        with open(folder / "predictions.jsonl", "w") as f:
            for i, (p, g) in enumerate(zip(preds, gold)):
                f.write(json.dumps({"row": i, "text": str(i), "gold": g, "predicted": p, "error": p - g}) + "\n")
        return folder

    gold = [float(i % 5) for i in range(40)]
    a = [g + 1.0 for g in gold]
    b = [g + (0.0 if i < 10 else 1.0) for i, g in enumerate(gold)]
    diff = compare_runs(reg(tmp_path / "a", a, gold), reg(tmp_path / "b", b, gold))
    assert len(diff.fixed) == 10 and not diff.broken
    mae = next(m for m in diff.metrics if m.name == "mae")
    assert mae.delta == pytest.approx(-0.25) and mae.p_value < 0.05
    assert len(diff.errors["a"]) == 40


def test_compare_tagging_by_sentence(tmp_path):
    def tag(folder, preds, gold):
        folder.mkdir()
        (folder / "status.json").write_text(json.dumps({"state": "finished"}))
        (folder / "config.json").write_text(json.dumps({"task": "token-classification"}))
        (folder / "report.json").write_text(json.dumps({"task": "token-classification", "split": "test",
                                                        "metrics": {"f1": 0.5},
                                                        "per_class": [{"label": "PER", "f1": 0.5, "support": 3}]}))
        with open(folder / "predictions.jsonl", "w") as f:
            for i, (p, g) in enumerate(zip(preds, gold)):
                f.write(json.dumps({"row": i, "tokens": ["a", "b"], "gold": g, "predicted": p}) + "\n")
        return folder

    gold = [["B-PER", "O"]] * 6
    a = [["O", "O"]] * 3 + [["B-PER", "O"]] * 3
    b = [["B-PER", "O"]] * 5 + [["O", "O"]]
    diff = compare_runs(tag(tmp_path / "a", a, gold), tag(tmp_path / "b", b, gold))
    assert [e["row"] for e in diff.fixed] == [0, 1, 2] and [e["row"] for e in diff.broken] == [5]
    assert diff.per_class[0]["label"] == "PER"
