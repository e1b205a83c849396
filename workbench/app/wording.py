"""The app speaks in its own controls' names. The engine's messages are shared with the command line
and name its flags ("pass --skip-bad-rows", "--no-refit turns it off"); ``in_app_words`` says the
same with the control that does it in the app. The command line itself stays behind Copy Command."""

from __future__ import annotations

import re

from ..core.tasks.table import DEFAULT_METHOD, FROZEN_METHOD, METHODS

# Whole phrases first: where a flag's sentence reads wrong with only the flag's name replaced.
_PHRASES: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p), r) for p, r in (
    (r"give both runs the same --test file to compare them",
     "train both runs with the same test file (Data page, Test file) to compare them"),
    (r",? pass the delimiter if that is wrong", "; if that is wrong, choose another Delimiter on the Data page"),
    (r"--no-refit turns it off", "the Model page's Final model setting turns it off"),
    (r"(?:pass|use) --skip-bad-rows", "tick Skip malformed rows on the Data page"),
    (r"choose (it|one|the columns) with --[a-z-]+(?: and --[a-z-]+)?", r"choose \1 under Columns on the Data page"),
    (r"\(pass --with-data to include it\)", "(Pack Run with Its Data includes it)"),
    (r"pack without --with-data", "use Pack Run (without its data)"),
    (r"to repeat the run, give the data (?:as DATA|with --\w+ FILE) to workbench train --config \S+",
     "to repeat the run, open that data on the Data page"),
    (r"--method (\w+) \(--freeze-backbone\)", r"--method \1"),
    (rf"use --method {DEFAULT_METHOD} or {FROZEN_METHOD}",
     f"choose {METHODS[DEFAULT_METHOD].menu_title} or {METHODS[FROZEN_METHOD].menu_title} as the Method (Model page)"),
    (r"earlier Workbench export; pass --overwrite to replace it",
     "earlier Workbench export; press Export again and answer Yes to replace it"),
    (r"pass --overwrite to replace it(, or choose another file) with -o", r"start again and answer Yes to replace it\1"),
    (r"pass --overwrite to replace it", "start again and answer Yes to replace it"),
    (r"--epochs sets them", "Epochs on the Model page sets them"),
    (r"--augment (\w+) restores", r"Augmentation \1 (Model page) restores"),
))

# A flag the app has a control for, by that control's name (its label on the page).
_CONTROLS = {
    "--skip-bad-rows": "Skip malformed rows", "--text-column": "the Text column", "--label-column": "the Label column",
    "--test": "the Test file", "--val": "the Validation file", "--sample": "Rows used", "--delimiter": "Delimiter",
    "--val-fraction": "Validation share", "--test-fraction": "Test share",
    "--epochs": "Epochs", "--batch-size": "Batch size", "--lr": "Learning rate", "--max-length": "Max length",
    "--image-size": "Image size", "--feature-views": "Cached views", "--augment": "Augmentation",
    "--lora-rank": "LoRA rank", "--lora-alpha": "LoRA alpha", "--lora-targets": "LoRA layers",
    "--warmup-ratio": "Warm-up", "--weight-decay": "Weight decay", "--grad-accum": "Grad accumulation",
    "--seed": "Seed", "--eval-steps": "Evaluate", "--early-stopping": "Early stopping", "--metric": "Best model by",
    "--refit": "Final model: Refit on all rows", "--no-refit": "Final model: Best on the validation rows",
    "--max-steps": "Stop after", "--precision": "Precision", "--device": "Device", "--task": "Task",
    "--method": "Method", "--quantize int8": "int8 (Export page)",
}
_FLAG = re.compile(r"--method (" + "|".join(METHODS) + r")\b|(?:"
                   + "|".join(re.escape(f) for f in sorted(_CONTROLS, key=len, reverse=True)) + r")(?![\w-])")


def _control(match: re.Match[str]) -> str:
    method = match.group(1)
    return f"the Method {METHODS[method].menu_title}" if method else _CONTROLS[match.group(0)]


def in_app_words(text: str) -> str:
    """``text`` (an engine message) with each command-line flag the app has a control for named by that
    control; the rest unchanged."""
    for pattern, replacement in _PHRASES:
        text = pattern.sub(replacement, text)
    return _FLAG.sub(_control, text)
