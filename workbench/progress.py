"""A terminal progress bar driven by engine events (stderr, so stdout stays machine-readable)."""

from __future__ import annotations

import sys

from .core.events import (Callbacks, EvalMetrics, Event, Finished, PhaseChanged, Progress, RunStarted, StepMetrics,
                          Warning_)


class TerminalProgress(Callbacks):
    def __init__(self, enabled: bool = True, stream=None) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.bar = None
        self.run_dir: str | None = None
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
            if event.phase in ("training", "evaluating") and self.bar is not None and self.bar.desc == "training":
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
        elif isinstance(event, EvalMetrics) and event.split == "validation":
            shown = ", ".join(f"{k} {v:.4f}" for k, v in event.metrics.items() if k in ("loss", "accuracy", "macro_f1", "f1", "pearson", "mse"))
            line = f"validation @ step {event.step}: {shown}{'  (best so far)' if event.is_best else ''}"
            if self.bar is not None:
                self.bar.write(line, file=self.stream)
            else:
                print(line, file=self.stream, flush=True)
        elif isinstance(event, Progress):
            if self.bar is None or self.bar.desc != event.phase:
                self._close_bar()
                self.bar = tqdm(total=event.total, desc=event.phase, file=self.stream, leave=False, dynamic_ncols=True)
            self.bar.n = event.done
            self.bar.refresh()
            if event.done >= event.total:
                self._close_bar()
        elif isinstance(event, StepMetrics):
            if self.bar is None or self.bar.desc != "training":
                self._close_bar()
                self.bar = tqdm(total=event.total_steps, desc="training", unit="step", file=self.stream, dynamic_ncols=True)
            self.bar.n = event.step
            self.bar.set_postfix_str(
                f"loss {event.loss:.4f}, {event.samples_per_second:.1f} samples/s, ETA {event.eta_s:.0f}s", refresh=True
            )

    def close(self) -> None:
        self._close_bar()
