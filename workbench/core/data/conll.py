"""Read token-per-line tagged files into a memory-mapped Arrow dataset of sentences.

Two formats:

* **CoNLL** (CoNLL-2003, IOB/BIO exports): one token per line, the token first and the tag last (or
  in a chosen column), fields separated by spaces or tabs, any number of columns between, a blank
  line between sentences, ``-DOCSTART-`` lines skipped. A line with a tab is split on tabs (so a
  token may hold spaces), any other line on runs of white space.
* **CoNLL-U** (Universal Dependencies): ten tab-separated columns, ``#`` comment lines, multi-word
  token ranges (``1-2``, whose syntactic words follow on their own lines and carry the tags) and
  empty nodes (``8.1``, which have no surface token) skipped; the tag is UPOS or XPOS.

CRLF line ends, a UTF-8 byte-order mark and trailing white space are tolerated. Every error names
the file and line. Sentences are written in batches to an Arrow file with the columns ``row`` (line
of the first token), ``tokens`` and ``tags`` (list<string>) and ``lines`` (list<int32>, each
token's line), so memory stays flat however large the file.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import datasets
import pyarrow as pa

from ..cancel import NEVER, CancelToken
from ..errors import InputError
from .tabular import NUL_MESSAGE, RowProblem, _cache_dir, _check_file, _first_bad_line, _safe_stem

SENTENCE_SCHEMA = pa.schema([
    ("row", pa.int64()),
    ("tokens", pa.list_(pa.string())),
    ("tags", pa.list_(pa.string())),
    ("lines", pa.list_(pa.int32())),
])
BATCH_SENTENCES = 10_000
SNIFF_BYTES = 16 * 1024
CONLL_SUFFIXES = (".conll", ".conllu", ".conllx", ".txt", ".iob", ".iob2", ".bio", ".bioes", ".iobes", ".tsv", ".tags")
CONLLU_COLUMNS = {"upos": 3, "xpos": 4}
_CONLLU_ID = re.compile(r"(\d+)(?:([-.])(\d+))?\Z")


@dataclass
class TaggedFile:
    path: Path
    dataset: datasets.Dataset  # row, tokens, tags, lines
    format: str  # "conll" | "conllu"
    tag_column: str  # "last", a 0-based position as digits, "upos" or "xpos"
    n_tokens: int
    malformed: list[RowProblem] = field(default_factory=list)  # lines whose sentence was dropped (--skip-bad-rows)
    dropped_sentences: int = 0
    warnings: list[str] = field(default_factory=list)
    encoding: str = "utf-8"

    @property
    def n_sentences(self) -> int:
        return len(self.dataset)


def detect_format(path: Path, head: str | None = None) -> str:
    """"conllu" for a .conllu file or one whose first token line has ten tab-separated columns and a
    numeric ID; "conll" otherwise."""
    if path.suffix.lower() == ".conllu":
        return "conllu"
    if head is None:
        head = _head_text(path)
    for line in head.splitlines():
        line = line.rstrip()
        if not line or line.startswith("#"):
            continue
        fields = line.split("\t")
        return "conllu" if len(fields) == 10 and _CONLLU_ID.match(fields[0]) else "conll"
    return "conll"


def read_tagged(
    path: str | Path,
    *,
    tag_column: str | int | None = None,
    format: str | None = None,
    skip_bad: bool = False,
    cache_dir: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: CancelToken = NEVER,
) -> TaggedFile:
    """Read a CoNLL or CoNLL-U file. ``tag_column``: for CoNLL a 0-based position (default: the last
    column); for CoNLL-U "upos" (default) or "xpos". With ``skip_bad`` a sentence holding a bad line
    is left out (and counted) instead of stopping with an error."""
    cancel.raise_if_cancelled()
    p = _check_file(Path(path))
    fmt = format or detect_format(p)
    column = _resolve_tag_column(tag_column, fmt, p)
    out_dir = _cache_dir(cache_dir)
    try:
        return _read(p, fmt, column, "utf-8", skip_bad, out_dir, progress, cancel, [])
    except UnicodeDecodeError:
        line = _first_bad_line(p, "utf-8-sig")
        warning = (f"{p}: line {line} is not valid UTF-8, so the file was read as latin-1; "
                   "check accented characters, or save the file as UTF-8")
        return _read(p, fmt, column, "latin-1", skip_bad, out_dir, progress, cancel, [warning])


def _resolve_tag_column(tag_column: str | int | None, fmt: str, p: Path) -> str:
    spec = "" if tag_column is None else str(tag_column).strip().lower()
    if fmt == "conllu":
        if spec in ("", "upos", "3"):
            return "upos"
        if spec in ("xpos", "4"):
            return "xpos"
        raise InputError(f"is CoNLL-U: the tag column must be upos or xpos, not {tag_column!r}", path=p)
    if spec in ("", "last", "-1"):
        return "last"
    if spec.isdigit() and int(spec) >= 1:
        return spec
    raise InputError(f"the tag column must be 'last' or a 0-based column position of 1 or more "
                     f"(0 is the token), not {tag_column!r}", path=p)


def _head_text(path: Path) -> str:
    with open(path, "rb") as f:
        data = f.read(SNIFF_BYTES)
    return data.decode("utf-8", errors="replace").lstrip("\ufeff")


class _LineError(Exception):
    def __init__(self, problem: str):
        self.problem = problem


def _conll_fields(line: str, column: str) -> tuple[str, str]:
    fields = [f.strip() for f in line.split("\t")] if "\t" in line else line.split()
    if len(fields) < 2:
        raise _LineError(f"expected a token and a tag separated by spaces or a tab, found {len(fields)} field "
                         f"({line.strip()[:40]!r})")
    if column == "last":
        tag = fields[-1]
    else:
        k = int(column)
        if k >= len(fields):
            raise _LineError(f"has {len(fields)} columns, so there is no tag column at position {k} "
                             "(positions count from 0)")
        tag = fields[k]
    if not fields[0] or not tag:
        raise _LineError("has an empty token or tag")
    return fields[0], tag


def _conllu_fields(line: str, column: str) -> tuple[str, str] | None:
    """(form, tag) of a word line; None for a multi-word range or an empty node."""
    fields = line.split("\t")
    if len(fields) != 10:
        spaced = line.split()
        if len(spaced) != 10:
            raise _LineError(f"expected 10 tab-separated CoNLL-U columns, found {len(fields)}")
        fields = spaced
    m = _CONLLU_ID.match(fields[0].strip())
    if not m:
        raise _LineError(f"has {fields[0]!r} as its ID; CoNLL-U IDs are 1, 2, ... (or ranges 1-2, empty nodes 8.1)")
    if m.group(2):  # "1-2": the surface form of words that follow; "8.1": an empty node
        return None
    tag = fields[CONLLU_COLUMNS[column]].strip()
    if tag in ("", "_"):
        raise _LineError(f"has no {column.upper()} tag ('_')")
    return fields[1], tag


def _read(p: Path, fmt: str, column: str, codec: str, skip_bad: bool, out_dir: Path,
          progress, cancel: CancelToken, warnings: list[str]) -> TaggedFile:
    parse = _conllu_fields if fmt == "conllu" else _conll_fields
    total = p.stat().st_size
    target = out_dir / f"{_safe_stem(p)}-{uuid.uuid4().hex[:12]}.arrow"
    rows: list[int] = []
    tokens: list[list[str]] = []
    tags: list[list[str]] = []
    lines: list[list[int]] = []
    malformed: list[RowProblem] = []
    n_tokens = dropped = 0
    cur_tokens: list[str] = []
    cur_tags: list[str] = []
    cur_lines: list[int] = []
    cur_bad = False
    ok = False
    sink = pa.OSFile(str(target), "wb")
    writer = pa.ipc.new_stream(sink, SENTENCE_SCHEMA)

    def flush() -> None:
        cancel.raise_if_cancelled()
        writer.write_batch(pa.record_batch([
            pa.array(rows, pa.int64()),
            pa.array(tokens, pa.list_(pa.string())),
            pa.array(tags, pa.list_(pa.string())),
            pa.array(lines, pa.list_(pa.int32())),
        ], schema=SENTENCE_SCHEMA))
        for buf in (rows, tokens, tags, lines):
            buf.clear()

    try:
        with open(p, "rb") as f:
            number = 0
            done = 0
            for raw in f:
                number += 1
                done += len(raw)
                if b"\x00" in raw:
                    raise InputError(NUL_MESSAGE.replace("text table", "tagged text file"), path=p, line=number)
                line = raw.decode(codec)
                if number == 1:
                    line = line.lstrip("\ufeff")
                line = line.rstrip()  # CR, LF and trailing blanks
                end_of_sentence = not line or (fmt == "conll" and line.startswith("-DOCSTART-"))
                if fmt == "conllu" and line.startswith("#"):
                    continue
                if end_of_sentence:
                    if cur_tokens:
                        if cur_bad:
                            dropped += 1
                        else:
                            rows.append(cur_lines[0])
                            tokens.append(cur_tokens)
                            tags.append(cur_tags)
                            lines.append(cur_lines)
                            n_tokens += len(cur_tokens)
                            if len(rows) >= BATCH_SENTENCES:
                                flush()
                                if progress is not None:
                                    progress(done, total)
                    elif cur_bad:
                        dropped += 1
                    cur_tokens, cur_tags, cur_lines, cur_bad = [], [], [], False
                    continue
                try:
                    parsed = parse(line, column)
                except _LineError as e:
                    if not skip_bad:
                        raise InputError(e.problem, path=p, line=number) from None
                    malformed.append(RowProblem(number, e.problem))
                    cur_bad = True
                    continue
                if parsed is None:
                    continue
                cur_tokens.append(parsed[0])
                cur_tags.append(parsed[1])
                cur_lines.append(number)
        if cur_tokens and not cur_bad:
            rows.append(cur_lines[0])
            tokens.append(cur_tokens)
            tags.append(cur_tags)
            lines.append(cur_lines)
            n_tokens += len(cur_tokens)
        elif cur_bad:
            dropped += 1
        flush()
        writer.close()
        writer = None
        sink.close()
        if progress is not None:
            progress(total, total)
        dataset = datasets.Dataset.from_file(str(target))
        if len(dataset) == 0:
            what = "CoNLL-U word lines" if fmt == "conllu" else "token and tag lines"
            raise InputError(f"has no sentences: no {what} were found" + (
                f" ({dropped} sentence(s) dropped for bad lines)" if dropped else ""), path=p)
        ok = True
    finally:
        if writer is not None:
            writer.close()
        if not sink.closed:
            sink.close()
        if not ok:
            target.unlink(missing_ok=True)
    if malformed:
        first = malformed[0]
        warnings.append(f"{p}: {dropped:,} sentence(s) with bad lines were left out "
                        f"(line {first.line}: {first.problem})")
    return TaggedFile(p, dataset, fmt, column, n_tokens, malformed, dropped, warnings,
                      encoding="utf-8" if codec == "utf-8" else codec)


def sniff_tagged(path: Path) -> float:
    """How much ``path`` looks like a token-per-line tagged file (0..1), from its first 16 KB."""
    try:
        if not path.is_file() or path.suffix.lower() not in CONLL_SUFFIXES:
            return 0.0
        with open(path, "rb") as f:
            data = f.read(SNIFF_BYTES + 1)
    except OSError:
        return 0.0
    if not data or b"\x00" in data:
        return 0.0
    truncated = len(data) > SNIFF_BYTES
    text = data[:SNIFF_BYTES].decode("utf-8", errors="replace").lstrip("\ufeff")
    lines = text.splitlines()
    if truncated and lines:
        lines.pop()  # cut off mid-line
    if detect_format(path, text) == "conllu":
        words = [l for l in lines if l.strip() and not l.startswith("#")]
        good = sum(1 for l in words if len(l.rstrip("\r\n").split("\t")) == 10)
        return 0.95 if words and good >= 0.9 * len(words) else 0.0
    content = [l.rstrip() for l in lines]
    blank = sum(1 for l in content if not l)
    data_lines = [l for l in content if l and not l.startswith("-DOCSTART-")]
    if len(data_lines) < 2:
        return 0.0
    counts = []
    for l in data_lines:
        fields = l.split("\t") if "\t" in l else l.split()
        if len(fields) < 2 or " " in fields[0].strip() or len(fields[-1]) > 30:
            counts.append(-1)
        else:
            counts.append(len(fields))
    top = max(set(counts), key=counts.count)
    if top < 2 or counts.count(top) < 0.95 * len(counts):
        return 0.0
    # Tags repeat: far fewer distinct tags than lines.
    tags = {(l.split("\t") if "\t" in l else l.split())[-1] for l in data_lines}
    if len(tags) > max(3, len(data_lines) // 2):
        return 0.0
    if blank:
        return 0.9
    return 0.7 if path.suffix.lower() in (".conll", ".iob", ".iob2", ".bio", ".bioes", ".iobes") else 0.0
