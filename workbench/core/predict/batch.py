"""Batch prediction of a file or a folder into a TSV, streaming.

Rows are read ``CHUNK_ROWS`` at a time, predicted and written before the next chunk is read, so
memory stays flat whatever the input's size. The output is written beside its target under a
temporary name and moved into place at the end: an interrupted or failed job leaves no half-written
file, and an existing file is only replaced when the caller says so. Bad rows and broken images are
reported (``on_problem``) and skipped; the job goes on.

Output columns: ``line`` (or ``path`` for images), the input (``text`` and ``text_pair``, or
``tokens``), then ``label``, ``score`` and ``p_<label>`` per class (classification), ``score``
(regression), ``tags`` (tagging; tokens and tags separated by spaces), or ``labels`` and ``p_<label>``
per label (multi-label: the decided labels joined by the export's ``label_separator``, an empty cell
for none; each label's sigmoid score).
"""

from __future__ import annotations

import csv
import stat
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..atomic import move_into_place, remove, temp_beside
from ..cancel import NEVER, CancelToken
from ..errors import InputError, write_failure
from ..events import Callbacks, Progress, Warning_
from ..paths import check_data_path, check_output_path
from .inputs import (
    Item,
    Problem,
    count_images,
    image_files,
    is_image_list,
    listed_images,
    read_sentences,
    read_table_rows,
    table_layout,
    tagged_format,
)
from .predictor import Predictor

CHUNK_ROWS = 1024  # rows (sentences, images) held at once: bounds memory, and batches sort by length within it
MAX_REPORTED = 1000  # problems kept in the summary; all of them are passed to on_problem
PHASE = "predicting"


@dataclass
class PredictSummary:
    input: str
    output: str
    task: str
    backend: str
    model_file: str
    precision: str = "fp32"  # the PyTorch backend's autocast (Predictor._precision)
    precision_reason: str = ""  # why: the report's precision, or bf16 checked at export, or asked for
    rows: int = 0  # predicted and written
    skipped: int = 0  # bad rows or images, reported and left out
    seconds: float = 0.0
    problems: list[dict[str, Any]] = field(default_factory=list)  # the first MAX_REPORTED: {"where", "problem"}
    text_column: str | None = None  # a table's column read as the text (header name, or column_N)
    text_pair_column: str | None = None  # and the second text's, for pairs
    text_column_reason: str | None = None  # trained on it, --text-column, or the only column
    encoding: str | None = None  # how a text file was decoded: utf-8, or latin-1 as train falls back
    warnings: list[str] = field(default_factory=list)  # said once each (Warning_ events): encoding, column
    label_separator: str | None = None  # multi-label: what joins the decided labels in the ``labels`` column

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rows_per_second"] = round(self.rows / self.seconds, 1) if self.seconds else None
        d["seconds"] = round(self.seconds, 3)
        d.pop("problems")
        return d


def default_output(source: str | Path) -> Path:
    """Beside the input: ``reviews.tsv`` -> ``reviews.predictions.tsv``; a folder ``photos`` ->
    ``photos.predictions.tsv`` next to it (not inside, where it is no image and no business)."""
    p = Path(source).expanduser().resolve()
    stem = p.name if p.is_dir() else p.stem
    return p.parent / f"{stem}.predictions.tsv"


def check_output(output: str | Path, source: str | Path, overwrite: bool, model_dir: str | Path | None = None) -> Path:
    """Where the predictions may go (``paths.check_output_path``, as for label-issues and corrected
    copies): never the input or inside it, never inside the model folder being read, an existing file
    only with ``overwrite``, in a folder that exists and can be written."""
    return check_output_path(output, [("the input", source), ("the model folder", model_dir)], what="the predictions",
                             overwrite=overwrite)


def _columns(p: Predictor, source_kind: str) -> list[str]:
    if source_kind == "images":
        head = ["path"]
    elif p.kind == "tags":
        head = ["line", "tokens"]
    else:
        head = ["line", "text"] + (["text_pair"] if p.pairs else [])
    if p.kind == "classes":
        return head + ["label", "score"] + [f"p_{name}" for name in p.labels]
    if p.kind == "values":
        return head + ["score"]
    if p.kind == "labels":
        return head + ["labels"] + [f"p_{name}" for name in p.labels]
    return head + ["tags"]


def _cell(text: str) -> str:
    # Bytes that were not UTF-8 never reach here (those rows are skipped); a lone surrogate would.
    return text.encode("utf-8", errors="replace").decode("utf-8")


class _Source:
    """Items of the input and how far through it the reading is."""

    def __init__(self, p: Predictor, source: Path, fmt: str, text_column: str | None, pair_column: str | None) -> None:
        self.position = [0]
        self.layout = None
        self.items: Iterator[Item | Problem]
        check_data_path(source, folder_ok=p.modality == "image")  # missing, a pipe, a folder for a text model
        self.listed = p.modality == "image" and is_image_list(source)  # a table of image paths
        if self.listed:
            self.kind, self.total = "images", source.stat().st_size
            self.layout = table_layout(source, p.inputs, text_column, None)
            self.items = listed_images(source, self.layout, self.position)
        elif p.modality == "image":
            self.kind, self.total = "images", count_images(source)
            if not self.total:
                raise InputError("holds no images (searched recursively; hidden folders are left out)"
                                 if source.is_dir() else "is not an image file", path=source)
            self.items = (_image_item(f) for f in image_files(source))
        elif p.kind == "tags":
            self.kind, self.total = "sentences", source.stat().st_size
            self.items = read_sentences(source, tagged_format(source, fmt), self.position)
        else:
            self.kind, self.total = "rows", source.stat().st_size
            self.layout = table_layout(source, p.inputs, text_column, pair_column)
            self.items = read_table_rows(source, self.layout, self.position)

    def done(self, items_done: int) -> int:
        return items_done if self.kind == "images" and not self.listed else self.position[0]


def _image_item(path: Path) -> Item | Problem:
    try:
        regular = stat.S_ISREG(path.stat().st_mode)
    except OSError as e:  # a dangling symbolic link, a file gone since the scan
        return Problem(str(path), f"cannot be read: {e.strerror or e}")
    # A named pipe or a device with an image's name would block the job or never end.
    return Item(str(path), path) if regular else Problem(str(path), "is not a regular file (a pipe, socket or device)")


def predict_file(predictor: Predictor, source: str | Path, output: str | Path | None = None, *,
                 overwrite: bool = False, batch_size: int = 32, fmt: str = "auto", text_column: str | None = None,
                 pair_column: str | None = None, callbacks: Callbacks | None = None, cancel: CancelToken = NEVER,
                 on_problem: Callable[[Problem], None] | None = None, chunk_rows: int = CHUNK_ROWS) -> PredictSummary:
    """Predict every row (sentence, image) of ``source`` into the TSV ``output`` (default: beside the input).
    Everything is checked before the first prediction: the input (it exists and can be read as the
    model's kind of input), the output (``check_output``)."""
    callbacks = callbacks or Callbacks()
    src = Path(source).expanduser().resolve()
    check_data_path(src, folder_ok=True)  # named before the output is: a missing input is the first thing to say
    out = check_output(output or default_output(src), src, overwrite, predictor.folder)
    reader = _Source(predictor, src, fmt, text_column, pair_column)
    summary = PredictSummary(str(src), str(out), predictor.task, predictor.backend, predictor.model_file,
                             predictor.precision, predictor.precision_reason)
    if predictor.kind == "labels":
        summary.label_separator = predictor.label_separator
    if reader.layout is not None:
        layout = reader.layout
        summary.text_column, summary.text_pair_column = layout.text_name, layout.pair_name
        summary.text_column_reason = layout.text_reason
        summary.encoding = "latin-1" if layout.encoding == "latin-1" else "utf-8"
        for message in layout.warnings:
            summary.warnings.append(message)
            callbacks.on_event(Warning_(message))
    start = time.perf_counter()
    tmp = temp_beside(out)
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, delimiter="\t", lineterminator="\n")
            writer.writerow(_columns(predictor, reader.kind))
            chunk: list[Item] = []
            seen = 0

            def flush() -> None:
                nonlocal chunk
                if chunk:
                    _write_chunk(predictor, chunk, writer, batch_size, summary, on_problem)
                    chunk = []
                callbacks.on_event(Progress(PHASE, min(reader.done(seen), reader.total), reader.total))

            for entry in reader.items:
                cancel.raise_if_cancelled()
                seen += 1
                if isinstance(entry, Problem):
                    _report(entry, summary, on_problem)
                    continue
                chunk.append(entry)
                if len(chunk) >= chunk_rows:
                    flush()
            flush()
        if summary.rows == 0 and summary.skipped:
            raise InputError(f"no row could be predicted: all {summary.skipped:,} were bad (first: "
                             f"{summary.problems[0]['where']}: {summary.problems[0]['problem']})", path=src)
        if summary.rows == 0:  # an empty predictions file would say "done" about nothing
            header = reader.layout is not None and reader.layout.has_header
            raise InputError(f"has {'a header but ' if header else ''}no {reader.kind} to predict", path=src)
        cancel.raise_if_cancelled()
        move_into_place(tmp, out)
    except BaseException as e:
        remove(tmp)
        failure = write_failure(e, out, permission_too=True)
        if failure is not None:
            raise failure from e
        raise
    summary.seconds = time.perf_counter() - start
    return summary


def _report(problem: Problem, summary: PredictSummary, on_problem) -> None:
    summary.skipped += 1
    if len(summary.problems) < MAX_REPORTED:
        summary.problems.append({"where": problem.where, "problem": problem.message})
    if on_problem is not None:
        on_problem(problem)


def _write_chunk(p: Predictor, chunk: list[Item], writer, batch_size: int, summary: PredictSummary, on_problem) -> None:
    if p.modality == "image":
        from ..data.images import ImageProblem

        good, pixels = [], []
        for item in chunk:
            try:
                pixels.append(p.pixels(item.value))
                good.append(item)
            except ImageProblem as e:
                _report(Problem(item.where, str(e)), summary, on_problem)
        chunk = good
        if not chunk:
            return
        answers = p.answers(p.image_logits(np.stack(pixels), batch_size))
        heads = [[item.where] for item in chunk]
    elif p.kind == "tags":
        tagged = p.tag([item.value for item in chunk], batch_size)
        for item, tags in zip(chunk, tagged):
            writer.writerow([item.where, _cell(" ".join(item.value)), " ".join(t for t, _ in tags)])
        summary.rows += len(chunk)
        return
    else:
        if p.pairs:
            texts, pairs = [item.value[0] for item in chunk], [item.value[1] for item in chunk]
            heads = [[item.where, _cell(a), _cell(b)] for item, a, b in zip(chunk, texts, pairs)]
        else:
            texts, pairs = [item.value for item in chunk], None
            heads = [[item.where, _cell(t)] for item, t in zip(chunk, texts)]
        answers = p.answers(p.text_logits(texts, pairs, batch_size))
    for head, a in zip(heads, answers):
        if p.kind == "values":
            writer.writerow(head + [f"{a['score']:.6g}"])
        elif p.kind == "labels":
            writer.writerow(head + [p.label_separator.join(a["labels"])] + [f"{a['scores'][n]:.6f}" for n in p.labels])
        else:
            writer.writerow(head + [a["label"], f"{a['score']:.6f}"] + [f"{a['probabilities'][n]:.6f}" for n in p.labels])
    summary.rows += len(chunk)
