"""What a generation run generates: the base model's answers before training, live samples at each
evaluation, and the fine-tuned model's answers for the final report, all on the same fixed prompts.

The prompts are chosen once (the first ``eval_limit`` examples of the evaluation split, in file order;
the first ``live_samples`` validation examples), so the base and fine-tuned answers compare example
by example and a resumed run scores what the uninterrupted one would have.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ...atomic import write_text_atomic
from ...cancel import NEVER, CancelToken
from ...events import Callbacks, GenerationSamples, PhaseChanged, Progress
from ..base import EncodedSplit, EvalResult

BASE_FILE = "base_answers.json"
LIVE_MAX_NEW_TOKENS = 64  # live samples stay short: they run at every evaluation


class GenerationSession:
    def __init__(self) -> None:
        self.tokenizer: Any = None
        self.model: Any = None
        self.device: Any = None
        self.config: Any = None  # GenerationConfig
        self.seed = 42
        self.callbacks: Callbacks = Callbacks()
        self.cancel: CancelToken = NEVER
        self.eval_name: str | None = None
        self.eval_rows: np.ndarray = np.zeros(0, np.int64)
        self.eval_messages: list[list[dict[str, str]]] = []
        self.references: list[str] = []
        self.live: list[tuple[list[dict[str, str]], str]] = []  # (prompt turns, reference)
        self.base_outputs: list[str] | None = None
        self.outputs: list[str] | None = None
        self.per_example: list[dict[str, Any]] = []

    def configure(self, config, seed: int, callbacks: Callbacks, cancel: CancelToken) -> None:
        self.config, self.seed, self.callbacks, self.cancel = config, seed, callbacks, cancel

    def settings(self):
        """The decoding settings (generate.py) of this run: its config's, or the defaults."""
        from .generate import GenerationSettings

        c = self.config
        if c is None:
            return GenerationSettings(seed=self.seed)
        return GenerationSettings(max_new_tokens=c.max_new_tokens, temperature=c.temperature, top_p=c.top_p,
                                  seed=self.seed)

    # ---- which prompts ----------------------------------------------------------------------------
    def choose(self, splits: dict[str, EncodedSplit]) -> None:
        name = "test" if "test" in splits else "validation" if "validation" in splits else "train"
        self._choose_eval(splits[name])
        live_split = splits.get("validation") or splits[name]
        n_live = self.config.live_samples if self.config is not None else 3
        rows = live_split.rows
        self.live = [(_prompt_turns(json.loads(m)), ref)
                     for m, ref in zip(rows["messages"][:n_live], rows["reference"][:n_live])]

    def _choose_eval(self, split: EncodedSplit) -> None:
        limit = self.config.eval_limit if self.config is not None else None
        n = len(split) if limit is None else min(limit, len(split))
        self.eval_name, self.eval_rows = split.name, np.arange(n)
        rows = split.rows.select(range(n))
        self.eval_messages = [_prompt_turns(json.loads(m)) for m in rows["messages"]]
        self.references = list(rows["reference"])

    # ---- generating -------------------------------------------------------------------------------
    @contextmanager
    def _evaluating(self, model):
        was = model.training
        model.eval()
        try:
            yield model
        finally:
            model.train(was)

    def _generate(self, model, turns: list[list[dict[str, str]]], what: str, max_new_tokens: int | None = None
                  ) -> list[str]:
        import dataclasses

        from .generate import generate_texts
        from .template import prompt_ids

        settings = self.settings()
        if max_new_tokens is not None:
            settings = dataclasses.replace(settings, max_new_tokens=min(settings.max_new_tokens, max_new_tokens))
        prompts = [prompt_ids(self.tokenizer, t) for t in turns]
        self.callbacks.on_event(PhaseChanged("generating", what))
        progress = lambda done, total: self.callbacks.on_event(Progress("generating", done, total))  # noqa: E731
        with self._evaluating(model):
            return generate_texts(model, self.tokenizer, prompts, settings, batch_size=8, cancel=self.cancel,
                                  progress=progress)

    def base_answers(self, model, folder: Path, resumed: bool, write: bool = True) -> None:
        """The base model's answers to the evaluation prompts (kept in ``folder`` for a resumed run) and
        the live samples at step 0. ``write``: False on the ranks of a run other than 0, which generate
        the same (to reach the first collective together) and write nothing."""
        path = folder / BASE_FILE
        if self.config is not None and not self.config.base_eval:
            self.base_outputs = None
        elif resumed and path.exists():
            self.base_outputs = json.loads(path.read_text(encoding="utf-8")).get("outputs")
        else:
            self.base_outputs = self._generate(model, self.eval_messages, "the base model's answers")
            if write:
                write_text_atomic(path, json.dumps({"split": self.eval_name, "outputs": self.base_outputs},
                                                   ensure_ascii=False))
        if not resumed:
            samples = self._live_with(model)
            if samples:
                self.callbacks.on_event(GenerationSamples(0, 0.0, tuple(samples)))

    def live_samples(self) -> list[dict[str, str]]:
        return self._live_with(self.model) if self.model is not None else []

    def _live_with(self, model) -> list[dict[str, str]]:
        if not self.live or self.tokenizer is None:
            return []
        outputs = self._generate(model, [t for t, _ in self.live], "live samples", LIVE_MAX_NEW_TOKENS)
        return [{"prompt": _last_user(t), "reference": ref, "output": out}
                for (t, ref), out in zip(self.live, outputs)]

    def seconds_to_answer(self, model, split: EncodedSplit, rows: dict[str, int], eval_split: str,
                          evaluations: int) -> float:
        """Preflight: every answer a run generates (the base model's and the fine-tuned one's on the
        evaluation prompts, the live samples at each evaluation), costed by timing answers to two of
        ``split``'s prompts at the run's settings. An upper bound: a run answers 8 prompts a batch."""
        import time

        n = min(2, len(split))
        if not n or self.tokenizer is None:
            return 0.0
        turns = [_prompt_turns(json.loads(m)) for m in split.rows["messages"][:n]]
        began = time.perf_counter()
        self._generate(model, turns, "timing answers")
        per_answer = (time.perf_counter() - began) / n
        c = self.config
        prompts = rows.get(eval_split, 0) if c is None or c.eval_limit is None else min(c.eval_limit, rows.get(eval_split, 0))
        answers = prompts * (2 if c is None or c.base_eval else 1)
        live = (c.live_samples if c is not None else 3) * (evaluations + 1)
        short = min(1.0, LIVE_MAX_NEW_TOKENS / max(self.settings().max_new_tokens, 1))  # live answers stop sooner
        return per_answer * (answers + live * short)

    # ---- the report ---------------------------------------------------------------------------------
    def score(self, model, split: EncodedSplit, result: EvalResult) -> EvalResult:
        """``result`` with the generated answers' scores (and the base model's) on ``split``."""
        from .scoring import score_generations

        if self.tokenizer is None:
            return result
        if self.eval_name != split.name:
            self._choose_eval(split)
            self.base_outputs = None
        self.outputs = self._generate(model, self.eval_messages, f"answers for the {split.name} split")
        prompts = [_last_user(t) for t in self.eval_messages]
        scores = score_generations(self.outputs, self.references, prompts=prompts)
        base = None
        if self.base_outputs is not None and len(self.base_outputs) == len(self.outputs):
            base = score_generations(self.base_outputs, self.references, prompts=prompts)
        metrics = {**result.metrics, **scores.metrics}
        report = {**result.report, "generation": {
            "headline": scores.headline, "metrics": scores.metrics,
            "base_metrics": base.metrics if base else None,
            "classes": scores.classes,
            "settings": self.settings().to_dict(), "examples": len(self.outputs),
            "of": len(split)}}
        self.per_example = [{"score": s, "base_score": base.example_score[i] if base else None}
                            for i, s in enumerate(scores.example_score)]
        return EvalResult(metrics, report)

    def write_predictions(self, path: Path, logits, split: EncodedSplit) -> None:
        """One JSON line per generated example: its prompt, the reference, both answers, their scores."""
        losses = np.asarray(logits, dtype=np.float64) if len(logits) else np.zeros((0, 3))
        rows = split.rows.select(self.eval_rows) if len(self.eval_rows) else split.rows.select([])
        lines = []
        for i, (row, line, messages) in enumerate(zip(rows["row"], rows["line"], rows["messages"])):
            nll, count = (losses[i, 0], losses[i, 1]) if i < len(losses) else (0.0, 0.0)
            turns = _prompt_turns(json.loads(messages))
            scores = self.per_example[i] if i < len(self.per_example) else {}
            lines.append(json.dumps({
                "row": int(row), "line": int(line), "messages": turns, "prompt": _last_user(turns),
                "reference": self.references[i] if i < len(self.references) else "",
                "output": self.outputs[i] if self.outputs and i < len(self.outputs) else None,
                "base_output": self.base_outputs[i] if self.base_outputs and i < len(self.base_outputs) else None,
                "score": scores.get("score"), "base_score": scores.get("base_score"),
                "loss": round(float(nll / count), 6) if count else None}, ensure_ascii=False))
        write_text_atomic(path, "".join(x + "\n" for x in lines))


def _prompt_turns(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The turns before the final answer: what generation starts from."""
    return messages[:-1] if messages and messages[-1].get("role") == "assistant" else messages


def _last_user(turns: list[dict[str, str]]) -> str:
    return next((m["content"] for m in reversed(turns) if m.get("role") == "user"), "")
