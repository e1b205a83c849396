"""The Data page's "Suspicious labels" view: rows whose label is probably wrong, most suspicious
first, each with the label the out-of-sample model suggests; the user keeps, excludes or relabels
them and saves a corrected copy, which becomes the training file (the original is never changed).

The ranking (``workbench.core.analysis.label_issues``) runs on a worker thread through ``Jobs``, with
progress and a Cancel button.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ...core.events import Callbacks, PhaseChanged, Progress
from ...core.tasks.table import modality_of
from ..jobs import Jobs, describe
from ..widgets.build import items_table

MAX_SHOWN = 2000  # rows in the table; the TSV from the CLI holds them all
THUMBS = 300  # image rows that get a thumbnail
KEEP, EXCLUDE = "Keep", "Exclude"
NO_LABELS = "(no labels)"  # an empty label set (multi-label rows), in a cell
COLUMNS = ("Line", "Text", "Given", "Suggested", "Score", "Action")


class _Forward(Callbacks):
    """Engine events -> the job's progress channel (a few per phase, not one per batch)."""

    def __init__(self, job) -> None:
        self.job = job
        self.last = -1

    def on_event(self, event) -> None:
        self.job.raise_if_cancelled()
        if isinstance(event, PhaseChanged):
            self.job.progress((event.phase, 0, 0))
        elif isinstance(event, Progress):
            step = int(20 * event.done / max(1, event.total))
            if step != self.last:
                self.last = step
                self.job.progress((event.phase, event.done, event.total))


def _of_images(result) -> bool:
    """Whether the ranked rows are images (their text is a path; an image shows a thumbnail)."""
    return modality_of(result.task) == "image"


def _in_folders(result) -> bool:
    """Whether the ranked rows are images in class folders (numbered in the scan; the copy a folder of
    links), not the rows of a table of image paths and label sets (file lines; the copy a table)."""
    return _of_images(result) and not getattr(result, "multilabel", False)


def _find(job, data, model, task, data_config):
    from ...core.analysis.label_issues import find_label_issues

    result = find_label_issues(data, model, task, data_config=data_config, callbacks=_Forward(job), cancel=job.token)
    thumbs = {}
    if _of_images(result):
        from .thumbnails import thumbnail_image

        for r in result.ranked()[:THUMBS]:
            try:
                thumbs[r.line] = thumbnail_image(r.text, 48)
            except Exception:  # an unreadable image keeps its path as text
                pass
    return result, thumbs


class LabelIssuesView(QWidget):
    jump_to_line = Signal(int)  # a text row's file line
    show_image = Signal(str, str)  # an image's path and its class
    corrected = Signal(str)  # the corrected copy written: the app trains on it next

    def __init__(self, state, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.jobs = Jobs(self)
        self.result = None
        self._thumbs: dict = {}

        self.find_button = QPushButton("Find suspicious labels")
        self.find_button.setToolTip("Score every training row by 5-fold cross-validation of a logistic regression on "
                                    "the backbone's frozen features, ranked with cleanlab (confident learning)")
        self.find_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.hide()
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(260)
        self.progress.hide()
        self.flagged_only = QCheckBox("Flagged rows only")
        self.flagged_only.setChecked(True)
        self.flagged_only.setToolTip("Only the rows cleanlab counts as label issues; otherwise every row, ranked")
        self.flagged_only.toggled.connect(self._fill)
        self.summary = QLabel("Find the training rows whose label is probably wrong.")
        self.summary.setWordWrap(True)
        top = QHBoxLayout()
        top.addWidget(self.find_button)
        top.addWidget(self.cancel_button)
        top.addWidget(self.progress)
        top.addWidget(self.flagged_only)
        top.addStretch(1)

        self.table = items_table(COLUMNS, QAbstractItemView.SelectionMode.SingleSelection)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.cellDoubleClicked.connect(lambda row, _col: self.go_to(row))

        self.save_button = QPushButton("Save corrected copy…")
        self.save_button.setToolTip("Write a copy of the training file without the excluded rows and with the new "
                                    "labels, and train on it; the original file is never changed")
        self.save_button.clicked.connect(self.save_copy)
        self.save_button.setEnabled(False)
        self.exclude_all = QPushButton("Exclude all shown")
        self.exclude_all.clicked.connect(lambda: self._set_all(EXCLUDE))
        self.relabel_all = QPushButton("Relabel all shown as suggested")
        self.relabel_all.clicked.connect(lambda: self._set_all("suggested"))
        self.decisions_note = QLabel()
        bottom = QHBoxLayout()
        bottom.addWidget(self.exclude_all)
        bottom.addWidget(self.relabel_all)
        bottom.addWidget(self.decisions_note, 1)
        bottom.addWidget(self.save_button)

        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.summary)
        lay.addWidget(self.table, 1)
        lay.addLayout(bottom)
        self._set_busy(False)

    # ---- running ------------------------------------------------------------------------------------
    def start(self) -> None:
        import dataclasses

        cfg = self.state.config
        if not cfg.data.train:
            self.summary.setText("Open a data file first.")
            return
        dc = dataclasses.replace(cfg.data)
        self._set_busy(True)
        self.summary.setText("Reading the data…")
        self.jobs.submit(_find, cfg.data.train, cfg.model.name, cfg.task, dc, state=True, on_done=self._on_done,
                         on_error=self._on_error, on_progress=self._on_progress)

    def cancel(self) -> None:
        self.jobs.cancel()
        self._set_busy(False)
        self.summary.setText("Cancelled.")

    def _set_busy(self, busy: bool) -> None:
        self.find_button.setEnabled(not busy)
        self.cancel_button.setVisible(busy)
        self.progress.setVisible(busy)
        self.progress.setRange(0, 0)
        have = self.result is not None and not busy
        for w in (self.save_button, self.exclude_all, self.relabel_all):
            w.setEnabled(have)

    def _on_progress(self, value) -> None:
        phase, done, total = value
        self.summary.setText(f"{phase.replace('_', ' ').capitalize()}…")
        if total:
            self.progress.setRange(0, total)
            self.progress.setValue(done)
        else:
            self.progress.setRange(0, 0)

    def _on_error(self, error: Exception) -> None:
        self._set_busy(False)
        self.summary.setText(f"⚠ {describe(error)}")

    def _on_done(self, answer) -> None:
        self.result, self._thumbs = answer
        self._set_busy(False)
        r = self.result
        self.summary.setText(f"{r.n_flagged:,} of {len(r.rows):,} rows look mislabelled ({r.folds}-fold out-of-sample "
                             f"accuracy {r.cv_accuracy:.1%}, {r.seconds:.0f} s). Lower score = more suspicious. "
                             "Double-click a row to see it in the file.")
        self._fill()

    # ---- the table ----------------------------------------------------------------------------------
    def shown_rows(self) -> list:
        if self.result is None:
            return []
        return self.result.ranked(flagged_only=self.flagged_only.isChecked())[:MAX_SHOWN]

    def _fill(self) -> None:
        from ...core.escaping import one_line

        rows = self.shown_rows()
        image = self.result is not None and _of_images(self.result)
        self.table.setRowCount(0)
        self.table.setRowCount(len(rows))
        self.table.setHorizontalHeaderItem(0, QTableWidgetItem("Image" if _in_folders(self.result) else "Line"))
        if image:
            self.table.verticalHeader().setDefaultSectionSize(52)
        for i, r in enumerate(rows):
            line = QTableWidgetItem(str(r.line))
            line.setData(Qt.ItemDataRole.UserRole, r.line)
            line.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            text = QTableWidgetItem(Path(r.text).name if image else one_line(r.text))
            text.setToolTip(r.text)
            if image and r.line in self._thumbs:
                text.setIcon(QIcon(QPixmap.fromImage(self._thumbs[r.line])))
            score = QTableWidgetItem(f"{r.score:.3g}")
            score.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            suggested = QTableWidgetItem(f"{r.suggested or NO_LABELS} ({r.suggested_probability:.0%})")
            if r.flagged:
                suggested.setForeground(QColor(200, 60, 40))
            for col, item in enumerate((line, text, QTableWidgetItem(r.given or NO_LABELS), suggested, score)):
                self.table.setItem(i, col, item)
            combo = QComboBox()
            combo.addItem(KEEP, r.given)
            combo.addItem(EXCLUDE, None)
            for label in [r.suggested] + [x for x in self.result.labels if x not in (r.suggested, r.given)]:
                if label != r.given:
                    combo.addItem(f"Relabel → {label or NO_LABELS}", label)
            combo.currentIndexChanged.connect(self._count_decisions)
            self.table.setCellWidget(i, 5, combo)
        if image:
            self.table.setIconSize(QPixmap(48, 48).size())
        self._count_decisions()

    def set_action(self, row: int, action: str) -> None:
        """Set a row's action: "Keep", "Exclude" or a label to relabel it with."""
        combo: QComboBox = self.table.cellWidget(row, 5)
        for i in range(combo.count()):
            if combo.itemText(i) == action or (i >= 2 and combo.itemData(i) == action):
                combo.setCurrentIndex(i)
                return
        raise ValueError(f"no action {action!r} for row {row}")

    def _set_all(self, action: str) -> None:
        rows = self.shown_rows()
        for i in range(self.table.rowCount()):
            self.set_action(i, rows[i].suggested if action == "suggested" else action)

    def decisions(self) -> dict[int, str | None]:
        """line -> new label, or None to exclude, for every row not kept."""
        out = {}
        for i in range(self.table.rowCount()):
            combo: QComboBox = self.table.cellWidget(i, 5)
            if combo is not None and combo.currentIndex() > 0:
                out[self.table.item(i, 0).data(Qt.ItemDataRole.UserRole)] = combo.currentData()
        return out

    def _count_decisions(self) -> None:
        d = self.decisions()
        excluded = sum(v is None for v in d.values())
        self.decisions_note.setText(f"{excluded:,} to exclude, {len(d) - excluded:,} to relabel" if d else "")

    def go_to(self, row: int) -> None:
        rows = self.shown_rows()
        if not 0 <= row < len(rows):
            return
        r = rows[row]
        if _in_folders(self.result):
            self.show_image.emit(r.text, r.given)
        else:  # a text row, or an image's row in its table of paths and label sets
            self.jump_to_line.emit(r.line)

    # ---- the corrected copy -------------------------------------------------------------------------
    def save_copy(self, target: str | None = None) -> None:
        from ...core.corrections import default_copy_path

        decisions = self.decisions()
        if self.result is None or not decisions:
            self.decisions_note.setText("Mark rows to exclude or relabel first.")
            return
        if target is None:
            suggested = str(default_copy_path(self.result.path))
            if _in_folders(self.result):
                target = QFileDialog.getSaveFileName(self, "Save the corrected copy (a folder of links)", suggested)[0]
            else:
                target = QFileDialog.getSaveFileName(self, "Save a corrected copy of the training file", suggested)[0]
            if not target:
                return
        from ...core.corrections import write_corrected_copy

        self.save_button.setEnabled(False)
        self.jobs.submit(write_corrected_copy, self.result, decisions, target, on_done=self._saved,
                         on_error=self._on_error)

    def _saved(self, copy) -> None:
        self.save_button.setEnabled(True)
        self.summary.setText(f"Saved {copy}: the next run trains on it (the original is unchanged). "
                             f"{len(self.decisions()):,} rows changed.")
        self.corrected.emit(str(copy))

    def clear(self) -> None:
        self.jobs.cancel()
        self.result = None
        self.table.setRowCount(0)
        self.summary.setText("Find the training rows whose label is probably wrong.")
        self._set_busy(False)

    def shutdown(self, timeout_ms: int = 5000) -> None:
        self.jobs.shutdown(timeout_ms)
