"""What a prediction reads: rows of a TSV/CSV file, sentences of a CoNLL or plain-text file, images of
a folder. Each reader is a generator of ``Item``s and ``Problem``s in file order, holding one record at
a time, so a file of any size streams through in constant memory. A bad row (too few fields, bytes
that are not UTF-8, an image that cannot be decoded) is a ``Problem`` naming its line or path; the
reader goes on with the next one.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..data.conll import _CONLLU_ID, detect_format, sniff_tagged
from ..data.image_sniff import IGNORED, is_image_name
from ..data.tabular import (
    SAMPLE_BYTES,
    _check_file,
    _first_bad_line,
    _sample_records,
    detect_header,
    sniff_delimiter,
)
from ..errors import InputError
from ..paths import check_data_path

# The parts of the training data's description (``PreparedData.resolved``) that tell a prediction
# how to read new data; the export keeps them in workbench.json under "inputs".
_INPUT_KEYS = ("text_column", "text_pair_column", "label_column", "delimiter", "has_header", "format", "tag_column",
               "image_size", "resize_to")
_WORDS = re.compile(r"\w+(?:[-'’.]\w+)*|[^\w\s]")  # how plain text is cut into words for tagging


def prediction_inputs(resolved: dict[str, Any]) -> dict[str, Any]:
    return {k: resolved[k] for k in _INPUT_KEYS if resolved.get(k) is not None}


def words(text: str) -> list[str]:
    """Plain text cut into words and punctuation marks, as the tagger reads a sentence."""
    return _WORDS.findall(text)


@dataclass
class Item:
    where: int | str  # the line the row or sentence starts on, or the image's path
    value: Any  # a text, a (text, second text) pair, a list of tokens, or an image path


@dataclass
class Problem:
    where: int | str
    message: str


def _bad_text(fields: list[str]) -> bool:
    # Read with errors="surrogateescape": bytes that are not UTF-8 come through as lone surrogates.
    return any(re.search("[\udc80-\udcff]", f) for f in fields)


# ---------------------------------------------------------------------------- tables


@dataclass
class TableLayout:
    delimiter: str
    has_header: bool
    columns: list[str]  # the header's names, or column_1, column_2, ...
    text: int  # positions of the columns the model reads
    pair: int | None
    encoding: str
    text_reason: str = ""  # why that column: trained on it, --text-column, the only column
    warnings: list[str] = field(default_factory=list)  # said once, on stderr and in the summary

    @property
    def text_name(self) -> str:
        return self.columns[self.text]

    @property
    def pair_name(self) -> str | None:
        return self.columns[self.pair] if self.pair is not None else None


# Names of a column that holds labels rather than texts: a one-column file so named is read as text,
# but said loudly (a file of gold labels given by mistake, or the wrong column exported).
_LABEL_NAMES = frozenset("label labels class classes category categories target targets gold gold_label class_label "
                         "label_id y tag tags sentiment".split())


def _position(spec: str | None, names: list[str], has_header: bool) -> int | None:
    """The position of a training column ``spec`` (a header name, ``column_N`` or a 0-based position)
    among ``names``."""
    if spec is None:
        return None
    if spec in names:
        return names.index(spec)
    m = re.fullmatch(r"column_(\d+)", spec)
    if m and not has_header and int(m[1]) <= len(names):
        return int(m[1]) - 1
    if spec.isdigit() and int(spec) < len(names):
        return int(spec)
    return None


def table_encoding(path: Path) -> tuple[str, str | None]:
    """(codec, warning) as ``train`` reads a table: UTF-8 when every byte of the file decodes as UTF-8,
    otherwise latin-1 (every byte decodes) with a warning naming the first line that is not UTF-8.
    A file that starts with a UTF-8 byte-order mark says it is UTF-8: it stays UTF-8, and a row with
    bytes that do not decode is named and skipped. One pass over the bytes, at disk speed."""
    with open(path, "rb") as f:
        if f.read(3) == codecs.BOM_UTF8:
            return "utf-8-sig", None
        f.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            while chunk := f.read(1 << 20):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
            return "utf-8-sig", None
        except UnicodeDecodeError:
            pass
    line = _first_bad_line(path, "utf-8-sig")
    return "latin-1", (f"{path}: line {line} is not valid UTF-8, so the file was read as latin-1 (as training reads "
                       "such a file); check accented characters, or save the file as UTF-8")


def table_layout(path: Path, inputs: dict[str, Any], text_column: str | None = None,
                 pair_column: str | None = None) -> TableLayout:
    """How to read ``path``: its encoding, delimiter and header (sniffed) and where the model's text
    columns are (the training columns by name, ``text_column``/``pair_column`` if given, or the only column)."""
    p = _check_file(path)
    encoding, encoding_warning = table_encoding(p)
    with open(p, "rb") as f:
        data = f.read(SAMPLE_BYTES + 1)
    complete = len(data) <= SAMPLE_BYTES
    sample = codecs.getincrementaldecoder(encoding)(errors="surrogateescape").decode(data[:SAMPLE_BYTES], final=complete)
    delimiter = sniff_delimiter(sample, complete, p.suffix)
    records = _sample_records(sample, complete, delimiter, 200)
    if not records:
        if sample.strip():
            raise InputError(f"its first row cannot be read (a field longer than {csv.field_size_limit():,} characters, "
                             "or a double quote that is never closed), so its columns cannot be told", path=p)
        raise InputError("has no rows to predict (only blank lines)", path=p)
    want_text = text_column or inputs.get("text_column")
    want_pair = pair_column or inputs.get("text_pair_column")
    first = [c.strip() for c in records[0]]
    has_header = bool(want_text and want_text in first) or detect_header(records)
    width = len(records[0])
    columns = first if has_header else [f"column_{i + 1}" for i in range(width)]
    text = _position(want_text, columns, has_header)
    pair = _position(want_pair, columns, has_header) if want_pair else None
    reason = "--text-column" if text_column else "the column the model was trained on"
    if text is None and width == 1 and not want_pair:
        text = 0  # one column: it is the text, whatever it is called
        reason = "the only column"
    shown = ", ".join(columns[:12]) + (" ..." if len(columns) > 12 else "")
    if text is None:
        raise InputError(f"has no column {want_text!r}, the text column the model was trained on (columns: {shown}); "
                         "name the text column with --text-column", path=p)
    if want_pair and pair is None:
        raise InputError(f"has no column {want_pair!r}, the second text column the model was trained on (columns: "
                         f"{shown}); name it with --text-pair-column", path=p)
    layout = TableLayout(delimiter, has_header, columns, text, pair, encoding, reason,
                         [encoding_warning] if encoding_warning else [])
    name = columns[text]
    if reason == "the only column" and (name == inputs.get("label_column") or name.strip().lower() in _LABEL_NAMES):
        layout.warnings.append(f"{p}: the text to predict is read from column {name!r} ({reason}), a name for labels, "
                               f"not texts{f' (the model was trained on texts in {want_text!r})' if want_text else ''}; "
                               "check that this is the file you meant")
    return layout


class _Lines:
    """The physical lines of a text stream, counted; those of the record being read are kept (``taken``)
    so that a record the csv module gives up on can be finished by hand."""

    def __init__(self, text) -> None:
        self._it = iter(text)
        self.number = 0  # lines read so far
        self.taken: list[str] = []
        self.keep = True
        self.exhausted = False

    def __iter__(self) -> "_Lines":
        return self

    def __next__(self) -> str:
        try:
            line = next(self._it)
        except StopIteration:
            self.exhausted = True
            raise
        self.number += 1
        if self.keep:
            self.taken.append(line)
        return line


_START, _FIELD, _QUOTED, _QUOTE_IN_QUOTED = range(4)


def _parse_record(lines, delimiter: str, cap: int) -> tuple[list[str], bool, bool]:
    """(fields, unclosed, too_long): one record parsed from ``lines`` as the csv module parses it (quote
    '"', doubled quotes, not strict), with no limit on a field's size. ``unclosed``: the lines ran out
    inside a quoted field; ``too_long``: a field passed ``cap`` characters (its text is then cut)."""
    stop = re.compile(f"[{re.escape(delimiter)}\r\n]")
    fields: list[str] = []
    parts: list[str] = []
    size, too_long, state = 0, False, _START

    def add(piece: str) -> None:
        nonlocal size, too_long
        size += len(piece)
        if size > cap:
            too_long = True
        else:
            parts.append(piece)

    def end_field() -> None:
        nonlocal size
        fields.append("".join(parts))
        parts.clear()
        size = 0

    for s in lines:
        i, n = 0, len(s)
        while i < n:
            if state == _QUOTED:
                j = s.find('"', i)
                if j < 0:
                    add(s[i:])  # a line break inside quotes is part of the field
                    break
                add(s[i:j])
                i, state = j + 1, _QUOTE_IN_QUOTED
                continue
            if state == _QUOTE_IN_QUOTED:
                if s[i] == '"':
                    add('"')
                    i, state = i + 1, _QUOTED
                    continue
                state = _FIELD  # the quote closed the field; anything but a delimiter joins it (not strict)
            elif state == _START and s[i] == '"':
                i, state = i + 1, _QUOTED
                continue
            m = stop.search(s, i)
            add(s[i:m.start() if m else n])
            if m is None:
                state = _FIELD
                break
            end_field()
            if s[m.start()] != delimiter:
                return fields, False, too_long  # a line break ends the record
            i, state = m.end(), _START
    unclosed = state == _QUOTED
    if parts or state != _START or fields:
        end_field()
    return fields, unclosed, too_long


FIELD_CAP = 16 * 1024 * 1024  # characters of one field held in memory; a longer field's row is reported, not predicted


def _byte_records(path: Path, layout: TableLayout, position: list[int]):
    """(record, first line, last line, problem) for every csv record of ``path``; ``position[0]``
    follows the bytes read (for progress). A record the csv module refuses (a field over its size
    limit) is finished by hand, so every row after it is still read; a double quote never closed
    (the rest of the file read as one field) is a problem naming the lines it swallowed."""
    with open(path, "rb") as raw, io.TextIOWrapper(raw, encoding=layout.encoding, errors="surrogateescape",
                                                   newline="") as text:
        lines = _Lines(text)

        def reader():
            return csv.reader(lines, delimiter=layout.delimiter, quotechar='"', doublequote=True, strict=False)

        records = reader()
        while True:
            lines.taken.clear()
            start = lines.number + 1
            problem = None
            try:
                record = next(records)
                if lines.exhausted and lines.number > start:  # the last record, over several lines
                    _, unclosed, _ = _parse_record(iter(lines.taken), layout.delimiter, FIELD_CAP)
                    if unclosed:
                        record, problem = None, _unclosed(start, lines.number)
            except StopIteration:
                return
            except csv.Error as e:
                taken, lines.keep = list(lines.taken), False
                try:
                    if "field larger than field limit" in str(e):
                        fields, unclosed, too_long = _parse_record(itertools.chain(taken, lines), layout.delimiter,
                                                                   FIELD_CAP)
                    else:  # not met with strict=False; never the reason to lose the rest of the file
                        fields, unclosed, too_long = [], False, False
                        problem = f"cannot be parsed as delimited text: {e}"
                finally:
                    lines.keep = True
                record = fields
                if unclosed:
                    record, problem = None, _unclosed(start, lines.number)
                elif too_long:
                    record, problem = None, (f"holds a field of more than {FIELD_CAP:,} characters (lines {start}-"
                                             f"{lines.number}); this row was not predicted")
                records = reader()  # a fresh parser for the next record
            position[0] = raw.tell()
            yield record, start, lines.number, problem


def _unclosed(start: int, end: int) -> str:
    span = f"lines {start}-{end}" if end > start else f"line {start}"
    return (f"a double quote in this row is never closed, so the rest of the file ({span}) reads as one field; "
            "these lines were not predicted: close the quote or remove it")


def read_table_rows(path: Path, layout: TableLayout, position: list[int]) -> Iterator[Item | Problem]:
    need = max(layout.text, layout.pair if layout.pair is not None else 0) + 1
    header = layout.has_header  # the first non-blank record, as the layout was sniffed
    for record, line, _, problem in _byte_records(path, layout, position):
        if problem:
            yield Problem(line, problem)
            continue
        if not record or not "".join(record).strip():
            continue  # blank lines are not rows
        if header:
            header = False
            continue
        if len(record) < need:
            yield Problem(line, f"expected at least {need} fields, found {len(record)}")
            continue
        text = record[layout.text]
        pair = record[layout.pair] if layout.pair is not None else None
        if _bad_text([text] + ([pair] if pair is not None else [])):
            yield Problem(line, "the text is not valid UTF-8")
            continue
        if "\x00" in text or (pair is not None and "\x00" in pair):
            yield Problem(line, "the text holds a NUL byte (binary data, or UTF-16 text), not text")
            continue
        yield Item(line, text if pair is None else (text, pair))


# ---------------------------------------------------------------------------- tagging


def tagged_format(path: Path, fmt: str = "auto") -> str:
    """"conll", "conllu" or "text" (one sentence a line)."""
    check_data_path(path)
    if fmt != "auto":
        return fmt
    if path.suffix.lower() in (".conll", ".conllu", ".iob", ".iob2", ".bio") or sniff_tagged(path) > 0:
        return detect_format(path)
    if path.suffix.lower() in (".tsv", ".txt", ".tags"):
        # A token per line with blank lines between sentences and no tag column is CoNLL too.
        with open(path, "rb") as f:
            head = f.read(16384).decode("utf-8", errors="replace").splitlines()[:200]
        lines = [l for l in head if l.strip()]
        if lines and len(lines) < len(head) and all(len(l.split()) == 1 for l in lines):
            return "conll"
    return "text"


def read_sentences(path: Path, fmt: str, position: list[int]) -> Iterator[Item | Problem]:
    """Sentences of ``path``: for CoNLL/CoNLL-U the token column (any tags are ignored), for plain text
    one sentence a line cut into words. Lines end at LF, CR LF or a lone CR (old Mac files), as an
    editor numbers them."""
    _check_file(path)
    with open(path, "rb") as raw, io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape",
                                                   newline=None) as text:
        tokens: list[str] = []
        start, bad = 0, None
        for number, line in enumerate(text, 1):
            position[0] = raw.tell()
            line = line.rstrip("\n")
            if number == 1:
                line = line.lstrip("\ufeff")
            if fmt == "text":
                if not line.strip():
                    continue
                if _bad_text([line]):
                    yield Problem(number, "the line is not valid UTF-8")
                    continue
                if "\x00" in line:
                    yield Problem(number, "the line holds a NUL byte (binary data, or UTF-16 text), not text")
                    continue
                yield Item(number, words(line))
                continue
            if not line.strip():
                if tokens or bad:
                    yield Problem(start, bad) if bad else Item(start, tokens)
                tokens, bad = [], None
                continue
            if line.startswith("-DOCSTART-") or (fmt == "conllu" and line.startswith("#")):
                continue
            if not tokens and bad is None:
                start = number
            if bad is not None:
                continue
            if _bad_text([line]):
                bad = f"line {number} is not valid UTF-8; the sentence was skipped"
                continue
            if "\x00" in line:
                bad = f"line {number} holds a NUL byte (binary data, or UTF-16 text); the sentence was skipped"
                continue
            if fmt == "conllu":
                fields = line.split("\t")
                if len(fields) != 10 or not _CONLLU_ID.match(fields[0]):
                    bad = f"line {number} is not a CoNLL-U token line (10 tab-separated fields); the sentence was skipped"
                    continue
                if "-" in fields[0] or "." in fields[0]:
                    continue  # multi-word token ranges and empty nodes: their words are on other lines
                tokens.append(fields[1])
            else:
                tokens.append(line.split("\t")[0] if "\t" in line else line.split()[0])
        if tokens or bad:
            yield Problem(start, bad) if bad else Item(start, tokens)


# ---------------------------------------------------------------------------- images


def image_files(path: Path) -> Iterator[Path]:
    """The image files of a folder and its sub-folders (hidden ones and system litter left out), in
    sorted order; or the one image given."""
    check_data_path(path, folder_ok=True)
    if path.is_file():
        yield path
        return
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d.lower() not in IGNORED)
        for f in sorted(files):
            if not f.startswith(".") and is_image_name(f):
                yield Path(root, f)


def count_images(path: Path) -> int:
    return sum(1 for _ in image_files(path))


def is_image_list(path: Path) -> bool:
    """A file that is not an image, given to an image model: a table of image paths."""
    return path.is_file() and not is_image_name(path.name)


def listed_images(path: Path, layout: TableLayout, position: list[int]) -> Iterator[Item | Problem]:
    """The images a table names in its path column (``layout.text``, the one the model was trained on:
    relative paths from the table's folder, as training reads them), as Items of the file's path; a row
    without one, or whose file is not there, is a Problem of its line."""
    for entry in read_table_rows(path, layout, position):
        if isinstance(entry, Problem):
            yield entry
            continue
        cell = str(entry.value).strip()
        image = Path(cell).expanduser()
        image = image if image.is_absolute() else path.parent / image
        try:
            regular = bool(cell) and stat.S_ISREG(image.stat().st_mode)
        except FileNotFoundError:
            yield Problem(entry.where, f"names the image {cell!r}, which does not exist ({image})")
            continue
        except OSError as e:
            yield Problem(entry.where, f"names the image {cell!r}, which cannot be read ({e.strerror or e})")
            continue
        yield Item(str(image), image) if regular else Problem(entry.where, f"names {cell!r}, which is not an image file"
                                                                          if cell else "has no image path")
