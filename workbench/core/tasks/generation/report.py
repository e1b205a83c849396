"""A generation run's report text and model card: the answer tokens' loss, and the generated answers'
scores beside the base model's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..base import EvalResult

TITLES = {"exact_match": "Exact match", "token_f1": "Token F1", "chrf": "chrF", "bleu": "BLEU",
          "rouge_l": "ROUGE-L", "entity_f1": "Entity F1 (JSON lists)"}


def score_table(generation: dict[str, Any]) -> str:
    """metric | base model | fine-tuned | change, one line each (plain text, aligned)."""
    metrics, base = generation.get("metrics") or {}, generation.get("base_metrics")
    head = f"{'':24}{'base model':>12}{'fine-tuned':>12}{'change':>10}"
    lines = [head]
    for key, value in metrics.items():
        if not isinstance(value, (int, float)):
            continue
        title = TITLES.get(key, key) + (" *" if key == generation.get("headline") else "")
        b = base.get(key) if base else None
        change = f"{value - b:+.3f}" if isinstance(b, (int, float)) else ""
        lines.append(f"{title:24}{(f'{b:.3f}' if isinstance(b, (int, float)) else '-'):>12}{value:>12.3f}{change:>10}")
    return "\n".join(lines)


def report_text(result: EvalResult) -> str:
    m, r = result.metrics, result.report
    text = (f"answer-token loss {m['loss']:.4f}, perplexity {m['perplexity']:.2f}, answer-token accuracy "
            f"{m['accuracy']:.4f} on {r.get('examples', 0):,} examples ({r.get('answer_tokens', 0):,} answer tokens)")
    gen = r.get("generation")
    if gen:
        s = gen.get("settings", {})
        how = "greedy" if not s.get("temperature") else f"temperature {s['temperature']:g}, top-p {s.get('top_p', 1):g}"
        text += (f"\n\nGenerated answers ({gen.get('examples', 0):,} of {gen.get('of', 0):,} examples, {how}, at most "
                 f"{s.get('max_new_tokens', '?')} new tokens; * the headline score):\n{score_table(gen)}")
    return text


def model_card(*, backbone: str, data: dict[str, Any], hyper: dict[str, Any], report_table: str, eval_split: str,
               train_on: str) -> str:
    from ...escaping import md_code, md_fence

    rows = "\n".join(f"| {k} | {v} |" for k, v in hyper.items())
    train = Path(str(data.get("sources", {}).get("train", "?"))).name
    loss_on = "the answer tokens only" if train_on == "assistant" else "every token"
    return f"""---
library_name: transformers
pipeline_tag: text-generation
tags:
- workbench
---

# {md_code(backbone)} fine-tuned on {md_code(train)}

Supervised fine-tuning of {md_code(backbone)} on {data.get('examples', '?'):,} examples
({data.get('format_title', 'conversations')}), loss on {loss_on}.

Scores on the {eval_split} split:
{md_fence(report_table)}

## Hyper-parameters
| setting | value |
|---|---|
{rows}

## Use
```python
from transformers import pipeline
chat = pipeline("text-generation", model="path/to/this/folder")
print(chat([{{"role": "user", "content": "..."}}], max_new_tokens=128)[0]["generated_text"][-1]["content"])
```
Or `workbench chat path/to/this/folder`, `workbench serve path/to/this/folder` (an OpenAI-compatible
`/v1/chat/completions`), and the GGUF files, where the export has them, in Ollama, LM Studio or llama.cpp.
"""
