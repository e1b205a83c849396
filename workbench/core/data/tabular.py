"""Read a delimited text file (TSV, CSV, ...) into a memory-mapped Arrow dataset.

The file is streamed through the ``csv`` module and written to an Arrow IPC stream one record batch
at a time, then opened with ``datasets.Dataset.from_file``. Memory therefore stays flat whatever
the file size: at most one batch of rows exists as Python objects at any moment.
"""

from __future__ import annotations

import atexit
import codecs
import csv
import functools
import io
import itertools
import json
import re
import shutil
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets.table import MemoryMappedTable

from ..cancel import NEVER, CancelToken
from ..errors import InputError
from ..paths import check_data_path

LINE_COLUMN = "__line__"
BATCH_ROWS = 50_000  # rows per Arrow record batch, and per progress report / cancel check
CHUNK_ROWS = 10_000  # rows held as Python lists before they become Arrow arrays (bounds memory)
SAMPLE_BYTES = 256 * 1024  # enough for ~50 records even with long texts
SNIFF_RECORDS = 50
HEADER_RECORDS = 200
DELIMITERS = ("\t", ",", ";", "|")  # order breaks ties: tab first, it rarely occurs inside text
DELIMITER_NAMES = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe"}
_DELIMITER_ALIASES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
_EXTENSION_PRIOR = {".tsv": "\t", ".tab": "\t", ".csv": ","}

# Names that, found in the first row, say that row is a header.
HEADER_NAMES = frozenset(
    """text texts sentence sentences sentence1 sentence2 text_a text_b label labels class classes
    category categories target targets review reviews content document body tweet comment message
    question answer query passage context premise hypothesis title abstract summary description
    utterance input output sentiment topic intent tag tags id idx index y x score rating stars
    gold_label class_label label_id""".split()
)

# Formats people drop onto the app by mistake; found by their first bytes.
_MAGIC = (
    (b"PK\x03\x04", "a ZIP archive (an Excel .xlsx workbook is one); save the sheet as CSV or TSV"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Microsoft Office file (.xls); save the sheet as CSV or TSV"),
    (b"%PDF", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive; unpack it first"),
    (b"BZh", "a bzip2 archive; unpack it first"),
    (b"\xfd7zXZ\x00", "an xz archive; unpack it first"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive; unpack it first"),
    (b"PAR1", "a Parquet file, not delimited text"),
    (b"ARROW1", "an Arrow file, not delimited text"),
    (b"SQLite format 3\x00", "an SQLite database"),
)


@dataclass(frozen=True)
class TableFormat:
    delimiter: str  # '\t', ',', ';', '|'
    has_header: bool
    encoding: str  # 'utf-8' (BOM or not) or 'latin-1' (or a codec the caller named)
    bom: bool = False  # the file started with a UTF-8 byte-order mark (Excel writes one)

    @property
    def delimiter_name(self) -> str:
        return DELIMITER_NAMES.get(self.delimiter, repr(self.delimiter))


@dataclass(frozen=True, slots=True)
class RowProblem:
    line: int  # 1-based physical line where the row starts
    problem: str  # e.g. "expected 2 fields, found 3"


@dataclass
class Table:
    path: Path
    dataset: datasets.Dataset  # one string column per file column + int64 "__line__"
    columns: list[str]
    format: TableFormat
    malformed: list[RowProblem] = field(default_factory=list)  # ragged rows, not in dataset
    warnings: list[str] = field(default_factory=list)
    cache_dir: Path | None = None  # holds the .arrow file; derived datasets are written here too

    @property
    def n_rows(self) -> int:
        return len(self.dataset)


def read_table(
    path: str | Path,
    *,
    delimiter: str | None = None,
    has_header: bool | None = None,
    encoding: str | None = None,
    cache_dir: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: CancelToken = NEVER,
) -> Table:
    """Read ``path`` into a :class:`Table`; ``None`` options are detected from the file."""
    cancel.raise_if_cancelled()
    p = _check_file(Path(path))
    if delimiter is not None:
        delimiter = _normalize_delimiter(delimiter, p)
    out_dir = _cache_dir(cache_dir)
    read = functools.partial(_read, delimiter=delimiter, has_header=has_header, out_dir=out_dir,
                             progress=progress, cancel=cancel)
    if encoding is not None:
        codec = _codec_for(encoding, p)
        try:
            return read(p, codec, warnings=[])
        except UnicodeDecodeError:
            raise InputError(
                f"is not valid {encoding} text (first bad byte on this line); "
                "choose another encoding or save the file as UTF-8",
                path=p, line=_first_bad_line(p, codec),
            ) from None
    try:
        return read(p, "utf-8-sig", warnings=[])
    except UnicodeDecodeError:
        # Spreadsheet exports on Windows are often latin-1/cp1252; every byte decodes in latin-1,
        # so the retry cannot fail, but accented letters may come out wrong - hence the warning.
        line = _first_bad_line(p, "utf-8-sig")
        warning = (
            f"{p}: line {line} is not valid UTF-8, so the file was read as latin-1; "
            "check accented characters, or save the file as UTF-8"
        )
        return read(p, "latin-1", warnings=[warning])


# ---------------------------------------------------------------------------- file checks


def sniff_non_table(head: bytes) -> str | None:
    """What a file is when its first bytes say it is not delimited text (an archive, JSON, ...)."""
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    text = head.lstrip(codecs.BOM_UTF8).lstrip()
    if text[:1] in (b"{", b"["):
        first = text.split(b"\n", 1)[0].strip()
        try:
            json.loads(first)
            return "JSON Lines (one JSON object per line); convert it to a TSV or CSV file with a text and a label column"
        except ValueError:
            pass
        if re.match(rb'[\[{]\s*(\{|\[|"[^"\n]*"\s*:|\Z)', text):
            return "a JSON document; convert it to a TSV or CSV file with a text and a label column"
    if re.match(rb"<(\?xml|!doctype html|html)", text[:20].lower()):
        return "an XML or HTML document"
    return None


def _check_file(p: Path) -> Path:
    check_data_path(p)
    try:
        with open(p, "rb") as f:
            head = f.read(8192)
    except OSError as e:
        raise InputError(f"cannot be read: {e.strerror or e}", path=p) from None
    if not head:
        raise InputError("is empty", path=p)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise InputError("is saved as UTF-16 text; save it as UTF-8 instead", path=p)
    what = sniff_non_table(head)
    if what is not None:
        raise InputError(f"is not a text table: it looks like {what}", path=p)
    if b"\x00" in head:
        raise InputError(NUL_MESSAGE, path=p, line=head.count(b"\n", 0, head.index(b"\x00")) + 1)
    return p


NUL_MESSAGE = ("contains a NUL byte on this line: binary data or UTF-16 text, not a text table (save it as UTF-8 "
               "text, or remove the line)")


def _normalize_delimiter(delimiter: str, p: Path) -> str:
    d = _DELIMITER_ALIASES.get(delimiter.lower(), delimiter)
    if len(d) != 1 or d in "\r\n\"":
        raise InputError(f"the delimiter must be one character such as tab or comma, not {delimiter!r}", path=p)
    return d


def _codec_for(encoding: str, p: Path) -> str:
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise InputError(f"unknown text encoding {encoding!r}", path=p) from None
    return "utf-8-sig" if name in ("utf-8", "utf-8-sig") else name  # accept a BOM either way


def _encoding_label(codec: str) -> str:
    return {"utf-8-sig": "utf-8", "iso8859-1": "latin-1", "latin-1": "latin-1"}.get(codec, codec)


def _first_bad_line(p: Path, codec: str) -> int:
    """Line of the first byte ``codec`` rejects. Only runs after a decode error, so speed is secondary."""
    decoder = codecs.getincrementaldecoder(codec)()
    with open(p, "rb") as f:
        for number, raw in enumerate(f, 1):  # '\n' never occurs inside a UTF-8 multi-byte char
            try:
                decoder.decode(raw)
            except UnicodeDecodeError:
                return number
    return number


def _cache_dir(cache_dir: str | Path | None) -> Path:
    if cache_dir is not None:
        d = Path(cache_dir)
        d.mkdir(parents=True, exist_ok=True)
        return d
    d = Path(tempfile.mkdtemp(prefix="workbench-data-"))
    # The dataset memory-maps files in here for as long as the process uses it, so the folder
    # can only go when the process ends.
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    return d


# ---------------------------------------------------------------------------- sniffing


def _read_sample(p: Path, codec: str) -> tuple[str, bool]:
    """The first SAMPLE_BYTES decoded, and whether that is the whole file."""
    with open(p, "rb") as f:
        data = f.read(SAMPLE_BYTES + 1)
    complete = len(data) <= SAMPLE_BYTES
    text = codecs.getincrementaldecoder(codec)().decode(data[:SAMPLE_BYTES], final=complete)
    return text, complete


def _sample_records(text: str, complete: bool, delimiter: str, limit: int) -> list[list[str]]:
    """Up to ``limit`` non-blank records of the sample; a record cut off by the sample's end is dropped."""
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, quotechar='"', doublequote=True, strict=False)
    records: list[list[str]] = []
    try:
        for record in reader:
            if _is_blank(record):
                continue
            records.append(record)
            if len(records) > limit:
                return records[:limit]  # a record followed them, so all of these are whole
    except csv.Error:
        return records  # an over-long field or similar: what parsed before it is whole
    if not complete and records:
        records.pop()  # ran into the end of the sample, not of the file
    return records


def _is_blank(record: list[str]) -> bool:
    return not record or not "".join(record).strip()


def sniff_delimiter(text: str, complete: bool, suffix: str = "") -> str:
    """The delimiter that splits the sample's records into the most consistent number of fields.

    The file extension is a prior: .tsv/.csv win whenever their delimiter is consistent enough.
    """
    stats: dict[str, tuple[int, float]] = {}
    for d in DELIMITERS:
        counts = [len(r) for r in _sample_records(text, complete, d, SNIFF_RECORDS)]
        if counts:
            mode, freq = Counter(counts).most_common(1)[0]
            stats[d] = (mode, freq / len(counts))
    prior = _EXTENSION_PRIOR.get(suffix.lower())
    if prior in stats and stats[prior][0] > 1 and stats[prior][1] >= 0.9:
        return prior
    splitting = [(stats[d][1], -i, d) for i, d in enumerate(DELIMITERS) if d in stats and stats[d][0] > 1]
    if not splitting:
        return prior or "\t"  # one column whichever way we split
    return max(splitting)[2]


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\Z")


def _is_number(s: str) -> bool:
    return bool(_NUMBER.match(s.strip()))


def _norm_name(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().strip("\"'").lower())


def detect_header(records: list[list[str]]) -> bool:
    """Whether the first record is a header, judged against the records after it."""
    if not records:
        return False
    first = records[0]
    rest = [r for r in records[1:] if len(r) == len(first)]
    strong_yes = strong_no = weak_yes = False
    for j, cell in enumerate(first):
        name = cell.strip()
        values = [r[j].strip() for r in rest]
        seen = set(values)
        filled = [v for v in values if v]
        if filled and all(_is_number(v) for v in filled):
            if _is_number(name):
                strong_no = True  # a number atop a numeric column is data, not a column name
            elif name:
                strong_yes = True
        elif _norm_name(name) in HEADER_NAMES and name not in seen:
            strong_yes = True
        elif len(values) >= 4 and name and name not in seen and len(seen) <= max(2, len(values) // 4):
            weak_yes = True  # a label-like column whose first value never recurs
    if strong_no:
        return False
    if strong_yes:
        return True
    if not weak_yes:
        return False
    # A lone unseen label could be a rare class; accept it only if the first row's texts are also
    # much shorter than the texts below them, as column names are.
    for j, cell in enumerate(first):
        lengths = [len(r[j]) for r in rest]
        mean = sum(lengths) / len(lengths) if lengths else 0
        if mean >= 12 and len(cell) >= mean / 2:
            return False
    return True


def _column_names(header: list[str] | None, width: int) -> list[str]:
    names: list[str] = []
    taken = {LINE_COLUMN}
    for i in range(width):
        base = (header[i].strip() if header else "") or f"column_{i + 1}"
        name, k = base, 2
        while name in taken:  # keep names unique: they become dataset column names
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        names.append(name)
    return names


# ---------------------------------------------------------------------------- reading


def _read(
    p: Path,
    codec: str,
    *,
    delimiter: str | None,
    has_header: bool | None,
    out_dir: Path,
    progress: Callable[[int, int], None] | None,
    cancel: CancelToken,
    warnings: list[str],
) -> Table:
    sample, complete = _read_sample(p, codec)
    delimiter = delimiter or sniff_delimiter(sample, complete, p.suffix)
    records = _sample_records(sample, complete, delimiter, HEADER_RECORDS)
    if has_header is None:
        has_header = detect_header(records)
    data_records = records[1:] if has_header else records
    # Without a header, the usual field count of the sample (not of a possibly ragged first row).
    width = Counter(len(r) for r in data_records).most_common(1)[0][0] if data_records else None
    fmt = TableFormat(delimiter, has_header, _encoding_label(codec), bom=codec == "utf-8-sig" and _has_bom(p))

    target = out_dir / f"{_safe_stem(p)}-{uuid.uuid4().hex[:12]}.arrow"
    try:
        scan = _scan(p, codec, fmt, width, target, progress, cancel)
        _refuse_unusable(p, codec, fmt, scan)
        dataset = datasets.Dataset.from_file(str(target))
    except BaseException:
        target.unlink(missing_ok=True)  # a failed, cancelled or restarted read leaves nothing behind
        raise
    if scan.multiline:
        warnings.append(
            f"{p}: {scan.multiline:,} rows span several lines because a quoted field contains a line break "
            f"(first at line {scan.first_multiline}); if that is unexpected, look for a stray double quote there"
        )
    return Table(p, dataset, scan.columns, fmt, scan.malformed, warnings, cache_dir=out_dir)


@dataclass
class _Scan:
    """What one pass over the file found, besides the rows it wrote."""

    columns: list[str]
    header_line: int | None
    n_rows: int = 0
    malformed: list[RowProblem] = field(default_factory=list)
    multiline: int = 0  # rows with a line break inside a quoted field
    first_multiline: int = 0
    last_start: int = 0  # physical lines of the last non-blank record
    last_end: int = 0
    total_lines: int = 0


class _Records:
    """csv records with the physical lines each spans; csv itself only counts the lines read so far."""

    def __init__(self, reader) -> None:
        self.reader = reader
        self.end = 0  # last line of the latest record: the next one starts on the line after

    def __iter__(self):
        reader = self.reader
        for record in reader:
            start, self.end = self.end + 1, reader.line_num
            yield record, start, self.end


def _scan(p: Path, codec: str, fmt: TableFormat, width_guess: int | None, target: Path,
          progress: Callable[[int, int], None] | None, cancel: CancelToken) -> _Scan:
    """Stream the file through csv into an Arrow stream file at ``target``."""
    total = p.stat().st_size
    chunk_rows = min(CHUNK_ROWS, BATCH_ROWS)
    with open(p, "rb") as raw, io.TextIOWrapper(raw, encoding=codec, newline="") as text:
        reader = csv.reader(text, delimiter=fmt.delimiter, quotechar='"', doublequote=True, strict=False)
        records = _Records(reader)
        numbered = iter(records)
        try:
            for record, start, end in numbered:  # the first non-blank record fixes the columns
                if not _is_blank(record):
                    break
            else:
                raise InputError("has only blank lines", path=p)
            if fmt.has_header:
                header, width, pending = record, len(record), []
            else:
                header, width, pending = None, width_guess or len(record), [(record, start, end)]
            scan = _Scan(_column_names(header, width), start if header else None)

            def after_batch() -> None:
                cancel.raise_if_cancelled()
                if progress is not None:
                    progress(raw.tell(), total)

            with _BatchWriter(target, scan.columns, after_batch) as out:
                rows, lines = out.rows, out.lines
                problems: dict[int, str] = {}  # one message string per field count, shared by its rows
                for record, start, end in itertools.chain(pending, numbered):
                    if len(record) == width:
                        if not any(record):
                            continue  # a row of empty cells, e.g. ",," from a spreadsheet
                        rows.append(record)
                        lines.append(start)
                        if end != start:
                            scan.multiline += 1
                            scan.first_multiline = scan.first_multiline or start
                        if len(rows) >= chunk_rows:
                            scan.n_rows += len(rows)
                            out.convert()
                    elif _is_blank(record):
                        continue
                    else:
                        n = len(record)
                        problem = problems.setdefault(n, f"expected {width} fields, found {n}")
                        scan.malformed.append(RowProblem(start, problem))
                    scan.last_start, scan.last_end = start, end
                scan.n_rows += len(rows)
        except _NulFound as e:
            raise InputError(NUL_MESSAGE, path=p, line=e.line) from None
        except csv.Error as e:
            if "field larger than field limit" in str(e):
                line = records.end + 1
                if _has_quote(p, codec, line):
                    raise InputError(_unclosed_quote_message(), path=p, line=line) from None
                raise InputError(f"holds a field of more than {csv.field_size_limit():,} characters on this line, "
                                 f"with no {fmt.delimiter_name} or line break in it: this does not look like a table "
                                 "of texts and labels (one text per row, the label in its own column)",
                                 path=p, line=line) from None
            raise InputError(f"cannot be parsed as delimited text: {e}", path=p, line=reader.line_num) from None
        scan.total_lines = reader.line_num
    return scan


class _NulFound(Exception):
    def __init__(self, line: int) -> None:
        self.line = line


class _BatchWriter:
    """Collects rows and writes them to an Arrow IPC stream file in record batches of BATCH_ROWS.

    The caller appends to ``rows``/``lines`` and calls :meth:`convert` every CHUNK_ROWS rows, which
    turns them into Arrow arrays: Python objects cost ~300 bytes a row, Arrow about a third.
    """

    def __init__(self, target: Path, columns: list[str], after_batch: Callable[[], None]) -> None:
        self.schema = pa.schema([(c, pa.string()) for c in columns] + [(LINE_COLUMN, pa.int64())])
        self.after_batch = after_batch
        self.rows: list[list[str]] = []
        self.lines: list[int] = []
        self.chunks: list[pa.RecordBatch] = []
        self.pending = 0  # rows in chunks, not yet written
        self.sink = pa.OSFile(str(target), "wb")
        self.writer = pa.ipc.new_stream(self.sink, self.schema)

    def convert(self) -> None:
        if self.rows:
            # csv already ends records at CR LF; a '\r' can only survive at a cell's end from odd
            # line endings, and it is never meant as content.
            arrays = [pc.utf8_rtrim(pa.array(c, type=pa.string()), characters="\r") for c in zip(*self.rows)]
            for a in arrays:  # the sniffed head was free of NUL bytes; the rest of the file must be too
                nul = pc.match_substring(a, "\x00")
                if pc.any(nul).as_py():
                    raise _NulFound(self.lines[int(np.flatnonzero(nul.to_numpy(zero_copy_only=False))[0])])
            arrays.append(pa.array(self.lines, type=pa.int64()))
            self.chunks.append(pa.record_batch(arrays, schema=self.schema))
            self.pending += len(self.rows)
            self.rows.clear()
            self.lines.clear()
        if self.pending >= BATCH_ROWS:
            self.write()

    def write(self) -> None:
        """Write the converted rows as one record batch, then report (cancel check, progress)."""
        if self.chunks:
            table = pa.Table.from_batches(self.chunks, schema=self.schema).combine_chunks()
            for batch in table.to_batches():  # one batch after combine_chunks
                self.writer.write_batch(batch)
            self.chunks.clear()
            self.pending = 0
        self.after_batch()

    def __enter__(self) -> "_BatchWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.convert()
                self.write()  # the last, partial batch; also the final progress report
        finally:
            self.writer.close()
            self.sink.close()


def _refuse_unusable(p: Path, codec: str, fmt: TableFormat, scan: _Scan) -> None:
    """Raise for a file that parsed but cannot be what the user meant."""
    # The last record reaching the end of the file with a line break inside, or broken, may be an
    # unclosed quote that csv (when not strict) silently closed at the end of the file.
    last_broken = bool(scan.malformed) and scan.malformed[-1].line == scan.last_start
    if scan.last_end == scan.total_lines and (scan.last_end > scan.last_start or last_broken) \
            and _ends_quoted(p, codec, fmt.delimiter, scan.last_start):
        raise InputError(_unclosed_quote_message(), path=p, line=scan.last_start)
    if scan.n_rows:
        return
    if scan.malformed:
        first = scan.malformed[0]
        raise InputError(
            f"none of its {len(scan.malformed):,} rows can be used: {first.problem} "
            f"(is the delimiter right? it was taken to be {fmt.delimiter_name})",
            path=p, line=first.line,
        )
    if scan.header_line is not None:
        raise InputError("has a header but no data rows", path=p, line=scan.header_line)
    raise InputError("has no data rows", path=p)


def _unclosed_quote_message() -> str:
    return (
        "a double quote opened on this line is never closed, so the field swallows the rest of the file "
        f"(or is longer than {csv.field_size_limit():,} characters); close the quote or remove it"
    )


def _ends_quoted(p: Path, codec: str, delimiter: str, start: int) -> bool:
    """Whether the file, read from line ``start`` on, ends inside a quoted field.

    The csv module, when not strict, silently ends an unclosed quote at end of file; this replays
    its state machine on the last record. It only runs when that record spans lines or is ragged,
    and csv's field size limit bounds its length, so a Python loop is fast enough.
    """
    with open(p, encoding=codec, newline="") as f:
        for number, line in enumerate(f, 1):
            if number == start:
                break
        tail = io.StringIO()
        tail.write(line)
        shutil.copyfileobj(f, tail)
    state = "start"
    for ch in tail.getvalue():
        if state == "quoted":
            if ch == '"':
                state = "quote_in_quoted"
        elif state == "start":
            state = "quoted" if ch == '"' else "start" if ch == delimiter or ch in "\r\n" else "field"
        elif state == "field":
            if ch == delimiter or ch in "\r\n":
                state = "start"
        else:  # just after a quote inside a quoted field
            state = "quoted" if ch == '"' else "start" if ch == delimiter or ch in "\r\n" else "field"
    return state == "quoted"


def _has_quote(p: Path, codec: str, line: int) -> bool:
    """Whether a double quote occurs in the field-size limit's worth of text from ``line`` on."""
    limit = csv.field_size_limit()
    with open(p, encoding=codec, newline="") as f:
        for number, text in enumerate(f, 1):
            if number == line:
                return '"' in text[:limit + 1] if len(text) > limit else '"' in text + f.read(limit)
    return False


def _has_bom(p: Path) -> bool:
    with open(p, "rb") as f:
        return f.read(3) == codecs.BOM_UTF8


def _safe_stem(p: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", p.stem)[:40] or "table"


def write_arrow_dataset(batches: Iterable[pa.RecordBatch | pa.Table], schema: pa.Schema, directory: Path,
                        stem: str = "data") -> datasets.Dataset:
    """Write ``batches`` to a new Arrow stream file in ``directory`` and memory-map it as a Dataset."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{_safe_stem(Path(stem))}-{uuid.uuid4().hex[:12]}.arrow"
    try:
        with pa.OSFile(str(target), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            for batch in batches:
                if isinstance(batch, pa.Table):
                    writer.write_table(batch)
                else:
                    writer.write_batch(batch)
        return datasets.Dataset.from_file(str(target))
    except BaseException:
        target.unlink(missing_ok=True)  # e.g. cancelled half way: leave no partial file behind
        raise


def dataset_dir(dataset: datasets.Dataset) -> Path:
    """The folder of a dataset's backing file, where derived files belong; a fresh temp dir otherwise."""
    files = dataset.cache_files
    return Path(files[0]["filename"]).parent if files else _cache_dir(None)


def arrow_table(dataset: datasets.Dataset, columns: list[str] | None = None, limit: int | None = None) -> pa.Table:
    """The dataset's rows as one pyarrow Table, in dataset order (memory-mapped where possible).

    ``Dataset.select`` only records an indices mapping, and datasets resolves a mapped slice row by
    row (one Arrow chunk per row), which makes every later compute kernel crawl; gathering through
    :func:`_take` is orders of magnitude faster.
    """
    table = dataset.data.table
    if columns is not None:
        table = table.select(columns)
    indices = getattr(dataset, "_indices", None)
    if indices is None:
        return table.slice(0, limit) if limit is not None else table
    idx = indices.column(0).to_numpy().astype(np.int64)
    return _take(table, idx[:limit] if limit is not None else idx)


def iter_batches(dataset: datasets.Dataset, columns: list[str], batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """The dataset's ``columns`` in dataset order, ``batch_rows`` at a time, without materialising the whole.

    Selected datasets gather one slice of their indices at a time, so memory stays at one batch.
    """
    table = dataset.data.table.select(columns)
    indices = getattr(dataset, "_indices", None)
    if indices is None:
        yield from table.to_batches(max_chunksize=batch_rows)
        return
    idx = indices.column(0).to_numpy().astype(np.int64)
    batches = table.to_batches()
    for start in range(0, len(idx), batch_rows):
        yield from _take(table, idx[start:start + batch_rows], batches).to_batches()


def _take(table: pa.Table, idx: np.ndarray, batches: list[pa.RecordBatch] | None = None) -> pa.Table:
    """Rows ``idx`` of ``table`` as one combined chunk.

    ``Table.take`` first concatenates every chunk of a string column, copying the whole column on
    each call; taking from each record batch separately copies only the rows asked for.
    """
    batches = table.to_batches() if batches is None else batches
    if not batches or len(idx) == 0:
        return table.slice(0, 0)
    offsets = np.cumsum([0] + [b.num_rows for b in batches])
    order = np.argsort(idx, kind="stable")
    ordered = idx[order]
    bounds = np.searchsorted(ordered, offsets)  # ordered[bounds[b]:bounds[b+1]] fall in batch b
    parts = [batches[b].take(pa.array(ordered[bounds[b]:bounds[b + 1]] - offsets[b]))
             for b in range(len(batches)) if bounds[b + 1] > bounds[b]]
    gathered = pa.Table.from_batches(parts, schema=table.schema).combine_chunks()
    if np.any(order[1:] < order[:-1]):  # asked for out of file order: put the rows back in that order
        gathered = gathered.take(pa.array(np.argsort(order, kind="stable")))
    return gathered


def scan_batches(dataset: datasets.Dataset, columns: list[str], *, file_order: bool = False) -> Iterator[pa.RecordBatch]:
    """The dataset's ``columns``, batch by batch, for a full pass over it.

    A dataset that is a plain view of one Arrow file is read with ordinary sequential reads rather
    than through its memory map: mapped pages stay resident once touched and count towards the
    process's RSS, so one pass through the map adds the whole file to it, while read buffers are
    freed batch by batch. With ``file_order`` a dataset that selects rows yields them (each as
    often as it is selected) in file order instead of dataset order, which lets it be read this
    way too. Anything else goes through :func:`iter_batches`.
    """
    path = _plain_arrow_file(dataset)
    indices = getattr(dataset, "_indices", None)
    if path is None or (indices is not None and not file_order):
        yield from iter_batches(dataset, columns)
        return
    counts = None
    if indices is not None:
        counts = np.bincount(indices.column(0).to_numpy().astype(np.int64), minlength=dataset.data.num_rows)
    start = 0
    with pa.OSFile(path) as f:
        for batch in pa.ipc.open_stream(f):
            n = batch.num_rows
            batch = batch.select(columns)
            if counts is not None:
                rows = np.repeat(np.arange(n), counts[start:start + n])
                start += n
                if not len(rows):
                    continue
                batch = batch.take(pa.array(rows))
            yield batch


def _plain_arrow_file(dataset: datasets.Dataset) -> str | None:
    """The Arrow file whose rows are exactly the dataset's table (before any selection), if there is one."""
    data = dataset.data
    if not isinstance(data, MemoryMappedTable):
        return None
    if any(replay[0] != "replace_schema_metadata" for replay in data.replays):
        return None  # sliced, renamed, cast...: the file no longer matches the table
    return data.path
