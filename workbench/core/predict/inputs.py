"""What a prediction reads: rows of a TSV/CSV file, sentences of a CoNLL or plain-text file, images of
a folder. Each reader is a generator of ``Item``s and ``Problem``s in file order, holding one record at
a time, so a file of any size streams through in constant memory. A bad row (too few fields, bytes
that are not UTF-8, an image that cannot be decoded) is a ``Problem`` naming its line or path; the
reader goes on with the next one.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..data.conll import _CONLLU_ID, detect_format, sniff_tagged
from ..data.tabular import _check_file, _read_sample, _sample_records, detect_header, sniff_delimiter
from ..errors import InputError
from ..image_sniff import IGNORED, is_image_name
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


def table_layout(path: Path, inputs: dict[str, Any], text_column: str | None = None,
                 pair_column: str | None = None) -> TableLayout:
    """How to read ``path``: its delimiter and header (sniffed) and where the model's text columns
    are (the training columns by name, ``text_column``/``pair_column`` if given, or the only column)."""
    p = _check_file(path)
    encoding = "utf-8-sig"
    try:
        sample, complete = _read_sample(p, encoding)
    except UnicodeDecodeError:  # cut mid-character at the sample's end is not this: that decodes lazily
        sample, complete, encoding = _read_sample(p, "latin-1") + ("latin-1",)
    delimiter = sniff_delimiter(sample, complete, p.suffix)
    records = _sample_records(sample, complete, delimiter, 200)
    if not records:
        raise InputError("has no rows to predict", path=p)
    want_text = text_column or inputs.get("text_column")
    want_pair = pair_column or inputs.get("text_pair_column")
    first = [c.strip() for c in records[0]]
    has_header = bool(want_text and want_text in first) or detect_header(records)
    width = len(records[0])
    columns = first if has_header else [f"column_{i + 1}" for i in range(width)]
    text = _position(want_text, columns, has_header)
    pair = _position(want_pair, columns, has_header) if want_pair else None
    if text is None and width == 1 and not want_pair:
        text = 0  # one column: it is the text, whatever it is called
    shown = ", ".join(columns[:12]) + (" ..." if len(columns) > 12 else "")
    if text is None:
        raise InputError(f"has no column {want_text!r}, the text column the model was trained on (columns: {shown}); "
                         "name the text column with --text-column", path=p)
    if want_pair and pair is None:
        raise InputError(f"has no column {want_pair!r}, the second text column the model was trained on (columns: "
                         f"{shown}); name it with --text-pair-column", path=p)
    return TableLayout(delimiter, has_header, columns, text, pair, encoding)


def _byte_records(path: Path, layout: TableLayout, position: list[int]):
    """csv records with the line each starts on; ``position[0]`` follows the bytes read (for progress)."""
    with open(path, "rb") as raw, io.TextIOWrapper(raw, encoding=layout.encoding, errors="surrogateescape",
                                                   newline="") as text:
        reader = csv.reader(text, delimiter=layout.delimiter, quotechar='"', doublequote=True, strict=False)
        end = 0
        while True:
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as e:  # a field over the csv module's size limit: the rest cannot be trusted
                yield None, end + 1, f"cannot be parsed as delimited text from here on: {e}"
                return
            start, end = end + 1, reader.line_num
            position[0] = raw.tell()
            yield record, start, None


def read_table_rows(path: Path, layout: TableLayout, position: list[int]) -> Iterator[Item | Problem]:
    need = max(layout.text, layout.pair if layout.pair is not None else 0) + 1
    first = True
    for record, line, fatal in _byte_records(path, layout, position):
        if fatal:
            yield Problem(line, fatal)
            return
        if first:
            first = False
            if layout.has_header:
                continue
        if not record or not "".join(record).strip():
            continue  # blank lines are not rows
        if len(record) < need:
            yield Problem(line, f"expected at least {need} fields, found {len(record)}")
            continue
        text = record[layout.text]
        pair = record[layout.pair] if layout.pair is not None else None
        if _bad_text([text] + ([pair] if pair is not None else [])):
            yield Problem(line, "the text is not valid UTF-8")
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
    one sentence a line cut into words."""
    _check_file(path)
    with open(path, "rb") as raw:
        tokens: list[str] = []
        start, bad = 0, None
        for number, line_bytes in enumerate(raw, 1):
            position[0] = raw.tell()
            line = line_bytes.decode("utf-8", errors="surrogateescape").rstrip("\r\n")
            if number == 1:
                line = line.lstrip("\ufeff")
            if fmt == "text":
                if not line.strip():
                    continue
                if _bad_text([line]):
                    yield Problem(number, "the line is not valid UTF-8")
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
