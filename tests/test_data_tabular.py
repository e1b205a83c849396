"""read_table: format detection, quoting, encodings, line numbers and every refusal."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from workbench.core.cancel import CancelToken
from workbench.core.data import tabular
from workbench.core.data.tabular import read_table
from workbench.core.errors import Cancelled, InputError


def write(path: Path, text: str | bytes, encoding: str = "utf-8") -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode(encoding))
    return path


def rows(table) -> list[dict]:
    return table.dataset.to_list()


# ---------------------------------------------------------------------------- delimiters and headers


@pytest.mark.parametrize(
    ("name", "delimiter", "content"),
    [
        ("data.tsv", "\t", "text\tlabel\na fine film, truly\tpos\nawful; just awful\tneg\n"),
        ("data.csv", ",", "text,label\n\"a fine film, truly\",pos\nawful; just awful\tthing,neg\n"),
        ("data.txt", ";", "text;label\na fine film, truly;pos\nawful, just awful;neg\nmeh;neg\n"),
        ("data.txt", "|", "text|label\na fine film, truly|pos\nawful; just awful|neg\nmeh|neg\n"),
        ("data.txt", ",", "text,label\nfine,pos\nawful,neg\n"),
    ],
)
def test_sniffs_delimiter(tmp_path, name, delimiter, content):
    table = read_table(write(tmp_path / name, content))
    assert table.format.delimiter == delimiter
    assert table.columns == ["text", "label"]
    assert [r["label"] for r in rows(table)][:2] == ["pos", "neg"]
    assert table.malformed == []


def test_extension_is_only_a_prior(tmp_path):
    # Named .csv but tab separated: the commas inside the texts do not split consistently.
    content = "text\tlabel\nfine, really, fine\t1\nbad, bad\t0\nok\t1\n"
    table = read_table(write(tmp_path / "mislabelled.csv", content))
    assert table.format.delimiter == "\t"
    assert rows(table)[0]["text"] == "fine, really, fine"


def test_explicit_delimiter_and_aliases(tmp_path):
    path = write(tmp_path / "d.txt", "a;b\n1;2\n")
    assert read_table(path, delimiter=";").columns == ["a", "b"]
    assert read_table(write(tmp_path / "t.txt", "a\tb\nx\ty\n"), delimiter="tab").format.delimiter == "\t"
    with pytest.raises(InputError, match="one character"):
        read_table(path, delimiter=";;")


def test_header_detected_by_name(tmp_path):
    table = read_table(write(tmp_path / "h.tsv", "sentence\tlabel\ngood movie\t1\nbad movie\t0\n"))
    assert table.format.has_header
    assert table.columns == ["sentence", "label"]
    assert [r["__line__"] for r in rows(table)] == [2, 3]


def test_no_header_gets_positional_names(tmp_path):
    content = "".join(f"some review number {i} with words\t{i % 2}\n" for i in range(10))
    table = read_table(write(tmp_path / "n.tsv", content))
    assert not table.format.has_header
    assert table.columns == ["column_1", "column_2"]
    assert table.n_rows == 10
    assert rows(table)[0] == {"column_1": "some review number 0 with words", "column_2": "0", "__line__": 1}


def test_header_detected_by_numeric_column(tmp_path):
    table = read_table(write(tmp_path / "x.tsv", "words\tstars\ngood\t5\nbad\t1\nok\t3\n"))
    assert table.format.has_header
    assert table.columns == ["words", "stars"]


def test_header_detected_by_unseen_low_cardinality_value(tmp_path):
    texts = [f"this is quite a long review text number {i}" for i in range(12)]
    content = "review text\tverdict\n" + "".join(f"{t}\t{'pos' if i % 3 else 'neg'}\n" for i, t in enumerate(texts))
    table = read_table(write(tmp_path / "v.tsv", content))
    assert table.format.has_header
    assert table.columns == ["review text", "verdict"]


def test_string_labels_without_header_are_data(tmp_path):
    # The first label does not recur, but the first text is as long as the rest: not a header.
    texts = [f"this is quite a long review text number {i}" for i in range(12)]
    content = "".join(f"{t}\t{'rare' if i == 0 else 'common'}\n" for i, t in enumerate(texts))
    assert not read_table(write(tmp_path / "s.tsv", content)).format.has_header


def test_has_header_override(tmp_path):
    path = write(tmp_path / "o.tsv", "text\tlabel\na\tb\n")
    table = read_table(path, has_header=False)
    assert table.columns == ["column_1", "column_2"]
    assert rows(table)[0]["column_1"] == "text"


def test_duplicate_and_empty_header_names_are_made_unique(tmp_path):
    table = read_table(write(tmp_path / "d.tsv", "text\ttext\t\t__line__\na\tb\tc\td\n"), has_header=True)
    assert table.columns == ["text", "text_2", "column_3", "__line___2"]


# ---------------------------------------------------------------------------- quoting, encodings, line ends


def test_quoted_fields_with_tabs_and_newlines_keep_line_numbers(tmp_path):
    content = (
        "text\tlabel\n"
        '"has a\ttab"\tA\n'
        '"spans\nthree\nlines"\tB\n'
        '"a ""quoted"" word"\tA\n'
        "plain\tB\n"
    )
    table = read_table(write(tmp_path / "q.tsv", content))
    got = rows(table)
    assert [r["text"] for r in got] == ["has a\ttab", "spans\nthree\nlines", 'a "quoted" word', "plain"]
    assert [r["__line__"] for r in got] == [2, 3, 6, 7]
    assert any("span several lines" in w and "line 3" in w for w in table.warnings)


def test_csv_quoted_row_inside_tsv_like_agnews(tmp_path):
    content = 'Plain text here\tWorld\n" Quoted with ""inner"" quotes."\tBusiness\n'
    table = read_table(write(tmp_path / "ag.tsv", content))
    assert [r["column_1"] for r in rows(table)] == ["Plain text here", ' Quoted with "inner" quotes.']


def test_utf8_bom_is_not_part_of_first_column_name(tmp_path):
    table = read_table(write(tmp_path / "bom.csv", b"\xef\xbb\xbftext,label\ncaf\xc3\xa9,1\nb,0\n"))
    assert table.columns == ["text", "label"]
    assert table.format.encoding == "utf-8" and table.format.bom
    assert rows(table)[0]["text"] == "café"
    assert table.warnings == []


def test_crlf_line_endings(tmp_path):
    table = read_table(write(tmp_path / "w.csv", "text,label\r\nfirst,1\r\n\"multi\r\nline\",0\r\nlast,1\r\n"))
    got = rows(table)
    assert [r["label"] for r in got] == ["1", "0", "1"]
    assert [r["__line__"] for r in got] == [2, 3, 5]
    assert got[1]["text"] == "multi\r\nline"
    assert not any(v.endswith("\r") for r in got for v in (r["text"], r["label"]))


def test_latin1_fallback_warns_with_file_and_line(tmp_path):
    content = "text\tlabel\nplain\t1\nna\xefve caf\xe9\t0\n".encode("latin-1")
    path = write(tmp_path / "legacy.tsv", content)
    table = read_table(path)
    assert table.format.encoding == "latin-1"
    assert rows(table)[1]["text"] == "naïve café"
    assert len(table.warnings) == 1
    assert str(path) in table.warnings[0] and "line 3" in table.warnings[0] and "latin-1" in table.warnings[0]


def test_latin1_fallback_after_first_batch(tmp_path, monkeypatch):
    # The bad byte lies beyond the sniffing sample and the first written batch: the read restarts.
    monkeypatch.setattr(tabular, "BATCH_ROWS", 10)
    monkeypatch.setattr(tabular, "SAMPLE_BYTES", 64)
    body = "".join(f"row {i}\t{i % 2}\n" for i in range(50))
    path = write(tmp_path / "late.tsv", ("text\tlabel\n" + body).encode() + b"caf\xe9\t1\n")
    table = read_table(path)
    assert table.format.encoding == "latin-1"
    assert table.n_rows == 51
    assert "line 52" in table.warnings[0]
    assert len(list((table.cache_dir).glob("*.arrow"))) == 1  # the abandoned UTF-8 attempt was removed


def test_explicit_utf8_refuses_bad_bytes(tmp_path):
    path = write(tmp_path / "bad.tsv", b"text\tlabel\nok\t1\ncaf\xe9\t0\n")
    with pytest.raises(InputError) as err:
        read_table(path, encoding="utf-8")
    assert err.value.line == 3 and str(path) in str(err.value)
    assert read_table(path, encoding="latin-1").warnings == []


def test_blank_lines_are_skipped(tmp_path):
    table = read_table(write(tmp_path / "b.tsv", "text\tlabel\n\na\t1\n   \n\t\nb\t0\n\n"))
    assert [(r["text"], r["__line__"]) for r in rows(table)] == [("a", 3), ("b", 6)]
    assert table.malformed == []


def test_cells_are_not_stripped(tmp_path):
    table = read_table(write(tmp_path / "s.tsv", "text\tlabel\n  padded  \t 1 \n"))
    assert rows(table)[0] == {"text": "  padded  ", "label": " 1 ", "__line__": 2}


# ---------------------------------------------------------------------------- ragged rows


def test_ragged_rows_are_reported_not_loaded(tmp_path):
    content = "text\tlabel\ngood\t1\ntoo\tmany\tfields\nlonely\nbad\t0\n"
    table = read_table(write(tmp_path / "r.tsv", content))
    assert [r["text"] for r in rows(table)] == ["good", "bad"]
    assert [(m.line, m.problem) for m in table.malformed] == [
        (3, "expected 2 fields, found 3"),
        (4, "expected 2 fields, found 1"),
    ]


def test_all_rows_malformed_is_an_error(tmp_path):
    path = write(tmp_path / "m.tsv", "text\tlabel\na\tb\tc\nd\te\tf\n")
    with pytest.raises(InputError) as err:
        read_table(path)
    assert err.value.line == 2
    assert str(path) in str(err.value) and "expected 2 fields, found 3" in str(err.value)


# ---------------------------------------------------------------------------- refusals


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found") as err:
        read_table(tmp_path / "nope.tsv")
    assert str(tmp_path / "nope.tsv") in str(err.value)


def test_directory(tmp_path):
    with pytest.raises(InputError, match="folder") as err:
        read_table(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_empty_file(tmp_path):
    path = write(tmp_path / "e.tsv", b"")
    with pytest.raises(InputError, match="is empty") as err:
        read_table(path)
    assert str(path) in str(err.value)


def test_only_blank_lines(tmp_path):
    path = write(tmp_path / "blank.tsv", "\n\n  \n")
    with pytest.raises(InputError, match="blank") as err:
        read_table(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"text\tlabel\nabc\x00def\t1\n", "binary"),
        (b"PK\x03\x04" + b"x" * 100, "ZIP"),
        (b"%PDF-1.7\n" + b"x" * 100, "PDF"),
        (b"\x89PNG\r\n\x1a\n" + b"x" * 100, "PNG"),
        (b"\xff\xfet\x00e\x00x\x00t\x00", "UTF-16"),
    ],
)
def test_binary_files(tmp_path, content, match):
    path = write(tmp_path / "data.tsv", content)
    with pytest.raises(InputError, match=match) as err:
        read_table(path)
    assert str(path) in str(err.value)


def test_binary_nul_names_its_line(tmp_path):
    with pytest.raises(InputError) as err:
        read_table(write(tmp_path / "nul.tsv", b"a\tb\nc\td\ne\x00f\tg\n"))
    assert err.value.line == 3


def test_header_only(tmp_path):
    path = write(tmp_path / "h.tsv", "text\tlabel\n")
    with pytest.raises(InputError, match="has a header but no data rows") as err:
        read_table(path)
    assert err.value.line == 1 and str(path) in str(err.value)


def test_unterminated_quote_names_its_line(tmp_path):
    content = "text\tlabel\ngood\t1\n\"never closed\t0\nmore\t1\nlast\t0\n"
    path = write(tmp_path / "u.tsv", content)
    with pytest.raises(InputError, match="never closed") as err:
        read_table(path)
    assert err.value.line == 3
    assert f"{path}, line 3" in str(err.value)


def test_unterminated_quote_past_field_limit(tmp_path):
    body = "".join(f"row {i}\t1\n" for i in range(30_000))  # > csv.field_size_limit() characters
    path = write(tmp_path / "long.tsv", "text\tlabel\nok\t0\n\"oops\t1\n" + body)
    with pytest.raises(InputError, match="never closed") as err:
        read_table(path)
    assert err.value.line == 3


def test_closed_multiline_last_record_is_fine(tmp_path):
    table = read_table(write(tmp_path / "ok.tsv", 'text\tlabel\na\t1\n"two\nlines"\t0'))
    assert rows(table)[-1]["text"] == "two\nlines"


# ---------------------------------------------------------------------------- streaming, progress, cancel


def test_batches_progress_and_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(tabular, "BATCH_ROWS", 100)
    path = write(tmp_path / "p.tsv", "text\tlabel\n" + "".join(f"text {i}\t{i % 3}\n" for i in range(1050)))
    calls = []
    table = read_table(path, cache_dir=tmp_path / "cache", progress=lambda done, total: calls.append((done, total)))
    assert table.n_rows == 1050
    assert len(calls) == 11  # one per full batch, one at the end
    assert calls[-1] == (path.stat().st_size, path.stat().st_size)
    assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:]))
    arrow_files = list((tmp_path / "cache").glob("*.arrow"))
    assert len(arrow_files) == 1
    assert table.dataset.cache_files[0]["filename"] == str(arrow_files[0])
    assert table.dataset.data.table.column("text").num_chunks == 11
    assert rows(table)[-1] == {"text": "text 1049", "label": "2", "__line__": 1051}


def test_cancel_before_start(tmp_path):
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        read_table(write(tmp_path / "c.tsv", "text\tlabel\na\t1\n"), cancel=token)


def test_cancel_during_read_removes_partial_file(tmp_path, monkeypatch):
    monkeypatch.setattr(tabular, "BATCH_ROWS", 10)
    path = write(tmp_path / "c.tsv", "text\tlabel\n" + "".join(f"t{i}\t1\n" for i in range(100)))
    token = CancelToken()

    def progress(done, total):
        token.cancel()  # as if the user pressed Stop while the first batch was written

    with pytest.raises(Cancelled):
        read_table(path, cache_dir=tmp_path / "cache", progress=progress, cancel=token)
    assert list((tmp_path / "cache").glob("*.arrow")) == []


def test_concurrent_reads_do_not_share_files(tmp_path):
    path = write(tmp_path / "c.tsv", "text\tlabel\n" + "".join(f"t{i}\t1\n" for i in range(200)))
    results = []
    threads = [threading.Thread(target=lambda: results.append(read_table(path, cache_dir=tmp_path / "c")))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [t.n_rows for t in results] == [200, 200, 200]
    assert len(list((tmp_path / "c").glob("*.arrow"))) == 3


def test_unterminated_quote_on_the_last_line(tmp_path):
    with pytest.raises(InputError, match="never closed") as err:
        read_table(write(tmp_path / "last.tsv", 'text\tlabel\nfoo\t1\n"unclosed\t0\n'))
    assert err.value.line == 3
