"""Reading generation data: every format reads to the same conversations, problems name their line,
skipping bad records, findings (duplicates, train/test overlap, blank answers) and sniffing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from workbench.core.errors import InputError
from workbench.core.tasks.generation.conversations import (
    Example,
    conversation_findings,
    read_conversations,
    sniff_conversations,
)

SYSTEM = "You are terse."
Q1, A1 = "What is the capital of France?", "Paris."
INSTRUCTION, INPUT, A2 = "Translate to French:", "good morning", "Bonjour."
# The same two examples in every format: a system prompt and a question; an instruction with an input.
EXPECTED = [
    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": Q1}, {"role": "assistant", "content": A1}],
    [{"role": "user", "content": f"{INSTRUCTION}\n\n{INPUT}"}, {"role": "assistant", "content": A2}],
]
RECORDS = {
    "messages": [{"messages": conv} for conv in EXPECTED],
    "prompt-completion": [{"system": SYSTEM, "prompt": Q1, "completion": A1},
                          {"prompt": f"{INSTRUCTION}\n\n{INPUT}", "completion": A2}],
    # Alpaca without an input (an empty one) and with one.
    "alpaca": [{"system": SYSTEM, "instruction": Q1, "input": "", "output": A1},
               {"instruction": INSTRUCTION, "input": INPUT, "output": A2}],
    "sharegpt": [{"conversations": [{"from": "system", "value": SYSTEM}, {"from": "human", "value": Q1},
                                    {"from": "gpt", "value": A1}]},
                 {"conversations": [{"from": "human", "value": f"{INSTRUCTION}\n\n{INPUT}"},
                                    {"from": "gpt", "value": A2}]}],
}


def _jsonl(path: Path, records, blank_lines: bool = False) -> Path:
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    path.write_text(("\n\n" if blank_lines else "\n").join(lines) + "\n", encoding="utf-8")
    return path


def _json(path: Path, value) -> Path:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def _table(path: Path, header, rows, delimiter="\t") -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter)
        if header:
            writer.writerow(header)
        writer.writerows(rows)
    return path


def _conversations(result) -> list:
    return [e.messages for e in result.examples]


# ---------------------------------------------------------------------------- formats


@pytest.mark.parametrize("fmt", list(RECORDS))
def test_each_format_reads_to_the_same_conversations(tmp_path, fmt):
    lines = read_conversations(_jsonl(tmp_path / "d.jsonl", RECORDS[fmt]))
    array = read_conversations(_json(tmp_path / "d.json", RECORDS[fmt]))
    wrapped = read_conversations(_json(tmp_path / "o.json", {"version": 2, "data": RECORDS[fmt]}))
    for result in (lines, array, wrapped):
        assert _conversations(result) == EXPECTED
        assert result.format == fmt
        assert not result.warnings and not result.skipped
    assert lines.format_title.endswith("(JSON Lines)")
    assert array.format_title.endswith("(JSON array)")
    assert wrapped.format_title.endswith("(JSON object, list 'data')")
    assert [e.line for e in lines.examples] == [1, 2]
    # Pretty-printed JSON: each item starts on its own line, after "[" (and after '{ "version": 2, "data": [').
    text = (tmp_path / "d.json").read_text().split("\n")
    assert [text[e.line - 1].strip() for e in array.examples] == ["{", "{"]
    assert array.examples[0].line == 2
    assert wrapped.examples[0].line == 4


def test_titles_name_the_format(tmp_path):
    assert read_conversations(_jsonl(tmp_path / "a.jsonl", RECORDS["messages"])).format_title == \
        "OpenAI chat messages (JSON Lines)"
    assert "ShareGPT" in read_conversations(_jsonl(tmp_path / "b.jsonl", RECORDS["sharegpt"])).format_title
    assert "Alpaca" in read_conversations(_jsonl(tmp_path / "c.jsonl", RECORDS["alpaca"])).format_title


def test_tables_read_to_the_same_conversations(tmp_path):
    alpaca = _table(tmp_path / "a.tsv", ["system", "instruction", "input", "output"],
                    [[SYSTEM, Q1, "", A1], ["", INSTRUCTION, INPUT, A2]])
    result = read_conversations(alpaca)
    assert _conversations(result) == EXPECTED
    assert result.format == "table"
    assert "'instruction' + 'input'" in result.format_title and "'output'" in result.format_title
    assert [e.line for e in result.examples] == [2, 3]
    # prompt/completion columns (names the table reader alone would not take for a header), CSV.
    rows = [["x", "Where?", "Here."], ["y", "Who?", "Me."]]
    named = read_conversations(_table(tmp_path / "b.csv", ["id", "prompt", "completion"], rows, ","))
    assert _conversations(named) == [[{"role": "user", "content": q}, {"role": "assistant", "content": a}]
                                     for _, q, a in rows]
    assert named.format_title.startswith("CSV table") and [e.line for e in named.examples] == [2, 3]


def test_table_columns_by_name_position_and_override(tmp_path):
    path = _table(tmp_path / "qa.tsv", ["note", "question", "answer"],
                  [["n1", "Why?", "Because."], ["n2", "How?", "Carefully."]])
    by_name = read_conversations(path)
    assert [m["content"] for m in by_name.examples[0].messages] == ["Why?", "Because."]
    over = read_conversations(path, input_column="note", target_column="question")
    assert [m["content"] for m in over.examples[1].messages] == ["n2", "How?"]
    by_position = read_conversations(path, input_column="2", target_column=0)
    assert [m["content"] for m in by_position.examples[0].messages] == ["Because.", "n1"]
    system = read_conversations(path, input_column="question", target_column="answer", system_column="note")
    assert system.examples[0].messages[0] == {"role": "system", "content": "n1"}
    assert "system column 'note'" in system.format_title
    with pytest.raises(InputError, match="no input column named 'nope'.*0: note"):
        read_conversations(path, input_column="nope")
    with pytest.raises(InputError, match="same column"):
        read_conversations(path, input_column="answer", target_column="ANSWER")
    swapped = read_conversations(path, input_column="answer")  # the target: the first column left
    assert [m["content"] for m in swapped.examples[0].messages] == ["Because.", "n1"]
    # No known names: the first two columns.
    plain = read_conversations(_table(tmp_path / "p.tsv", None, [["hello there", "hi"], ["bye now", "ciao"]]))
    assert [m["content"] for m in plain.examples[1].messages] == ["bye now", "ciao"]
    assert plain.examples[1].line == 2


def test_multi_turn_messages_and_sharegpt_agree(tmp_path):
    turns = [("system", SYSTEM), ("user", "Hi"), ("assistant", "Hello."), ("user", "Bye"), ("assistant", "Bye.")]
    names = {"system": "system", "user": "human", "assistant": "gpt"}
    a = read_conversations(_jsonl(tmp_path / "m.jsonl", [{"messages": [{"role": r, "content": c} for r, c in turns]}]))
    b = read_conversations(_jsonl(tmp_path / "s.jsonl",
                                  [{"conversations": [{"from": names[r], "value": c} for r, c in turns]}]))
    assert _conversations(a) == _conversations(b) == [[{"role": r, "content": c} for r, c in turns]]


def test_json_lines_in_a_json_file_and_blank_lines(tmp_path):
    result = read_conversations(_jsonl(tmp_path / "d.json", RECORDS["prompt-completion"], blank_lines=True))
    assert result.format_title == "prompt/completion pairs (JSON Lines)"
    assert [e.line for e in result.examples] == [1, 3]
    single = read_conversations(_json(tmp_path / "one.json", RECORDS["messages"][0]))
    assert _conversations(single) == EXPECTED[:1]
    # Other names: JSON records by their content; a table whose first cell starts with a bracket stays a table.
    assert _conversations(read_conversations(_jsonl(tmp_path / "d.txt", RECORDS["messages"]))) == EXPECTED
    inst = read_conversations(_table(tmp_path / "i.txt", None, [["[INST] hi", "hello"], ["[INST] bye", "ciao"]]))
    assert inst.format == "table" and inst.examples[0].messages[0]["content"] == "[INST] hi"


def test_bom_and_latin1(tmp_path):
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + _jsonl(tmp_path / "x.jsonl", RECORDS["messages"]).read_bytes())
    assert _conversations(read_conversations(bom)) == EXPECTED
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"prompt": "a", "completion": "b"}\n{"prompt": "caf\xe9", "completion": "ok"}\n')
    result = read_conversations(latin)
    assert result.examples[1].messages[0]["content"] == "café"
    assert len(result.warnings) == 1 and "line 2 is not valid UTF-8" in result.warnings[0]


# ---------------------------------------------------------------------------- problems

GOOD = {"prompt": "p", "completion": "c"}
PROBLEMS = [
    ({"tex": "x"}, "none of the chat formats.*'tex'"),
    ({"messages": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "a"}]}, "unknown role 'tool'"),
    ({"conversations": [{"from": "robot", "value": "x"}]}, "unknown role 'robot'"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "s"},
                   {"role": "assistant", "content": "a"}]}, "turn 2 is a system turn.*only come first"),
    ({"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]},
     "turn 2 is an assistant turn before any user turn"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "q2"},
                   {"role": "assistant", "content": "a"}]}, "two user turns in a row"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                   {"role": "assistant", "content": "b"}]}, "turns 2 and 3 are two assistant turns in a row"),
    ({"system": "s", "messages": [{"role": "system", "content": "t"}, {"role": "user", "content": "q"},
                                  {"role": "assistant", "content": "a"}]}, "both a 'system' field and a system turn"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]},
     "turn 2 is an empty assistant turn"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                   {"role": "user", "content": "q2"}]}, "does not end with an assistant turn"),
    ({"messages": [{"role": "user", "content": ["q"]}, {"role": "assistant", "content": "a"}]},
     "content that is a list, not a string"),
    ({"messages": []}, "empty list"),
    ({"prompt": "p", "completion": ""}, "'completion' is empty"),
    ({"prompt": "p"}, "no 'completion'"),
    ({"prompt": 3, "completion": "c"}, "'prompt' is a number, not a string"),
    ({"instruction": "i", "output": ""}, "'output' is empty"),
    ([1, 2], "is a list, not a JSON object"),
]


@pytest.mark.parametrize("record, message", PROBLEMS, ids=[m.split()[0] + str(i) for i, (_, m) in enumerate(PROBLEMS)])
def test_each_problem_names_its_line(tmp_path, record, message):
    path = _jsonl(tmp_path / "d.jsonl", [GOOD, GOOD, record, GOOD])
    with pytest.raises(InputError, match=message) as e:
        read_conversations(path)
    assert e.value.line == 3 and e.value.path == str(path)
    # In a pretty-printed JSON array, the line where the third item starts.
    array = _json(tmp_path / "d.json", [GOOD, GOOD, record, GOOD])
    with pytest.raises(InputError, match=message) as e:
        read_conversations(array)
    assert e.value.line == 10  # "[" on line 1, then 4 lines per good record
    assert array.read_text().split("\n")[9].strip().startswith(("{", "["))


def test_bad_json(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n\n{"prompt": "a", "completion": }\n')
    with pytest.raises(InputError, match="not valid JSON: Expecting value") as e:
        read_conversations(path)
    assert e.value.line == 3
    doc = tmp_path / "d.json"
    doc.write_text('[\n  {"prompt": "a", "completion": "b"},\n  {"prompt": "a" "completion": "c"}\n]\n')
    with pytest.raises(InputError, match="not valid JSON") as e:
        read_conversations(doc, skip_bad=True)  # a broken document cannot be skipped past
    assert e.value.line == 3


def test_empty_and_unusable_files(tmp_path):
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n  \n")
    with pytest.raises(InputError, match="is empty"):
        read_conversations(empty)
    with pytest.raises(InputError, match="holds no examples"):
        read_conversations(_json(tmp_path / "n.json", []))
    with pytest.raises(InputError, match="several lists"):
        read_conversations(_json(tmp_path / "two.json", {"a": [GOOD], "b": [GOOD]}))
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InputError, match="too deeply"):
        read_conversations(deep)
    with pytest.raises(InputError, match="file not found"):
        read_conversations(tmp_path / "missing.jsonl")
    table = _table(tmp_path / "t.tsv", ["prompt", "completion"], [["q", "a"], ["q2", ""]])
    with pytest.raises(InputError, match="target \\(column 'completion'\\) is empty") as e:
        read_conversations(table)
    assert e.value.line == 3


def test_skip_bad_keeps_the_good_ones(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join([json.dumps(GOOD), "{oops", json.dumps({"prompt": "p", "completion": ""}),
                               json.dumps({"prompt": "q", "completion": "d"})]) + "\n")
    result = read_conversations(path, skip_bad=True)
    assert [e.line for e in result.examples] == [1, 4]
    assert [line for line, _ in result.skipped] == [2, 3]
    assert "not valid JSON" in result.skipped[0][1] and "'completion' is empty" in result.skipped[1][1]
    assert len(result.warnings) == 1 and "skipped 2 bad examples (lines 2, 3)" in result.warnings[0]
    all_bad = _jsonl(tmp_path / "bad.jsonl", [{"x": 1}, {"y": 2}])
    with pytest.raises(InputError, match="none of the chat formats.*; none of its 2 records can be used") as e:
        read_conversations(all_bad, skip_bad=True)
    assert e.value.line == 1
    table = _table(tmp_path / "t.tsv", ["prompt", "completion"], [["q", "a"], ["q2", ""], ["q3", "c"]])
    skipped = read_conversations(table, skip_bad=True)
    assert [e.line for e in skipped.examples] == [2, 4] and [s[0] for s in skipped.skipped] == [3]


# ---------------------------------------------------------------------------- findings


def _ex(line: int, prompt: str, answer: str, system: str | None = None) -> Example:
    messages = [{"role": "system", "content": system}] if system else []
    return Example(messages + [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}], line)


def test_findings_duplicates_overlap_and_blank_answers():
    train = [_ex(1, "a", "1"), _ex(2, "b", "2"), _ex(3, "a", "1"), _ex(4, "c", "  "), _ex(5, "a", "1"),
             _ex(6, "a", "other answer")]
    test = [_ex(1, "x", "9"), _ex(2, "b", "different"), _ex(3, "c", "3"), _ex(4, "c", "3", system="s")]
    findings = conversation_findings({"train": train, "test": test}, {"train": "train.jsonl", "test": "test.jsonl"})
    by_code = {f.code: f for f in findings}
    assert set(by_code) == {"duplicates", "train_test_overlap", "empty_answer"}
    dup = by_code["duplicates"]
    assert (dup.count, dup.lines, dup.split) == (2, [3, 5], "train")
    assert dup.message.startswith("train.jsonl: 2 conversations repeat") and "line 3 repeats line 1" in dup.message
    overlap = by_code["train_test_overlap"]
    # The prompt is every turn but the answer: test line 4 has a system turn that train's "c" has not.
    assert (overlap.count, overlap.lines, overlap.split, overlap.path) == (2, [2, 3], "test", "test.jsonl")
    assert "line 2 as its line 2" in overlap.message and "train.jsonl" in overlap.message
    blank = by_code["empty_answer"]
    assert (blank.count, blank.lines, blank.severity) == (1, [4], "warning")
    assert findings[0].severity == "warning"
    only_blank = conversation_findings({"validation": [_ex(7, "q", " ")]}, {"validation": None})
    assert [(f.code, f.severity, f.lines) for f in only_blank] == [("all_answers_empty", "error", [7])]
    assert only_blank[0].message.startswith("the validation data:")
    assert conversation_findings({"train": train[:2], "test": test[:1]}, {}) == []


# ---------------------------------------------------------------------------- sniffing


def test_sniff(tmp_path):
    assert sniff_conversations(_jsonl(tmp_path / "a.jsonl", RECORDS["messages"])) == 1.0
    assert sniff_conversations(_json(tmp_path / "b.json", RECORDS["alpaca"])) == 1.0
    assert sniff_conversations(_json(tmp_path / "c.json", {"meta": {"n": 2}, "rows": RECORDS["sharegpt"]})) == 1.0
    assert sniff_conversations(_jsonl(tmp_path / "d.ndjson", RECORDS["prompt-completion"])) == 1.0
    # A long object-with-list file: only its start is read, and that is enough.
    big = {"data": [RECORDS["prompt-completion"][0] | {"pad": "x" * 1000}] * 3000}
    assert sniff_conversations(_json(tmp_path / "big.json", big)) == 1.0
    assert sniff_conversations(_jsonl(tmp_path / "e.jsonl", [{"text": "x", "label": "y"}])) == 0.0
    assert sniff_conversations(_jsonl(tmp_path / "f.jsonl", [{"prompt": "only"}])) == 0.0
    assert sniff_conversations(_table(tmp_path / "g.tsv", ["prompt", "completion"], [["q", "a"]])) == 0.0
    (tmp_path / "h.json").write_text("not json")
    assert sniff_conversations(tmp_path / "h.json") == 0.0
    assert sniff_conversations(tmp_path / "missing.jsonl") == 0.0
    assert sniff_conversations(tmp_path) == 0.0
