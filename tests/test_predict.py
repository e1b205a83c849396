"""`workbench predict`: files and folders through an export, streaming, bad rows reported and skipped."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from image_samples import coloured

from workbench.cli import main
from workbench.core.errors import InputError
from workbench.core.predict import batch as batch_module
from workbench.core.predict.batch import default_output, predict_file
from workbench.core.predict.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]


def read_tsv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_text_file_predictions_with_a_bad_row_reported_and_skipped(text_export, tmp_path, capsys):
    src = tmp_path / "new reviews.tsv"
    filler = b"".join(b"%d\tthe movie was fine and the story was fine as well\n" % i for i in range(8000))
    src.write_bytes(b"id\ttext\n1\tgood great wonderful film\n2\n3\tawful boring dismal plot\n"
                    + filler  # lines 5 to 8004: push the next row past the sample the format is sniffed from
                    + b"5\tbad \xff\xfe bytes\n6\tlovely superb story\n")
    code = main(["predict", str(text_export), str(src), "-q"])
    out, err = capsys.readouterr()
    assert code == 0
    summary = json.loads(out.strip().splitlines()[-1])
    target = tmp_path / "new reviews.predictions.tsv"
    assert summary["output"] == str(target) and summary["rows"] == 8003 and summary["skipped"] == 2
    assert f"{src}, line 3: expected at least 2 fields, found 1" in err
    assert f"{src}, line 8005: the text is not valid UTF-8" in err
    rows = read_tsv(target)
    assert list(rows[0]) == ["line", "text", "label", "score", "p_neg", "p_pos"]
    lines = [int(r["line"]) for r in rows]  # input order, one row per good input row, bad rows left out
    assert lines == [2, 4, *range(5, 8005), 8006]
    assert rows[0]["text"] == "good great wonderful film"
    for r in rows:
        probs = {"neg": float(r["p_neg"]), "pos": float(r["p_pos"])}
        assert r["label"] == max(probs, key=probs.get) and float(r["score"]) == max(probs.values())
        assert sum(probs.values()) == pytest.approx(1, abs=1e-5)
    # The same answers as the model in memory, through ONNX and through PyTorch.
    onnx = Predictor(text_export).predict([rows[0]["text"], rows[1]["text"]])
    torch = Predictor(text_export, backend="torch").predict([rows[0]["text"], rows[1]["text"]])
    assert [a["label"] for a in onnx] == [rows[0]["label"], rows[1]["label"]] == [a["label"] for a in torch]
    assert [a["score"] for a in onnx] == pytest.approx([a["score"] for a in torch], abs=1e-4)


def test_never_overwrites_without_permission_and_never_the_input(text_export, tmp_path, capsys):
    src = tmp_path / "in.csv"
    src.write_text("text\ngood film\n", encoding="utf-8")
    target = default_output(src)
    target.write_text("mine\n")
    assert main(["predict", str(text_export), str(src), "-q"]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err and target.read_text() == "mine\n"
    assert main(["predict", str(text_export), str(src), "-q", "-o", str(src)]) == 2
    assert "is the input itself" in capsys.readouterr().err and src.read_text() == "text\ngood film\n"
    assert main(["predict", str(text_export), str(src), "-q", "--overwrite", "--backend", "torch"]) == 0
    assert read_tsv(target)[0]["text"] == "good film"
    assert main(["predict", str(tmp_path), str(src), "-q", "-o", str(tmp_path / "x.tsv")]) == 2
    assert "is not a Workbench export" in capsys.readouterr().err


def test_column_choice_follows_training_or_is_named(text_export, tmp_path):
    p = Predictor(text_export)
    two = tmp_path / "two.tsv"
    two.write_text("id\tcomment\n1\tgood film\n", encoding="utf-8")
    with pytest.raises(InputError, match="has no column 'text'.*columns: id, comment.*--text-column"):
        predict_file(p, two)
    summary = predict_file(p, two, text_column="comment")
    assert summary.rows == 1 and read_tsv(Path(summary.output))[0]["text"] == "good film"
    one = tmp_path / "plain.txt"  # one column, no header: it is the text
    one.write_text("good film\nawful plot\n", encoding="utf-8")
    assert [r["line"] for r in read_tsv(Path(predict_file(p, one).output))] == ["1", "2"]


def test_pairs_and_regression_outputs(pair_export, regression_export, tmp_path):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("sentence1,sentence2\nthe movie,good great\nthe plot,awful bad\n", encoding="utf-8")
    rows = read_tsv(Path(predict_file(Predictor(pair_export), pairs).output))
    assert list(rows[0])[:4] == ["line", "text", "text_pair", "label"] and rows[1]["text_pair"] == "awful bad"
    scores = tmp_path / "scores.tsv"
    scores.write_text("text\ngood great film\nawful bad plot\n", encoding="utf-8")
    rows = read_tsv(Path(predict_file(Predictor(regression_export), scores).output))
    assert list(rows[0]) == ["line", "text", "score"]
    torch = Predictor(regression_export, backend="torch").predict(["good great film"])[0]["score"]
    assert float(rows[0]["score"]) == pytest.approx(torch, abs=1e-3)  # in the training data's units


def test_tagging_conll_and_plain_text(tagging_export, tmp_path, capsys):
    conll = tmp_path / "new.conll"
    conll.write_text("-DOCSTART- O\n\njohn B-PER\nlives O\nin O\nparis B-LOC\n\nmary\nworks\n\n", encoding="utf-8")
    summary = predict_file(Predictor(tagging_export), conll)
    rows = read_tsv(Path(summary.output))
    assert [r["line"] for r in rows] == ["3", "8"] and rows[0]["tokens"] == "john lives in paris"
    assert len(rows[0]["tags"].split()) == 4 and len(rows[1]["tags"].split()) == 2
    labels = set(json.loads((tagging_export / "workbench.json").read_text())["labels"])
    assert set(rows[0]["tags"].split()) <= labels

    text = tmp_path / "sentences.txt"
    long = " ".join(["paris"] * 80)  # more sub-words than --max-length 32: tagged in windows
    text.write_bytes(b"John lives in Paris.\n\n\xff\xfe broken\n" + long.encode() + b"\n")
    assert main(["predict", str(tagging_export), str(text), "-q"]) == 0
    err = capsys.readouterr().err
    assert f"{text}, line 3: the line is not valid UTF-8" in err
    rows = read_tsv(tmp_path / "sentences.predictions.tsv")
    assert list(rows[0]) == ["line", "tokens", "tags"] and [r["line"] for r in rows] == ["1", "4"]
    assert rows[0]["tokens"] == "John lives in Paris ." and len(rows[0]["tags"].split()) == 5
    assert len(rows[1]["tags"].split()) == 80


def test_image_folder_recursively_with_broken_files(image_export, tmp_path, capsys):
    photos = tmp_path / "new photos"
    (photos / "sub" / "deeper").mkdir(parents=True)
    coloured((200, 30, 30), (40, 30), seed=7).save(photos / "a-red.png")
    coloured((30, 30, 200), (40, 30), seed=8).save(photos / "sub" / "b-blue.jpg")
    coloured((200, 30, 30), (36, 36), seed=9).save(photos / "sub" / "deeper" / "c-red.webp")
    (photos / "sub" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (photos / "notes.txt").write_text("not an image, not counted")
    code = main(["predict", str(image_export), str(photos), "-q"])
    out, err = capsys.readouterr()
    assert code == 0
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["rows"] == 3 and summary["skipped"] == 1 and summary["backend"] == "onnx"
    assert f"skipped: {photos / 'sub' / 'broken.jpg'}: " in err
    rows = read_tsv(tmp_path / "new photos.predictions.tsv")  # beside the folder, not in it
    assert [Path(r["path"]).name for r in rows] == ["a-red.png", "b-blue.jpg", "c-red.webp"]
    assert list(rows[0]) == ["path", "label", "score", "p_blue", "p_red"]
    torch = Predictor(image_export, backend="torch").predict([photos / "a-red.png"])[0]
    assert torch["label"] == rows[0]["label"] and torch["score"] == pytest.approx(float(rows[0]["score"]), abs=1e-4)
    int8 = Predictor(image_export, int8=True)
    assert int8.model_file == "model.int8.onnx" and int8.predict([photos / "a-red.png"])[0]["label"] in ("red", "blue")


def test_streams_in_bounded_chunks_and_memory_stays_flat(text_export, tmp_path, monkeypatch):
    """A generated file of 20,000 rows goes through in chunks of at most CHUNK_ROWS rows: the model never
    sees more at once, and the reader is a generator (it is ahead of the writer by at most one chunk)."""
    src = tmp_path / "big.tsv"
    with open(src, "w", encoding="utf-8") as f:
        f.write("text\n")
        for i in range(20_000):
            f.write(f"good film number {i}\n" if i % 2 else f"awful plot {i}\n")
    p = Predictor(text_export)
    sizes = []
    real = p.text_logits

    def counted(texts, pairs=None, batch_size=32):
        sizes.append(len(texts))
        return real(texts, pairs, batch_size)

    monkeypatch.setattr(p, "text_logits", counted)
    monkeypatch.setattr(batch_module, "CHUNK_ROWS", 1000)
    summary = predict_file(p, src, batch_size=64, chunk_rows=1000)
    assert summary.rows == 20_000 and max(sizes) == 1000 and len(sizes) == 20
    with open(summary.output, encoding="utf-8") as f:
        assert sum(1 for _ in f) == 20_001


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_file(text_export, tmp_path):
    """Peak RSS of `workbench predict` on 20,000 and 100,000 rows: the larger file costs (almost) nothing more."""
    peaks = {}
    for n in (20_000, 100_000):
        src = tmp_path / f"rows{n}.tsv"
        with open(src, "w", encoding="utf-8") as f:
            f.write("text\n")
            for i in range(n):
                f.write(f"good great film {i} and the plot\n")
        code = ("import resource, sys; from workbench.cli import main; rc = main(sys.argv[1:]); "
                "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
        p = subprocess.run([sys.executable, "-c", code, "predict", str(text_export), str(src), "-q"],
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
        assert p.returncode == 0, p.stderr
        peaks[n] = int(p.stdout.strip().splitlines()[-1]) / 1024  # MiB
    assert peaks[100_000] < peaks[20_000] + 40, peaks


def test_cancel_leaves_no_output(text_export, tmp_path):
    from workbench.core.cancel import CancelToken
    from workbench.core.errors import Cancelled
    from workbench.core.events import Callbacks, Progress

    src = tmp_path / "rows.tsv"
    src.write_text("text\n" + "".join(f"good film {i}\n" for i in range(5000)), encoding="utf-8")
    token = CancelToken()

    class CancelAfterFirstChunk(Callbacks):
        def on_event(self, event):
            if isinstance(event, Progress) and event.done:
                token.cancel()

    with pytest.raises(Cancelled):
        predict_file(Predictor(text_export), src, callbacks=CancelAfterFirstChunk(), cancel=token, chunk_rows=500)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.tsv"]  # no output, no temporary file


def test_all_rows_bad_is_an_error_with_no_output(text_export, tmp_path):
    src = tmp_path / "bad.tsv"
    src.write_text("a\tb\tc\n1\n2\n", encoding="utf-8")
    with pytest.raises(InputError, match="no row could be predicted: all 2 were bad"):
        predict_file(Predictor(text_export), src, text_column="c")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tsv"]
