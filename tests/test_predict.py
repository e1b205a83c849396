"""`workbench predict`: files and folders through an export, streaming, bad rows reported and skipped."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from image_samples import coloured

from workbench.cli.main import main
from workbench.core.errors import InputError
from workbench.core.predict import batch as batch_module
from workbench.core.predict.batch import default_output, predict_file
from workbench.core.predict.predictor import Predictor

pytestmark = pytest.mark.precision  # run again with WORKBENCH_CPU_BF16=0 and =1 (.ci/run)

ROOT = Path(__file__).resolve().parents[1]


def read_tsv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_text_file_predictions_with_a_bad_row_reported_and_skipped(text_export, tmp_path, capsys):
    src = tmp_path / "new reviews.tsv"
    filler = b"".join(b"%d\tthe movie was fine and the story was fine as well\n" % i for i in range(8000))
    # A byte-order mark says the file is UTF-8, so a row whose bytes are not is named and skipped (without
    # it the file is read as latin-1, as train reads it: test_latin1_file_is_read_as_train_reads_it_and_said_once).
    src.write_bytes(b"\xef\xbb\xbfid\ttext\n1\tgood great wonderful film\n2\n3\tawful boring dismal plot\n"
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
    torch = Predictor(text_export, backend="torch", precision="fp32").predict([rows[0]["text"], rows[1]["text"]])
    assert [a["label"] for a in onnx] == [rows[0]["label"], rows[1]["label"]] == [a["label"] for a in torch]
    assert [a["score"] for a in onnx] == pytest.approx([a["score"] for a in torch], abs=1e-4)


def test_never_overwrites_without_permission_and_never_the_input(text_export, tmp_path, capsys):
    src = tmp_path / "in.csv"
    src.write_text("text\ngood film\n", encoding="utf-8")
    target = default_output(src)
    target.write_text("mine\n")
    assert main(["predict", str(text_export), str(src), "-q"]) == 2
    assert "exists already; pass --overwrite" in capsys.readouterr().err and target.read_text() == "mine\n"
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
    torch = Predictor(regression_export, backend="torch", precision="fp32").predict(["good great film"])[0]["score"]
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
    torch = Predictor(image_export, backend="torch", precision="fp32").predict([photos / "a-red.png"])[0]
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
        code = ("import resource, sys; from workbench.cli.main import main; rc = main(sys.argv[1:]); "
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


# ---------------------------------------------------------------------------- bad input: exit 2, never a traceback


def predict_cli(capsys, *args) -> tuple[int, str, str]:
    code = main(["predict", *map(str, args), "-q"])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def summary_of(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def export_copy(export: Path, tmp_path: Path) -> Path:
    """A copy of a session-wide export that a test may damage."""
    return Path(shutil.copytree(export, tmp_path / "model"))


def test_a_missing_input_is_named(text_export, tmp_path, capsys):
    code, _, err = predict_cli(capsys, text_export, tmp_path / "nope.tsv")
    assert code == 2 and f"{tmp_path / 'nope.tsv'}: file not found" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written
    src = tmp_path / "in.tsv"
    src.write_text("text\ngood film\n", encoding="utf-8")
    code, _, err = predict_cli(capsys, tmp_path / "no-model", src)
    assert code == 2 and "no-model: model folder not found" in err
    code, _, err = predict_cli(capsys, src, src, "-o", tmp_path / "out.tsv")
    assert code == 2 and "in.tsv: is a file, not a model folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tsv"]


@pytest.mark.parametrize("damage", ["config_not_json", "workbench_json_damaged", "workbench_json_a_list",
                                    "junk_onnx", "junk_int8", "junk_safetensors", "no_tokenizer", "junk_tokenizer",
                                    "id2label_junk"])
def test_a_damaged_export_is_exit_2_naming_the_file(damage, text_export, tmp_path, capsys):
    model = export_copy(text_export, tmp_path)
    src = tmp_path / "in.tsv"
    src.write_text("text\ngood film\n", encoding="utf-8")
    extra: list[str] = []
    if damage == "config_not_json":
        (model / "config.json").write_text('{"architectures": ["BertForSequenceClassification"],', encoding="utf-8")
        expect = ["config.json", "is damaged: not valid JSON"]
    elif damage == "workbench_json_damaged":
        (model / "workbench.json").write_bytes(b"\x00\x01 not json")
        expect = ["workbench.json", "is damaged"]
    elif damage == "workbench_json_a_list":
        (model / "workbench.json").write_text("[1, 2]", encoding="utf-8")
        expect = ["workbench.json", "is damaged", "not an object"]
    elif damage == "junk_onnx":
        (model / "model.onnx").write_bytes(b"this is not an onnx graph" * 10)
        expect = ["model.onnx", "cannot be loaded by ONNX Runtime", "--backend torch"]
    elif damage == "junk_int8":
        (model / "model.int8.onnx").write_bytes(b"")
        extra, expect = ["--int8"], ["model.int8.onnx", "cannot be loaded by ONNX Runtime"]
    elif damage == "junk_safetensors":
        (model / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken")
        extra, expect = ["--backend", "torch"], [str(model), "PyTorch model cannot be loaded"]
    elif damage == "no_tokenizer":
        for name in ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer_config.json", "special_tokens_map.json"):
            (model / name).unlink(missing_ok=True)
        expect = [str(model), "has no tokenizer files"]
    elif damage == "junk_tokenizer":
        (model / "tokenizer.json").write_text("{ not json", encoding="utf-8")
        (model / "vocab.txt").unlink(missing_ok=True)
        expect = [str(model), "tokenizer cannot be loaded"]
    else:
        config = json.loads((model / "config.json").read_text())
        config["id2label"] = {"zero": "neg", "one": "pos"}
        (model / "config.json").write_text(json.dumps(config))
        meta = json.loads((model / "workbench.json").read_text())
        meta.pop("labels", None)
        (model / "workbench.json").write_text(json.dumps(meta))
        expect = ["config.json", "id2label"]
    code, out, err = predict_cli(capsys, model, src, *extra)
    assert code == 2 and out == "", err
    for part in expect:
        assert part in err, (part, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tsv", "model"]  # no output, no temporary file


def test_predictor_refuses_a_text_model_without_its_tokenizer(text_export, tmp_path):
    """The one check serves predict, serve and the app: they all build a Predictor."""
    model = export_copy(text_export, tmp_path)
    for name in ("tokenizer.json", "vocab.txt"):
        (model / name).unlink(missing_ok=True)
    with pytest.raises(InputError, match="has no tokenizer files"):
        Predictor(model)
    with pytest.raises(InputError, match="has no tokenizer files"):
        Predictor(model, backend="torch", precision="fp32")


def test_latin1_file_is_read_as_train_reads_it_and_said_once(text_export, tmp_path, capsys):
    src = tmp_path / "latin.tsv"
    rows = [b"text", b"good great film", b"caf\xe9 awful plot", b"na\xefve lovely story"]
    src.write_bytes(b"\n".join(rows) + b"\n")
    code, out, err = predict_cli(capsys, text_export, src)
    summary = summary_of(out)
    assert code == 0 and summary["rows"] == 3 and summary["skipped"] == 0 and summary["encoding"] == "latin-1"
    warning = f"{src}: line 3 is not valid UTF-8, so the file was read as latin-1"
    assert err.count(warning) == 1 and summary["warnings"][0].startswith(warning)
    assert [r["text"] for r in read_tsv(tmp_path / "latin.predictions.tsv")][1:] == ["café awful plot",
                                                                                     "naïve lovely story"]
    # The same with the first bad byte far past the part of the file that is sniffed: the whole file counts.
    late = tmp_path / "late.tsv"
    late.write_bytes(b"text\n" + b"good film\n" * 30_000 + b"caf\xe9 film\n")
    code, out, err = predict_cli(capsys, text_export, late)
    summary = summary_of(out)
    assert code == 0 and summary["rows"] == 30_001 and summary["encoding"] == "latin-1"
    assert "line 30002 is not valid UTF-8, so the file was read as latin-1" in err
    clean = tmp_path / "clean.tsv"
    clean.write_text("text\ncafé good film\n", encoding="utf-8")
    code, out, err = predict_cli(capsys, text_export, clean)
    assert code == 0 and summary_of(out)["encoding"] == "utf-8" and "warning: " not in err


def test_a_field_longer_than_the_csv_limit_loses_no_row(text_export, tmp_path, capsys):
    """csv.field_size_limit (131,072 characters) once ended the file at the long field: 5 of 11 rows."""
    src = tmp_path / "long.tsv"
    lines = ["id\ttext"] + [f"{i}\tgood film {i}" for i in range(1, 12)]
    lines[5] = "5\t" + "great " * 40_000  # 240,000 characters, unquoted
    lines[8] = '8\t"awful plot\n' + "dull " * 30_000 + '\nthe end"'  # quoted, over three lines
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, out, err = predict_cli(capsys, text_export, src)
    summary = summary_of(out)
    assert code == 0 and summary["rows"] == 11 and summary["skipped"] == 0, err
    old = csv.field_size_limit(1 << 24)  # only to read the predictions back here
    try:
        rows = read_tsv(tmp_path / "long.predictions.tsv")
    finally:
        csv.field_size_limit(old)
    assert [int(r["line"]) for r in rows] == [2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 14]
    assert len(rows[4]["text"]) == 240_000 and rows[7]["text"].startswith("awful plot\n")
    assert rows[8]["text"] == "good film 9" and rows[-1]["text"] == "good film 11"


def test_a_field_too_long_to_hold_is_a_named_row(text_export, tmp_path, capsys, monkeypatch):
    from workbench.core.predict import inputs

    monkeypatch.setattr(inputs, "FIELD_CAP", 150_000)
    src = tmp_path / "huge.tsv"
    src.write_text("text\ngood film\n" + "great " * 40_000 + "\nawful plot\n", encoding="utf-8")
    code, out, err = predict_cli(capsys, text_export, src)
    summary = summary_of(out)
    assert code == 0 and summary["rows"] == 2 and summary["skipped"] == 1
    assert f"{src}, line 3: holds a field of more than 150,000 characters" in err


def test_a_quote_never_closed_names_the_lines_it_swallowed(text_export, tmp_path, capsys):
    src = tmp_path / "quote.csv"
    src.write_text('text,id\ngood film,1\n"awful plot,2\nlovely story,3\ndull film,4\n', encoding="utf-8")
    code, out, err = predict_cli(capsys, text_export, src)
    summary = summary_of(out)
    assert code == 0 and summary["rows"] == 1 and summary["skipped"] == 1
    assert f"{src}, line 3: a double quote in this row is never closed" in err and "lines 3-5" in err
    # The same past csv's field size limit: the rest of the file is one field, named, not a traceback.
    big = tmp_path / "quote-big.csv"
    big.write_text('text,id\ngood film,1\n"awful plot,2\n' + "lovely story,3\n" * 20_000, encoding="utf-8")
    code, out, err = predict_cli(capsys, text_export, big)
    assert code == 0 and summary_of(out)["rows"] == 1 and "lines 3-20003" in err


def test_the_column_read_is_said(text_export, pair_export, tmp_path, capsys):
    labels = tmp_path / "labels.tsv"  # one column, a label column's name: read as the text, but said loudly
    labels.write_text("label\npos\nneg\n", encoding="utf-8")
    code, out, err = predict_cli(capsys, text_export, labels)
    summary = summary_of(out)
    assert code == 0 and summary["rows"] == 2
    assert summary["text_column"] == "label" and summary["text_column_reason"] == "the only column"
    assert "warning: " in err and "column 'label'" in err and "a name for labels" in err
    assert "text read from column 'label' (the only column)" in err
    trained = tmp_path / "two.tsv"
    trained.write_text("id\ttext\n1\tgood film\n", encoding="utf-8")
    code, out, err = predict_cli(capsys, text_export, trained)
    summary = summary_of(out)
    assert summary["text_column"] == "text" and summary["text_column_reason"] == "the column the model was trained on"
    assert "warning: " not in err
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("sentence1,sentence2\nthe movie,good great\n", encoding="utf-8")
    code, out, err = predict_cli(capsys, pair_export, pairs)
    summary = summary_of(out)
    assert (summary["text_column"], summary["text_pair_column"]) == ("sentence1", "sentence2")


def test_hostile_tables(text_export, tmp_path, capsys):
    def run(name: str, content: bytes, *args) -> tuple[int, str, str]:
        path = tmp_path / name
        path.write_bytes(content)
        return predict_cli(capsys, text_export, path, *args)

    code, _, err = run("empty.tsv", b"")
    assert code == 2 and "empty.tsv: is empty" in err
    code, _, err = run("header.tsv", b"id\ttext\n")
    assert code == 2 and "header.tsv: has a header but no rows to predict" in err
    code, _, err = run("blank.tsv", b"\n\n  \n")
    assert code == 2 and "blank.tsv: has no rows to predict" in err
    # CR LF endings, a BOM and blank lines before the header: the header is not a row, no text ends in CR
    code, out, err = run("crlf.tsv", b"\xef\xbb\xbf\r\n\r\nid\ttext\r\n1\tgood film\r\n2\tawful plot\r\n")
    rows = read_tsv(tmp_path / "crlf.predictions.tsv")
    assert code == 0 and [(r["line"], r["text"]) for r in rows] == [("4", "good film"), ("5", "awful plot")]
    # a NUL byte past the first 8 KiB: that row is named and skipped, the others predicted
    code, out, err = run("nul.tsv", b"text\n" + b"good film\n" * 1000 + b"bad \x00 row\nawful plot\n")
    assert code == 0 and summary_of(out)["rows"] == 1001 and f"{tmp_path / 'nul.tsv'}, line 1002: " in err
    assert "NUL" in err
    # a folder given as the file
    (tmp_path / "folder.tsv").mkdir()
    code, _, err = predict_cli(capsys, text_export, tmp_path / "folder.tsv")
    assert code == 2 and "folder.tsv: is a folder" in err


def test_hostile_outputs(text_export, tmp_path, capsys):
    src = tmp_path / "in.tsv"
    src.write_text("text\ngood film\n", encoding="utf-8")
    (tmp_path / "outdir").mkdir()
    code, _, err = predict_cli(capsys, text_export, src, "-o", tmp_path / "outdir")
    assert code == 2 and "outdir: is a folder" in err
    code, _, err = predict_cli(capsys, text_export, src, "-o", tmp_path / "missing" / "out.tsv")
    assert code == 2 and "does not exist" in err and "missing" in err
    code, _, err = predict_cli(capsys, text_export, src, "-o", src / "out.tsv")
    assert code == 2 and "is a file, not a folder" in err
    link = tmp_path / "link.tsv"
    link.symlink_to(src)  # the input under another name
    code, _, err = predict_cli(capsys, text_export, src, "-o", link, "--overwrite")
    assert code == 2 and "is the input itself" in err
    hard = tmp_path / "hard.tsv"
    os.link(src, hard)
    code, _, err = predict_cli(capsys, text_export, src, "-o", hard, "--overwrite")
    assert code == 2 and "is the input itself" in err
    assert src.read_text() == "text\ngood film\n"


def test_output_never_lands_inside_the_model_folder(text_export, tmp_path, capsys):
    model = export_copy(text_export, tmp_path)
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    src = tmp_path / "in.tsv"
    src.write_text("text\ngood film\n", encoding="utf-8")
    for target in (model / "config.json", model / "new.tsv"):
        code, _, err = predict_cli(capsys, model, src, "-o", target, "--overwrite")
        assert code == 2 and "is inside the model folder" in err, err
    inside = model / "sample.tsv"  # an input kept in the model folder: its default output would land there
    inside.write_text("text\ngood film\n", encoding="utf-8")
    code, _, err = predict_cli(capsys, model, inside)
    assert code == 2 and "is inside the model folder" in err
    inside.unlink()
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before


def test_hostile_tagging_inputs(tagging_export, tmp_path, capsys):
    old_mac = tmp_path / "old-mac.txt"  # lines end in a lone CR: three sentences, not one
    old_mac.write_bytes(b"John lives in Paris.\rMary works.\r\rBob sleeps.\r")
    code, out, err = predict_cli(capsys, tagging_export, old_mac)
    assert code == 0 and summary_of(out)["rows"] == 3
    rows = read_tsv(tmp_path / "old-mac.predictions.tsv")
    assert [r["line"] for r in rows] == ["1", "2", "4"] and rows[1]["tokens"] == "Mary works ."
    blank = tmp_path / "blank.txt"
    blank.write_text("\n\n   \n", encoding="utf-8")
    code, _, err = predict_cli(capsys, tagging_export, blank)
    assert code == 2 and "blank.txt: has no sentences to predict" in err


def test_hostile_image_inputs(image_export, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    code, _, err = predict_cli(capsys, image_export, photos)
    assert code == 2 and "photos: holds no images" in err
    coloured((200, 30, 30), (40, 30), seed=7).save(photos / "a-red.png")
    os.mkfifo(photos / "b-pipe.jpg")  # would block a reader forever
    (photos / "c-gone.png").symlink_to(tmp_path / "nowhere.png")
    code, out, err = predict_cli(capsys, image_export, photos)
    summary = summary_of(out)
    assert code == 0 and summary["rows"] == 1 and summary["skipped"] == 2
    assert f"{photos / 'b-pipe.jpg'}: is not a regular file" in err and f"{photos / 'c-gone.png'}: " in err
    for target in (photos, photos / "out.tsv"):
        code, _, err = predict_cli(capsys, image_export, photos, "-o", target, "--overwrite")
        assert code == 2 and ("is the input itself" in err or "is inside the input" in err), err
    assert sorted(p.name for p in photos.iterdir()) == ["a-red.png", "b-pipe.jpg", "c-gone.png"]
