"""TensorBoard: RUN/tensorboard/ event files, written with torch's SummaryWriter (which needs the
tensorboard package): scalars (and a text-generation run's live samples) as they happen, then the
hparams, the report's pictures and its text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import need
from .images import report_images
from .records import flat_params, read_json, samples_text, scalars

FOLDER = "tensorboard"


class TensorBoardTracker:
    name = "tensorboard"

    def __init__(self, run_dir: Path, resumed_at: int | None = None) -> None:
        need("tensorboard", "--report-to tensorboard")
        self.run_dir = run_dir
        self.purge_step = resumed_at  # a resumed run logs again from its checkpoint's step
        self.writer: Any = None
        # Imported now, before training (tensorboard and protobuf take a second or more to import),
        # not at the first logged step, where it would count as training time.
        from torch.utils.tensorboard import SummaryWriter

        self.summary_writer = SummaryWriter

    def _writer(self):
        if self.writer is None:  # made at the first scalar: a run refused before training leaves no folder
            self.writer = self.summary_writer(str(self.run_dir / FOLDER), purge_step=self.purge_step)
        return self.writer

    def record(self, record: dict[str, Any]) -> None:
        if record.get("event") == "PhaseChanged" and record.get("phase") == "model_ready":
            self._writer()  # its file and thread now, not at the first training step
        when = record.get("time")  # metrics.jsonl's: a run logged afterwards keeps its own times
        walltime = when if isinstance(when, (int, float)) else None
        for tag, step, value in scalars(record):
            self._writer().add_scalar(tag, value, step, walltime=walltime)
        samples = samples_text(record)
        if samples is not None:  # text generation's live samples, in the Text tab by step
            self._writer().add_text("samples", samples[1], samples[0], walltime=walltime)

    def finish(self, record: dict[str, Any]) -> None:
        if record.get("event") == "Finished":
            self._summaries(record)
        self.close()

    def _summaries(self, finished: dict[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        writer = self._writer()
        report = read_json(self.run_dir / "report.json")
        split = str(report.get("split") or "test")
        results = {f"{split}/{k}": float(v) for k, v in (finished.get("metrics") or {}).items()
                   if isinstance(v, (int, float))}
        throughput = finished.get("samples_per_second")
        if isinstance(throughput, (int, float)):
            results["train/samples_per_second_overall"] = float(throughput)
            writer.add_scalar("train/samples_per_second_overall", float(throughput), 0)
        # The hparams summaries go into this run's own file (SummaryWriter.add_hparams would make a sub-run).
        for summary in hparams(flat_params(read_json(self.run_dir / "config.json")), results):
            writer.file_writer.add_summary(summary)
        for name, image in report_images(report).items():
            writer.add_image(f"report/{name}", image, 0, dataformats="HWC")
        try:
            text = (self.run_dir / "report.txt").read_text(encoding="utf-8")
        except OSError:
            text = ""
        if text:  # indented: TensorBoard renders text as Markdown, and the report is a fixed-width table
            writer.add_text("report", "\n".join("    " + line for line in text.splitlines()), 0)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
