"""choose_columns and build_labeled: naming columns, guessing them, and refusing free-text labels."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.core.cancel import CancelToken
from workbench.core.data import build_labeled, choose_columns, read_table
from workbench.core.errors import Cancelled, InputError


def table_from(tmp_path: Path, text: str, name: str = "data.tsv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return read_table(path)


REVIEWS = [
    "a charming and often affecting journey",
    "unflinchingly bleak and desperate",
    "allows us to hope that nolan is poised to embark on a major career",
    "the acting , costumes , music , cinematography and sound are all astounding",
    "it 's slow -- very , very slow",
    "although laced with humor and a few fanciful touches , the film is a refreshingly serious look",
]


def three_columns(tmp_path: Path, header: str | None = "id\treview\tsentiment"):
    lines = [header] if header else []
    lines += [f"{i}\t{REVIEWS[i % len(REVIEWS)]} {i}\t{'pos' if i % 2 else 'neg'}" for i in range(40)]
    return table_from(tmp_path, "\n".join(lines) + "\n")


def test_columns_by_name(tmp_path):
    table = three_columns(tmp_path)
    choice = choose_columns(table, text_column="review", label_column="sentiment")
    assert (choice.text, choice.label, choice.ambiguous) == ("review", "sentiment", False)


def test_column_names_match_case_insensitively(tmp_path):
    choice = choose_columns(three_columns(tmp_path), text_column="Review", label_column="SENTIMENT")
    assert (choice.text, choice.label) == ("review", "sentiment")


@pytest.mark.parametrize(("text", "label"), [(1, 2), ("1", "2")])
def test_columns_by_position(tmp_path, text, label):
    choice = choose_columns(three_columns(tmp_path, header=None), text_column=text, label_column=label)
    assert (choice.text, choice.label) == ("column_2", "column_3")


def test_only_one_column_named_the_other_is_guessed(tmp_path):
    table = three_columns(tmp_path)
    assert choose_columns(table, label_column="sentiment").text == "review"
    assert choose_columns(table, text_column="review").label == "sentiment"


def test_missing_column_lists_available(tmp_path):
    table = three_columns(tmp_path)
    with pytest.raises(InputError) as err:
        choose_columns(table, text_column="body")
    message = str(err.value)
    assert str(table.path) in message and "'body'" in message
    assert "id" in message and "review" in message and "sentiment" in message


def test_position_out_of_range(tmp_path):
    with pytest.raises(InputError, match="position 7"):
        choose_columns(three_columns(tmp_path), label_column=7)


def test_same_column_twice(tmp_path):
    with pytest.raises(InputError, match="different"):
        choose_columns(three_columns(tmp_path), text_column="review", label_column=1)


def test_automatic_by_name(tmp_path):
    choice = choose_columns(three_columns(tmp_path))
    assert (choice.text, choice.label, choice.ambiguous) == ("review", "sentiment", False)
    assert choice.candidates_text[0] == "review" and choice.candidates_label[0] == "sentiment"


def test_automatic_by_content_without_header(tmp_path):
    # id (all distinct, short), text (long), label (2 values): lowest cardinality is the label.
    choice = choose_columns(three_columns(tmp_path, header=None))
    assert (choice.text, choice.label, choice.ambiguous) == ("column_2", "column_3", False)
    assert choice.candidates_label[0] == "column_3"
    assert choice.candidates_text[0] == "column_2"


def test_cardinality_tie_goes_to_last_column_and_is_ambiguous(tmp_path):
    lines = [f"{REVIEWS[i % 6]} {i}\t{'a' if i % 2 else 'b'}\t{'x' if i % 2 else 'y'}" for i in range(30)]
    choice = choose_columns(table_from(tmp_path, "\n".join(lines) + "\n"))
    assert choice.label == "column_3"
    assert choice.text == "column_1"
    assert choice.ambiguous  # two equally plausible label columns: the app shows a picker


def test_primary_name_beats_secondary_name(tmp_path):
    lines = ["title\ttext\tscore\tlabel"] + [f"title {i}\t{REVIEWS[i % 6]}\t{i % 5}\t{i % 2}" for i in range(20)]
    choice = choose_columns(table_from(tmp_path, "\n".join(lines) + "\n"))
    assert (choice.text, choice.label, choice.ambiguous) == ("text", "label", False)
    assert choice.candidates_text[:2] == ["text", "title"]
    assert choice.candidates_label[:2] == ["label", "score"]


def test_two_names_of_the_same_kind_are_ambiguous(tmp_path):
    lines = ["sentence1\tsentence2\tlabel"] + [f"{REVIEWS[i % 6]}\t{REVIEWS[(i + 1) % 6]}\t{i % 2}" for i in range(20)]
    choice = choose_columns(table_from(tmp_path, "\n".join(lines) + "\n"))
    assert (choice.text, choice.label, choice.ambiguous) == ("sentence1", "label", True)
    assert choice.candidates_text == ["sentence1", "sentence2"]


def test_single_column_file_is_refused(tmp_path):
    table = table_from(tmp_path, "just one column\nof text lines\nhere\n", name="one.txt")
    with pytest.raises(InputError, match="only one column") as err:
        choose_columns(table)
    assert str(table.path) in str(err.value)


def test_build_labeled_strips_labels_and_keeps_lines(tmp_path):
    table = table_from(tmp_path, "text\tlabel\n  keep my spaces \t pos \n\"two\nlines\"\tneg\nthird\tneg\n")
    ds = build_labeled(table, choose_columns(table))
    assert ds.column_names == ["row", "text", "label"]
    assert ds.features["row"].dtype == "int64"
    assert ds.to_list() == [
        {"row": 2, "text": "  keep my spaces ", "label": "pos"},
        {"row": 3, "text": "two\nlines", "label": "neg"},
        {"row": 5, "text": "third", "label": "neg"},
    ]
    assert Path(ds.cache_files[0]["filename"]).parent == table.cache_dir


def test_build_labeled_maps_null_text_to_empty(tmp_path):
    import datasets
    import pyarrow as pa

    from workbench.core.data.columns import ColumnChoice
    from workbench.core.data.tabular import Table, TableFormat

    data = pa.table({"t": pa.array(["a", None], pa.string()), "l": pa.array(["x", "y"]),
                     "__line__": pa.array([1, 2], pa.int64())})
    table = Table(tmp_path / "mem.tsv", datasets.Dataset(data), ["t", "l"], TableFormat("\t", False, "utf-8"),
                  cache_dir=tmp_path)
    ds = build_labeled(table, ColumnChoice("t", "l", False, ["t"], ["l"]))
    assert ds["text"][:] == ["a", ""]


def test_free_text_label_column_is_refused(tmp_path):
    lines = ["text\tlabel"] + [f"review {i}\tthis is comment number {i}" for i in range(120)]
    table = table_from(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(InputError) as err:
        build_labeled(table, choose_columns(table))
    message = str(err.value)
    assert "free text" in message and "120 distinct" in message
    assert "another column" in message and "regression" in message
    assert str(table.path) in message


def test_many_but_repeated_labels_are_accepted(tmp_path):
    lines = ["text\tlabel"] + [f"review {i}\tclass{i % 60}" for i in range(600)]
    table = table_from(tmp_path, "\n".join(lines) + "\n")
    assert len(set(build_labeled(table, choose_columns(table))["label"][:])) == 60


def test_build_labeled_cancel(tmp_path):
    table = three_columns(tmp_path)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        build_labeled(table, choose_columns(table), cancel=token)


def test_word_level_name_matches(tmp_path):
    lines = ["sentence_id\treview_text\ttext_length\tgold_class"]
    lines += [f"{i}\t{REVIEWS[i % 6]}\t{len(REVIEWS[i % 6])}\t{'a' if i % 2 else 'b'}" for i in range(20)]
    choice = choose_columns(table_from(tmp_path, "\n".join(lines) + "\n"))
    assert (choice.text, choice.label) == ("review_text", "gold_class")
