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


@dataclass
class _Sentence:
    """The token lines read since the last blank line."""
    tokens: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    bad: bool = False  # holds a bad line (--skip-bad-rows): left out whole


class _SentenceWriter:
    """Sentences batched into an Arrow stream file, so memory stays flat however large the file; a
    file left unfinished (an error, a cancel) is deleted."""

    def __init__(self, target: Path, cancel: CancelToken) -> None:
        self.target, self.cancel = target, cancel
        self.rows: list[int] = []
        self.tokens: list[list[str]] = []
        self.tags: list[list[str]] = []
        self.lines: list[list[int]] = []
        self.n_tokens = self.dropped = 0
        self.sink = pa.OSFile(str(target), "wb")
        self.writer: pa.ipc.RecordBatchStreamWriter | None = pa.ipc.new_stream(self.sink, SENTENCE_SCHEMA)

    def add(self, sentence: _Sentence) -> None:
        """Keep a finished sentence, or count it as dropped when it holds a bad line."""
        if sentence.bad:
            self.dropped += 1
        elif sentence.tokens:
            self.rows.append(sentence.lines[0])
            self.tokens.append(sentence.tokens)
            self.tags.append(sentence.tags)
            self.lines.append(sentence.lines)
            self.n_tokens += len(sentence.tokens)

    @property
    def full(self) -> bool:
        return len(self.rows) >= BATCH_SENTENCES

    def flush(self) -> None:
        self.cancel.raise_if_cancelled()
        assert self.writer is not None
        self.writer.write_batch(pa.record_batch([
            pa.array(self.rows, pa.int64()),
            pa.array(self.tokens, pa.list_(pa.string())),
            pa.array(self.tags, pa.list_(pa.string())),
            pa.array(self.lines, pa.list_(pa.int32())),
        ], schema=SENTENCE_SCHEMA))
        for buf in (self.rows, self.tokens, self.tags, self.lines):
            buf.clear()

    def finish(self) -> None:
        """Write the last batch and close the file."""
        self.flush()
        assert self.writer is not None
        self.writer.close()
        self.writer = None
        self.sink.close()

    def close(self, keep: bool) -> None:
        if self.writer is not None:
            self.writer.close()
        if not self.sink.closed:
            self.sink.close()
        if not keep:
            self.target.unlink(missing_ok=True)


def _read(p: Path, fmt: str, column: str, codec: str, skip_bad: bool, out_dir: Path,
          progress, cancel: CancelToken, warnings: list[str]) -> TaggedFile:
    total = p.stat().st_size
    out = _SentenceWriter(out_dir / f"{_safe_stem(p)}-{uuid.uuid4().hex[:12]}.arrow", cancel)
    malformed: list[RowProblem] = []
    ok = False
    try:
        _read_sentences(p, fmt, column, codec, skip_bad, out, malformed, progress, total)
        out.finish()
        if progress is not None:
            progress(total, total)
        dataset = datasets.Dataset.from_file(str(out.target))
        if len(dataset) == 0:
            what = "CoNLL-U word lines" if fmt == "conllu" else "token and tag lines"
            raise InputError(f"has no sentences: no {what} were found" + (
                f" ({out.dropped} sentence(s) dropped for bad lines)" if out.dropped else ""), path=p)
        ok = True
    finally:
        out.close(keep=ok)
    if malformed:
        first = malformed[0]
        warnings.append(f"{p}: {out.dropped:,} sentence(s) with bad lines were left out "
                        f"(line {first.line}: {first.problem})")
    return TaggedFile(p, dataset, fmt, column, out.n_tokens, malformed, out.dropped, warnings,
                      encoding="utf-8" if codec == "utf-8" else codec)


def _read_sentences(p: Path, fmt: str, column: str, codec: str, skip_bad: bool, out: _SentenceWriter,
                    malformed: list[RowProblem], progress, total: int) -> None:
    """Parse ``p`` line by line into ``out``; bad lines stop the read, or with ``skip_bad`` mark
    their sentence (and are listed in ``malformed``)."""
    parse = _conllu_fields if fmt == "conllu" else _conll_fields
    sentence = _Sentence()
    with open(p, "rb") as f:
        done = 0
        for number, raw in enumerate(f, 1):
            done += len(raw)
            if b"\x00" in raw:
                raise InputError(NUL_MESSAGE.replace("text table", "tagged text file"), path=p, line=number)
            line = raw.decode(codec)
            if number == 1:
                line = line.lstrip("\ufeff")
            line = line.rstrip()  # CR, LF and trailing blanks
            if fmt == "conllu" and line.startswith("#"):
                continue
            if not line or (fmt == "conll" and line.startswith("-DOCSTART-")):  # the end of a sentence
                out.add(sentence)
                if out.full:
                    out.flush()
                    if progress is not None:
                        progress(done, total)
                sentence = _Sentence()
                continue
            try:
                parsed = parse(line, column)
            except _LineError as e:
                if not skip_bad:
                    raise InputError(e.problem, path=p, line=number) from None
                malformed.append(RowProblem(number, e.problem))
                sentence.bad = True
                continue
            if parsed is not None:
                sentence.tokens.append(parsed[0])
                sentence.tags.append(parsed[1])
                sentence.lines.append(number)
    out.add(sentence)


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
