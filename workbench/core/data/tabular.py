"""Read a delimited text file (TSV, CSV, ...) into a memory-mapped Arrow dataset.

The file is streamed through the ``csv`` module and written to an Arrow IPC stream one record batch
at a time, then opened with ``datasets.Dataset.from_file``. Memory therefore stays flat whatever
the file size: at most one batch of rows exists as Python objects at any moment.
"""

from __future__ import annotations

import atexit
import codecs
import csv
import io
import re
import shutil
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import datasets
import pyarrow as pa
import pyarrow.compute as pc

from ..cancel import NEVER, CancelToken
from ..errors import InputError

LINE_COLUMN = "__line__"
BATCH_ROWS = 50_000
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
    args = dict(delimiter=delimiter, has_header=has_header, out_dir=out_dir, progress=progress, cancel=cancel)
    if encoding is not None:
        codec = _codec_for(encoding, p)
        try:
            return _read(p, codec, warnings=[], **args)
        except UnicodeDecodeError:
            raise InputError(
                f"is not valid {encoding} text (first bad byte on this line); "
                "choose another encoding or save the file as UTF-8",
                path=p, line=_first_bad_line(p, codec),
            ) from None
    try:
        return _read(p, "utf-8-sig", warnings=[], **args)
    except UnicodeDecodeError:
        # Spreadsheet exports on Windows are often latin-1/cp1252; every byte decodes in latin-1,
        # so the retry cannot fail, but accented letters may come out wrong - hence the warning.
        line = _first_bad_line(p, "utf-8-sig")
        warning = (
            f"{p}: line {line} is not valid UTF-8, so the file was read as latin-1; "
            "check accented characters, or save the file as UTF-8"
        )
        return _read(p, "latin-1", warnings=[warning], **args)


# ---------------------------------------------------------------------------- file checks


def _check_file(p: Path) -> Path:
    if not p.exists():
        raise InputError("file not found", path=p)
    if p.is_dir():
        raise InputError("is a folder, not a data file; choose a .tsv or .csv file", path=p)
    try:
        with open(p, "rb") as f:
            head = f.read(8192)
    except OSError as e:
        raise InputError(f"cannot be read: {e.strerror or e}", path=p) from None
    if not head:
        raise InputError("is empty", path=p)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise InputError("is saved as UTF-16 text; save it as UTF-8 instead", path=p)
    for magic, what in _MAGIC:
        if head.startswith(magic):
            raise InputError(f"is not a text table: it looks like {what}", path=p)
    if b"\x00" in head:
        line = head.count(b"\n", 0, head.index(b"\x00")) + 1
        raise InputError("looks like a binary file, not a text table (it contains NUL bytes)", path=p, line=line)
    return p


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
    width_guess = Counter(len(r) for r in data_records).most_common(1)[0][0] if data_records else None

    total = p.stat().st_size
    target = out_dir / f"{_safe_stem(p)}-{uuid.uuid4().hex[:12]}.arrow"
    malformed: list[RowProblem] = []
    problems: dict[int, str] = {}  # one shared message string per field count
    n_rows = multiline = 0
    first_multiline = 0
    last_start = last_end = 0
    writer = sink = None
    ok = False
    raw = open(p, "rb")
    try:
        text = io.TextIOWrapper(raw, encoding=codec, newline="")
        reader = csv.reader(text, delimiter=delimiter, quotechar='"', doublequote=True, strict=False)
        prev = 0  # reader.line_num after the previous record; a record starts on the next line
        start = 1
        try:
            header = None
            for record in reader:  # the first non-blank record fixes the columns
                start, prev = prev + 1, reader.line_num
                if not _is_blank(record):
                    break
            else:
                raise InputError("has only blank lines", path=p)
            if has_header:
                header, header_line = record, start
                width = len(header)
                pending: list[tuple[list[str], int, int]] = []
            else:
                width = width_guess or len(record)
                pending = [(record, start, prev)]
            columns = _column_names(header, width)
            schema = pa.schema([(c, pa.string()) for c in columns] + [(LINE_COLUMN, pa.int64())])
            sink = pa.OSFile(str(target), "wb")
            writer = pa.ipc.new_stream(sink, schema)

            rows: list[list[str]] = []
            lines: list[int] = []
            add_row, add_line = rows.append, lines.append

            def flush() -> None:
                cancel.raise_if_cancelled()
                writer.write_batch(_batch(rows, lines, width, schema))
                rows.clear()
                lines.clear()
                if progress is not None:
                    progress(raw.tell(), total)

            def records_with_lines():
                nonlocal start, prev
                yield from pending
                for rec in reader:
                    start, prev = prev + 1, reader.line_num
                    yield rec, start, prev

            for record, start_line, end_line in records_with_lines():
                if len(record) == width:
                    if not any(record):
                        continue  # a row of empty cells, e.g. ",," from a spreadsheet
                    add_row(record)
                    add_line(start_line)
                    if end_line != start_line:
                        multiline += 1
                        first_multiline = first_multiline or start_line
                    if len(rows) >= BATCH_ROWS:
                        n_rows += len(rows)
                        flush()
                elif _is_blank(record):
                    continue
                else:
                    n = len(record)
                    msg = problems.get(n) or problems.setdefault(n, f"expected {width} fields, found {n}")
                    malformed.append(RowProblem(start_line, msg))
                last_start, last_end = start_line, end_line
            n_rows += len(rows)
            flush()
        except csv.Error as e:
            if "field larger than field limit" in str(e):
                raise InputError(_unclosed_quote_message(), path=p, line=prev + 1) from None
            raise InputError(f"cannot be parsed as delimited text: {e}", path=p, line=reader.line_num) from None
        writer.close()
        writer = None
        sink.close()
        sink = None

        if last_end == reader.line_num and last_end > last_start and _ends_quoted(p, codec, delimiter, last_start):
            raise InputError(_unclosed_quote_message(), path=p, line=last_start)
        if n_rows == 0:
            if malformed:
                first = malformed[0]
                raise InputError(
                    f"none of its {len(malformed):,} rows can be used: {first.problem} "
                    f"(is the delimiter right? it was taken to be {DELIMITER_NAMES.get(delimiter, repr(delimiter))})",
                    path=p, line=first.line,
                )
            if header is not None:
                raise InputError("has a header but no data rows", path=p, line=header_line)
        if multiline:
            warnings.append(
                f"{p}: {multiline:,} rows span several lines because a quoted field contains a line break "
                f"(first at line {first_multiline}); if that is unexpected, look for a stray double quote there"
            )
        dataset = datasets.Dataset.from_file(str(target))
        ok = True
    finally:
        if writer is not None:
            writer.close()
        if sink is not None:
            sink.close()
        raw.close()
        if not ok:
            target.unlink(missing_ok=True)
    fmt = TableFormat(delimiter, bool(has_header), _encoding_label(codec), bom=codec == "utf-8-sig" and _has_bom(p))
    return Table(p, dataset, columns, fmt, malformed, warnings, cache_dir=out_dir)


def _batch(rows: list[list[str]], lines: list[int], width: int, schema: pa.Schema) -> pa.RecordBatch:
    columns = list(zip(*rows)) if rows else [()] * width
    # csv already ends records at CR LF; a '\r' can only survive at a cell's end from odd line
    # endings, and it is never meant as content.
    arrays = [pc.utf8_rtrim(pa.array(c, type=pa.string()), characters="\r") for c in columns]
    arrays.append(pa.array(lines, type=pa.int64()))
    return pa.record_batch(arrays, schema=schema)


def _unclosed_quote_message() -> str:
    return (
        "a double quote opened on this line is never closed, so the field swallows the rest of the file "
        f"(or is longer than {csv.field_size_limit():,} characters); close the quote or remove it"
    )


def _ends_quoted(p: Path, codec: str, delimiter: str, start: int) -> bool:
    """Whether the file, read from line ``start`` on, ends inside a quoted field.

    The csv module, when not strict, silently ends an unclosed quote at end of file; this replays
    its state machine on the last record (only when that record spans lines, which is rare).
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
    ok = False
    try:
        with pa.OSFile(str(target), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            for batch in batches:
                if isinstance(batch, pa.Table):
                    writer.write_table(batch)
                else:
                    writer.write_batch(batch)
        dataset = datasets.Dataset.from_file(str(target))
        ok = True
        return dataset
    finally:
        if not ok:
            target.unlink(missing_ok=True)


def dataset_dir(dataset: datasets.Dataset) -> Path:
    """The folder of a dataset's backing file, where derived files belong; a fresh temp dir otherwise."""
    files = dataset.cache_files
    return Path(files[0]["filename"]).parent if files else _cache_dir(None)


def arrow_table(dataset: datasets.Dataset, columns: list[str] | None = None, limit: int | None = None) -> pa.Table:
    """The dataset's rows as one pyarrow Table, in dataset order (memory-mapped where possible).

    ``Dataset.select`` only records an indices mapping, and datasets resolves a mapped slice row by
    row (one Arrow chunk per row), which makes every later compute kernel crawl; one ``take`` over
    the whole indices column is orders of magnitude faster.
    """
    table = dataset.data.table
    if columns is not None:
        table = table.select(columns)
    indices = getattr(dataset, "_indices", None)
    if indices is None:
        return table.slice(0, limit) if limit is not None else table
    idx = indices.column(0)
    if limit is not None:
        idx = idx.slice(0, limit)
    return table.take(idx)


def iter_batches(dataset: datasets.Dataset, columns: list[str], batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """The dataset's ``columns`` in dataset order, ``batch_rows`` at a time, without materialising the whole.

    Selected datasets gather one slice of their indices at a time, so memory stays at one batch.
    """
    table = dataset.data.table.select(columns)
    indices = getattr(dataset, "_indices", None)
    if indices is None:
        yield from table.to_batches(max_chunksize=batch_rows)
        return
    idx = indices.column(0)
    for start in range(0, len(idx), batch_rows):
        piece = table.take(idx.slice(start, batch_rows)).combine_chunks()
        yield from piece.to_batches()
