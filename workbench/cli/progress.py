"""A terminal progress bar driven by engine events (stderr, so stdout stays machine-readable)."""

from __future__ import annotations

import logging
import sys

from ..core.events import (
    Callbacks,
    EvalMetrics,
    Event,
    Finished,
    PhaseChanged,
    Progress,
    Refitted,
    RunStarted,
    StepMetrics,
    TaskReady,
    Warning_,
)
from ..core.metrics import CLASSIFICATION, specs_from, summary_text


def add_quiet_flag(parser, help: str | None = "no progress bar") -> None:
    """--quiet/-q: no progress bar (every long-running command has it)."""
    parser.add_argument("--quiet", "-q", action="store_true", help=help)


TRAINING = "training"
REFITTING = "training on all rows"  # the refit's bar: the final model, trained again on every row


class TerminalProgress(Callbacks):
    def __init__(self, enabled: bool = True, stream=None) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.bar = None
        self.run_dir: str | None = None
        self.metrics = CLASSIFICATION  # until the run says which task it trains
        self._phase = None

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_event(self, event: Event) -> None:
        if isinstance(event, (RunStarted, Finished)):
            self.run_dir = event.run_dir
        if not self.enabled:
            if isinstance(event, Warning_):  # --quiet hides the progress, never a warning
                print(f"warning: {event.message}", file=self.stream, flush=True)
            return
        from tqdm import tqdm

        if isinstance(event, PhaseChanged):
            if event.phase in ("training", "evaluating") and self.bar is not None and self.bar.desc == TRAINING:
                return  # evaluations between steps keep the training bar on screen
            if event.phase != self._phase:
                self._close_bar()
                self._phase = event.phase
                if event.phase != "training":
                    detail = f": {event.detail}" if event.detail else ""
                    print(f"[{event.phase}{detail}]", file=self.stream, flush=True)
        elif isinstance(event, Warning_):
            if self.bar is not None:
                self.bar.write(f"warning: {event.message}", file=self.stream)
            else:
                print(f"warning: {event.message}", file=self.stream, flush=True)
        elif isinstance(event, TaskReady):
            self.metrics = specs_from(event.metrics)
        elif isinstance(event, EvalMetrics) and event.split == "validation":
            shown = summary_text(event.metrics, self.metrics)
            line = f"validation @ step {event.step}: {shown}{'  (best so far)' if event.is_best else ''}"
            if self.bar is not None:
                self.bar.write(line, file=self.stream)
            else:
                print(line, file=self.stream, flush=True)
        elif isinstance(event, Progress):
            if self.bar is None or self.bar.desc != event.phase:
                self._close_bar()
                # No rate: a phase reports in a few large jumps (a whole small file in one), and the
                # rate of the first jump is absurd ("22581894761.30it/s"). Reading counts bytes.
                size = dict(unit="B", unit_scale=True, unit_divisor=1024) if event.phase == "reading" else {}
                # Predicting a file counts bytes, a folder images: "112/112" for 3 rows read as rows. A share only.
                counts = "" if event.phase == "predicting" else " {n_fmt}/{total_fmt}"
                self.bar = tqdm(total=event.total, desc=event.phase, file=self.stream, leave=False, dynamic_ncols=True,
                                bar_format="{desc}: {percentage:3.0f}%|{bar}|" + counts + " [{elapsed}]", **size)
            self.bar.n = event.done
            self.bar.refresh()
            if event.done >= event.total:
                self._close_bar()
        elif isinstance(event, StepMetrics):
            self._step(event, tqdm)
        elif isinstance(event, Refitted):
            self._close_bar()
            print(f"[refitted: {event.message}]", file=self.stream, flush=True)

    def _step(self, event: StepMetrics, tqdm) -> None:
        """The training bar; the refit (the final model on every row) has its own, counting its own steps."""
        refit = event.refit_step is not None
        desc, step = (REFITTING, event.refit_step) if refit else (TRAINING, event.step)
        total = event.refit_steps if refit else event.total_steps
        if self.bar is None or self.bar.desc != desc:
            self._close_bar()
            self.bar = tqdm(total=total, desc=desc, unit="step", file=self.stream, dynamic_ncols=True)
        self.bar.n = step
        self.bar.set_postfix_str(
            f"loss {event.loss:.4f}, {event.samples_per_second:.1f} samples/s, ETA {event.eta_s:.0f}s", refresh=True
        )

    def write(self, line: str) -> None:
        """A line on stderr that does not tear the progress bar."""
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        self._close_bar()


class ProgressLogHandler(logging.Handler):
    """The engine's log records (plug-in warnings, fallbacks; more with --verbose) on stderr, written
    through the progress bar so that it stays whole."""

    def __init__(self, progress: TerminalProgress) -> None:
        super().__init__()
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = f"{record.levelname.lower()}: {record.getMessage()} [{record.name}]"
            if record.exc_info and logging.getLogger("workbench").level <= logging.DEBUG:
                line += "\n" + logging.Formatter().formatException(record.exc_info)
            self.progress.write(line)
        except Exception:  # logging must never break a run
            self.handleError(record)


def log_to_terminal(progress: TerminalProgress, verbose: bool) -> logging.Handler:
    """Show the ``workbench`` loggers' records: warnings always, everything with ``verbose``."""
    handler = ProgressLogHandler(progress)
    logger = logging.getLogger("workbench")
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING)
    logger.addHandler(handler)
    logger.propagate = False
    return handler
