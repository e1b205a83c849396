"""The Data page's multi-label pieces: where a file's label sets are (one column of separated lists
and its separator, or one 0/1 column per label: the --label-column/--label-separator and
--label-columns choices), the label lists as the engine reads them in the preview, and how the
labels are spread (rows per label, labels per row).

The page re-reads the file with the chosen settings (``options_chosen``), so what it shows and
checks is what training reads; the settings travel to the run in config.json's data section."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QFormLayout, QGroupBox, QListWidget, QListWidgetItem, QWidget

from ...core.tasks.multilabel.labels import split_labels
from ..widgets.bar_chart import ClassBarChart
from ..widgets.build import add_rows, button, choices, section, set_column, text_label

LISTS, ONE_HOT = "lists", "one-hot"
SEPARATOR_CHOICES = (("Detected", None), ("| (pipe)", "|"), (", (comma)", ","), ("; (semicolon)", ";"))
SHOWN_JOIN = " \u00b7 "  # how the preview shows a row's labels
NO_LABEL = "(no label)"
READ_COLUMN = "labels as read"  # the preview's column of the labels read from 0/1 columns


def is_multilabel(loaded: Any) -> bool:
    """Whether the data was read by a multi-label task (one whose predictions are label sets)."""
    from ...core.tasks.table import spec_or_none

    spec = spec_or_none(getattr(loaded, "task", None))
    return spec is not None and spec.prediction == "labels"


def label_lists(loaded: Any) -> list[list[str]] | None:
    """Each preview row's labels as the engine reads them (from the resolved label column and
    separator, or the 0/1 columns); None when the file's labels could not be read."""
    from ...core.tasks.multilabel.labels import one_hot_value

    resolved, rows = getattr(loaded, "resolved", None) or {}, loaded.preview
    if resolved.get("label_columns"):
        columns = [c for c in resolved["label_columns"] if c in rows.column_names]
        cells = [rows.column(c).to_pylist() for c in columns]
        return [[c for c, v in zip(columns, values) if one_hot_value(v) == 1] for values in zip(*cells)] if cells \
            else None
    column, separator = resolved.get("label_column"), resolved.get("label_separator")
    if column not in rows.column_names or not separator:
        return None
    return [split_labels(cell, separator) for cell in rows.column(column).to_pylist()]


def readable_preview(loaded: Any):
    """(table, columns, roles) for the preview: a column of label lists shows them joined by a dot
    (an empty set as "(no label)"); 0/1 columns gain a column of the labels they add up to."""
    import pyarrow as pa

    table, columns = loaded.preview, list(loaded.table.columns)
    lists = label_lists(loaded) if is_multilabel(loaded) else None
    if lists is None:
        return table, columns, {}
    resolved = loaded.resolved
    shown = pa.array([SHOWN_JOIN.join(labels) if labels else NO_LABEL for labels in lists], pa.string())
    text = resolved.get("text_column") or resolved.get("path_column") or ""
    roles = {text: "text"}
    if resolved.get("label_columns"):
        table = table.append_column(READ_COLUMN, shown)
        at = columns.index(text) + 1 if text in columns else len(columns)
        columns.insert(at, READ_COLUMN)
        roles.update({READ_COLUMN: "labels", **{c: "0/1" for c in resolved["label_columns"]}})
    else:
        column = resolved["label_column"]
        table = table.set_column(table.column_names.index(column), column, shown)
        roles[column] = "labels"
    return table, columns, {k: v for k, v in roles.items() if k}


class LabelSourceBox(QGroupBox):
    """Where the labels are: one column of lists (and its separator) or several 0/1 columns, and the
    text column; Apply emits ``options_chosen`` with the DataConfig settings that say so. For a file
    read as one label per row, "Several labels per row" offers the same choice."""

    options_chosen = Signal(object)  # dict of DataConfig fields: text_column, label_column, label_separator, label_columns

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Label columns", parent)
        self.several = QCheckBox("Several labels per row (multi-label)")
        self.several.setToolTip("Each row has a set of labels: one column of lists (billing|bug) or one 0/1 column "
                                "per label")
        self.several.toggled.connect(self._sync)
        self.text = QComboBox()
        self.text.setToolTip("The column the model reads")
        self.kind = choices((("One column of label lists", LISTS), ("One 0/1 column per label", ONE_HOT)),
                            "How the file holds each row's labels")
        self.kind.currentIndexChanged.connect(self._sync)
        self.column = QComboBox()
        self.column.setToolTip("The column holding each row's labels, separated")
        self.separator = choices(SEPARATOR_CHOICES, "What separates the labels in a cell (Detected: worked out from "
                                                    "the column)")
        self.one_hot = QListWidget()
        self.one_hot.setToolTip("Tick the columns that hold 0 or 1 for one label each")
        self.one_hot.setMaximumHeight(140)
        self.note = text_label(selectable=False, dimmed=True)
        self.apply = button("Apply", self._apply, "Read the file again with these settings and check it")
        self.form = QFormLayout()
        add_rows(self.form, ("Text:", self.text), ("Labels:", self.kind), ("Column:", self.column),
                 ("Separator:", self.separator), ("0/1 columns:", self.one_hot))
        set_column(self, self.several, self.form, self.note, self.apply, margins=None)
        self._sync()

    def show_data(self, loaded: Any) -> None:
        """Fill the choice from the file shown: its columns and how its labels were read."""
        columns = list(loaded.table.columns)
        resolved = getattr(loaded, "resolved", None) or {}
        options = getattr(loaded, "data_options", None) or {}
        multi = is_multilabel(loaded)
        for combo in (self.text, self.column):
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(columns)
            combo.blockSignals(False)
        choice = getattr(loaded, "choice", None)
        self.text.setCurrentText(resolved.get("text_column") or options.get("text_column")
                                 or (choice.text if choice else columns[0] if columns else ""))
        ticked = set(resolved.get("label_columns") or options.get("label_columns") or [])
        self.kind.setCurrentIndex(1 if ticked else 0)
        self.column.setCurrentText(resolved.get("label_column") or options.get("label_column")
                                   or (choice.label if choice else columns[-1] if columns else ""))
        self.separator.setCurrentIndex(max(0, self.separator.findData(options.get("label_separator"))))
        self.one_hot.clear()
        for name in columns:
            item = QListWidgetItem(name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if name in ticked else Qt.CheckState.Unchecked)
            self.one_hot.addItem(item)
        self.several.blockSignals(True)
        self.several.setChecked(multi)
        self.several.blockSignals(False)
        found = resolved.get("label_separator")
        self.note.setText(f"Read as lists separated by '{found}'." if multi and found and not ticked else
                          "Read from the ticked 0/1 columns." if multi and ticked else "")
        self._sync()

    def options(self) -> dict[str, Any]:
        """The DataConfig settings the form describes."""
        text = self.text.currentText() or None
        if self.kind.currentData() == ONE_HOT:
            ticked = [self.one_hot.item(i).text() for i in range(self.one_hot.count())
                      if self.one_hot.item(i).checkState() == Qt.CheckState.Checked]
            return {"text_column": text, "label_columns": ticked}
        return {"text_column": text, "label_column": self.column.currentText() or None,
                "label_separator": self.separator.currentData()}

    def problem(self) -> str:
        """Why the form cannot be applied as it is ("" when it can)."""
        o = self.options()
        if "label_columns" in o:
            if not o["label_columns"]:
                return "Tick at least one 0/1 column."
            if o["text_column"] in o["label_columns"]:
                return "The text column cannot also be a 0/1 label column."
        elif o["text_column"] == o["label_column"]:
            return "The text and label columns must differ."
        return ""

    def _apply(self) -> None:
        why = self.problem()
        self.note.setText(f"\u26a0 {why}" if why else "Checking the rows with these settings\u2026")
        if not why:
            self.options_chosen.emit(self.options())

    def _sync(self, *_: Any) -> None:
        on = self.several.isChecked()
        lists = self.kind.currentData() == LISTS
        for field, shown in ((self.text, on), (self.kind, on), (self.column, on and lists),
                             (self.separator, on and lists), (self.one_hot, on and not lists)):
            field.setVisible(shown)
            label = self.form.labelForField(field)
            if label is not None:
                label.setVisible(shown)
        self.apply.setVisible(on)


class OrderedBarChart(ClassBarChart):
    """A bar chart that keeps its bars in the order given (none, one, two... labels), not by size."""

    def set_counts(self, counts: dict[str, int]) -> None:
        super().set_counts(counts)
        self._counts = [(k, v) for k, v in counts.items()][:len(self._counts)]
        self.update()


class LabelSpread(QWidget):
    """How the labels are spread: rows per label, and rows per number of labels (none, one, several)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.per_label = ClassBarChart()
        self.per_label.setAccessibleName("Rows per label")
        self.per_row = OrderedBarChart()
        self.per_row.setAccessibleName("Labels per row")
        self.summary = text_label(selectable=False, dimmed=True)
        self.box = section("Labels", self.per_label, text_label("Labels per row", selectable=False), self.per_row,
                           self.summary)
        set_column(self, self.box)

    def show_data(self, loaded: Any) -> None:
        counts = dict(loaded.class_counts)
        self.per_label.set_counts(counts)
        lists = label_lists(loaded)
        if lists is None:
            self.per_row.set_counts({})
            self.summary.setText("")
            return
        sizes = [len(x) for x in lists]
        buckets = {"no label": sum(s == 0 for s in sizes), "1 label": sum(s == 1 for s in sizes),
                   "2 labels": sum(s == 2 for s in sizes), "3 or more": sum(s >= 3 for s in sizes)}
        self.per_row.set_counts({k: v for k, v in buckets.items() if v})
        several = sum(s >= 2 for s in sizes)
        whole = "" if len(lists) >= loaded.n_rows else f" (of the first {len(lists):,} rows)"
        self.summary.setText(f"{len(counts):,} labels; {buckets['no label']:,} rows with no label, {several:,} with "
                             f"several (at most {max(sizes, default=0)}){whole}.")

    def counts(self) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
        """(rows per label, rows per number of labels) as the charts draw them (for tests)."""
        return self.per_label.counts(), self.per_row.counts()
