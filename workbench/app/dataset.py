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
from ..core.tasks.table import DEFAULT_TASK, TASKS

DATA_SUFFIXES = (".tsv", ".csv", ".tab", ".txt", ".jsonl", ".json")  # JSON: text generation's conversations
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
    task: str = DEFAULT_TASK  # the task the data looks like (workbench.core.tasks.detect_task)
    task_title: str = TASKS[DEFAULT_TASK].heading
    # Whether the Data page's column choice applies (the task's ``data_view_column_choice``); other
    # tasks' data is read and checked by the task's own code (``_other_task``), as the engine will.
    checked_here: bool = True
    unit: str = "rows"  # what a preview row is: "rows", "sentences"
    description: str = ""  # the task's one line about the file, when it is not a plain table
    counts_title: str = "Classes"
    delimiter: str | None = None  # the delimiter the user chose on the Data page (None: sniffed)
    # Multi-label: the DataConfig label settings the user chose on the Data page (label_columns,
    # label_separator, ...; empty: detected), and what the task resolved them to (config.json's "resolved").
    data_options: dict[str, Any] = field(default_factory=dict)
    resolved: dict[str, Any] = field(default_factory=dict)

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
            kind = " (it holds folders, but not of images sorted into class folders)" if sub else ""
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
    delimiter: str | None = None,
    data_options: dict[str, Any] | None = None,
) -> LoadedData:
    """Read ``path`` (a file, or a folder with train/dev/test files) and check it for training;
    ``delimiter``: the fields' separator as the user chose it (None: sniffed); ``data_options``: other
    DataConfig settings chosen for it (a multi-label file's label columns and separator)."""
    from ..core.config import DataConfig
    from ..core.data import read_table
    from ..core.data.tabular import LINE_COLUMN, arrow_table
    from ..core.tasks import detect_task

    say = phase or (lambda _: None)
    train, val, test, notes = resolve_data_path(path)
    task = detect_task(train, DataConfig(**data_options) if data_options else None)
    say("Reading")
    if not task.data_view_column_choice:
        return _other_task(train, val, test, notes, task, progress, cancel, delimiter, data_options)
    table = read_table(train, delimiter=delimiter, progress=progress, cancel=cancel)
    preview = arrow_table(table.dataset, [*table.columns, LINE_COLUMN])
    loaded = LoadedData(train.resolve(), val, test, table, preview, None, None, None, notes=notes + table.warnings,
                        delimiter=delimiter)
    return with_columns(loaded, text_column, label_column, phase=say, cancel=cancel)


def _other_task(train: Path, val, test, notes: list[str], task, progress, cancel, delimiter=None,
                data_options=None) -> LoadedData:
    """Data of a task without the Data page's column choice, read and checked by that task's own code
    (the engine's): CoNLL sentences with their tags, or the columns of a pair or score file, and the
    task's validation report (tag-scheme breaks with their lines, tag counts, bad scores)."""
    import tempfile

    from ..core.config import DataConfig
    from ..core.events import Callbacks, Progress

    class _Reading(Callbacks):
        def on_event(self, event) -> None:
            if progress and isinstance(event, Progress) and event.phase == "reading":
                progress(event.done, max(event.total, 1))

    reader = task()
    cfg = DataConfig(train=str(train), val=val, test=test, val_fraction=0.0, test_fraction=0.0, skip_bad_rows=True,
                     delimiter=delimiter, **(data_options or {}))
    with tempfile.TemporaryDirectory(prefix="workbench-preview-") as tmp:
        try:
            prepared, problem = reader.prepare_data(cfg, 0, Path(tmp), _Reading(), cancel), None
        except InputError as e:
            prepared, problem = None, e
        # The preview comes from what the task read (in memory); only a file it could not read at
        # all has none.
        shown = reader.data_preview()
    if shown is None:
        raise problem or RuntimeError(f"{task.name} set no data preview")
    table = shown.table if shown.table is not None else shown  # both have the columns, rows and malformed rows
    kind = dict(task=task.name, task_title=task.title, checked_here=False, unit=shown.unit,
                description=shown.description, counts_title=shown.counts_title, delimiter=delimiter,
                data_options=dict(data_options or {}))
    if problem is not None:
        return LoadedData(train.resolve(), val, test, table, shown.rows, None, None, None, problem=str(problem),
                          notes=notes, **kind)
    report = prepared.report
    if shown.malformed:
        report.findings.insert(0, _malformed_finding(train, shown.malformed, shown.unit))
    summary = f"Detected task: {task.title}: {shown.description or f'{shown.n_rows:,} {shown.unit}'}."
    extra = reader.describe_data(prepared)
    summary += f" {extra}" if extra else ""
    notes = [*notes, *prepared.resolved.get("warnings", []), summary]
    return LoadedData(train.resolve(), val, test, table, shown.rows, None, None, report, notes=notes,
                      resolved=dict(prepared.resolved), **kind)


def _malformed_finding(path: Path, malformed: list, unit: str):
    from ..core.data.validation import Finding

    first = malformed[0]
    what = "malformed row(s)" if unit == "rows" else f"{unit} with malformed lines"
    return Finding("error", "malformed", f"{path}: {len(malformed):,} {what} (line {first.line}: {first.problem}); "
                   "they stop training unless Skip malformed rows is ticked", [m.line for m in malformed[:20]],
                   len(malformed), str(path), "train")


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
