"""Multi-label analyses (text-multilabel): cleanlab's multi-label ranking finds planted wrong label sets,
calibration per label equals a direct computation, run diffs list the labels each row gained and lost,
explanations attribute a chosen label's logit."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
from test_multilabel import labelled_rows, tiny64, write_lists  # noqa: F401  (tiny64 is a fixture)

from workbench.cli.main import main
from workbench.core.analysis.calibration import label_calibration, score_reliability
from workbench.core.analysis.compare import compare_runs
from workbench.core.analysis.explain import explain_labels, explain_text_labels, label_targets
from workbench.core.analysis.label_issues import (
    find_label_issues,
    out_of_sample_label_probabilities,
    rank_label_set_issues,
)
from workbench.core.errors import InputError
from workbench.core.tasks.table import CALIBRATION, EXPLANATIONS, LABEL_ISSUES, RUN_DIFF, TASKS

TASK = "text-multilabel"


def test_the_table_offers_the_analyses():
    assert {LABEL_ISSUES, CALIBRATION, EXPLANATIONS, RUN_DIFF} <= TASKS[TASK].analyses


# ---- label issues -------------------------------------------------------------------------------


def flip_sets(rows, flips: int, seed: int = 3) -> tuple[list, set[int]]:
    """Rows with ``flips`` label sets replaced by their complement; the file lines changed."""
    names = ("music", "praise")
    chosen = set(random.Random(seed).sample(range(len(rows)), flips))
    out = [(t, [n for n in names if n not in labels]) if i in chosen else (t, labels)
           for i, (t, labels) in enumerate(rows)]
    return out, {i + 2 for i in chosen}  # the header is line 1


def test_ranking_separable_label_sets_finds_the_flipped_ones():
    rng = np.random.default_rng(0)
    n, k = 500, 3
    gold = rng.random((n, k)) < 0.4
    features = rng.normal(size=(n, 6)) + 4 * np.pad(gold.astype(float), ((0, 0), (0, 3)))
    flips = rng.choice(n, 25, replace=False)
    noisy = gold.copy()
    noisy[flips, rng.integers(0, k, 25)] ^= True  # one label of each flipped row added or dropped
    probs, folds = out_of_sample_label_probabilities(features, noisy, 5)
    assert folds == 5 and probs.shape == (n, k) and ((probs >= 0) & (probs <= 1)).all()
    scores, flagged = rank_label_set_issues(noisy, probs)
    top = set(np.argsort(scores, kind="stable")[:25])
    assert len(top & set(flips)) >= 18  # chance: 25 x 5% = 1.25
    assert flagged[flips].mean() >= 0.6 and flagged.sum() <= 50


def test_a_label_constant_in_a_fold_gets_its_rate():
    features = np.random.default_rng(1).normal(size=(20, 3))
    gold = np.zeros((20, 2), bool)
    gold[:, 0] = True  # always present
    gold[:10, 1] = True
    probs, _ = out_of_sample_label_probabilities(features, gold, 4)
    assert np.allclose(probs[:, 0], 1.0)
    with pytest.raises(InputError, match="unknown ranking method"):
        rank_label_set_issues(gold, probs, "margin")


def test_find_label_issues_ranks_planted_label_sets_first(tmp_path, tiny64):
    rows, flipped = flip_sets(labelled_rows(240, seed=5), 12)
    data = write_lists(tmp_path / "tickets.tsv", rows)
    result = find_label_issues(data, model=str(tiny64), folds=5)
    assert result.task == TASK and result.multilabel and result.separator == "|"
    assert len(result.rows) == 240 and result.labels == ["music", "praise"]
    top = result.ranked()[:12]
    assert sum(r.line in flipped for r in top) >= 8  # chance: 12 x 5% = 0.6
    by_line = {r.line: r for r in result.rows}
    for line in flipped:
        r = by_line[line]
        given = sorted(rows[line - 2][1])
        assert r.given_labels == given and r.given == "|".join(given)
        assert r.suggested == "|".join(r.suggested_labels or [])
        assert set(r.missing) == set(r.suggested_labels or []) - set(given)
        assert set(r.extra) == set(given) - set(r.suggested_labels or [])
        assert 0.0 <= r.suggested_probability <= 1.0
    assert result.cv_accuracy > 0.6 and result.summary()["label_separator"] == "|"


def test_cli_label_issues_writes_the_sets(tmp_path, tiny64, capsys):
    rows, flipped = flip_sets(labelled_rows(120, seed=2), 6)
    data = write_lists(tmp_path / "tickets.tsv", rows, separator=";")
    out = tmp_path / "issues.tsv"
    code = main(["label-issues", str(data), "--model", str(tiny64), "--folds", "3", "-o", str(out), "--all", "-q"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["rows"] == 120 and summary["labels"] == 2 and summary["label_separator"] == ";"
    with open(out, encoding="utf-8") as f:
        table = list(csv.DictReader(f, delimiter="\t"))
    assert len(table) == 120 and list(table[0])[:3] == ["line", "given", "suggested"]
    given = {int(r["line"]): r["given"] for r in table}
    # In the model's label order (sorted), joined by the file's own separator.
    assert all(given[i + 2] == ";".join(sorted(labels)) for i, (_, labels) in enumerate(rows))
    scores = [float(r["score"]) for r in table]
    assert scores == sorted(scores)


# ---- calibration --------------------------------------------------------------------------------


def direct_ece(scores: np.ndarray, gold: np.ndarray, bins: int = 15) -> float:
    """ECE of binary scores, bin by bin with a loop (bin i: (i/bins, (i+1)/bins], 0 in the first)."""
    total = 0.0
    for i in range(bins):
        lo, hi = i / bins, (i + 1) / bins
        mask = (scores > lo) & (scores <= hi) if i else (scores <= hi)
        if mask.any():
            total += mask.sum() / len(scores) * abs(gold[mask].mean() - scores[mask].mean())
    return float(total)


def test_label_calibration_equals_a_direct_computation():
    rng = np.random.default_rng(4)
    logits = rng.normal(0, 2, size=(400, 3))
    scores = 1 / (1 + np.exp(-logits))
    gold = rng.random((400, 3)) < scores ** 2  # over-confident on purpose
    cal = label_calibration(logits, gold.astype(np.float32), ["a", "b", "c"])
    assert cal["kind"] == "label scores" and cal["temperature"] is None and cal["n"] == 1200 and cal["rows"] == 400
    assert cal["ece"] == pytest.approx(direct_ece(scores.ravel(), gold.ravel()))
    for j, row in enumerate(cal["per_label"]):
        assert row["label"] == "abc"[j] and row["positives"] == int(gold[:, j].sum())
        assert row["ece"] == pytest.approx(direct_ece(scores[:, j], gold[:, j]))
        assert row["positive_rate"] == pytest.approx(gold[:, j].mean())
        assert sum(b["count"] for b in row["bins"]) == 400
    expected_nll = -np.mean(gold * np.log(scores) + (1 - gold) * np.log(1 - scores))
    assert cal["nll"] == pytest.approx(expected_nll)
    perfect = score_reliability(np.full(1000, 0.3), np.arange(1000) % 10 < 3)
    assert perfect["ece"] == pytest.approx(0.0, abs=1e-12)


# ---- run diff -----------------------------------------------------------------------------------


def make_run(folder: Path, preds: list[list[str]], gold: list[list[str]], labels=("a", "b", "c")) -> Path:
    folder.mkdir(parents=True)
    (folder / "status.json").write_text(json.dumps({"state": "finished"}))
    (folder / "config.json").write_text(json.dumps({"task": TASK, "resolved": {"sources": {"test": "/d/t.tsv"}}}))
    (folder / "report.json").write_text(json.dumps({"task": TASK, "split": "test", "labels": list(labels),
                                                    "metrics": {"lrap": 0.5, "loss": 0.3}, "per_label": []}))
    with open(folder / "predictions.jsonl", "w") as f:
        for i, (p, g) in enumerate(zip(preds, gold)):
            f.write(json.dumps({"row": i + 2, "text": f"text {i}", "labels": g, "predicted": p,
                                "scores": {}, "correct": sorted(p) == sorted(g)}) + "\n")
    return folder


def test_diff_lists_the_labels_each_row_gained_and_lost(tmp_path, capsys):
    gold = [["a"], ["a", "b"], [], ["c"], ["b"], ["a", "c"]] * 5
    pa = [["a"], ["a"], ["b"], ["c"], ["a", "c"], ["a", "c"]] * 5
    pb = [["a"], ["a", "b"], [], ["a"], ["c"], ["a", "b", "c"]] * 5
    a = make_run(tmp_path / "a", pa, gold)
    b = make_run(tmp_path / "b", pb, [list(reversed(g)) for g in gold])  # the same sets, in another order
    diff = compare_runs(a, b)
    by_row = {e["row"]: e for e in diff.changed}
    assert sorted(by_row) == sorted(r + 2 for r in range(30) if sorted(pa[r]) != sorted(pb[r]))
    e = by_row[3]  # gained b, which is gold: the set is now exactly right
    assert (e["change"], e["gained"], e["lost"], e["right_now"], e["wrong_now"]) == ("fixed", ["b"], [], ["b"], [])
    e = by_row[4]  # lost a wrong b: fixed
    assert (e["change"], e["lost"], e["right_now"]) == ("fixed", ["b"], ["b"])
    e = by_row[5]  # c right -> a wrong: gained a, lost c, both now wrong
    assert (e["change"], e["gained"], e["lost"], e["wrong_now"]) == ("broken", ["a"], ["c"], ["a", "c"])
    e = by_row[6]  # a,c -> c: lost a wrong a (better), still not the gold set b
    assert (e["change"], e["lost"], e["right_now"], e["wrong_now"]) == ("better", ["a"], ["a"], [])
    e = by_row[7]  # a,c -> a,b,c: gained a wrong b
    assert (e["change"], e["gained"], e["wrong_now"]) == ("broken", ["b"], ["b"])
    per_label = {r["label"]: r for r in diff.per_class}
    assert (per_label["b"]["fixed"], per_label["b"]["broken"]) == (10, 5)  # rows 3 and 4 fixed it, 7 broke it
    assert (per_label["a"]["fixed"], per_label["a"]["broken"]) == (5, 5)  # row 6 fixed it, 5 broke it
    assert (per_label["c"]["fixed"], per_label["c"]["broken"], per_label["c"]["lost"]) == (0, 5, 5)
    metrics = {m.name: m for m in diff.metrics}
    assert metrics["subset_accuracy"].a == pytest.approx(3 / 6) and metrics["subset_accuracy"].b == pytest.approx(3 / 6)
    from sklearn.metrics import f1_score, hamming_loss

    def hot(sets):
        return np.array([[x in s for x in "abc"] for s in sets], int)

    assert metrics["micro_f1"].b == pytest.approx(f1_score(hot(gold), hot(pb), average="micro"))
    assert metrics["macro_f1"].a == pytest.approx(f1_score(hot(gold), hot(pa), average="macro", zero_division=0))
    assert metrics["hamming_loss"].a == pytest.approx(hamming_loss(hot(gold), hot(pa)))
    assert metrics["micro_f1"].p_value is not None and metrics["lrap"].a == 0.5
    assert len(diff.fixed) == 10 and len(diff.broken) == 10
    assert main(["compare", str(a), str(b), "--examples", "3"]) == 0
    out = capsys.readouterr().out
    assert "fixed  row      3  gold a|b" in out and "+b" in out and json.loads(out.splitlines()[-1])["fixed"] == 10


def test_diff_refuses_other_gold_sets(tmp_path):
    a = make_run(tmp_path / "a", [["a"]] * 4, [["a"]] * 4)
    b = make_run(tmp_path / "b", [["a"]] * 4, [["a"], ["a"], ["a"], ["b"]])
    with pytest.raises(InputError, match="not scored on the same test data"):
        compare_runs(a, b)


# ---- explanations -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def multilabel_model(tiny64):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(
        tiny64, num_labels=2, id2label={0: "music", 1: "praise"}, label2id={"music": 0, "praise": 1},
        problem_type="multi_label_classification")
    return model, AutoTokenizer.from_pretrained(tiny64)


def test_label_targets_follow_thresholds_names_and_the_top_label():
    names = ["a", "b", "c"]
    logits = np.array([2.0, -1.0, 0.1])  # scores 0.88, 0.27, 0.52
    assert label_targets(logits, names) == [0, 2]
    assert label_targets(logits, names, {"a": 0.9, "b": 0.2, "c": 0.6}) == [1]
    assert label_targets(logits, names, {"a": 0.95, "b": 0.95, "c": 0.95}) == [0]  # none decided: the top one
    assert label_targets(logits, names, labels=["c", "a", "c"]) == [2, 0]
    with pytest.raises(InputError, match="unknown label 'd'"):
        label_targets(logits, names, labels=["d"])


def test_explain_labels_attributes_the_chosen_label(multilabel_model):
    import torch

    model, tok = multilabel_model
    text = "great music film"
    atts = explain_labels(model, tok, text, ["music", "praise"], labels=["praise", "music"], steps=32)
    assert [a.label for a in atts] == ["praise", "music"] and [a.target for a in atts] == [1, 0]
    with torch.no_grad():
        logits = model(**tok(text, return_tensors="pt")).logits[0]
    for att, j in zip(atts, (1, 0)):
        assert att.logit == pytest.approx(float(logits[j]), abs=1e-4)
        assert att.score == pytest.approx(float(torch.sigmoid(logits[j])), abs=1e-5)
        assert att.decided == (att.score >= 0.5)
        assert len(att.scores) == len(att.tokens) and abs(att.delta) < 0.05 * max(1.0, abs(att.logit - att.baseline_logit))
    assert atts[0].scores != atts[1].scores  # each label's own attributions


def test_explain_text_labels_reads_the_exports_thresholds(tmp_path, multilabel_model):
    model, tok = multilabel_model
    folder = tmp_path / "export"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    text = "great music film"
    import torch

    with torch.no_grad():
        scores = torch.sigmoid(model(**tok(text, return_tensors="pt")).logits[0]).tolist()
    # Thresholds that decide exactly "praise", whatever the untrained model scores.
    thresholds = {"music": min(1.0, scores[0] + 0.01), "praise": max(0.0, scores[1] - 0.01)}
    (folder / "workbench.json").write_text(json.dumps({"task": TASK, "labels": ["music", "praise"],
                                                       "thresholds": thresholds, "max_length": 32}))
    atts = explain_text_labels(str(folder), text, steps=16)
    assert [(a.label, a.decided) for a in atts] == [("praise", True)]


def test_cli_explain_prints_each_label(tmp_path, multilabel_model, capsys):
    model, tok = multilabel_model
    folder = tmp_path / "export"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    (folder / "workbench.json").write_text(json.dumps({"task": TASK, "labels": ["music", "praise"],
                                                       "thresholds": {"music": 0.0, "praise": 1.0}}))
    assert main(["explain", str(folder), "great music film", "--steps", "8", "--top", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    last = json.loads(out[-1])
    assert [e["label"] for e in last["explained"]] == ["music"] and last["explained"][0]["decided"] is True
    assert [t for t, _ in last["explained"][0]["tokens"]] == ["great", "music", "film"]
    assert out[0].startswith("music: logit") and len(out) == 1 + 2 + 1
    assert main(["explain", str(folder), "great film", "--label", "praise", "--label", "music", "--steps", "4"]) == 0
    assert [e["label"] for e in json.loads(capsys.readouterr().out.splitlines()[-1])["explained"]] == ["praise", "music"]
    assert main(["explain", str(folder), "great film", "--label", "jazz"]) != 0
    assert "unknown label 'jazz'" in capsys.readouterr().err


def test_a_runs_report_holds_calibration_per_label(tmp_path, tiny64, runs_home):
    from test_multilabel import engine_config

    from workbench.core.run.pipeline import run_training

    rows = labelled_rows(200, seed=7)
    train = write_lists(tmp_path / "train.tsv", rows[:120])
    val = write_lists(tmp_path / "val.tsv", rows[120:160])
    test = write_lists(tmp_path / "test.tsv", rows[160:])
    cfg = engine_config(train, tiny64, epochs=2)
    cfg.data.val, cfg.data.test = str(val), str(test)
    run = Path(run_training(cfg).run_dir)
    report = json.loads((run / "report.json").read_text())
    cal = report["calibration"]
    preds = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    scores = np.array([[p["scores"][n] for n in ("music", "praise")] for p in preds])
    gold = np.array([[n in p["labels"] for n in ("music", "praise")] for p in preds])
    assert cal["kind"] == "label scores" and cal["rows"] == 40 and [r["label"] for r in cal["per_label"]] == ["music", "praise"]
    assert cal["ece"] == pytest.approx(direct_ece(scores.ravel(), gold.ravel()), abs=1e-4)  # the file's scores are rounded
    assert cal["per_label"][1]["ece"] == pytest.approx(direct_ece(scores[:, 1], gold[:, 1]), abs=1e-4)
    assert "temperature" not in json.loads((run / "model" / "workbench.json").read_text())


def test_corrected_copies_relabel_label_sets_in_lists_and_0_1_columns(tmp_path):
    from workbench.core.analysis.label_issues import LabelIssue, LabelIssues
    from workbench.core.corrections import write_corrected_copy

    lists = tmp_path / "lists.tsv"
    lists.write_text("text\tlabels\nnice song\tmusic\nbad plot\tmusic;praise\nok\t\n", encoding="utf-8")
    hot = tmp_path / "hot.csv"
    hot.write_text("text,music,praise\nnice song,1,0\nbad plot,1,1\nok,0,0\n", encoding="utf-8")
    for path, resolved, sep in ((lists, {"label_column": "labels", "label_separator": ";", "delimiter": "\t"}, ";"),
                                (hot, {"label_columns": ["music", "praise"], "label_separator": "|",
                                       "delimiter": ","}, "|")):
        rows = [LabelIssue(2, "music", "music", 0.9, 0.9, False, "nice song"),
                LabelIssue(3, f"music{sep}praise", "music", 0.1, 0.8, True, "bad plot"),
                LabelIssue(4, "", "praise", 0.2, 0.7, True, "ok")]
        issues = LabelIssues(str(path), TASK, ["music", "praise"], rows, "self_confidence", 3,
                             resolved={**resolved, "has_header": True}, separator=sep)
        copy = write_corrected_copy(issues, {3: "music", 4: f"praise{sep}music"}, tmp_path / f"fixed-{path.name}")
        with pytest.raises(InputError, match="unknown label 'jazz'"):
            write_corrected_copy(issues, {3: f"music{sep}jazz"}, tmp_path / f"bad-{path.name}")
        if path is lists:
            assert copy.read_text() == "text\tlabels\nnice song\tmusic\nbad plot\tmusic\nok\tpraise;music\n"
        else:
            assert copy.read_text() == "text,music,praise\nnice song,1,0\nbad plot,1,0\nok,1,1\n"
