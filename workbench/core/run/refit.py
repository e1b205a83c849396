"""Refit: once a hold-out has chosen how long to train, train the final model on every row.

Without a validation file, a part of the training file is held out to draw the validation curves,
pick the best epoch and stop early. On a small data set that part is a real loss: 300 of 3,000
CoNLL-2003 sentences held out cost 3.2 points of entity F1 (0.535 against 0.567 on all rows, one
seed), 400 of 4,000 SST-2 rows about a point of accuracy (benchmarks/bench_*_classification.py). So on small sets the run trains twice:
first with the hold-out (the curves, the chosen number of steps), then from the pretrained backbone
again on the training and held-out rows together for the same number of epochs, with the same
settings. The second model is the one tested and exported; the report says which rows trained it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ..events import Callbacks, Event, Refitted, StepMetrics

# Refit by default when the rows that train (training + held-out validation) are at most this many.
# The held-out tenth was worth 1-3 points at 3,000-4,000 rows (CoNLL-2003, SST-2), and the second
# pass doubles the training time; above ~10,000 rows a tenth more data is worth little, while
# doubling an hour-long run is not.
REFIT_MAX_ROWS = 10_000


@dataclass
class RefitPlan:
    rows: int  # training + held-out validation rows the final model trains on
    train_rows: int
    validation_rows: int
    epochs: float  # chosen on the hold-out
    chosen_step: int  # the best step of the first pass
    first_pass_steps: int
    first_pass_epochs: float


def held_out_validation(sources: dict[str, str]) -> bool:
    """The validation split was held out of the training file (no --val file was given)."""
    from ..data.prepare import HELD_OUT  # here: the app asks ``decide_refit`` without loading the data stack

    return str(sources.get("validation", "")).endswith(HELD_OUT)


def wants_refit(refit: bool | None, sources: dict[str, str], rows: dict[str, int],
                capped: bool = False) -> tuple[bool, str]:
    """Whether to refit, and why, for ``--refit`` (True), ``--no-refit`` (False) or auto (None)."""
    return decide_refit(refit, held_out=held_out_validation(sources), given_validation="validation" in sources,
                        tested_apart="test" in sources, rows=rows.get("train", 0) + rows.get("validation", 0),
                        capped=capped)


def decide_refit(refit: bool | None, *, held_out: bool, given_validation: bool, tested_apart: bool,
                 rows: int, capped: bool = False) -> tuple[bool, str]:
    """The decision from plain facts (front ends ask it before the data is split). ``capped``: the
    run stops after --max-steps, a quick trial, which auto does not refit (it would double it)."""
    if not held_out:
        return False, "a validation file was given" if given_validation else "nothing was held out for validation"
    if not tested_apart:  # the report is computed on the validation split: it must not train
        return False, "the validation split is also the one the final report is computed on"
    if refit is False:
        return False, "--no-refit"
    if refit:
        return True, "--refit"
    if capped:
        return False, "--max-steps makes the run a quick trial"
    if rows <= REFIT_MAX_ROWS:
        return True, f"{rows:,} rows are at most {REFIT_MAX_ROWS:,}: the held-out part is worth training on"
    return False, f"{rows:,} rows are more than {REFIT_MAX_ROWS:,}: the held-out part adds little"


def chosen_step(outcome) -> int:
    """The first pass's best step. Of evaluations equally good by the metric (accuracy reaching 1.0
    on a small validation split, and staying there) the one with the lowest validation loss: the
    first of them is often where learning had only just taken off, and a second run stopped there
    can stop short of it."""
    evals = [e for e in getattr(outcome, "evaluations", []) if e[1] == e[1]]  # NaN never ties
    if outcome.best_step is None or not evals:
        return outcome.best_step or outcome.steps
    best = next((e[1] for e in evals if e[0] == outcome.best_step), None)
    ties = [e for e in evals if e[1] == best and e[2] is not None]
    return min(ties, key=lambda e: (e[2], e[0]))[0] if ties else outcome.best_step


def plan_refit(outcome, steps_per_epoch: int, rows: dict[str, int]) -> RefitPlan:
    """How long the final model trains: the first pass's chosen step (its last when nothing was
    evaluated), as epochs, so that the bigger set trains for as many passes over the data."""
    chosen = chosen_step(outcome)
    per_epoch = max(steps_per_epoch, 1)
    return RefitPlan(rows=rows.get("train", 0) + rows.get("validation", 0), train_rows=rows.get("train", 0),
                     validation_rows=rows.get("validation", 0), epochs=chosen / per_epoch, chosen_step=chosen,
                     first_pass_steps=outcome.steps, first_pass_epochs=outcome.steps / per_epoch)


def merged_rows(splits: dict[str, Any]):
    """The training and held-out validation rows as one split, in file order (the order a run
    without a hold-out sees them in, so a refit of the whole run repeats that run)."""
    import datasets
    import numpy as np

    from ..data.tabular import arrow_table

    merged = datasets.concatenate_datasets([splits["train"], splits["validation"]])
    if "row" not in merged.column_names:
        return merged
    rows = arrow_table(merged, ["row"]).column("row").to_numpy()
    return merged.select(np.argsort(rows, kind="stable"))


def refit_config(tc, plan: RefitPlan):
    """The first pass's settings without evaluations or timed checkpoints."""
    return dataclasses.replace(tc, eval_steps=None, early_stopping_patience=None, save_steps=None, save_minutes=0.0)


def refit_stop(plan: RefitPlan, steps_per_epoch: int) -> int:
    """The step at which the refit stops: the chosen epochs of the bigger set. It runs the first
    pass's learning-rate schedule (stretched to the bigger set) up to there, so the final model
    gets the training the chosen one got: a schedule squeezed into fewer steps would anneal it
    early, and on a short run learn less."""
    return max(1, math.ceil(round(plan.epochs * steps_per_epoch, 6)))


class AfterFirstPass(Callbacks):
    """Numbers the second pass's steps after the first pass's, so curves run on along one x-axis,
    and keeps its own step, length and epoch beside them, for the refit's own progress."""

    def __init__(self, inner: Callbacks, steps: int, epochs: float, seconds: float) -> None:
        self.inner, self.steps, self.epochs, self.seconds = inner, steps, epochs, seconds

    def on_event(self, event: Event) -> None:
        if isinstance(event, StepMetrics):
            event = dataclasses.replace(event, step=event.step + self.steps, total_steps=event.total_steps + self.steps,
                                        epoch=event.epoch + self.epochs, elapsed_s=event.elapsed_s + self.seconds,
                                        refit_step=event.step, refit_steps=event.total_steps, refit_epoch=event.epoch)
        self.inner.on_event(event)


def _epochs(value: float) -> str:
    """ "1 epoch", "1.5 epochs": the passes over the data, as people write them."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{text} epoch{'' if text == '1' else 's'}"


def _all_rows(plan: RefitPlan, unit: str) -> str:
    return (f"all {plan.rows:,} {unit} ({plan.train_rows:,} training + {plan.validation_rows:,} held out for "
            f"validation)")


def describe(plan: RefitPlan, unit: str = "rows") -> str:
    """What trained the final model, once it has (the report and the model card)."""
    return (f"the final model was trained on {_all_rows(plan, unit)} for {_epochs(plan.epochs)}, the length the "
            f"validation split chose (best at step {plan.chosen_step} of {plan.first_pass_steps})")


def announce(plan: RefitPlan, unit: str = "rows") -> str:
    """What the refit is about to do (said as it starts)."""
    return (f"the final model trains again from the backbone on {_all_rows(plan, unit)} for "
            f"{_epochs(plan.epochs)}, the length the validation split chose (best at step {plan.chosen_step} of "
            f"{plan.first_pass_steps})")


def refitted(plan: RefitPlan, steps: int, epochs: float, unit: str = "rows") -> Refitted:
    """The event that ends the refit, with its sentence."""
    return Refitted(plan.rows, steps, epochs, f"the final model trained on all {plan.rows:,} {unit} for "
                                              f"{steps:,} step{'' if steps == 1 else 's'} ({_epochs(epochs)})")
