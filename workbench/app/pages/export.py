"""Export page: write a run's model bundle to a folder of the user's choice.

The bundle is the one the CLI's ``--export`` writes (``copy_export`` of RUN/model): safetensors
weights, tokenizer, a config with the label names, workbench.json and a model card. It is copied on
a worker thread; the copy is written beside the target and moved into place, so a failure never
leaves half a bundle.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Signal, Slot
from PySide6.QtGui import QDesktopServices, QFontDatabase
from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QSplitter,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from ...core.errors import InputError, WorkbenchError
from ...core.export.model import copy_export
from ...core.export.target import TargetCheck, inspect_target, is_export
from ...core.run.history import RunData, load_run
from ...core.tasks.table import DEFAULT_TASK, TASKS, spec_or_none
from ..jobs import Jobs, describe
from ..widgets.build import button, heading, row, text_label
from ..wording import in_app_words
from .predict_panel import PredictPanel

EXPORTS_HOME = Path.home() / "workbench-models"


def default_target(run: RunData) -> Path:
    train = (run.config.get("data") or {}).get("train") or "model"
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(train).stem).strip("-") or "model"
    stamp = run.name[:15] if re.match(r"\d{8}-\d{6}", run.name) else run.name
    return EXPORTS_HOME / f"{stem}-{run.task or 'model'}-{stamp}"


def _data_paths(run: RunData) -> list[str]:
    data = run.config.get("data") or {}
    return [data[k] for k in ("train", "val", "test") if isinstance(data.get(k), str) and data[k]]


def check_target(run: RunData, target: Path, replace: bool) -> TargetCheck:
    """Whether ``run``'s model may be written to ``target`` (core rules: never the user's files, an
    earlier export only when replacing); the problem is worded for the app."""
    check = inspect_target(target, overwrite=replace, data_paths=_data_paths(run), run_dir=run.path)
    if check.kind == "export" and not replace:
        return TargetCheck(check.path, check.kind, f"{check.path} holds an earlier export; confirm to replace it.")
    if check.problem:
        return TargetCheck(check.path, check.kind, f"{check.path} {check.problem}.")
    return check


def describe_files(folder: Path) -> str:
    rows = []
    for f in sorted(folder.iterdir()):
        if f.is_file():
            size = f.stat().st_size
            human = f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"
            rows.append(f"{f.name} ({human})")
    return "  \u00b7  ".join(rows)


def _copy(run: RunData, target: Path, replace: bool, int8: bool = False) -> str:
    """Write the bundle (on a worker thread); the folder written. With ``int8``, RUN/model gets its
    int8 ONNX model first (measured on the run's evaluation split) if it has none yet."""
    from ...core.export.onnx_export import INT8_FILE

    if int8 and not (run.model_dir / INT8_FILE).is_file():
        from ...core.export.quantize import add_int8

        add_int8(run.path)
    return str(copy_export(run.model_dir, target, overwrite=replace, data_paths=_data_paths(run), run_dir=run.path))


def onnx_summary(model_dir: Path) -> str:
    """What onnx_check.json says, in a line or two of HTML (the int8 comparison flagged in red)."""
    from ...core.export.onnx_export import read_check

    check = read_check(model_dir)
    if check is None:
        return "No ONNX model in this export."
    if not check.get("exported"):
        return f"<span style='color:#d64541'>ONNX export failed: {_html(str(check.get('error', '')))[:300]}</span>"
    parts = [f"model.onnx {_mb(check.get('size_bytes'))}"]
    if check.get("top1_agreement") is not None:
        parts.append(f"ONNX Runtime agrees with PyTorch on {check['top1_agreement']:.1%} of {check.get('rows', 0):,} "
                     f"{_html(str(check.get('split', '')))} rows")
    elif check.get("labels_agreement") is not None:  # multi-label: every decided label of a row, not a top class
        parts.append(f"ONNX Runtime decides the same labels as PyTorch on {check['labels_agreement']:.1%} of "
                     f"{check.get('rows', 0):,} {_html(str(check.get('split', '')))} rows")
    parts.append(f"max logit difference {check.get('max_abs_diff', 0):.2g}")
    line = ", ".join(parts)
    q = check.get("int8")
    if not q:
        return line + "<br>No int8 model (tick int8 to add one)."
    if not q.get("written"):
        return line + f"<br><span style='color:#d64541'>int8 failed: {_html(str(q.get('error', '')))[:300]}</span>"
    metric, sizes, lat = q["metric"].replace("_", " "), q["size_bytes"], q["latency_ms_per_example"]
    text = (f"int8 {_mb(sizes['int8'])} ({sizes['int8'] / sizes['fp32']:.0%} of fp32): {metric} {q['int8']:.4f} "
            f"vs {q['fp32']:.4f} fp32 ({q['delta'] * 100:+.2f} points) on {q['rows']:,} {_html(q['split'])} rows; "
            f"{lat['int8']:.3g} ms vs {lat['fp32']:.3g} ms per example")
    if q.get("flagged"):
        text = (f"<span style='color:#d64541'>{text}. The int8 model loses more than {q['tolerance'] * 100:.0f} "
                "point; prefer model.onnx.</span>")
    return line + "<br>" + text


def _mb(size) -> str:
    return f"{size / 1e6:.1f} MB" if isinstance(size, (int, float)) else "?"


def _copy_failure(error: Exception, target: Path) -> str:
    if isinstance(error, WorkbenchError):  # a refused target, a full disk, another process exporting there
        return in_app_words(str(error))  # the core's target messages name the command line's flags
    if isinstance(error, OSError):
        return f"{error.strerror or error}: {error.filename or target}"
    return in_app_words(describe(error))


class ExportPage(QWidget):
    exported = Signal(str)  # the folder written
    export_failed = Signal(str)

    EMPTY = "No run to export yet. Train a model first, or open a past run from Runs."

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.run: RunData | None = None
        self.last_export: Path | None = None
        self.jobs = Jobs(self)

        self.title = heading("Export")
        self.message = QLabel(self.EMPTY)
        self.message.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        # What is exported
        self.model_info = QLabel()
        self.model_info.setWordWrap(True)
        self.model_info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.files = QLabel()
        self.files.setEnabled(False)
        self.files.setWordWrap(True)

        # Where to
        self.target = QLineEdit()
        self.target.setToolTip("The bundle is written to this folder (created if needed)")
        self.target.textChanged.connect(self._on_target_changed)
        self.choose = button("Choose...", self._choose_folder)
        self.int8 = QCheckBox("int8")
        self.int8.setToolTip("Also write model.int8.onnx: dynamically quantized, smaller and usually faster on a "
                             "CPU; measured against fp32 on the run's evaluation split")
        self.export_button = button("Export", self._export_clicked, default=True)
        where = row((self.target, 1), self.choose, self.int8, self.export_button)
        self.status = text_label()
        self.open_button = button("Open folder", self._open_folder, visible=False)
        self.done_row = QWidget()  # hidden while there is nothing to say, so no blank line
        done_row = QHBoxLayout(self.done_row)
        done_row.setContentsMargins(0, 0, 0, 0)
        done_row.addWidget(self.status, 1)
        done_row.addWidget(self.open_button, 0, Qt.AlignmentFlag.AlignTop)

        self.usage = QPlainTextEdit()
        self.usage.setReadOnly(True)
        self.usage.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.usage.setMaximumHeight(self.usage.fontMetrics().height() * 6)
        # Its three lines whole, without a scroll bar, however little height the splitter leaves it.
        self.usage.setMinimumHeight(3 * self.usage.fontMetrics().lineSpacing() + 2 * self.usage.frameWidth()
                                    + 2 * round(self.usage.document().documentMargin()) + 2)

        form_box = _FittedBox("Export the model")
        form = QFormLayout(form_box)
        form.addRow("Model:", self.model_info)
        form.addRow("Files:", self.files)
        self.onnx_info = QLabel()
        self.onnx_info.setWordWrap(True)
        self.onnx_info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow("ONNX:", self.onnx_info)
        form.addRow("Folder:", where)
        form.addRow("", self.done_row)
        form.addRow("Use it:", self.usage)

        self.card = QTextBrowser()
        self.card.setOpenExternalLinks(True)
        card_box = QGroupBox("Model card (README.md in the bundle)")
        QVBoxLayout(card_box).addWidget(self.card)

        self.body = QSplitter(Qt.Orientation.Vertical)
        self.body.setChildrenCollapsible(False)
        self.predict_panel = PredictPanel()
        self.body.addWidget(form_box)
        self.body.addWidget(self.predict_panel)
        self.body.addWidget(card_box)
        self.body.setStretchFactor(1, 1)

        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.message, 1)  # the message and the body take turns filling the page
        layout.addWidget(self.body, 1)
        self.clear()

    # ---- public ---------------------------------------------------------------------------------
    def show_run(self, run_dir: str) -> None:
        self.jobs.cancel()  # a copy still on its way belongs to the previous run
        try:
            run = load_run(run_dir)
        except InputError as e:
            self.clear()
            self.message.setText(f"Could not open this run: {e}")
            return
        self.run = run
        self.last_export = None
        self.open_button.setVisible(False)
        self._set_status("")
        self.title.setText(f"Export  \u00b7  {run.name}")
        if run.model_dir is None:
            state = {"failed": "it failed", "cancelled": "it was cancelled", "interrupted": "it was interrupted",
                     "running": "it is still training"}.get(run.state, "it did not finish")
            self.message.setText(f"This run has no model to export: {state}. Train again, or open a finished run from Runs.")
            self.message.setVisible(True)
            self.body.setVisible(False)
            return
        self.message.setVisible(False)
        self.body.setVisible(True)
        self.model_info.setText(_model_summary(run))
        self.files.setText(describe_files(run.model_dir))
        self.onnx_info.setText(onnx_summary(run.model_dir))
        self.int8.setChecked((run.model_dir / "model.int8.onnx").is_file())
        self.predict_panel.set_model(run.model_dir)
        self.target.setText(str(default_target(run)))
        self.card.setMarkdown(_strip_front_matter(_read(run.model_dir / "README.md")))
        self._update_usage()

    def clear(self) -> None:
        self.jobs.cancel()
        self.predict_panel.set_model(None)
        self.run = None
        self.last_export = None
        self.title.setText("Export")
        self.message.setText(self.EMPTY)
        self.message.setVisible(True)
        self.body.setVisible(False)
        self._set_status("")
        self.open_button.setVisible(False)

    def export_to(self, target: str | Path, replace: bool = False) -> bool:
        """Start writing the bundle to ``target``; False (with the reason shown) if it cannot start.

        ``replace`` allows writing over an earlier export in that folder.
        """
        if self.run is None or self.run.model_dir is None:
            self._fail("There is no trained model to export.")
            return False
        target = Path(target).expanduser()
        if not target.is_absolute():
            target = Path.home() / target
        problem = check_target(self.run, target, replace).problem
        if problem:
            self._fail(problem)
            return False
        self.target.setText(str(target))
        self.export_button.setEnabled(False)
        self.choose.setEnabled(False)
        self.open_button.setVisible(False)
        int8 = self.int8.isChecked()
        self._set_status(f"Measuring the int8 model on the {self.run.name} evaluation split, then writing {target} ..."
                         if int8 and not (self.run.model_dir / "model.int8.onnx").is_file() else f"Writing {target} ...")
        self.jobs.submit(_copy, self.run, target, replace, int8, on_done=self._on_done,
                         on_error=partial(self._on_failed, target))
        return True

    def shutdown(self) -> None:
        self.predict_panel.shutdown()
        self.jobs.shutdown(30000)  # a copy in flight finishes: it is moved into place atomically

    # ---- slots ----------------------------------------------------------------------------------
    @Slot()
    def _export_clicked(self) -> None:
        text = self.target.text().strip()
        if not text:
            self._fail("Choose a folder to export to.")
            return
        target = Path(text).expanduser()
        replace = False
        if self.run is not None and check_target(self.run, target, True).ok and is_export(target):
            answer = QMessageBox.question(
                self, "Replace export?", f"{target} already holds an exported model.\n\nReplace it with this run's model?"
            )
            if answer != QMessageBox.StandardButton.Yes:
                return
            replace = True
        self.export_to(target, replace=replace)

    @Slot()
    def _choose_folder(self) -> None:
        current = Path(self.target.text().strip() or str(EXPORTS_HOME)).expanduser()
        start = current if current.is_dir() else current.parent if current.parent.is_dir() else Path.home()
        folder = QFileDialog.getExistingDirectory(self, "Export the model to", str(start))
        if not folder:
            return
        folder = Path(folder)
        # An empty folder or an earlier export is the target itself; a folder with other files in it
        # gets a new subfolder named after the run, so nothing of the user's is replaced.
        if (folder.is_dir() and any(folder.iterdir()) and not is_export(folder)) and self.run is not None:
            folder = folder / default_target(self.run).name
        self.target.setText(str(folder))

    @Slot(str)
    def _on_target_changed(self, text: str) -> None:
        self.export_button.setEnabled(bool(text.strip()) and self.run is not None)
        self._update_usage()

    def _on_done(self, folder: str) -> None:
        self.last_export = Path(folder)
        if self.run is not None and self.run.model_dir is not None:  # an int8 model may have been added
            self.files.setText(describe_files(self.run.model_dir))
            self.onnx_info.setText(onnx_summary(self.run.model_dir))
        self.export_button.setEnabled(True)
        self.choose.setEnabled(True)
        self._set_status(f"Exported to <b>{_html(folder)}</b>")
        self.open_button.setVisible(True)
        self.exported.emit(folder)

    def _on_failed(self, target: Path, error: Exception) -> None:
        self.export_button.setEnabled(True)
        self.choose.setEnabled(True)
        self._fail(f"Export failed: {_copy_failure(error, target)}")

    def _set_status(self, text: str) -> None:
        self.status.setText(text)
        self.done_row.setVisible(bool(text))

    def _fail(self, message: str) -> None:
        self._set_status(f"<span style='color:#d64541'>{_html(message)}</span>")
        self.export_failed.emit(message)

    @Slot()
    def _open_folder(self) -> None:
        if self.last_export is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.last_export)))

    def _update_usage(self) -> None:
        path = self.target.text().strip() or "path/to/the/folder"
        task = spec_or_none(self.run.task if self.run is not None else None) or TASKS[DEFAULT_TASK]
        tag = task.pipeline_tag
        if self.run is not None and self.run.model_dir is not None:
            # The model card's front matter names the pipeline that loads this model.
            match = re.search(r"^pipeline_tag:\s*(\S+)", _read(self.run.model_dir / "README.md"), re.MULTILINE)
            tag = match.group(1) if match else tag
        self.usage.setPlainText(usage_code(path, tag, task.modality, self.run.model_dir if self.run else None,
                                           labels=task.prediction == "labels"))


# core/tasks/image/models.py CONFIG_KEY (not imported: that module imports torch): it marks the
# config.json of an image model of Workbench's own architectures, which transformers cannot load.
WORKBENCH_IMAGE_MODEL = "workbench_architecture"


def usage_code(path: str, tag: str, modality: str, model_dir: Path | None, labels: bool = False) -> str:
    """Python that loads the export at ``path`` and predicts with it: transformers' pipeline, or for
    an image model of Workbench's own architectures, its loader. ``labels``: a multi-label model,
    whose labels are its sigmoid scores against the thresholds in workbench.json."""
    own_image_model = (modality == "image" and model_dir is not None
                       and WORKBENCH_IMAGE_MODEL in _read(model_dir / "config.json"))
    if labels:
        if own_image_model:
            return ("from workbench.core.predict.predictor import Predictor\n"
                    f"print(Predictor({path!r}).predict(['photo.jpg']))")
        from ...core.tasks.multilabel.outputs import labels_usage

        return labels_usage(path, tag, "['photo.jpg']" if modality == "image" else '["Type your text here"], truncation=True')
    if own_image_model:
        return ("from workbench.core.tasks.image.models import classify_images\n"
                f"print(classify_images({path!r}, ['photo.jpg']))")
    example = "print(model('photo.jpg'))" if modality == "image" else 'print(model("Type your text here", truncation=True))'
    return f"from transformers import pipeline\nmodel = pipeline({tag!r}, model={path!r})\n{example}"


class _FittedBox(QGroupBox):
    """A group box in a splitter that is never cut: a splitter asks a widget only for its minimum
    height, which for wrapped labels is one line each, so the minimum follows the width instead."""

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(event)
        need = self.heightForWidth(self.width())
        if need > 0 and need != self.minimumHeight():
            self.setMinimumHeight(need)


def _model_summary(run: RunData) -> str:
    cfg = run.config
    backbone = ((cfg.get("resolved") or {}).get("backbone") or {}).get("name") or (cfg.get("model") or {}).get("name")
    labels = (run.report or {}).get("labels") or ((cfg.get("resolved") or {}).get("labels")) or []
    metrics = (run.report or {}).get("metrics") or run.status.get("metrics") or {}
    parts = [f"{run.task or 'model'} fine-tuned from <b>{_html(str(backbone))}</b>"]
    if labels:
        shown = ", ".join(_html(str(l)) for l in labels[:12]) + (" ..." if len(labels) > 12 else "")
        parts.append(f"{len(labels)} labels: {shown}")
    scores = [f"{k.replace('_', ' ')} {v:.3f}" for k, v in metrics.items() if k in ("accuracy", "macro_f1") and isinstance(v, float)]
    if scores:
        parts.append(", ".join(scores))
    return "<br>".join(parts)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""


def _strip_front_matter(text: str) -> str:
    # The YAML block is for the Hugging Face hub; as Markdown it would render as a stray table.
    if text.startswith("---"):
        end = text.find("\n---", 3)
        if end != -1:
            return text[end + 4 :].lstrip()
    return text


def _html(text: str) -> str:
    import html

    return html.escape(text)
