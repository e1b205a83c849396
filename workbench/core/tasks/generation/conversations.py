"""Reading generation data: conversations from JSON Lines, JSON and delimited tables.

Every format becomes the same thing, a list of OpenAI-style messages ``{"role", "content"}`` (roles
system, user, assistant) that ends with the answer the model learns to give:

- ``messages`` (OpenAI chat): the turns as they are;
- ``prompt``/``completion``: one user turn and its answer;
- Alpaca ``instruction``/``input``/``output``: the user turn is the instruction, followed by a blank
  line and the input when there is one;
- ShareGPT ``conversations`` (``from``/``value``): human -> user, gpt -> assistant, ...;
- a TSV/CSV file with an input column and a target column (and optionally a system column).

A record may also carry a ``system`` field: a system prompt put before its turns. The format is
detected from the records themselves, whatever the file is called. Each example keeps the physical
line its record starts on, which every message about it names.
"""

from __future__ import annotations

import codecs
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...data.validation import MAX_LINES, SEVERITY_ORDER, SPLIT_ORDER, Finding
from ...errors import InputError

JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")
JSON_SUFFIXES = (".json", *JSON_LINES_SUFFIXES)
SNIFF_BYTES = 1 << 20  # the first records of a file, however long their texts
FORMAT_TITLES = {
    "messages": "OpenAI chat messages",
    "prompt-completion": "prompt/completion pairs",
    "alpaca": "Alpaca instructions (instruction/input/output)",
    "sharegpt": "ShareGPT conversations (from/value)",
}
OPENAI_ROLES = {"system": "system", "user": "user", "assistant": "assistant"}
SHAREGPT_ROLES = {**OPENAI_ROLES, "human": "user", "gpt": "assistant", "chatgpt": "assistant", "bot": "assistant"}
# Table columns picked by name, best first; without a match, the first two columns.
INPUT_NAMES = ("prompt", "input", "question", "instruction", "source", "text")
TARGET_NAMES = ("completion", "output", "answer", "response", "target", "label")
SYSTEM_NAMES = ("system", "system_prompt")
# The table reader does not know every column name of generation data; these in the first row
# make it a header (else "prompt<TAB>completion" would become an example).
_HEADER_WORDS = frozenset(INPUT_NAMES + TARGET_NAMES + SYSTEM_NAMES)
_WS = re.compile(r"[ \t\n\r]*")  # JSON's whitespace
_LIST_MEMBER = re.compile(r'"(?:[^"\\]|\\.)*"[ \t\n\r]*:[ \t\n\r]*\[[ \t\n\r]*(?=\{)')
_DECODER = json.JSONDecoder()
DEEP = "nests lists or objects too deeply to be read as JSON"


@dataclass
class Example:
    messages: list[dict[str, str]]
    line: int  # 1-based physical line where the item starts in its file


@dataclass
class ReadResult:
    examples: list[Example]
    format: str  # "messages" | "prompt-completion" | "alpaca" | "sharegpt" | "table"
    format_title: str  # e.g. "OpenAI chat messages (JSON Lines)", for the Data page and the log
    warnings: list[str] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line, problem) of records left out


class _Bad(Exception):
    """One record's problem; the caller adds the file and the line."""


# ---------------------------------------------------------------------------- records -> messages


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    return {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__)


def _format_of(record: dict) -> str | None:
    """The chat format a record is written in, from its keys (None: none of them)."""
    if "messages" in record:
        return "messages"
    if "conversations" in record:
        return "sharegpt"
    if "prompt" in record or "completion" in record:
        return "prompt-completion"
    if "instruction" in record or "output" in record:
        return "alpaca"
    return None


def _matches(record: Any) -> bool:
    """Whether a record has the keys of a chat format (its contents may still be wrong)."""
    if not isinstance(record, dict):
        return False
    fmt = _format_of(record)
    return (fmt == "messages" and isinstance(record["messages"], list)
            or fmt == "sharegpt" and isinstance(record["conversations"], list)
            or fmt == "prompt-completion" and "prompt" in record and "completion" in record
            or fmt == "alpaca" and "instruction" in record and "output" in record)


def _string(record: dict, key: str, *, optional: bool = False) -> str:
    if key not in record or (optional and record[key] is None):
        if optional:
            return ""
        others = ", ".join(f"'{k}'" for k in record)
        raise _Bad(f"has no '{key}' (its keys: {others})")
    value = record[key]
    if not isinstance(value, str):
        raise _Bad(f"'{key}' is {_kind(value)}, not a string")
    return value


def _turns(items: Any, key: str, roles: dict[str, str]) -> list[dict[str, str]]:
    """The turns of a ``messages`` or ``conversations`` list; each turn has role/content or from/value."""
    if not isinstance(items, list):
        raise _Bad(f"'{key}' is {_kind(items)}, not a list of turns")
    if not items:
        raise _Bad(f"'{key}' is an empty list: there is no conversation")
    accepted = ", ".join(roles)
    out = []
    for i, item in enumerate(items, 1):
        if not isinstance(item, dict):
            raise _Bad(f"turn {i} of '{key}' is {_kind(item)}, not an object with a role and a content")
        role_key, content_key = ("from", "value") if "from" in item and "role" not in item else ("role", "content")
        if role_key not in item:
            raise _Bad(f"turn {i} of '{key}' has no 'role' (or 'from'); its keys: {', '.join(map(repr, item))}")
        raw = item[role_key]
        role = roles.get(raw.strip().lower()) if isinstance(raw, str) else None
        if role is None:
            raise _Bad(f"turn {i} of '{key}' has the unknown role {raw!r}; the roles are {accepted}")
        if content_key not in item:
            raise _Bad(f"turn {i} ({raw}) of '{key}' has no '{content_key}'")
        content = item[content_key]
        if not isinstance(content, str):
            raise _Bad(f"turn {i} ({raw}) of '{key}' has content that is {_kind(content)}, not a string")
        out.append({"role": role, "content": content})
    return out


def _check_order(messages: list[dict[str, str]]) -> None:
    """System first if at all, a user turn before the first answer, turns alternating, an answer last."""
    previous = None
    asked = False  # a user turn came before
    for i, m in enumerate(messages, 1):
        role = m["role"]
        if role == "system" and i != 1:
            raise _Bad(f"turn {i} is a system turn, but a system turn may only come first")
        if role == previous and role != "system":
            raise _Bad(f"turns {i - 1} and {i} are two {role} turns in a row; join them into one, or put the "
                       f"{'assistant' if role == 'user' else 'user'}'s turn between them")
        if role == "assistant":
            if not asked:
                raise _Bad(f"turn {i} is an assistant turn before any user turn")
            if m["content"] == "":
                raise _Bad(f"turn {i} is an empty assistant turn")
        previous = role
        asked |= role == "user"
    if messages[-1]["role"] != "assistant":
        raise _Bad(f"does not end with an assistant turn (the last turn is the {messages[-1]['role']}'s), so it "
                   "has no answer to learn")


def _record_messages(record: Any) -> tuple[str, list[dict[str, str]]]:
    """(format, messages) of one record; raises _Bad naming its problem."""
    if not isinstance(record, dict):
        raise _Bad(f"is {_kind(record)}, not a JSON object")
    fmt = _format_of(record)
    if fmt is None:
        keys = ", ".join(f"'{k}'" for k in record) or "none"
        raise _Bad(f"is in none of the chat formats (its keys: {keys}); expected 'messages' (OpenAI chat), "
                   "'prompt' and 'completion', 'instruction' and 'output' (Alpaca) or 'conversations' (ShareGPT)")
    if fmt == "messages":
        messages = _turns(record["messages"], "messages", OPENAI_ROLES)
    elif fmt == "sharegpt":
        messages = _turns(record["conversations"], "conversations", SHAREGPT_ROLES)
    elif fmt == "prompt-completion":
        prompt, answer = _string(record, "prompt"), _string(record, "completion")
        if answer == "":
            raise _Bad("'completion' is empty")
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    else:
        instruction, answer = _string(record, "instruction"), _string(record, "output")
        extra = _string(record, "input", optional=True)
        if answer == "":
            raise _Bad("'output' is empty")
        messages = [{"role": "user", "content": _alpaca_prompt(instruction, extra)},
                    {"role": "assistant", "content": answer}]
    system = _string(record, "system", optional=True)
    if system:
        if messages[0]["role"] == "system":
            raise _Bad("has both a 'system' field and a system turn; keep one of them")
        messages.insert(0, {"role": "system", "content": system})
    _check_order(messages)
    return fmt, messages


def _alpaca_prompt(instruction: str, extra: str) -> str:
    """Alpaca's user turn: the instruction, then the input after a blank line when there is one."""
    return f"{instruction}\n\n{extra}" if extra.strip() else instruction


# ---------------------------------------------------------------------------- JSON files


def _decode(path: Path) -> tuple[str, list[str]]:
    """The file's text: UTF-8 (with or without BOM), else latin-1 with a warning."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot be read: {e.strerror or e}", path=path) from None
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise InputError("is saved as UTF-16 text; save it as UTF-8 instead", path=path)
    if b"\x00" in raw:
        raise InputError("contains a NUL byte on this line: it is not a text file", path=path,
                         line=raw.count(b"\n", 0, raw.index(b"\x00")) + 1)
    warnings = []
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        warnings.append(f"{path}: line {line} is not valid UTF-8, so the file was read as latin-1; check accented "
                        "characters, or save the file as UTF-8")
        text = raw.decode("latin-1")
    if not text.strip():
        raise InputError("is empty", path=path)
    return text, warnings


def _skip(text: str, pos: int) -> int:
    match = _WS.match(text, pos)
    return match.end() if match else pos


def _json_error(e: json.JSONDecodeError) -> str:
    return f"is not valid JSON: {e.msg} (column {e.colno})"


def _json_lines(text: str) -> Iterable[tuple[int, Any]]:
    """(line, record) of each non-blank line; a line that is not JSON gives a _Bad as its record."""
    for i, line in enumerate(text.split("\n"), 1):  # not splitlines(): JSON strings may hold U+2028
        if line.strip():
            try:
                yield i, json.loads(line)
            except json.JSONDecodeError as e:
                yield i, _Bad(_json_error(e))
            except RecursionError:
                yield i, _Bad(DEEP)


def _array_items(text: str, pos: int) -> tuple[list[tuple[int, Any]], int]:
    """The items of the JSON array that opens at ``text[pos]``, each with the offset it starts at, and
    the offset after the array. Errors are json's own, with the line and column in the whole text."""
    items: list[tuple[int, Any]] = []
    pos = _skip(text, pos + 1)
    if text.startswith("]", pos):
        return items, pos + 1
    while True:
        value, end = _DECODER.raw_decode(text, pos)
        items.append((pos, value))
        pos = _skip(text, end)
        if text.startswith("]", pos):
            return items, pos + 1
        if not text.startswith(",", pos):
            raise json.JSONDecodeError("Expecting ',' delimiter", text, pos)
        pos = _skip(text, pos + 1)


def _member_items(text: str, pos: int, key: str) -> list[tuple[int, Any]]:
    """The items (with offsets) of the list under ``key`` in the (valid) JSON object at ``text[pos]``."""
    found: list[tuple[int, Any]] = []
    pos = _skip(text, pos + 1)
    while not text.startswith("}", pos):
        name, pos = _DECODER.raw_decode(text, pos)
        pos = _skip(text, _skip(text, pos) + 1)  # past the colon
        if name == key and text.startswith("[", pos):
            found, pos = _array_items(text, pos)  # the last of repeated keys wins, as in json.loads
        else:
            pos = _DECODER.raw_decode(text, pos)[1]
        pos = _skip(text, pos)
        if text.startswith(",", pos):
            pos = _skip(text, pos + 1)
    return found


def _json_document(text: str, path: Path) -> tuple[list[tuple[int, Any]], str] | None:
    """(line, record) of each record of a JSON array or of an object's list of records, and the
    container's title; None when the text is JSON Lines after all (one object per line)."""
    start = _skip(text, 0)
    try:
        if text.startswith("[", start):
            items, end = _array_items(text, start)
            container = "JSON array"
        else:
            top, end = _DECODER.raw_decode(text, start)
            if not isinstance(top, dict):
                raise InputError(f"holds {_kind(top)}, not a list of records", path=path)
            if _skip(text, end) < len(text) and "\n" not in text[start:end]:
                return None  # more JSON after a one-line object: JSON Lines
            items, container = _records_of_object(text, start, top, path)
        if _skip(text, end) < len(text):
            raise json.JSONDecodeError("Extra data", text, _skip(text, end))
    except json.JSONDecodeError as e:
        raise InputError(_json_error(e) + "; a JSON document cannot be read past a syntax error, so even skipping "
                         "bad records cannot help here", path=path, line=e.lineno) from None
    except RecursionError:
        raise InputError(DEEP, path=path) from None
    lines, line, at = [], 1, 0
    for pos, value in items:  # offsets ascend: count the line breaks once
        line += text.count("\n", at, pos)
        at = pos
        lines.append((line, value))
    return lines, container


def _records_of_object(text: str, start: int, top: dict, path: Path) -> tuple[list[tuple[int, Any]], str]:
    """A top-level object is one record, or holds the records as its one list (e.g. {"data": [...]})."""
    if _format_of(top) is not None:
        return [(start, top)], "JSON object"
    lists = [k for k, v in top.items() if isinstance(v, list)]
    if len(lists) > 1:
        lists = [k for k in lists if any(isinstance(x, dict) for x in top[k])] or lists
    if len(lists) != 1:
        keys = ", ".join(f"'{k}'" for k in (lists or top)) or "none"
        what = "several lists" if lists else "no list of records"
        raise InputError(f"is a JSON object with {what} (keys: {keys}); give a JSON array of records, an object "
                         "with one list of records, or JSON Lines (one record per line)", path=path)
    return _member_items(text, start, lists[0]), f"JSON object, list '{lists[0]}'"


def _looks_like_json(text: str) -> bool:
    """Whether a file of another name starts like JSON records ('{"' or '[{'), not like a table whose
    first cell happens to start with a bracket ("[INST] ...")."""
    return re.match(r'[ \t\n\r]*(\{[ \t\n\r]*["}]|\[[ \t\n\r]*[{\]])', text) is not None


def _read_json(path: Path, skip_bad: bool) -> ReadResult:
    text, warnings = _decode(path)
    document = None
    if path.suffix.lower() not in JSON_LINES_SUFFIXES:
        document = _json_document(text, path)
    if document is None:
        records: Iterable[tuple[int, Any]] = _json_lines(text)
        container = "JSON Lines"
    else:
        records, container = document
    examples, formats, skipped = _convert(records, path, skip_bad)
    if not formats:
        _refuse_empty(path, skipped)
    main = next(iter(formats))  # the first record's format names the file's
    if len(formats) > 1:
        others = ", ".join(f"{n:,} {FORMAT_TITLES[f]}" for f, n in formats.items() if f != main)
        warnings.append(f"{path}: mixes formats: {others} among {formats[main]:,} {FORMAT_TITLES[main]}; all are "
                        "read, but check that this is meant")
    warnings += _skipped_warning(path, skipped)
    return ReadResult(examples, main, f"{FORMAT_TITLES[main]} ({container})", warnings, skipped)


def _convert(records: Iterable[tuple[int, Any]], path: Path,
             skip_bad: bool) -> tuple[list[Example], Counter[str], list[tuple[int, str]]]:
    """The examples of the records, the count of each format (first seen first) and what was skipped."""
    examples: list[Example] = []
    formats: Counter[str] = Counter()
    skipped: list[tuple[int, str]] = []
    for line, record in records:
        try:
            if isinstance(record, _Bad):
                raise record
            fmt, messages = _record_messages(record)
        except _Bad as bad:
            if not skip_bad:
                raise InputError(str(bad), path=path, line=line) from None
            skipped.append((line, str(bad)))
            continue
        formats[fmt] += 1
        examples.append(Example(messages, line))
    return examples, formats, skipped


def _refuse_empty(path: Path, skipped: list[tuple[int, str]]) -> None:
    if skipped:
        line, problem = skipped[0]
        rest = "" if len(skipped) == 1 else f"; none of its {len(skipped):,} records can be used"
        raise InputError(problem + rest, path=path, line=line)
    raise InputError("holds no examples", path=path)


def _skipped_warning(path: Path, skipped: list[tuple[int, str]]) -> list[str]:
    if not skipped:
        return []
    shown = ", ".join(str(line) for line, _ in skipped[:10]) + (" ..." if len(skipped) > 10 else "")
    line, problem = skipped[0]
    return [f"{path}: skipped {len(skipped):,} bad example{'s' if len(skipped) != 1 else ''} (lines {shown}); "
            f"line {line} {problem}"]


# ---------------------------------------------------------------------------- tables


def _norm(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().strip("\"'").lower())


def _header_hint(path: Path, has_header: bool | None) -> bool | None:
    """True when the first line names generation columns (prompt, completion, ...) the table reader
    would not take for a header; else the caller's choice (None: let the reader judge)."""
    if has_header is not None:
        return has_header
    try:
        with open(path, "rb") as f:
            first = f.readline(4096).decode("utf-8", errors="replace").lstrip("\ufeff")
    except OSError:
        return None
    cells = [_norm(c) for c in re.split(r"[\t,;|]", first.strip())]
    return True if any(c in _HEADER_WORDS for c in cells) and all(len(c) <= 40 for c in cells) else None


def _resolve_column(columns: list[str], spec: str | int, role: str, path: Path) -> str:
    """A column the user named, by name (case aside) or by 0-based position."""
    if isinstance(spec, str):
        if spec in columns:
            return spec
        folded = [c for c in columns if c.lower() == spec.strip().lower()]
        if len(folded) == 1:
            return folded[0]
        if spec.strip().isdigit():
            spec = int(spec)
    available = ", ".join(f"{i}: {c}" for i, c in enumerate(columns))
    if isinstance(spec, int) and not isinstance(spec, bool) and 0 <= spec < len(columns):
        return columns[spec]
    where = f"named {spec!r}" if isinstance(spec, str) else f"at position {spec!r} (positions count from 0)"
    raise InputError(f"has no {role} column {where}; available columns: {available}", path=path)


def _by_name(columns: list[str], names: tuple[str, ...], taken: set[str]) -> str | None:
    normed = {_norm(c): c for c in reversed(columns) if c not in taken}  # the first of equal names wins
    return next((normed[n] for n in names if n in normed), None)


def _table_columns(columns: list[str], path: Path, input_column: str | int | None,
                   target_column: str | int | None, system_column: str | int | None) -> tuple[list[str], str, str | None]:
    """(input columns, target column, system column). The inputs are one column, or Alpaca's
    instruction and input when a table has both and the user named neither."""
    given = {role: _resolve_column(columns, spec, role, path)
             for role, spec in (("input", input_column), ("target", target_column), ("system", system_column))
             if spec is not None}
    if len(set(given.values())) < len(given):
        raise InputError(f"the same column is chosen twice ({', '.join(f'{r}: {c}' for r, c in given.items())}); "
                         "choose different columns", path=path)
    taken = set(given.values())
    target = given.get("target") or _by_name(columns, TARGET_NAMES, taken)
    taken |= {target} if target else set()
    system = given.get("system") or _by_name(columns, SYSTEM_NAMES, taken)
    taken |= {system} if system else set()
    inputs = [given["input"]] if "input" in given else []
    if not inputs:
        instruction, extra = _by_name(columns, ("instruction",), taken), _by_name(columns, ("input",), taken)
        inputs = [instruction, extra] if instruction and extra else [c for c in [_by_name(columns, INPUT_NAMES, taken)]
                                                                      if c]
    rest = [c for c in columns if c not in taken and c not in inputs]
    if not inputs and rest:
        inputs = [rest.pop(0)]
    if target is None and rest:
        target = rest.pop(0)
    if not inputs or target is None:
        raise InputError(f"has only the column(s) {', '.join(map(repr, columns))} but needs an input column and a "
                         "target column; pass the delimiter if the fields were split wrongly", path=path)
    return inputs, target, system


def _read_table(path: Path, *, input_column: str | int | None, target_column: str | int | None,
                system_column: str | int | None, delimiter: str | None, has_header: bool | None, skip_bad: bool,
                cache_dir: str | Path | None) -> ReadResult:
    from ...data import read_table
    from ...data.tabular import LINE_COLUMN, arrow_table

    table = read_table(path, delimiter=delimiter, has_header=_header_hint(path, has_header), cache_dir=cache_dir)
    inputs, target, system = _table_columns(list(table.columns), path, input_column, target_column, system_column)
    skipped = [(m.line, m.problem) for m in table.malformed]
    if skipped and not skip_bad:
        raise InputError(f"this row is malformed ({skipped[0][1]}); fix it, or skip bad rows", path=path,
                         line=skipped[0][0])
    wanted = [*inputs, target, *([system] if system else []), LINE_COLUMN]
    rows = arrow_table(table.dataset, wanted).to_pydict()
    examples = []
    for i, line in enumerate(rows[LINE_COLUMN]):
        texts = [rows[c][i] or "" for c in inputs]
        answer = rows[target][i] or ""
        if answer == "":
            if not skip_bad:
                raise InputError(f"the target (column '{target}') is empty", path=path, line=int(line))
            skipped.append((int(line), f"has an empty target (column '{target}')"))
            continue
        prompt = _alpaca_prompt(*texts) if len(texts) == 2 else texts[0]
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        if system and rows[system][i]:
            messages.insert(0, {"role": "system", "content": rows[system][i]})
        examples.append(Example(messages, int(line)))
    skipped.sort()
    if not examples:
        _refuse_empty(path, skipped)
    kind = {"\t": "TSV", ",": "CSV"}.get(table.format.delimiter, "delimited")
    title = (f"{kind} table (input column{'s' if len(inputs) > 1 else ''} {' + '.join(map(repr, inputs))}, "
             f"target column '{target}'{f', system column {system!r}' if system else ''})")
    return ReadResult(examples, "table", title, list(table.warnings) + _skipped_warning(path, skipped), skipped)


# ---------------------------------------------------------------------------- public


def read_conversations(path: str | Path, *, input_column: str | int | None = None,
                       target_column: str | int | None = None, system_column: str | int | None = None,
                       delimiter: str | None = None, has_header: bool | None = None, skip_bad: bool = False,
                       cache_dir: str | Path | None = None) -> ReadResult:
    """The conversations of a data file (JSON Lines, JSON or a delimited table), format auto-detected.

    The first problem raises an InputError naming its line; with ``skip_bad`` bad records are left
    out instead, listed in ``skipped`` and counted in a warning. The column options apply to tables.
    """
    from ...paths import check_data_path

    p = check_data_path(Path(path))
    if p.suffix.lower() in JSON_SUFFIXES:
        return _read_json(p, skip_bad)
    try:
        with open(p, "rb") as f:
            head = f.read(4096).lstrip(codecs.BOM_UTF8)
    except OSError as e:
        raise InputError(f"cannot be read: {e.strerror or e}", path=p) from None
    if _looks_like_json(head.decode("latin-1")):
        return _read_json(p, skip_bad)
    return _read_table(p, input_column=input_column, target_column=target_column, system_column=system_column,
                       delimiter=delimiter, has_header=has_header, skip_bad=skip_bad, cache_dir=cache_dir)


def _first_record(text: str) -> Any:
    """The first record of the (possibly cut off) start of a JSON or JSON Lines file, or None."""
    start = _skip(text, 0)
    try:
        if text.startswith("[", start):
            return _DECODER.raw_decode(text, _skip(text, start + 1))[0]
        if not text.startswith("{", start):
            return None
        try:
            top = _DECODER.raw_decode(text, start)[0]
        except json.JSONDecodeError:
            top = None  # an object longer than the sample: look at its first list of objects below
        if _matches(top):
            return top
        lists = [v for v in top.values() if isinstance(v, list) and v] if isinstance(top, dict) else []
        if lists:
            return lists[0][0]
        found = _LIST_MEMBER.search(text, start)
        return _DECODER.raw_decode(text, found.end())[0] if found else None
    except (json.JSONDecodeError, RecursionError):
        return None


def sniff_conversations(path: str | Path) -> float:
    """How much ``path`` looks like generation data (0..1): 1 for a .jsonl/.json file whose first record
    is in one of the chat formats. Tables are 0: their input/target columns could be anything."""
    p = Path(path)
    try:
        if not p.is_file() or p.suffix.lower() not in JSON_SUFFIXES:
            return 0.0
        with open(p, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError:
        return 0.0
    return 1.0 if _matches(_first_record(head.decode("utf-8", errors="replace").lstrip("\ufeff"))) else 0.0


# ---------------------------------------------------------------------------- findings


Key = tuple[tuple[str, str], ...]


def _key(messages: list[dict[str, str]]) -> Key:
    return tuple((m["role"], m["content"]) for m in messages)


def _prompt(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    return messages[:-1] if messages and messages[-1]["role"] == "assistant" else messages


def _name(path: str | None, split: str) -> str:
    return path if path else f"the {split} data"


def _plural(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


def _empty_answers(split: str, path: str | None, examples: list[Example]) -> list[Finding]:
    blank = [e.line for e in examples if e.messages and not e.messages[-1]["content"].strip()]
    if not blank:
        return []
    n, name = len(blank), _name(path, split)
    if n == len(examples):
        return [Finding("error", "all_answers_empty", f"{name}: every answer is blank: there is nothing to learn",
                        blank[:MAX_LINES], n, path, split)]
    return [Finding("warning", "empty_answer", f"{name}: {_plural(n, 'example has', 'examples have')} an answer "
                    "that is only whitespace; the model learns to answer with nothing", blank[:MAX_LINES], n, path,
                    split)]


def _duplicates(path: str | None, examples: list[Example]) -> list[Finding]:
    first: dict[Key, int] = {}
    repeats: list[tuple[int, int]] = []  # (line, line of the first occurrence)
    for e in examples:
        key = _key(e.messages)
        if key in first:
            repeats.append((e.line, first[key]))
        else:
            first[key] = e.line
    if not repeats:
        return []
    n = len(repeats)
    repeats.sort()
    severity = "warning" if n > 0.05 * len(examples) else "info"
    line, original = repeats[0]
    what = _plural(n, "conversation repeats", "conversations repeat")
    return [Finding(severity, "duplicates", f"{_name(path, 'train')}: {what} an earlier one exactly (line {line} "
                    f"repeats line {original}); repeats weigh more in training", [r[0] for r in repeats[:MAX_LINES]],
                    n, path, "train")]


def _overlap(split: str, path: str | None, examples: list[Example], train_path: str | None,
             train_prompts: dict[Key, int]) -> list[Finding]:
    hits = sorted((e.line, train_prompts[k]) for e in examples if (k := _key(_prompt(e.messages))) in train_prompts)
    if not hits:
        return []
    line, train_line = hits[0]
    return [Finding("warning", "train_test_overlap",
                    f"{_name(path, split)}: {_plural(len(hits), 'prompt also occurs', 'prompts also occur')} in "
                    f"{_name(train_path, 'train')} (line {line} as its line {train_line}); scores on them overstate "
                    "how well the model generalises", [h[0] for h in hits[:MAX_LINES]], len(hits), path, split)]


def conversation_findings(splits: dict[str, list[Example]], paths: dict[str, str | None]) -> list[Finding]:
    """What a user should know about generation data: blank answers, repeated conversations within
    train, and validation/test prompts (every turn but the answer) that train holds too."""
    order = sorted(splits, key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else len(SPLIT_ORDER), s))
    findings: list[Finding] = []
    for split in order:
        findings += _empty_answers(split, paths.get(split), splits[split])
    train = splits.get("train")
    if train:
        findings += _duplicates(paths.get("train"), train)
        prompts: dict[Key, int] = {}
        for e in train:
            prompts.setdefault(_key(_prompt(e.messages)), e.line)
        for split in order:
            if split != "train":
                findings += _overlap(split, paths.get(split), splits[split], paths.get("train"), prompts)
    findings.sort(key=lambda f: SEVERITY_ORDER.get(f.severity, 3))
    return findings
