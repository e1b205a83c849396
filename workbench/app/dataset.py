"""Load a dropped file or folder for the Data page: read, choose columns, validate. Qt-free.

This runs on an executor thread; it only calls ``workbench.core.data`` (the same functions the
engine uses when it trains), so what the preview shows is what training will read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from ..core.cancel import NEVER, CancelToken
from ..core.errors import InputError

DATA_SUFFIXES = (".tsv", ".csv", ".tab", ".txt")
_ROLE_PATTERNS = {
    "train": re.compile(r"^(train|training)([._-]|$)", re.I),
    "val": re.compile(r"^(dev|val|valid|validation)([._-]|$)", re.I),
    "test": re.compile(r"^(test|testing|eval)([._-]|$)", re.I),
}


@dataclass
class LoadedData:
    path: Path  # the training file
    val_path: str | None
    test_path: str | None
    table: Any  # workbench.core.data.Table
    preview: Any  # pyarrow.Table: the file's columns plus "__line__", in file order
    choice: Any | None  # ColumnChoice, or None when no usable choice exists (see problem)
    labeled: Any | None  # datasets.Dataset (row, text, label) for the choice
    report: Any | None  # ValidationReport of the training file
    problem: str | None = None  # why the file cannot be trained on as it is (shown on the page)
    notes: list[str] = field(default_factory=list)  # how a folder was read, encoding warnings
    task: str = "text-classification"  # the task the data looks like (workbench.core.tasks.detect_task)
    task_title: str = "Text classification"

    @property
    def checked_here(self) -> bool:
        """Whether the Data page ran the task's checks (text classification); other tasks' data is
        checked by the engine when a run starts."""
        return self.task == "text-classification"

    @property
    def usable(self) -> bool:
        if not self.checked_here:
            return self.problem is None
        return self.choice is not None and self.problem is None and (self.report is None or self.report.ok)

    @property
    def class_counts(self) -> dict[str, int]:
        if self.report is None:
            return {}
        return dict(self.report.class_counts.get("train", {}))

    @property
    def n_rows(self) -> int:
        return self.table.n_rows


def resolve_data_path(path: str | Path) -> tuple[Path, str | None, str | None, list[str]]:
    """(train file, validation file, test file, notes) for a dropped file or folder."""
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError("file not found", path=p)
    if not p.is_dir():
        return p, None, None, []
    files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in DATA_SUFFIXES)
    roles: dict[str, Path] = {}
    for role, pattern in _ROLE_PATTERNS.items():
        for f in files:
            if pattern.match(f.name) and role not in roles:
                roles[role] = f
    if "train" not in roles:
        if len(files) == 1:
            return files[0], None, None, [f"Read {files[0].name}, the only data file in {p}."]
        if not files:
            sub = [d.name for d in p.iterdir() if d.is_dir()]
            kind = " (it holds folders: image folders are not a supported task yet)" if sub else ""
            raise InputError(f"is a folder without a .tsv or .csv file{kind}; drop a data file instead", path=p)
        names = ", ".join(f.name for f in files[:6])
        raise InputError(f"holds several data files ({names}) and none is named train.*; drop the training file itself",
                         path=p)
    notes = [f"Folder {p.name}: training data from {roles['train'].name}"
             + "".join(f", {what} from {roles[r].name}" for r, what in (("val", "validation"), ("test", "test"))
                       if r in roles)]
    return roles["train"], _s(roles.get("val")), _s(roles.get("test")), notes


def _s(p: Path | None) -> str | None:
    return str(p) if p is not None else None


def load_data(
    path: str | Path,
    *,
    progress: Callable[[int, int], None] | None = None,
    phase: Callable[[str], None] | None = None,
    cancel: CancelToken = NEVER,
    text_column: str | None = None,
    label_column: str | None = None,
) -> LoadedData:
    """Read ``path`` (a file, or a folder with train/dev/test files) and check it for training."""
    from ..core.data import read_table
    from ..core.data.tabular import LINE_COLUMN, arrow_table

    from ..core.tasks import detect_task

    say = phase or (lambda _: None)
    train, val, test, notes = resolve_data_path(path)
    task = detect_task(train)
    say("Reading")
    if task.name != "text-classification":
        return _other_task(train, val, test, notes, task, progress, cancel)
    table = read_table(train, progress=progress, cancel=cancel)
    preview = arrow_table(table.dataset, [*table.columns, LINE_COLUMN])
    loaded = LoadedData(train.resolve(), val, test, table, preview, None, None, None, notes=notes + table.warnings)
    return with_columns(loaded, text_column, label_column, phase=say, cancel=cancel)


class _LinesTable:
    """What the pages read of a Table, for files shown line by line (CoNLL and the like)."""

    class format:  # noqa: N801 - mirrors TableFormat
        delimiter = None
        has_header = None
        encoding = "utf-8"
        delimiter_name = "no"

    def __init__(self, path: Path, columns: list[str], n_rows: int) -> None:
        self.path, self.columns, self.n_rows = path, columns, n_rows
        self.malformed: list = []
        self.warnings: list = []


PREVIEW_LINES = 100_000


def _other_task(train: Path, val, test, notes: list[str], task, progress, cancel) -> LoadedData:
    """Data of a task other than text classification: a line-by-line preview; the engine checks it."""
    import pyarrow as pa

    from ..core.data.tabular import LINE_COLUMN

    lines, numbers = [], []
    total = max(train.stat().st_size, 1)
    with open(train, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if number % 10_000 == 0:
                cancel.raise_if_cancelled()
                if progress:
                    progress(f.buffer.tell() if hasattr(f, "buffer") else 0, total)
            if len(lines) < PREVIEW_LINES:
                lines.append(line.rstrip("\r\n"))
                numbers.append(number)
    preview = pa.table({"line": pa.array(lines, pa.string()), LINE_COLUMN: pa.array(numbers, pa.int64())})
    note = (f"Detected task: {task.title}. Its checks run when training starts; the preview shows the file's "
            f"first {len(lines):,} lines as they are.")
    return LoadedData(train.resolve(), val, test, _LinesTable(train, ["line"], len(lines)), preview, None, None, None,
                      notes=[*notes, note], task=task.name, task_title=task.title)


def with_columns(
    loaded: LoadedData,
    text_column: str | None,
    label_column: str | None,
    *,
    phase: Callable[[str], None] | None = None,
    cancel: CancelToken = NEVER,
) -> LoadedData:
    """``loaded`` with the column choice (``None``: guessed) applied and the data validated again."""
    from ..core.data import build_labeled, choose_columns, validate_classification

    say = phase or (lambda _: None)
    table = loaded.table
    say("Choosing columns")
    try:
        choice = choose_columns(table, text_column, label_column)
    except InputError as e:
        return replace(loaded, choice=None, labeled=None, report=None, problem=e.problem)
    cancel.raise_if_cancelled()
    say("Checking rows")
    try:
        labeled = build_labeled(table, choice, cancel=cancel)
    except InputError as e:
        return replace(loaded, choice=choice, labeled=None, report=None, problem=e.problem)
    report = validate_classification({"train": (labeled, table.path, table.malformed)}, cancel=cancel)
    return replace(loaded, choice=choice, labeled=labeled, report=report, problem=None)
