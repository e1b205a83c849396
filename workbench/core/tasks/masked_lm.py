"""Masked-language-model training on unlabelled text: domain adaptation of a backbone.

``workbench adapt TEXTS --model M`` runs it like any run (run directory, live curves, checkpoints,
resume) and saves the adapted backbone (model and tokenizer) as a folder ``--model`` accepts.

Texts come from a .txt file (one text per line), the text column of a TSV/CSV file, or the
sentences of a CoNLL/CoNLL-U file. 5% (``--val-fraction``) is held out; the held-out masked-LM loss
and perplexity are measured before training and after it, on the same masked positions.

Masking follows BERT (and transformers' DataCollatorForLanguageModeling): 15% of the tokens are
chosen, 80% of those become the mask token, 10% a random token, 10% stay; whole-word masking
chooses words instead, with all their sub-words. Masks are drawn per batch from a generator seeded
by the run's seed and the batch's rows, so a resumed run masks as the uninterrupted one did, and the
held-out texts are masked the same way before and after.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..cancel import NEVER
from ..config import DataConfig
from ..data.holdout import random_split
from ..data.prepare import HELD_OUT
from ..data.tabular import arrow_table
from ..data.validation import ValidationReport
from ..errors import InputError
from ..events import Callbacks, PhaseChanged, Progress, Warning_
from .base import EncodedSplit, EvalResult, PreparedData, Task
from .table import DEFAULT_METHOD, TASKS
from .tokenize import tokenize_columns

IGNORE = -100


def _read_lines(path: Path) -> tuple[list[str], list[int], list[str]]:
    """Non-blank lines of a text file (and their line numbers), UTF-8 or else latin-1."""
    raw = path.read_bytes()
    warnings = []
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        warnings.append(f"{path}: line {line} is not valid UTF-8, so the file was read as latin-1")
        text = raw.decode("latin-1")
    if "\x00" in text:
        raise InputError("holds NUL bytes: it is not a text file", path=path)
    texts, lines = [], []
    for i, text_line in enumerate(text.splitlines(), 1):
        if text_line.strip():
            texts.append(text_line.strip())
            lines.append(i)
    return texts, lines, warnings


class MaskedLanguageModeling(Task):
    spec = TASKS["masked-lm"]
    token_level_loss = True
    evaluate_before_training = True

    def __init__(self) -> None:
        self.seed = 42
        self.probability = 0.15
        self.whole_word = False
        self.callbacks: Callbacks = Callbacks()
        self.source_kind = "lines"

    def configure(self, config) -> None:
        if config.model.method != DEFAULT_METHOD:
            raise InputError("masked-LM adaptation trains the whole backbone; --method does not apply to it")
        self.seed = config.train.seed
        self.probability = config.train.mlm_probability
        self.whole_word = config.train.whole_word_mask

    # ---- data -----------------------------------------------------------------------------------
    def prepare_data(self, cfg: DataConfig, seed: int, cache_dir: Path, callbacks: Callbacks,
                     cancel=NEVER) -> PreparedData:
        import datasets

        self.callbacks = callbacks
        path = Path(cfg.train)
        callbacks.on_event(PhaseChanged("reading", str(path)))
        texts, lines, resolved = self._texts(path, cfg, cache_dir, callbacks, cancel)
        if not texts:
            raise InputError("holds no text to adapt on (it is empty, or every text is blank)", path=path)
        n_held = max(1, round(cfg.val_fraction * len(texts))) if cfg.val_fraction > 0 else 0
        if len(texts) - n_held < 1 or n_held < 1:
            raise InputError(f"has {len(texts)} text(s); adaptation needs at least 2 (one is held out to measure "
                             "the masked-LM loss)", path=path)
        ds = datasets.Dataset.from_dict({"row": list(range(len(texts))), "text": texts, "line": lines})
        if cfg.sample and cfg.sample < len(ds):
            ds, _ = random_split(ds, 1 - cfg.sample / len(ds), seed)
        train, held = random_split(ds, cfg.val_fraction, seed + 1)
        splits = {"train": train, "validation": held}
        sources: dict[str, str | None] = {"train": str(path), "validation": str(path) + HELD_OUT}
        report = ValidationReport(findings=[], class_counts={}, n_rows={k: len(v) for k, v in splits.items()},
                                  paths=sources)
        resolved.update({"sources": sources, "rows": {k: len(v) for k, v in splits.items()}, "texts": len(texts),
                         "masking": {"probability": self.probability, "whole_word": self.whole_word}})
        return PreparedData(splits=splits, label_map=None, report=report, resolved=resolved, eval_split="validation")

    def _texts(self, path: Path, cfg: DataConfig, cache_dir: Path, callbacks, cancel) -> tuple[list, list, dict]:
        from ..data.conll import read_tagged, sniff_tagged
        from ..paths import check_data_path

        check_data_path(path)
        progress = lambda done, total: callbacks.on_event(Progress("reading", done, total))  # noqa: E731
        if sniff_tagged(path) >= 0.5:
            tagged = read_tagged(path, cache_dir=cache_dir / "train", skip_bad=cfg.skip_bad_rows, progress=progress,
                                 cancel=cancel)
            self.source_kind = tagged.format
            table = tagged.dataset.data.table
            texts = [" ".join(tokens) for tokens in table.column("tokens").to_pylist()]
            first = [ls[0] if ls else 0 for ls in table.column("lines").to_pylist()]
            return texts, first, {"format": tagged.format, "warnings": list(tagged.warnings)}
        if path.suffix.lower() == ".txt" and cfg.text_column is None:
            self.source_kind = "lines"
            texts, lines, warnings = _read_lines(path)
            return texts, lines, {"format": "lines", "warnings": warnings}
        return self._table_texts(path, cfg, cache_dir, callbacks, cancel, progress)

    def _table_texts(self, path, cfg, cache_dir, callbacks, cancel, progress):
        from ..data import choose_columns, read_table
        from ..data.tabular import LINE_COLUMN

        table = read_table(path, delimiter=cfg.delimiter, has_header=cfg.has_header, cache_dir=cache_dir / "train",
                           progress=progress, cancel=cancel)
        self.source_kind = "table"
        if len(table.columns) == 1 and cfg.text_column is None:
            column = table.columns[0]
        else:
            column = choose_columns(table, cfg.text_column, cfg.label_column).text
        rows = arrow_table(table.dataset, [column, LINE_COLUMN])
        texts, lines = [], []
        for text, line in zip(rows.column(column).to_pylist(), rows.column(LINE_COLUMN).to_pylist()):
            if text is not None and text.strip():
                texts.append(text.strip())
                lines.append(int(line))
        return texts, lines, {"format": "table", "text_column": column, "delimiter": table.format.delimiter,
                              "has_header": table.format.has_header, "warnings": list(table.warnings)}

    # ---- encoding -------------------------------------------------------------------------------
    def load_preprocessor(self, backbone_path: str):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(backbone_path)
        if tok.mask_token_id is None:
            raise InputError(f"the tokenizer of {backbone_path} has no mask token, so it cannot be trained as a "
                             "masked language model (a BERT-style encoder is needed)")
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        self.mask_id = tok.mask_token_id
        self.vocab_size = len(tok)
        self.special = np.zeros(self.vocab_size, dtype=bool)
        self.special[[i for i in tok.all_special_ids if i is not None and i < self.vocab_size]] = True
        self.continuation = _continuation_tokens(tok, self.vocab_size)
        return tok

    def encode(self, name, rows, tokenizer, max_length, cache_dir, callbacks, cancel=NEVER) -> EncodedSplit:
        callbacks.on_event(PhaseChanged("tokenizing", name))
        inputs, lengths = tokenize_columns(arrow_table(rows, ["text"]).column("text"), tokenizer, max_length,
                                           cache_dir / f"{name}-tokens.arrow", callbacks, cancel)
        return EncodedSplit(name, rows, inputs, np.zeros(len(lengths), np.int64), lengths,
                            truncated=int((lengths >= max_length).sum()))

    def _rng(self, split: EncodedSplit, rows: np.ndarray) -> np.random.Generator:
        digest = hashlib.blake2b(np.ascontiguousarray(rows, dtype=np.int64).tobytes(), digest_size=8).digest()
        return np.random.default_rng([self.seed, int.from_bytes(digest, "little"), split.name == "train"])

    def make_batch(self, split: EncodedSplit, rows: np.ndarray) -> dict[str, np.ndarray]:
        lengths = split.lengths[rows]
        width = int(lengths.max())
        ids = split.inputs["input_ids"].pad(rows, self.pad_id, width)
        attention = np.arange(width)[None, :] < lengths[:, None]
        rng = self._rng(split, rows)
        candidates = attention & ~self.special[ids]
        if self.whole_word:
            # A word is a token that does not continue the one before, with its continuations.
            starts = candidates & ~self.continuation[ids]
            starts[:, 0] |= candidates[:, 0]
            word = np.cumsum(starts, axis=1) * candidates  # 1-based word number of each token (0: none)
            chosen = rng.random((len(rows), width + 1)) < self.probability
            masked = candidates & np.take_along_axis(chosen, word, axis=1) & (word > 0)
        else:
            word = None
            masked = candidates & (rng.random(ids.shape) < self.probability)
        # Every text with a maskable token gets at least one (a whole word): never nothing to predict.
        for r in np.flatnonzero(candidates.any(1) & ~masked.any(1)):
            pick = rng.choice(np.flatnonzero(candidates[r]))
            if word is None:
                masked[r, pick] = True
            else:
                masked[r] |= word[r] == word[r, pick]
        labels = np.where(masked, ids, IGNORE)
        roll = rng.random(ids.shape)
        inputs = ids.copy()
        inputs[masked & (roll < 0.8)] = self.mask_id
        random_token = masked & (roll >= 0.8) & (roll < 0.9)
        inputs[random_token] = rng.integers(0, self.vocab_size, int(random_token.sum()))
        batch = {"input_ids": inputs, "attention_mask": attention.astype(np.int64), "masked_positions": masked}
        if "token_type_ids" in split.inputs:
            batch["token_type_ids"] = split.inputs["token_type_ids"].pad(rows, 0, width)
        batch["labels"] = labels
        return batch

    def loss_units(self, labels: np.ndarray) -> int:
        return int((labels != IGNORE).sum())

    # ---- model ----------------------------------------------------------------------------------
    def build_model(self, backbone_path: str, data: PreparedData):
        from transformers import AutoModelForMaskedLM

        model, info = AutoModelForMaskedLM.from_pretrained(backbone_path, output_loading_info=True)
        prefix = getattr(model, "base_model_prefix", "")
        new = [k for k in info.get("missing_keys", []) if not k.startswith(prefix + ".")]
        self.new_head = bool(new)
        if new:
            self.callbacks.on_event(Warning_(
                f"{Path(backbone_path).name} comes without a masked-LM head, so a new one is trained along: the "
                "'before' perplexity is that of an untrained head, and part of the drop comes from training it"))
        return model

    @staticmethod
    def _parts(model):
        """(encoder, head) when the head is one module on the encoder's hidden states, so the vocabulary
        projection runs on the masked positions alone (most of the output layer's cost); else None."""
        prefix = getattr(model, "base_model_prefix", None)
        base = getattr(model, prefix, None) if prefix else None
        heads = [c for n, c in model.named_children() if n != prefix and any(True for _ in c.parameters())]
        return (base, heads[0]) if base is not None and len(heads) == 1 else None

    def forward(self, model, batch: dict):
        masked = batch.pop("masked_positions")
        parts = self._parts(model)
        if parts is not None:
            base, head = parts
            hidden = base(**batch).last_hidden_state
            return head(hidden[masked])
        return model(**batch).logits[masked]

    def loss(self, logits, labels):
        import torch.nn.functional as F

        return F.cross_entropy(logits.float(), labels[labels != IGNORE])

    def predicted_classes(self, logits, split):
        return None  # evaluation keeps per-text losses, not classes

    def kept_outputs(self, logits, labels):
        return token_losses_per_row(logits, labels)

    # ---- evaluation -----------------------------------------------------------------------------
    def evaluate(self, logits, split, loss, data) -> EvalResult:
        nll, count, correct = (float(x) for x in np.asarray(logits, dtype=np.float64).sum(0)) if len(logits) else (0, 0, 0)
        mean = nll / count if count else float("nan")
        metrics = {"loss": mean, "perplexity": math.exp(min(mean, 700)) if count else float("nan"),
                   "accuracy": correct / count if count else float("nan")}
        return EvalResult(metrics, {"texts": int(len(split)), "masked_tokens": int(count)})

    def report_text(self, result: EvalResult) -> str:
        m, r = result.metrics, result.report
        return (f"masked-LM loss {m['loss']:.4f}, perplexity {m['perplexity']:.2f}, masked-token accuracy "
                f"{m['accuracy']:.4f} on {r['texts']:,} held-out texts ({r['masked_tokens']:,} masked tokens)")

    def write_predictions(self, path: Path, logits, split, data) -> None:
        rows = arrow_table(split.rows, ["row", "text"])
        with open(path, "w", encoding="utf-8") as f:
            for (nll, count, correct), row, text in zip(np.asarray(logits), rows.column("row").to_pylist(),
                                                        rows.column("text").to_pylist()):
                f.write(json.dumps({"row": row, "text": text, "masked_tokens": int(count),
                                    "loss": round(float(nll / count), 6) if count else None,
                                    "correct": int(correct)}, ensure_ascii=False) + "\n")

    # ---- export ---------------------------------------------------------------------------------
    def save_model(self, model, preprocessor, folder: Path, max_length: int) -> None:
        # The tokenizer keeps its own limit: the adapted backbone is fine-tuned later at any length.
        model.save_pretrained(folder, safe_serialization=True)
        preprocessor.save_pretrained(folder)

    def model_card(self, *, task_title, pipeline_tag, backbone, data, hyper, metrics, report_table, eval_split) -> str:
        from ..escaping import md_code, md_fence

        rows = "\n".join(f"| {k} | {v} |" for k, v in hyper.items())
        return f"""---
library_name: transformers
pipeline_tag: fill-mask
tags:
- workbench
---

# {md_code(backbone)} adapted to {md_code(Path(data['sources']['train']).name)}

Continued masked-language-model pretraining ({_masking_text(data)}) of {md_code(backbone)} on
{data.get('texts', '?'):,} unlabelled texts of {md_code(data['sources']['train'])}.

Held-out texts after adaptation:
{md_fence(report_table)}

## Hyper-parameters
| setting | value |
|---|---|
{rows}

## Use
Fine-tune it like any backbone: `workbench train DATA --model path/to/this/folder`.
"""


def token_losses_per_row(logits, labels):
    """Per row: the summed loss of its scored tokens (``logits`` one row per label that is not IGNORE,
    in row-major order), how many there were, how many the model got right."""
    import torch
    import torch.nn.functional as F

    mask = labels != IGNORE
    row_of = mask.nonzero()[:, 0]
    target = labels[mask]
    nll = F.cross_entropy(logits.float(), target, reduction="none")
    out = torch.zeros(labels.shape[0], 3, device=logits.device)
    out[:, 0].index_add_(0, row_of, nll)
    out[:, 1].index_add_(0, row_of, torch.ones_like(nll))
    out[:, 2].index_add_(0, row_of, (logits.argmax(-1) == target).float())
    return out


def _masking_text(data: dict[str, Any]) -> str:
    m = data.get("masking", {})
    return f"{m.get('probability', 0.15):.0%} of the {'words' if m.get('whole_word') else 'tokens'} masked"


def _continuation_tokens(tokenizer, size: int) -> np.ndarray:
    """Which token ids continue a word rather than start one: WordPiece's "##" pieces; for
    SentencePiece ("▁") and byte-level BPE ("Ġ") vocabularies, the pieces without the word-start mark."""
    vocab = tokenizer.get_vocab()
    out = np.zeros(size, dtype=bool)
    tokens = [(t, i) for t, i in vocab.items() if i < size]
    if any(t.startswith("##") for t, _ in tokens):
        for t, i in tokens:
            out[i] = t.startswith("##")
    elif any(t.startswith(("▁", "Ġ")) for t, _ in tokens):
        for t, i in tokens:
            out[i] = not t.startswith(("▁", "Ġ"))
    return out
