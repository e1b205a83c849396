"""CoNLL and CoNLL-U readers, and which task --task auto picks for which file."""

from __future__ import annotations

import pytest
from conftest import SHARED, needs_shared, sentiment_rows, write_tsv
from text_tasks_helpers import ner_sentences, write_conll

from workbench.core.data.conll import read_tagged, sniff_tagged
from workbench.core.errors import InputError

CONLL2003 = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

"""


def rows(ds):
    return [(r["row"], r["tokens"], r["tags"], r["lines"]) for r in ds]


def test_conll2003_four_columns_docstart_skipped(tmp_path):
    p = tmp_path / "train.txt"
    p.write_text(CONLL2003)
    f = read_tagged(p, cache_dir=tmp_path / "c")
    assert f.format == "conll" and f.tag_column == "last"
    assert rows(f.dataset) == [
        (3, ["EU", "rejects", "German", "call", "."], ["B-ORG", "O", "B-MISC", "O", "O"], [3, 4, 5, 6, 7]),
        (9, ["Peter", "Blackburn"], ["B-PER", "I-PER"], [9, 10]),
    ]
    assert f.n_tokens == 7
    # A chosen column: the POS tags (position 1).
    pos = read_tagged(p, tag_column="1", cache_dir=tmp_path / "c")
    assert pos.dataset[0]["tags"] == ["NNP", "VBZ", "JJ", "NN", "."]


def test_crlf_tabs_trailing_spaces_bom_and_no_final_blank_line(tmp_path):
    p = tmp_path / "x.conll"
    p.write_bytes(b"\xef\xbb\xbfNew York\tB-LOC  \r\nis\tO\r\n\r\n\r\n\r\nok\tO \r\nfine\tO")
    f = read_tagged(p, cache_dir=tmp_path / "c")
    assert [r["tokens"] for r in f.dataset] == [["New York", "is"], ["ok", "fine"]]  # a tab keeps spaces in a token
    assert [r["tags"] for r in f.dataset] == [["B-LOC", "O"], ["O", "O"]]
    assert f.dataset[1]["lines"] == [6, 7]


def test_bad_line_names_file_and_line(tmp_path):
    p = tmp_path / "bad.conll"
    p.write_text("a O\nb O\n\nlonely\nc O\n")
    with pytest.raises(InputError) as e:
        read_tagged(p, cache_dir=tmp_path / "c")
    assert e.value.line == 4 and "bad.conll" in str(e.value) and "line 4" in str(e.value)
    assert "token and a tag" in str(e.value)
    # --skip-bad-rows: the sentence holding the bad line is left out and counted.
    f = read_tagged(p, skip_bad=True, cache_dir=tmp_path / "c")
    assert [r["tokens"] for r in f.dataset] == [["a", "b"]]
    assert f.dropped_sentences == 1 and f.malformed[0].line == 4 and "left out" in f.warnings[0]


def test_missing_tag_column_and_empty_file(tmp_path):
    p = tmp_path / "two.conll"
    p.write_text("a O\n\nb O\n")
    with pytest.raises(InputError, match="line 1.*no tag column at position 3"):
        read_tagged(p, tag_column=3, cache_dir=tmp_path / "c")
    with pytest.raises(InputError, match="0 is the token"):
        read_tagged(p, tag_column=0, cache_dir=tmp_path / "c")
    blank = tmp_path / "blank.conll"
    blank.write_text("\n\n-DOCSTART- O\n\n")
    with pytest.raises(InputError, match="no sentences"):
        read_tagged(blank, cache_dir=tmp_path / "c")


CONLLU = """# newdoc id = d1
# sent_id = 1
# text = I don't know.
1\tI\tI\tPRON\tPRP\t_\t3\tnsubj\t_\t_
2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_
2\tdo\tdo\tAUX\tVBP\t_\t4\taux\t_\t_
3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t_\t_
4\tknow\tknow\tVERB\tVB\t_\t0\troot\t_\t_
4.1\tgone\tgo\tVERB\tVBN\t_\t_\t_\t4:conj\t_
5\t.\t.\tPUNCT\t.\t_\t4\tpunct\t_\tSpaceAfter=No

# sent_id = 2
1\tYes\tyes\tINTJ\tUH\t_\t0\troot\t_\t_
"""


def test_conllu_ranges_empty_nodes_comments_upos_xpos(tmp_path):
    p = tmp_path / "ud.conllu"
    p.write_text(CONLLU)
    f = read_tagged(p, cache_dir=tmp_path / "c")
    assert f.format == "conllu" and f.tag_column == "upos"
    # The range line 2-3 ("don't") is skipped for its words do + n't; the empty node 4.1 has no token.
    assert rows(f.dataset) == [
        (4, ["I", "do", "n't", "know", "."], ["PRON", "AUX", "PART", "VERB", "PUNCT"], [4, 6, 7, 8, 10]),
        (13, ["Yes"], ["INTJ"], [13]),
    ]
    x = read_tagged(p, tag_column="xpos", cache_dir=tmp_path / "c")
    assert x.dataset[0]["tags"] == ["PRP", "VBP", "RB", "VB", "."]
    with pytest.raises(InputError, match="upos or xpos"):
        read_tagged(p, tag_column="deprel", cache_dir=tmp_path / "c")


def test_conllu_errors_name_the_line(tmp_path):
    p = tmp_path / "bad.conllu"
    p.write_text("# c\n1\tI\tI\tPRON\tPRP\t_\t0\troot\t_\t_\n2\tbroken\tline\n")
    with pytest.raises(InputError) as e:
        read_tagged(p, cache_dir=tmp_path / "c")
    assert e.value.line == 3 and "10 tab-separated" in str(e.value)
    p.write_text("x\tI\tI\tPRON\tPRP\t_\t0\troot\t_\t_\n")
    with pytest.raises(InputError, match="line 1.*ID"):
        read_tagged(p, format="conllu", cache_dir=tmp_path / "c")
    p.write_text("1\tI\tI\tPRON\t_\t_\t0\troot\t_\t_\n")
    with pytest.raises(InputError, match="line 1.*no XPOS"):
        read_tagged(p, tag_column="xpos", cache_dir=tmp_path / "c")


def test_latin1_file_is_read_with_a_warning(tmp_path):
    p = tmp_path / "latin.conll"
    p.write_bytes("Zürich B-LOC\nist O\n".encode("latin-1"))
    f = read_tagged(p, cache_dir=tmp_path / "c")
    assert f.dataset[0]["tokens"] == ["Zürich", "ist"]
    assert "latin-1" in f.warnings[0] and "line 1" in f.warnings[0]


def test_sniff_and_auto_task(tmp_path):
    from workbench.core.tasks import detect_task

    conll = write_conll(tmp_path / "ner.txt", ner_sentences(20), docstart=True)
    conllu = tmp_path / "ud.conllu"
    conllu.write_text(CONLLU)
    tsv = write_tsv(tmp_path / "reviews.tsv", sentiment_rows(50))
    headerless = write_tsv(tmp_path / "plain.txt", sentiment_rows(50), header=None)
    assert sniff_tagged(conll) == 0.9 and sniff_tagged(conllu) == 0.95
    assert sniff_tagged(tsv) == 0.0 and sniff_tagged(headerless) == 0.0
    assert detect_task(conll).name == "token-classification"
    assert detect_task(conllu).name == "token-classification"
    assert detect_task(tsv).name == "text-classification"
    assert detect_task(headerless).name == "text-classification"
    binary = tmp_path / "b.txt"
    binary.write_bytes(bytes(range(256)) * 10)
    assert sniff_tagged(binary) == 0.0


@needs_shared("conll2003", "test.txt")
def test_real_conll2003_and_ud_ewt(tmp_path):
    f = read_tagged(SHARED / "conll2003" / "test.txt", cache_dir=tmp_path)
    assert (f.n_sentences, f.n_tokens) == (3453, 46435)  # the published CoNLL-2003 test set size
    u = read_tagged(SHARED / "ud-english-ewt" / "en_ewt-ud-test.conllu", cache_dir=tmp_path)
    assert u.n_sentences == 2077
    tags = {t for s in u.dataset["tags"] for t in s}
    assert tags <= {"ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN",
                    "PUNCT", "SCONJ", "SYM", "VERB", "X"}
