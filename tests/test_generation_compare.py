"""`workbench compare` on two text-generation runs: matched by row, prompt and reference, compared by
each example's headline score (McNemar on right/wrong, a paired bootstrap on the mean), the examples whose
score moved listed with both answers; the app's Diff window shows them. Also: `predict -q` on a generation
export loads without transformers' progress bars, and `serve --help` names the OpenAI-compatible routes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_generation_task import gen_config, write_chat

from workbench.cli.main import main
from workbench.core.analysis.compare import compare_runs
from workbench.core.errors import InputError
from workbench.core.run.pipeline import run_training


@pytest.fixture(scope="module")
def two_runs(tiny_llama_dir, tmp_path_factory) -> tuple[Path, Path]:
    """The same data and test split, trained 1 and 8 epochs: the longer run answers more capitals right."""
    root = tmp_path_factory.mktemp("gen-compare")
    data = write_chat(root / "chat.jsonl", 120)
    runs = []
    for name, epochs in (("a", 1), ("b", 8)):
        run_training(gen_config(data, tiny_llama_dir, root / name, epochs=epochs, lr=5e-3))
        runs.append(root / name)
    return runs[0], runs[1]


def _predictions(run: Path) -> dict[int, dict]:
    return {r["row"]: r for r in map(json.loads, (run / "predictions.jsonl").read_text().splitlines())}


def test_cli_compare_gives_the_deltas_and_the_examples_whose_score_moved(two_runs, tmp_path, capsys):
    a, b = two_runs
    out = tmp_path / "changed.jsonl"
    assert main(["compare", str(a), str(b), "-o", str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(printed[-1])
    report_a, report_b = (json.loads((r / "report.json").read_text()) for r in (a, b))
    metrics = summary["metrics"]
    for name, value in report_b["generation"]["metrics"].items():  # every generation metric, both reports
        assert metrics[name]["a"] == pytest.approx(report_a["generation"]["metrics"][name])
        assert metrics[name]["b"] == pytest.approx(value)
        assert metrics[name]["delta"] == pytest.approx(value - report_a["generation"]["metrics"][name])
    headline = report_a["generation"]["headline"]
    assert metrics[headline]["p_value"] is not None and metrics["right"]["p_value"] is not None
    assert metrics["loss"]["delta"] == pytest.approx(report_b["metrics"]["loss"] - report_a["metrics"]["loss"])

    # fixed and broken: exactly the examples whose score went up and down between the predictions files
    pa, pb = _predictions(a), _predictions(b)
    assert set(pa) == set(pb) and summary["n"] == len(pa)
    up = {r for r in pa if pb[r]["score"] > pa[r]["score"]}
    down = {r for r in pa if pb[r]["score"] < pa[r]["score"]}
    assert up, "the longer run should answer some capital the shorter one did not"
    assert (summary["fixed"], summary["broken"]) == (len(up), len(down))
    changed = [json.loads(line) for line in out.read_text().splitlines()]
    assert {e["row"] for e in changed if e["change"] == "fixed"} == up
    assert {e["row"] for e in changed if e["change"] == "broken"} == down
    for e in changed:
        ra, rb = pa[e["row"]], pb[e["row"]]
        assert (e["prompt"], e["reference"], e["a"], e["b"]) == (ra["prompt"], ra["reference"], ra["output"],
                                                                  rb["output"])
        assert (e["score_a"], e["score_b"]) == (ra["score"], rb["score"])
    sizes = [abs(e["delta"]) for e in changed]
    assert sizes == sorted(sizes, reverse=True)  # the largest changes first
    text = "\n".join(printed[:-1])
    assert f"B scored {len(up)} examples higher than A (fixed) and {len(down)} lower" in text
    first = changed[0]
    assert any(line.split()[:3] == [first["change"], "row", str(first["row"])] and repr(first["reference"]) in line
               for line in printed)


def test_compare_on_the_examples_both_runs_answered(two_runs, tmp_path):
    """A run that answered fewer test examples (another --eval-limit) compares on the shared ones,
    their metrics scored again on those."""
    a, b = two_runs
    short = tmp_path / "short"
    shutil.copytree(b, short)
    lines = (b / "predictions.jsonl").read_text().splitlines()[:5]
    (short / "predictions.jsonl").write_text("".join(x + "\n" for x in lines))
    diff = compare_runs(a, short)
    assert diff.n == 5 and any("compared on the 5 both answered" in n for n in diff.notes)
    scores = [json.loads(x)["score"] for x in lines]
    headline = json.loads((b / "report.json").read_text())["generation"]["headline"]
    m = next(m for m in diff.metrics if m.name == headline)
    if headline in ("exact_match", "token_f1", "rouge_l"):  # a mean of the examples' scores
        assert m.b == pytest.approx(sum(scores) / len(scores))


def test_compare_refuses_runs_scored_on_different_data(two_runs, tiny_llama_dir, tmp_path, capsys):
    a, _ = two_runs
    other = tmp_path / "other.jsonl"
    lines = write_chat(tmp_path / "chat.jsonl", 120).read_text().splitlines()
    other.write_text("".join(x + "\n" for x in lines[3:]))  # other rows land in the test split
    run_training(gen_config(other, tiny_llama_dir, tmp_path / "c", epochs=1))
    with pytest.raises(InputError, match="not scored on the same test data") as e:
        compare_runs(a, tmp_path / "c")
    assert "row " in str(e.value) and "in A but" in str(e.value)
    assert main(["compare", str(a), str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "same test data" in err and "Traceback" not in err


def test_compare_refuses_a_generation_run_without_answers(two_runs, tmp_path):
    a, b = two_runs
    broken = tmp_path / "unscored"
    shutil.copytree(b, broken)
    rows = [json.loads(x) for x in (b / "predictions.jsonl").read_text().splitlines()]
    rows[2]["score"] = None
    (broken / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError, match="without a generated answer or its score") as e:
        compare_runs(a, broken)
    assert e.value.line == 3


def test_the_diff_window_shows_two_generation_runs(two_runs, qtbot):
    from workbench.app.views.run_diff import GENERATION_HEADS, RunDiffView

    a, b = two_runs
    dialog = RunDiffView(str(a), str(b))
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: dialog.diff is not None or dialog.message.isEnabled(), timeout=60000)
    assert dialog.diff is not None, dialog.message.text()
    diff = dialog.diff
    assert f"B scored {len(diff.fixed)} higher and {len(diff.broken)} lower" in dialog.head.text()
    heads = [dialog.examples.horizontalHeaderItem(c).text() for c in range(dialog.examples.columnCount())]
    assert tuple(heads) == GENERATION_HEADS
    assert dialog.examples.rowCount() == len(diff.changed) > 0
    e = diff.changed[0]
    assert dialog.examples.item(0, 0).text().startswith(e["change"])
    assert [dialog.examples.item(0, c).text() for c in (2, 3, 4, 5)] == [e["reference"], e["a"], e["b"],
                                                                          e["prompt"]]
    titles = {dialog.metrics.item(r, 0).text() for r in range(dialog.metrics.rowCount())}
    assert {"Token F1", "chrF", "Exact match"} <= titles
    dialog.kind.setCurrentIndex(1)  # higher only
    assert dialog.examples.rowCount() == len(diff.fixed)
    dialog.close()


def test_predict_quiet_on_a_generation_export_prints_no_progress_bar(two_runs, tmp_path, capfd):
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    _, b = two_runs
    before = logging.is_progress_bar_enabled()
    logging.enable_progress_bar()  # a run in this process turned the bars off for good
    try:
        AutoModelForCausalLM.from_pretrained(b / "model")  # the control: loading as such shows a bar
        assert "Loading weights" in capfd.readouterr().err
        prompts = tmp_path / "prompts.txt"
        prompts.write_text("What is the capital of Peru?\nWhat is the capital of Cuba?\n")
        assert main(["predict", "-q", str(b / "model"), str(prompts), "-o", str(tmp_path / "out.jsonl")]) == 0
        captured = capfd.readouterr()
        assert "Loading weights" not in captured.err and "%|" not in captured.err and "\r" not in captured.err
        assert captured.err.strip().splitlines() == [f"predictions: {tmp_path / 'out.jsonl'}"]
        assert logging.is_progress_bar_enabled()  # put back as it was
        assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2
    finally:
        if not before:
            logging.disable_progress_bar()


def test_serve_help_names_the_openai_routes(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "/v1/chat/completions" in text and "/v1/completions" in text and "stream" in text
