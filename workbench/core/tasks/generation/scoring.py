"""Scores of generated text against reference answers: exact match and token F1 (SQuAD style), chrF and
BLEU (sacrebleu, its command line's defaults), ROUGE-L (rouge-score), entity F1 for answers that are JSON
lists, and a per-class report when the answers are a few class names (generative classification).

Every metric is reported in 0..1 (sacrebleu's 0..100 divided by 100), corpus-level and per example.

Which metric heads the report follows the references ("as the data suggests"), first rule that applies:

1. every reference parses as a JSON list (entity extraction) -> ``entity_f1``;
2. the references are a few class names (``class_report`` applies) -> ``exact_match`` (the accuracy:
   partial credit means nothing between "positive" and "not positive");
3. short answers (median reference <= 5 words) -> ``token_f1``;
4. longer free text -> ``rouge_l`` when the prompts are given and the references are at most half as
   long as them (summaries), else ``chrf``, which suits translation-like and general text alike and is
   robust to morphology and to scripts without spaces.
"""

from __future__ import annotations

import json
import re
import statistics
import string
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

SHORT_ANSWER_WORDS = 5  # median reference length (words) up to which answers count as short
SUMMARY_RATIO = 0.5  # references at most this fraction of their prompts' length count as summaries
OTHER = "(other)"  # class_report's label for outputs (and rare references) outside the classes

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ASCII_PUNCTUATION = frozenset(string.punctuation)
# Scripts written without spaces between words: each character counts as one word.
_UNSPACED = ((0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2FFFF))


def _unspaced(ch: str) -> bool:
    code = ord(ch)
    return any(lo <= code <= hi for lo, hi in _UNSPACED)


def _is_punctuation(ch: str) -> bool:
    # SQuAD strips string.punctuation (which includes ASCII symbols such as $ and +); Unicode
    # punctuation (« », 。, ¿, curly quotes) is stripped too so other languages normalise alike.
    return ch in _ASCII_PUNCTUATION or unicodedata.category(ch).startswith("P")


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no English articles, single spaces."""
    text = "".join(ch for ch in text.lower() if not _is_punctuation(ch))
    return " ".join(_ARTICLES.sub(" ", text).split())


def _answer_tokens(text: str) -> list[str]:
    """The normalised answer's words; characters of unspaced scripts (Chinese, Japanese) one by one."""
    out: list[str] = []
    for word in normalize_answer(text).split():
        if any(_unspaced(ch) for ch in word):
            out.extend(_split_unspaced(word))
        else:
            out.append(word)
    return out


def _split_unspaced(word: str) -> list[str]:
    parts: list[str] = []
    run = ""
    for ch in word:
        if _unspaced(ch):
            parts.extend([run, ch] if run else [ch])
            run = ""
        else:
            run += ch
    return parts + ([run] if run else [])


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalised answers are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD's token F1 over the normalised answers' words; two empty answers agree (1.0)."""
    pred, gold = _answer_tokens(prediction), _answer_tokens(reference)
    if not pred or not gold:
        return float(pred == gold)
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


class RougeTokenizer:
    """rouge-score's default tokenizer keeps only ``[a-z0-9]``, so any non-ASCII letter splits a word and
    a Russian or Chinese summary scores 0. This one gives the same tokens on ASCII text (lower case, runs
    of letters and digits) and keeps letters, digits and marks of every script; characters of unspaced
    scripts are tokens of their own. Its ``tokenize`` is the interface rouge-score's scorer calls."""

    def tokenize(self, text: str) -> list[str]:
        tokens: list[str] = []
        run: list[str] = []
        for ch in text.lower():
            if _unspaced(ch):
                tokens.extend(["".join(run), ch] if run else [ch])
                run = []
            elif unicodedata.category(ch)[0] in "LNM":  # letters, digits, marks (not "_")
                run.append(ch)
            elif run:
                tokens.append("".join(run))
                run = []
        return tokens + (["".join(run)] if run else [])


def _word_count(text: str) -> int:
    return len(RougeTokenizer().tokenize(text))


# ---- entity extraction: answers that are JSON lists ------------------------------------------------
def _strict_list(text: str) -> list[Any] | None:
    try:
        value = json.loads(text)
    except (ValueError, TypeError):
        return None
    return value if isinstance(value, list) else None


def _lenient_list(text: str) -> list[Any] | None:
    """A model's answer as a JSON list: the whole text, else inside a Markdown code fence, else the first
    JSON list in it (models, the base model above all, often wrap the list in a sentence or a fence)."""
    text = text.strip()
    fenced = re.match(r"^```[\w-]*\s*\n?(.*?)\n?```", text, re.S)
    if fenced:
        text = fenced.group(1).strip()
    found = _strict_list(text)
    if found is not None:
        return found
    decoder = json.JSONDecoder()
    for start in (m.start() for m in re.finditer(r"\[", text)):
        try:
            value, _ = decoder.raw_decode(text, start)
        except ValueError:
            continue
        if isinstance(value, list):
            return value
    return None


def _items(values: list[Any]) -> Counter[str]:
    # Strings compare stripped; other items (objects such as {"text": .., "type": ..}) by their
    # canonical JSON, so typed entities compare as a whole.
    return Counter(v.strip() if isinstance(v, str) else json.dumps(v, sort_keys=True, ensure_ascii=False)
                   for v in values)


def _prf(tp: int, predicted: int, expected: int) -> tuple[float, float, float]:
    """Precision, recall, F1; nothing predicted and nothing expected is a perfect answer."""
    if predicted == 0 and expected == 0:
        return 1.0, 1.0, 1.0
    precision = tp / predicted if predicted else 0.0
    recall = tp / expected if expected else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


@dataclass
class _EntityCounts:
    tp: list[int]
    predicted: list[int]
    expected: list[int]
    unparseable: int
    unparseable_references: int


def _entity_counts(predictions: Sequence[str], references: Sequence[str]) -> _EntityCounts:
    counts = _EntityCounts([], [], [], 0, 0)
    for pred_text, ref_text in zip(predictions, references):
        pred = _lenient_list(pred_text)
        ref = _strict_list(ref_text)
        counts.unparseable += pred is None
        counts.unparseable_references += ref is None
        p, r = _items(pred or []), _items(ref or [])
        counts.tp.append(sum((p & r).values()))
        counts.predicted.append(sum(p.values()))
        counts.expected.append(sum(r.values()))
    return counts


def json_list_f1(predictions: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """Micro precision, recall and F1 of answers that are JSON lists (entity extraction), matching items
    as multisets: an entity named twice must be predicted twice. The metric ``score_generations`` heads
    its report with (``entity_f1``) when every reference parses as a JSON list.

    A prediction that holds no JSON list counts as predicting nothing and is counted in ``unparseable``
    (a reference that is not one, in ``unparseable_references``)."""
    _check_lengths(predictions, references)
    c = _entity_counts(predictions, references)
    precision, recall, f1 = _prf(sum(c.tp), sum(c.predicted), sum(c.expected))
    return {"precision": precision, "recall": recall, "f1": f1, "true_positives": sum(c.tp),
            "predicted": sum(c.predicted), "expected": sum(c.expected), "unparseable": c.unparseable,
            "unparseable_references": c.unparseable_references, "n": len(references)}


# ---- generative classification -------------------------------------------------------------------
def _class_names(normed: list[str], references: Sequence[str], max_classes: int) -> list[str] | None:
    """The normalised references that are classes, sorted; None when the references are not a few."""
    counts = Counter(normed)
    classes = sorted(c for c, k in counts.items() if k >= 2 and c)
    if not 2 <= len(classes) <= max_classes:
        return None
    if sum(counts[c] for c in classes) < 0.9 * len(references):
        return None
    return classes


def class_report(predictions: Sequence[str], references: Sequence[str],
                 max_classes: int = 20) -> dict[str, Any] | None:
    """A classification report when the references are a small set of class names: at most
    ``max_classes`` distinct answers (compared stripped and case-folded), each seen at least twice,
    together at least 90% of the references; None otherwise.

    The keys are those of a classifier's report (``workbench/core/tasks/scoring.py``): ``accuracy``,
    ``macro_f1``, ``weighted_f1``, ``macro_precision``, ``macro_recall`` (over the classes), ``labels``
    (the classes, each spelt as the references most often spell it, then ``"(other)"``), ``per_class``,
    ``confusion_matrix`` (rows gold, columns predicted, over ``labels``) and ``n``; ``other`` counts
    predictions that are none of the classes. Rare references fall in ``"(other)"`` too."""
    _check_lengths(predictions, references)
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

    gold_norm = [r.strip().casefold() for r in references]
    classes = _class_names(gold_norm, references, max_classes)
    if classes is None:
        return None
    pred_norm = [p.strip().casefold() for p in predictions]
    index = {c: i for i, c in enumerate(classes)}
    gold = [index.get(g, len(classes)) for g in gold_norm]
    pred = [index.get(p, len(classes)) for p in pred_norm]
    names = _spellings(classes, gold_norm, references)
    ids = list(range(len(classes)))
    rep: Any = classification_report(gold, pred, labels=ids, target_names=names, output_dict=True, zero_division=0)
    per_class = [{"label": n, "precision": float(rep[n]["precision"]), "recall": float(rep[n]["recall"]),
                  "f1": float(rep[n]["f1-score"]), "support": int(rep[n]["support"])} for n in names]
    return {
        # Accuracy over the strings themselves: two different rare answers are not a match.
        "accuracy": float(accuracy_score(gold_norm, pred_norm)),
        "macro_f1": float(f1_score(gold, pred, labels=ids, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(gold, pred, labels=ids, average="weighted", zero_division=0)),
        "macro_precision": float(rep["macro avg"]["precision"]),
        "macro_recall": float(rep["macro avg"]["recall"]),
        "labels": names + [OTHER],
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(gold, pred, labels=ids + [len(classes)]).tolist(),
        "n": len(references),
        "other": sum(p == len(classes) for p in pred),
    }


def _spellings(classes: list[str], normed: list[str], references: Sequence[str]) -> list[str]:
    """Each class as the references most often write it (stripped), so labels keep their case."""
    seen: dict[str, Counter[str]] = {c: Counter() for c in classes}
    for norm, ref in zip(normed, references):
        if norm in seen:
            seen[norm][ref.strip()] += 1
    # most_common keeps first-seen order among ties: deterministic for a given file.
    names = [seen[c].most_common(1)[0][0] for c in classes]
    # Two classes cannot share a spelling (they differ after case folding), but keep the table's keys
    # unique even so, and distinct from the "(other)" column.
    return [n if n != OTHER else f"{n} " for n in names]


# ---- everything together -------------------------------------------------------------------------
@dataclass
class GenerationScores:
    """Corpus scores (0..1) of generated answers, the metric that heads them, and each example's scores."""

    n: int
    exact_match: float
    token_f1: float
    chrf: float
    bleu: float
    rouge_l: float
    headline: str  # the name of the metric that suits the data best (module docstring)
    per_example: list[dict[str, float]] = field(default_factory=list)  # each example's metrics
    example_score: list[float] = field(default_factory=list)  # the headline metric per example
    entity_f1: float | None = None  # when every reference is a JSON list
    entities: dict[str, Any] | None = None  # json_list_f1's details then
    classes: dict[str, Any] | None = None  # class_report, when the references are a few class names

    @property
    def metrics(self) -> dict[str, float]:
        """The corpus metrics by name (entity F1 only where it applies)."""
        out = {"exact_match": self.exact_match, "token_f1": self.token_f1, "chrf": self.chrf, "bleu": self.bleu,
               "rouge_l": self.rouge_l}
        if self.entity_f1 is not None:
            out["entity_f1"] = self.entity_f1
        return out

    @property
    def headline_value(self) -> float:
        return self.metrics[self.headline]

    def to_dict(self) -> dict[str, Any]:
        """The scores for a report file (JSON): metrics, headline, details; not the per-example lists."""
        return {"n": self.n, "headline": self.headline, "metrics": self.metrics, "entities": self.entities,
                "classes": self.classes}


def _check_lengths(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")


def _library_scores(predictions: list[str], references: list[str]) -> tuple[dict[str, float], list[dict[str, float]]]:
    """chrF and BLEU with sacrebleu's defaults (its command line's: chrF c6 w0 b2, BLEU 13a; sentence BLEU
    with effective order, as sacrebleu advises), ROUGE-L F-measure with rouge-score; corpus and per example."""
    from rouge_score import rouge_scorer
    from sacrebleu.metrics import BLEU, CHRF

    chrf, bleu, sentence_bleu = CHRF(), BLEU(), BLEU(effective_order=True)
    rouge = rouge_scorer.RougeScorer(["rougeL"], tokenizer=RougeTokenizer())
    # min(): sentence BLEU of an exact copy comes out as 1.0000000000000004.
    rows = [{"chrf": chrf.sentence_score(p, [r]).score / 100,
             "bleu": min(sentence_bleu.sentence_score(p, [r]).score / 100, 1.0),
             "rouge_l": float(rouge.score(r, p)["rougeL"].fmeasure)} for p, r in zip(predictions, references)]
    corpus = {"chrf": chrf.corpus_score(predictions, [references]).score / 100,
              "bleu": bleu.corpus_score(predictions, [references]).score / 100,
              "rouge_l": statistics.fmean(row["rouge_l"] for row in rows)}
    return corpus, rows


def choose_headline(references: Sequence[str], *, prompts: Sequence[str] | None = None,
                    classes: bool = False) -> str:
    """The metric that suits these references best (the rules are in the module docstring);
    ``classes`` says ``class_report`` found class names."""
    if not references:
        return "token_f1"
    if all(_strict_list(r) is not None for r in references):
        return "entity_f1"
    if classes:
        return "exact_match"
    if statistics.median(_word_count(r) for r in references) <= SHORT_ANSWER_WORDS:
        return "token_f1"
    if prompts is not None and len(prompts) == len(references):
        ratios = [_word_count(r) / max(_word_count(p), 1) for r, p in zip(references, prompts)]
        if statistics.median(ratios) <= SUMMARY_RATIO:
            return "rouge_l"
    return "chrf"


def score_generations(predictions: Sequence[str], references: Sequence[str], *,
                      prompts: Sequence[str] | None = None, max_classes: int = 20) -> GenerationScores:
    """Score generated answers against references: every metric, corpus-level and per example, the
    headline metric for this data, and the entity and class reports where they apply. ``prompts`` (the
    text each answer was generated from) only tells summaries from other long text."""
    _check_lengths(predictions, references)
    preds, refs = [str(p) for p in predictions], [str(r) for r in references]
    if not refs:
        return GenerationScores(0, 0.0, 0.0, 0.0, 0.0, 0.0, headline="token_f1")
    corpus, rows = _library_scores(preds, refs)
    for row, p, r in zip(rows, preds, refs):
        row["exact_match"], row["token_f1"] = exact_match(p, r), token_f1(p, r)
    # Lists of entities repeat ("[]" above all) without being class names.
    is_lists = all(_strict_list(r) is not None for r in refs)
    classes = None if is_lists else class_report(preds, refs, max_classes)
    headline = choose_headline(refs, prompts=prompts, classes=classes is not None)
    scores = GenerationScores(len(refs), statistics.fmean(r["exact_match"] for r in rows),
                              statistics.fmean(r["token_f1"] for r in rows), corpus["chrf"], corpus["bleu"],
                              corpus["rouge_l"], headline=headline, per_example=rows, classes=classes)
    if headline == "entity_f1":
        counts = _entity_counts(preds, refs)
        for row, tp, got, want in zip(rows, counts.tp, counts.predicted, counts.expected):
            row["entity_f1"] = _prf(tp, got, want)[2]
        scores.entities = json_list_f1(preds, refs)
        scores.entity_f1 = scores.entities["f1"]
    scores.example_score = [row[headline] for row in rows]
    return scores


def scores_text(scores: GenerationScores) -> str:
    """The scores as text for a report: the metrics on one line (headline first), then the class table."""
    from ..scoring import per_class_table

    if scores.n == 0:
        return "no examples scored"
    names = {"exact_match": "exact match", "token_f1": "token F1", "chrf": "chrF", "bleu": "BLEU",
             "rouge_l": "ROUGE-L", "entity_f1": "entity F1"}
    metrics = scores.metrics
    order = [scores.headline] + [k for k in metrics if k != scores.headline]
    lines = ["   ".join(f"{names[k]} {metrics[k]:.4f}" for k in order) + f"   n={scores.n}"]
    if scores.entities is not None and scores.entities["unparseable"]:
        lines.append(f"{scores.entities['unparseable']} of {scores.n} answers hold no JSON list")
    if scores.classes is not None:
        c = scores.classes
        lines += [""] + per_class_table(c["per_class"], head="class")
        lines.append(f"accuracy {c['accuracy']:.4f}   macro F1 {c['macro_f1']:.4f}   "
                     f"{c['other']} answer{'' if c['other'] == 1 else 's'} outside the classes")
    return "\n".join(lines)
