"""The Export page's "Predict" section: label a whole file or folder of images with the run's model,
or, for a text-generation model, answer a file of prompts (JSON Lines, JSON or one prompt a line).

A file or folder is dropped on the section (or chosen with its buttons); the prediction runs in the
background (``Jobs``, the same ``predict_file`` as `workbench predict`) with progress and Cancel, and
writes a TSV beside the input, never over an existing file unless the user confirms. The first rows
of the result are shown in a table; skipped rows are listed by line or path. A generation model's
answers go to JSON Lines (``predict_generation_file``, as `workbench predict` writes them).
"""

from __future__ import annotations

import csv
from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Signal, Slot
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QFileDialog,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ...core.events import Callbacks, Progress
from ..jobs import Jobs, describe
from ..widgets.build import button, text_label
from ..wording import in_app_words

PREVIEW_ROWS = 200
FREE_NAME_TRIES = 100
PROMPT_FILES = "Prompts (*.jsonl *.json *.txt);;All files (*)"
DATA_FILES = "Data (*.tsv *.csv *.txt *.conll *.conllu *.iob *.tab);;All files (*)"


def free_output(source: Path, generation: bool = False) -> Path:
    """The default output beside ``source`` (a generation model's: JSON Lines), or the first ``NAME-2``,
    ``NAME-3``... that does not exist."""
    if generation:
        from ...core.predict.generation import default_generation_output

        first, suffix = default_generation_output(source), ".jsonl"
    else:
        from ...core.predict.batch import default_output  # lazily: it imports the data readers (datasets, ~1.4 s)

        first, suffix = default_output(source), ".tsv"
    if not first.exists():
        return first
    for k in range(2, FREE_NAME_TRIES):
        candidate = first.with_name(first.name.replace(f".predictions{suffix}", f".predictions-{k}{suffix}"))
        if not candidate.exists():
            return candidate
    return first


def _is_generation(model_dir: Path | None) -> bool:
    from ...core.predict.generation import is_generation_export

    return model_dir is not None and is_generation_export(model_dir)


def _generation_job(state, model_dir: str, source: str, output: str, overwrite: bool):
    """On a worker thread: a generation model answers the prompts of ``source`` (GenerationSummary)."""
    from ...core.errors import InputError
    from ...core.predict.generation import PHASE, GenerationPredictor, predict_generation_file

    if Path(source).is_dir():
        raise InputError("is a folder; a text-generation model answers a file of prompts: JSON Lines (.jsonl) with "
                         "'messages', 'prompt' or 'instruction', or a text file with one prompt a line", path=source)

    class Relay(Callbacks):
        def on_event(self, event) -> None:
            if isinstance(event, Progress) and event.phase == PHASE and event.total:
                state.progress((event.done, event.total, "prompts"))

    state.progress((0, 0, "prompts"))
    predictor = GenerationPredictor(model_dir)
    return predict_generation_file(predictor, source, output, overwrite=overwrite, callbacks=Relay(), cancel=state.token)


def _predict_job(state, model_dir: str, source: str, output: str, overwrite: bool):
    """On a worker thread: the summary and the skipped rows, as ``(summary, problems)``."""
    from ...core.predict.batch import PHASE, predict_file
    from ...core.predict.predictor import Predictor

    if _is_generation(Path(model_dir)):
        return _generation_job(state, model_dir, source, output, overwrite)
    images = Path(source).is_dir()

    class Relay(Callbacks):
        def on_event(self, event) -> None:
            if isinstance(event, Progress) and event.phase == PHASE and event.total:
                # Images are counted one by one; a file's progress is how far it has been read, in bytes.
                state.progress((event.done, event.total, images))

    state.progress((0, 0, images))
    predictor = Predictor(model_dir)
    return predict_file(predictor, source, output, overwrite=overwrite, callbacks=Relay(), cancel=state.token)


class DropZone(QLabel):
    dropped = Signal(str)
    TEXT = "Drop a file (TSV, CSV, CoNLL, text) or a folder of images here"
    PROMPTS = "Drop a file of prompts here: JSON Lines (messages, prompt or instruction), or text with one prompt a line"

    def __init__(self) -> None:
        super().__init__(self.TEXT)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setMinimumHeight(48)
        self.setWordWrap(True)
        self.setAcceptDrops(True)
        self.setProperty("ownsFileDrops", True)  # the main window leaves drops here to this widget

    def dragEnterEvent(self, event) -> None:  # noqa: N802 - Qt API
        if self.isEnabled() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dragMoveEvent(self, event) -> None:  # noqa: N802 - Qt API
        self.dragEnterEvent(event)

    def dropEvent(self, event) -> None:  # noqa: N802 - Qt API
        urls = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if urls:
            event.acceptProposedAction()
            self.dropped.emit(urls[0])


class PredictPanel(QGroupBox):
    finished = Signal(object)  # the PredictSummary
    failed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Predict a file or a folder with this model", parent)
        self.model_dir: Path | None = None
        self.generation = False  # the model answers prompts (a text-generation export)
        self.source: Path | None = None
        self.summary = None
        self.jobs = Jobs(self)

        self.drop_zone = DropZone()
        self.drop_zone.dropped.connect(self.set_source)
        self.choose_file = QPushButton("Choose File…")
        self.choose_file.clicked.connect(self._choose_file)
        self.choose_folder = QPushButton("Choose Folder…")
        self.choose_folder.clicked.connect(self._choose_folder)
        self.output = QLineEdit()
        self.output.setPlaceholderText("where the predictions are written (a .tsv file)")
        self.run_button = QPushButton("Predict")
        self.run_button.clicked.connect(self._run_clicked)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setVisible(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setVisible(False)
        self.status = text_label()
        self.open_button = button("Open File", self._open_output, visible=False)
        self.table = QTableWidget()
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)  # the "line" (or "path") column says where each row came from
        self.table.setVisible(False)
        self.table.setMinimumHeight(140)

        top = QHBoxLayout()
        top.addWidget(self.drop_zone, 1)
        buttons = QVBoxLayout()
        buttons.addWidget(self.choose_file)
        buttons.addWidget(self.choose_folder)
        top.addLayout(buttons)
        out_row = QHBoxLayout()
        out_row.addWidget(QLabel("Save to:"))
        out_row.addWidget(self.output, 1)
        out_row.addWidget(self.run_button)
        out_row.addWidget(self.cancel_button)
        status_row = QHBoxLayout()
        status_row.addWidget(self.status, 1)
        status_row.addWidget(self.open_button, 0, Qt.AlignmentFlag.AlignTop)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addLayout(out_row)
        lay.addWidget(self.progress)
        lay.addLayout(status_row)
        lay.addWidget(self.table, 1)
        self.set_model(None)

    # ---- public ---------------------------------------------------------------------------------
    def set_model(self, model_dir: str | Path | None) -> None:
        self.jobs.cancel()
        self.model_dir = Path(model_dir) if model_dir else None
        generation = _is_generation(self.model_dir)
        if generation != self.generation:  # another kind of input: the one chosen for the last model goes
            self.generation = generation
            self.source = None
            self.output.clear()
            self.drop_zone.setText(DropZone.PROMPTS if generation else DropZone.TEXT)
            self.setTitle("Answer a file of prompts with this model" if generation
                          else "Predict a file or a folder with this model")
            self.output.setPlaceholderText("where the answers are written (a .jsonl file)" if generation
                                           else "where the predictions are written (a .tsv file)")
        self._busy(False)
        for w in (self.drop_zone, self.choose_file, self.choose_folder):
            w.setEnabled(self.model_dir is not None)
        self.choose_folder.setVisible(not generation)
        self.run_button.setEnabled(self.model_dir is not None and self.source is not None)

    def set_source(self, path: str | Path) -> None:
        self.source = Path(path)
        self.drop_zone.setText(f"<b>{_html(self.source.name)}</b>{'/' if self.source.is_dir() else ''}<br>"
                               f"<small>{_html(str(self.source.parent))}</small>")
        self.output.setText(str(free_output(self.source, self.generation)))
        self.run_button.setEnabled(self.model_dir is not None)
        self._set_status("")

    def start(self, overwrite: bool = False) -> bool:
        """Start predicting the chosen input into the chosen output; False (with the reason shown) if not."""
        if self.model_dir is None or self.source is None:
            self._fail("Choose a file or a folder of images to predict first.")
            return False
        output = self.output.text().strip()
        if not output:
            self._fail("Choose where to save the predictions.")
            return False
        self._busy(True)
        self.table.setVisible(False)
        self.open_button.setVisible(False)
        self._set_status(f"Predicting {self.source.name} …")
        self.jobs.submit(_predict_job, str(self.model_dir), str(self.source), output, overwrite, state=True,
                         on_done=self._on_done, on_error=self._on_error, on_progress=self._on_progress)
        return True

    @Slot()
    def cancel(self) -> None:
        if self.jobs.busy:
            self.jobs.cancel()  # the job stops at its next chunk and leaves no file behind
            self._busy(False)
            self._set_status("Cancelled; nothing was written.")

    def shutdown(self) -> None:
        self.jobs.shutdown(10000)

    # ---- slots ----------------------------------------------------------------------------------
    @Slot()
    def _run_clicked(self) -> None:
        out = Path(self.output.text().strip()).expanduser()
        overwrite = False
        if out.is_file():
            answer = QMessageBox.question(self, "Replace file?", f"{out} already exists.\n\nReplace it with the predictions?")
            if answer != QMessageBox.StandardButton.Yes:
                return
            overwrite = True
        self.start(overwrite)

    @Slot()
    def _choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Predict a file", str(self._start_dir()),
                                              PROMPT_FILES if self.generation else DATA_FILES)
        if path:
            self.set_source(path)

    @Slot()
    def _choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Predict a folder of images", str(self._start_dir()))
        if path:
            self.set_source(path)

    def _start_dir(self) -> Path:
        return self.source.parent if self.source is not None else Path.home()

    def _on_progress(self, value: tuple[int, int, bool | str]) -> None:
        """Images: "12 of 40 images", prompts: "12 of 40 prompts answered"; a file: the share read so far
        (its bytes are no count of rows)."""
        done, total, images = value
        if images and total:
            self.progress.setRange(0, total)
            self.progress.setValue(done)
            self.progress.setFormat(f"{done:,} of {total:,} prompts answered" if images == "prompts"
                                    else f"{done:,} of {total:,} images")
        else:
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(1000 * done / total) if total else 0)
            self.progress.setFormat("%p% of the file read")

    def _on_done(self, summary) -> None:
        self.summary = summary
        self._busy(False)
        skipped = ""
        if summary.skipped:
            listed = "; ".join(f"{_where(p['where'])}: {p['problem']}" for p in summary.problems[:5])
            more = f" and {summary.skipped - 5} more" if summary.skipped > 5 else ""
            skipped = f"<br><span style='color:#b9770e'>{summary.skipped:,} skipped: {_html(listed)}{more}</span>"
        rate = summary.rows / max(summary.seconds, 1e-9)
        if self.generation:
            self._set_status(f"{summary.rows:,} answers saved to <b>{_html(summary.output)}</b> ({rate:,.1f} prompts/s "
                             f"on {_html(summary.device)}){skipped}")
        else:
            self._set_status(f"{summary.rows:,} predictions saved to <b>{_html(summary.output)}</b> "
                             f"({rate:,.0f}/s, {summary.backend} {summary.precision}){skipped}")
        self.open_button.setVisible(True)
        self._show_preview(Path(summary.output))
        self.finished.emit(summary)

    def _on_error(self, error: Exception) -> None:
        self._busy(False)
        self._fail(f"Prediction failed: {in_app_words(describe(error))}")

    @Slot()
    def _open_output(self) -> None:
        if self.summary is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(self.summary.output))

    # ---- helpers --------------------------------------------------------------------------------
    def _show_preview(self, path: Path) -> None:
        if self.generation:
            header, rows = _answers_preview(path)
        else:
            with open(path, encoding="utf-8", newline="") as f:
                reader = csv.reader(f, delimiter="\t")
                header = next(reader, [])
                rows = [r for _, r in zip(range(PREVIEW_ROWS), reader)]
        self.table.clear()
        self.table.setColumnCount(len(header))
        self.table.setHorizontalHeaderLabels(header)
        self.table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            for j, cell in enumerate(row):
                self.table.setItem(i, j, QTableWidgetItem(cell))
        self.table.resizeColumnsToContents()
        for j in range(len(header)):
            self.table.setColumnWidth(j, min(self.table.columnWidth(j), 420))
        self.table.setVisible(True)

    def _busy(self, busy: bool) -> None:
        self.progress.setVisible(busy)
        self.progress.setValue(0)
        self.cancel_button.setVisible(busy)
        self.run_button.setVisible(not busy)
        for w in (self.drop_zone, self.choose_file, self.choose_folder, self.output):
            w.setEnabled(not busy and self.model_dir is not None)

    def _set_status(self, text: str) -> None:
        self.status.setText(text)

    def _fail(self, message: str) -> None:
        self._set_status(f"<span style='color:#d64541'>{_html(message)}</span>")
        self.failed.emit(message)


def _answers_preview(path: Path) -> tuple[list[str], list[list[str]]]:
    """The first answers of a generation output (JSON Lines): each prompt (its last user turn), the
    answer, and the reference where the input held one."""
    import json

    from ...core.predict.generation import record_messages

    records = []
    with open(path, encoding="utf-8") as f:
        for _, line in zip(range(PREVIEW_ROWS), f):
            records.append(json.loads(line))
    rows = []
    for record in records:
        try:
            _, messages, _ = record_messages({k: v for k, v in record.items() if k not in ("output", "reference")})
            prompt = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
        except ValueError:
            prompt = ""
        rows.append([" ".join(prompt.split()), " ".join(str(record.get("output", "")).split()),
                     " ".join(str(record.get("reference") or "").split())])
    header = ["prompt", "output", "reference"]
    if not any(r[2] for r in rows):
        header, rows = header[:2], [r[:2] for r in rows]
    return header, rows


def _where(where) -> str:
    return f"line {where}" if isinstance(where, int) else Path(str(where)).name


def _html(text: str) -> str:
    import html

    return html.escape(text)
