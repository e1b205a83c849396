"""workbench label-issues: cleanlab ranks injected label flips; corrected copies leave the original alone."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import sentiment_rows, write_tsv

from workbench.cli.main import main
from workbench.core.analysis.label_issues import find_label_issues, out_of_sample_probabilities, rank_label_issues
from workbench.core.cancel import CancelToken
from workbench.core.corrections import read_corrections, write_corrected_copy
from workbench.core.errors import Cancelled, InputError


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flipped_file(path: Path, n=300, flips=15, seed=1) -> tuple[Path, set[int]]:
    rows = sentiment_rows(n)
    chosen = set(random.Random(seed).sample(range(n), flips))
    rows = [(t, ("neg" if lab == "pos" else "pos") if i in chosen else lab) for i, (t, lab) in enumerate(rows)]
    write_tsv(path, rows)
    return path, {i + 2 for i in chosen}  # file lines: the header is line 1


def test_ranking_on_separable_features_finds_flips():
    rng = np.random.default_rng(0)
    n, k = 600, 3
    labels = rng.integers(0, k, n)
    features = rng.normal(size=(n, 8)) + 3 * np.eye(k, 8)[labels]
    flips = rng.choice(n, 30, replace=False)
    noisy = labels.copy()
    noisy[flips] = (labels[flips] + 1) % k
    probs, folds = out_of_sample_probabilities(features, noisy, k)
    assert folds == 5 and probs.shape == (n, k) and np.allclose(probs.sum(1), 1)
    scores, flagged = rank_label_issues(noisy, probs)
    top = np.argsort(scores)[:30]
    precision = len(set(top) & set(flips)) / 30
    assert precision >= 0.8  # chance is 5%
    assert flagged[flips].mean() >= 0.8


def test_find_label_issues_text_far_above_chance(tmp_path, tiny_model_dir):
    data, flipped = flipped_file(tmp_path / "reviews.tsv")
    before = digest(data)
    result = find_label_issues(data, model=str(tiny_model_dir))
    assert len(result.rows) == 300 and result.task == "text-classification"
    top = result.ranked()[:15]
    hits = sum(r.line in flipped for r in top)
    assert hits >= 9  # chance: 15 x 5% = 0.75
    assert all(r.suggested != r.given for r in top[:5])
    assert digest(data) == before


def test_corrected_copy_text(tmp_path, tiny_model_dir):
    data = tmp_path / "reviews.tsv"
    # CRLF endings, a quoted cell spanning two lines and a BOM: the copy keeps every other byte.
    data.write_bytes("\ufefftext,label\r\n".encode() + b"good great film,pos\r\n\"bad\r\nawful plot\",neg\r\n"
                     + b"".join(f"{t},{lab}\r\n".encode() for t, lab in sentiment_rows(40)))
    before = data.read_bytes()
    result = find_label_issues(data, model=str(tiny_model_dir), folds=3)
    lines = [r.line for r in result.rows]
    assert lines[:3] == [2, 3, 5]  # the quoted row spans lines 3-4
    copy = write_corrected_copy(result, {3: None, 2: "neg", 7: None}, tmp_path / "fixed.csv")
    assert data.read_bytes() == before  # byte-identical original
    out = copy.read_bytes().split(b"\r\n")
    original = before.split(b"\r\n")
    assert out[0] == original[0] and out[1] == b"good great film,neg"
    assert out[2:] == original[4:6] + original[7:]  # the two-line row (lines 3-4) and line 7 are gone
    record = read_corrections(copy)
    assert record["original"] == str(data.resolve()) and record["excluded"] == [3, 7]
    assert record["relabeled"] == {"2": {"from": "pos", "to": "neg"}}
    with pytest.raises(InputError, match="exists already"):
        write_corrected_copy(result, {2: None}, copy)
    with pytest.raises(InputError, match="unknown label"):
        write_corrected_copy(result, {2: "maybe"}, tmp_path / "other.csv")


def test_run_on_corrected_copy_records_its_origin(tmp_path, tiny_model_dir, runs_home):
    from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from workbench.core.run.pipeline import run_training

    data, _ = flipped_file(tmp_path / "reviews.tsv", n=120, flips=6)
    result = find_label_issues(data, model=str(tiny_model_dir), folds=3)
    flagged = {r.line: None for r in result.rows if r.flagged}
    copy = write_corrected_copy(result, flagged or {2: None})
    assert copy.name == "reviews-corrected.tsv"
    cfg = RunConfig(data=DataConfig(train=str(copy)), model=ModelConfig(name=str(tiny_model_dir)),
                    train=TrainConfig(max_steps=2, batch_size=16, max_length=16))
    run = run_training(cfg)
    config = json.loads((Path(run.run_dir) / "config.json").read_text())
    assert config["data"]["train"] == str(copy)
    assert config["resolved"]["corrected_from"]["original"] == str(data.resolve())


def test_cli_label_issues_writes_tsv_and_copy(tmp_path, tiny_model_dir, capsys):
    data, flipped = flipped_file(tmp_path / "reviews.tsv")
    before = digest(data)
    out, copy = tmp_path / "issues.tsv", tmp_path / "clean.tsv"
    rc = main(["label-issues", str(data), "--model", str(tiny_model_dir), "-o", str(out), "--corrected", str(copy),
               "--fix", "relabel", "-q"])
    assert rc == 0
    stdout = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(stdout[-1])
    assert summary["rows"] == 300 and summary["flagged"] > 0 and summary["output"] == str(out)
    rows = out.read_text().splitlines()
    assert rows[0].split("\t")[:4] == ["line", "given", "suggested", "score"]
    scores = [float(r.split("\t")[3]) for r in rows[1:]]
    assert scores == sorted(scores) and len(rows) - 1 == summary["flagged"]
    assert digest(data) == before
    assert len(copy.read_text().splitlines()) == 301  # relabelled, none left out
    # An existing output is never replaced without --overwrite
    assert main(["label-issues", str(data), "--model", str(tiny_model_dir), "-o", str(out), "-q"]) == 2
    assert "exists already" in capsys.readouterr().err


def test_label_issues_refuses_regression(tmp_path, tiny_model_dir, capsys):
    data = write_tsv(tmp_path / "scores.tsv", [(t, str(i % 5 + 0.5)) for i, (t, _) in enumerate(sentiment_rows(60))],
                     header=("text", "score"))
    assert main(["label-issues", str(data), "--model", str(tiny_model_dir), "--task", "text-regression"]) == 2
    assert "classification" in capsys.readouterr().err


def test_label_issues_cancels(tmp_path, tiny_model_dir):
    data, _ = flipped_file(tmp_path / "reviews.tsv")
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        find_label_issues(data, model=str(tiny_model_dir), cancel=token)


def test_label_issues_images_and_linked_copy(tmp_path):
    from image_samples import coloured, write_class_folder

    from workbench.core.data.images import scan_image_folders

    root = write_class_folder(tmp_path / "colours", n_per_class=16)
    coloured((200, 30, 30), (36, 30), seed=999).save(root / "blue" / "odd.png")  # a red image labelled blue
    result = find_label_issues(root, model="small-cnn", folds=4)
    assert result.task == "image-classification" and len(result.rows) == 33
    worst = result.ranked()[0]
    assert worst.text.endswith("odd.png") and worst.given == "blue" and worst.suggested == "red"
    files_before = sorted(p.name for p in root.rglob("*"))
    copy = write_corrected_copy(result, {worst.line: "red"}, tmp_path / "colours-fixed")
    assert sorted(p.name for p in root.rglob("*")) == files_before
    found = scan_image_folders(copy)
    labels = {Path(it.path).name: it.label for it in found.items["train"]}
    assert labels["odd.png"] == "red" and len(labels) == 33
    assert read_corrections(copy)["relabeled"][str(worst.line)]["to"] == "red"


def test_write_atomic_checks_where_it_writes(tmp_path):
    """label-issues -o and compare -o: a missing folder, a folder or an existing file is a clear InputError
    (exit 2), never an OSError after the work is done."""
    from workbench.core.analysis.label_issues import write_atomic

    with pytest.raises(InputError, match=r"missing-folder\) does not exist"):
        write_atomic(tmp_path / "missing-folder" / "x.tsv", "a\n")
    with pytest.raises(InputError, match="is a folder"):
        write_atomic(tmp_path, "a\n")
    target = write_atomic(tmp_path / "x.tsv", "a\n")
    assert target == tmp_path / "x.tsv" and target.read_text() == "a\n"
    with pytest.raises(InputError, match="exists already"):
        write_atomic(target, "b\n")
    assert write_atomic(target, "b\n", overwrite=True).read_text() == "b\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.tsv"]


def test_cli_label_issues_on_a_relative_path_refuses_its_own_data(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = write_tsv(tmp_path / "reviews.tsv", sentiment_rows(40))
    before = digest(data)
    assert main(["label-issues", "reviews.tsv", "-o", "./reviews.tsv", "--overwrite", "-q"]) == 2
    assert main(["label-issues", "reviews.tsv", "--corrected", "../" + tmp_path.name + "/reviews.tsv", "-q"]) == 2
    assert capsys.readouterr().err.count("is the data itself") == 2 and digest(data) == before
