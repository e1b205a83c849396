"""Token classification (tagging): named entities, part-of-speech tags, chunks, from CoNLL or CoNLL-U.

* Alignment: each word is split into sub-words by the tokenizer; the first sub-word carries the
  word's tag and the rest are ignored by the loss (label -100), as in the BERT paper.
* Long sentences are never silently cut: a sentence with more sub-words than ``max_length`` is
  split into windows at word boundaries, each word tagged in exactly one window, and the run warns
  how many sentences were split. Only a single word longer than a whole window loses sub-words
  (its tag is kept); those are counted too.
* Metrics: for span tags (IOB/IOBES/BILOU) entity-level precision/recall/F1 per entity type with
  micro and macro averages (seqeval, the conlleval rules); for plain tags (POS) token accuracy and a
  per-tag report. Both get token accuracy, a per-tag table and a tag confusion matrix. ``f1`` is
  entity micro F1 for span tags and token micro F1 (which equals accuracy) for plain tags.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..cancel import NEVER, CancelToken
from ..data.conll import SENTENCE_SCHEMA, TaggedFile, read_tagged, sniff_tagged
from ..data.prepare import eval_split_of, hold_out, sample_train
from ..data.ragged import RaggedColumn
from ..data.tabular import arrow_table, dataset_dir, iter_batches, write_arrow_dataset
from ..data.tag_schemes import PLAIN, convert, detect_scheme, entity_types, invalid_transitions, resolve_target
from ..data.validation import Finding, ValidationReport
from ..errors import InputError
from ..events import Callbacks, PhaseChanged, Progress, Warning_
from ..labels import build_label_map
from ..metrics import LOSS, Metric
from .base import PREVIEW_ROWS, DataPreview, EncodedSplit, EvalResult, PreparedData, Task
from .scoring import per_class_table, softmax
from .table import TASKS

log = logging.getLogger(__name__)

IGNORE = -100
CHUNK = 1000  # sentences tokenized per call
MAX_LINES = 50
WINDOW_SCHEMA = pa.schema([
    ("input_ids", pa.list_(pa.int32())),
    ("labels", pa.list_(pa.int32())),
    ("label_pos", pa.list_(pa.int32())),  # position of each word's first sub-word in the window
    ("first_word", pa.int64()),  # index of the window's first word among all words of the split
    ("sentence", pa.int64()),
])


def _progress(callbacks: Callbacks, phase: str):
    return lambda done, total: callbacks.on_event(Progress(phase, done, total))


def flat_column(rows, column: str) -> tuple[np.ndarray, np.ndarray]:
    """A list<string> column as (flat values as an object array, sentence offsets)."""
    col = arrow_table(rows, [column]).column(column)
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    values = pc.list_flatten(col).to_numpy(zero_copy_only=False)
    return values, offsets


# ---------------------------------------------------------------------------- sub-word alignment


@dataclass
class Specials:
    prefix: list[int]  # e.g. [CLS]
    suffix: list[int]  # e.g. [SEP]
    unk: int

    @classmethod
    def of(cls, tokenizer) -> "Specials":
        enc = tokenizer([["a"]], is_split_into_words=True, add_special_tokens=True)
        ids, wids = enc["input_ids"][0], enc.word_ids(0)
        first = wids.index(0)
        last = len(wids) - 1 - wids[::-1].index(0)
        unk = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else (tokenizer.pad_token_id or 0)
        return cls(list(ids[:first]), list(ids[last + 1:]), unk)


@dataclass
class WindowStats:
    sentences: int = 0
    windows: int = 0
    split_sentences: int = 0  # sentences longer than max_length, split into several windows
    cut_words: int = 0  # single words with more sub-words than a window holds (tail sub-words dropped)


def encode_sentences(tokenizer, sentences: list[list[str]], tag_ids: list[list[int]] | None, max_length: int,
                     specials: Specials, first_word: int, first_sentence: int, stats: WindowStats) -> dict[str, list]:
    """Windows (dict of WINDOW_SCHEMA columns) for ``sentences``; each word's first sub-word gets its tag."""
    out: dict[str, list] = {k: [] for k in WINDOW_SCHEMA.names}
    budget = max_length - len(specials.prefix) - len(specials.suffix)
    if budget < 1:
        raise InputError(f"--max-length {max_length} leaves no room for words next to the special tokens")
    enc = tokenizer(sentences, is_split_into_words=True, add_special_tokens=False)
    word = first_word
    for i, words in enumerate(sentences):
        groups: list[list[int]] = [[] for _ in words]
        for tid, w in zip(enc["input_ids"][i], enc.word_ids(i)):
            if w is not None:
                groups[w].append(tid)
        tags = tag_ids[i] if tag_ids is not None else None
        stats.sentences += 1
        windows_before = stats.windows
        start = 0
        while start < len(words):
            ids = list(specials.prefix)
            labels = [IGNORE] * len(ids)
            pos: list[int] = []
            w = start
            while w < len(words):
                g = groups[w] or [specials.unk]  # a word the tokenizer drops entirely (e.g. a lone zero-width space)
                if len(g) > budget:
                    g = g[:budget]
                    if len(ids) == len(specials.prefix):
                        stats.cut_words += 1
                if len(ids) - len(specials.prefix) + len(g) > budget:
                    break
                pos.append(len(ids))
                labels.append(tags[w] if tags is not None and tags[w] >= 0 else IGNORE)
                labels.extend([IGNORE] * (len(g) - 1))
                ids.extend(g)
                w += 1
            ids.extend(specials.suffix)
            labels.extend([IGNORE] * len(specials.suffix))
            out["input_ids"].append(ids)
            out["labels"].append(labels)
            out["label_pos"].append(pos)
            out["first_word"].append(word + start)
            out["sentence"].append(first_sentence + i)
            stats.windows += 1
            start = w
        if stats.windows - windows_before > 1:
            stats.split_sentences += 1
        word += len(words)
    return out


def word_logits(logits: np.ndarray, split: EncodedSplit) -> np.ndarray:
    """Per-word logits (n_words, n_tags), read at each word's first sub-word in its window."""
    pos = split.inputs["label_pos"]
    counts = pos.lengths
    window = np.repeat(np.arange(len(counts)), counts)
    words = np.repeat(split.inputs["first_word"], counts) + _ranks(counts)
    out = np.zeros((int(split.inputs["n_words"]), logits.shape[-1]), dtype=np.float32)
    # pos.values holds the positions window after window, so it lines up with ``window``.
    out[words] = logits[window, pos.values]
    return out


def _ranks(counts: np.ndarray) -> np.ndarray:
    """0..n-1 within each group of sizes ``counts``: [2, 3] -> [0, 1, 0, 1, 2]."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total) - starts


def _tag_column_text(column: str) -> str:
    if column == "last":
        return "the last column"
    if column.isdigit():
        return f"column {int(column) + 1}"
    return column.upper()  # CoNLL-U: UPOS or XPOS


def sentence_preview(read: TaggedFile) -> DataPreview:
    """A tagged file shown one sentence a row: its words, its tags and how many words."""
    from ..data.tabular import LINE_COLUMN

    n = len(read.dataset)
    rows = arrow_table(read.dataset.select(range(min(n, PREVIEW_ROWS))), ["tokens", "tags", "lines"])
    tokens, tags = rows.column("tokens").to_pylist(), rows.column("tags").to_pylist()
    table = pa.table({  # in memory: the memory-mapped file it came from is in a scratch folder
        "sentence": pa.array([" ".join(t) for t in tokens], pa.string()),
        "tags": pa.array([" ".join(t) for t in tags], pa.string()),
        "words": pa.array([len(t) for t in tokens], pa.int64()),
        LINE_COLUMN: pa.array([ln[0] if ln else 0 for ln in rows.column("lines").to_pylist()], pa.int64()),
    })
    kind = "CoNLL-U" if read.format == "conllu" else "CoNLL"
    return DataPreview(read.path, table, ["sentence", "tags", "words"], n, unit="sentences",
                       description=f"{n:,} sentences, {read.n_tokens:,} tokens ({kind}, tags from "
                                   f"{_tag_column_text(read.tag_column)})",
                       malformed=list(read.malformed), counts_title="Tags")


# ---------------------------------------------------------------------------- the task


class TokenClassification(Task):
    spec = TASKS["token-classification"]
    token_level_loss = True
    per_token_outputs = True
    # Random batches by default (on the CPU the loop still trains each as length-sorted
    # micro-batches, see TrainingLoop._forward_backward): length-grouped batches are 1.7x faster,
    # but batches of same-length sentences are also batches of one kind of sentence, and on short
    # runs that cost accuracy (UD English EWT, 1 epoch of 2,001 sentences, 8 seeds: UPOS 0.9174
    # grouped, 0.9193 random, 0.9185 for transformers' Trainer). --group-by-length opts in.
    group_by_length_default = False

    def metric_specs(self) -> tuple[Metric, ...]:
        if getattr(self, "scheme", None) != PLAIN:
            return self.metrics
        # Part-of-speech and other plain tags: no entities; micro F1, precision and recall all equal
        # token accuracy (one gold and one predicted tag per word).
        return (
            Metric("accuracy", "Token accuracy", plot=True, headline=True),
            Metric("macro_f1", "Macro F1 (tags)", plot=True, headline=True),
            Metric("f1", "Micro F1 (= token accuracy)"),
            Metric("precision", "Micro precision (= token accuracy)"),
            Metric("recall", "Micro recall (= token accuracy)"),
            LOSS,
        )

    @classmethod
    def sniff(cls, path: Path) -> float:
        return sniff_tagged(path)

    # ---- data -----------------------------------------------------------------------------------
    def _read(self, split: str, path: str, cfg, cache_dir: Path, callbacks, cancel) -> TaggedFile:
        callbacks.on_event(PhaseChanged("reading", str(path)))
        return read_tagged(path, tag_column=cfg.tag_column, skip_bad=cfg.skip_bad_rows, cache_dir=cache_dir / split,
                           progress=_progress(callbacks, "reading"), cancel=cancel)

    def prepare_data(self, cfg, seed, cache_dir, callbacks, cancel=NEVER) -> PreparedData:
        files = {"train": self._read("train", cfg.train, cfg, cache_dir, callbacks, cancel)}
        self._preview = sentence_preview(files["train"])  # before any check can refuse the file
        for name, path in (("validation", cfg.val), ("test", cfg.test)):
            if path:
                files[name] = self._read(name, path, cfg, cache_dir, callbacks, cancel)
        splits = {k: f.dataset for k, f in files.items()}
        sources = {k: str(f.path) for k, f in files.items()}
        warnings = [w for f in files.values() for w in f.warnings]

        callbacks.on_event(PhaseChanged("validating"))
        sample_train(splits, cfg, seed, stratify=False)
        hold_out(splits, sources, cfg, seed, stratify=False)

        findings: list[Finding] = []
        detected = {k: self._detect(ds, cancel) for k, ds in splits.items()}
        source_scheme = detected["train"]
        try:
            target = resolve_target(cfg.tag_scheme, source_scheme)
        except ValueError:
            raise InputError(f"unknown --tag-scheme {cfg.tag_scheme!r}; choose auto, iob2, iobes, io or none") from None
        if target != PLAIN:
            for name, ds in splits.items():
                if detected[name] == PLAIN:
                    raise InputError(f"has tags that are not O or B-/I-/E-/S- span tags, unlike {sources['train']}; "
                                     "use one tag set for all files", path=sources[name])
                if detected[name] != source_scheme and name != "train":
                    findings.append(Finding("info", "scheme_differs",
                                            f"{sources[name]}: tags are in {detected[name]}, the training file's in "
                                            f"{source_scheme}; both are trained and scored as {target}",
                                            [], 0, sources[name], name))
                findings += self._check_sequences(name, ds, detected[name], sources[name], cancel)
                splits[name] = self._convert(ds, target, cancel)

        tags_train, _ = flat_column(splits["train"], "tags")
        label_map = build_label_map(pa.array(tags_train, pa.string()))
        if len(label_map) < 2:
            raise InputError(f"has only the tag {label_map.names[0]!r}; a tagger needs at least two tags"
                             if label_map.names else "has no tags", path=sources["train"])
        counts = {}
        for name, ds in splits.items():
            tags, _ = flat_column(ds, "tags")
            values, n = np.unique(tags.astype(str), return_counts=True) if len(tags) else (np.array([]), np.array([]))
            counts[name] = {str(v): int(c) for v, c in zip(values, n)}
            unseen = sorted(set(counts[name]) - set(label_map.names))
            if unseen and name != "train":
                n_unseen = sum(counts[name][t] for t in unseen)
                findings.append(Finding("warning", "unseen_test_labels",
                                        f"{sources[name]}: {n_unseen:,} token(s) carry tags that never occur in "
                                        f"{sources['train']} ({', '.join(unseen[:10])}); the model cannot predict "
                                        "them and they count as errors", [], n_unseen, sources[name], name))
        findings.sort(key=lambda f: {"error": 0, "warning": 1}.get(f.severity, 2))
        report = ValidationReport(findings, counts, {k: len(v) for k, v in splits.items()}, dict(sources))

        self.label_map = label_map
        self.scheme = target
        self.source_scheme = source_scheme
        resolved = {
            "format": files["train"].format,
            "tag_column": files["train"].tag_column,
            "tag_scheme": target,
            "tag_scheme_detected": source_scheme,
            "entity_types": entity_types(label_map.names) if target != PLAIN else [],
            "sources": sources,
            "rows": {k: len(v) for k, v in splits.items()},
            "tokens": {k: sum(c.values()) for k, c in counts.items()},
            "labels": label_map.names,
            "encoding": files["train"].encoding,
            "warnings": warnings,
        }
        return PreparedData(splits=splits, label_map=label_map, report=report, resolved=resolved,
                            eval_split=eval_split_of(splits))

    def describe_data(self, data: PreparedData) -> str:
        r = data.resolved
        detected, target = r.get("tag_scheme_detected"), r.get("tag_scheme")
        if r.get("entity_types"):
            return (f"Entity types: {', '.join(r['entity_types'])}; tag scheme {detected}"
                    + (f", trained as {target}." if target != detected else "."))
        return f"{len(r.get('labels', [])):,} tags (plain tags, scored by token accuracy)."

    def _detect(self, ds, cancel: CancelToken) -> str:
        def sentences():
            for b in iter_batches(ds, ["tags"], batch_rows=5000):
                cancel.raise_if_cancelled()
                yield from b.column("tags").to_pylist()

        return detect_scheme(sentences())

    def _check_sequences(self, name, ds, scheme, path, cancel) -> list[Finding]:
        lines: list[int] = []
        first: tuple[int, str] | None = None  # the first break's line and problem
        count = 0
        for b in iter_batches(ds, ["tags", "lines"], batch_rows=5000):
            cancel.raise_if_cancelled()
            for tags, where in zip(b.column("tags").to_pylist(), b.column("lines").to_pylist()):
                for i, problem in invalid_transitions(tags, scheme):
                    count += 1
                    if len(lines) < MAX_LINES:
                        lines.append(where[i])
                    if first is None:
                        first = (where[i], problem)
        if first is None:  # nothing counted
            return []
        return [Finding("warning", "invalid_tag_sequence",
                        f"{path}: {count:,} tag(s) break the {scheme} scheme (line {first[0]}: {first[1]}); they "
                        "are read as the CoNLL evaluation script reads them (a stray I- tag starts an entity)",
                        lines, count, path, name)]

    def _convert(self, ds, target: str, cancel: CancelToken):
        def batches():
            for b in iter_batches(ds, ["row", "tokens", "tags", "lines"], batch_rows=5000):
                cancel.raise_if_cancelled()
                tags = [convert(t, target) for t in b.column("tags").to_pylist()]
                yield pa.table([b.column("row"), b.column("tokens"), pa.array(tags, pa.list_(pa.string())),
                                b.column("lines")], schema=SENTENCE_SCHEMA)

        return write_arrow_dataset(batches(), SENTENCE_SCHEMA, dataset_dir(ds), stem=f"tags-{target}")

    # ---- encoding -------------------------------------------------------------------------------
    def load_preprocessor(self, backbone_path: str):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(backbone_path)
        if not getattr(tok, "is_fast", False):
            raise InputError(f"the backbone's tokenizer ({type(tok).__name__}) is not a fast tokenizer; tagging "
                             "needs one to map sub-words back to words")
        try:
            tok([["a"]], is_split_into_words=True)
        except Exception as e:  # byte-level BPE (RoBERTa, GPT-2) needs a prefix space for pre-split words
            log.info("tokenizer of %s needs add_prefix_space=True for pre-split words (%s)", backbone_path, e)
            tok = AutoTokenizer.from_pretrained(backbone_path, add_prefix_space=True)
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        self.specials = Specials.of(tok)
        self.window_stats: dict[str, WindowStats] = {}
        return tok

    def encode(self, name, rows, tokenizer, max_length, cache_dir, callbacks, cancel=NEVER) -> EncodedSplit:
        callbacks.on_event(PhaseChanged("tokenizing", name))
        tags, offsets = flat_column(rows, "tags")
        tag_ids = self.label_map.encode(pa.array(tags, pa.string()))
        n = len(offsets) - 1
        stats = WindowStats()
        path = cache_dir / f"{name}-windows.arrow"
        path.parent.mkdir(parents=True, exist_ok=True)
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, WINDOW_SCHEMA) as writer:
            start = 0
            for batch in iter_batches(rows, ["tokens"], batch_rows=CHUNK):
                cancel.raise_if_cancelled()
                sentences = batch.column("tokens").to_pylist()
                end = start + len(sentences)
                ids = [tag_ids[offsets[i]:offsets[i + 1]].tolist() for i in range(start, end)]
                cols = encode_sentences(tokenizer, sentences, ids, max_length, self.specials, int(offsets[start]),
                                        start, stats)
                writer.write_batch(pa.record_batch([pa.array(cols[f.name], f.type) for f in WINDOW_SCHEMA],
                                                   schema=WINDOW_SCHEMA))
                callbacks.on_event(Progress("tokenizing", end, n))
                start = end
        table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
        inputs = {
            "input_ids": RaggedColumn(table.column("input_ids")),
            "labels": RaggedColumn(table.column("labels")),
            "label_pos": RaggedColumn(table.column("label_pos")),
            "first_word": table.column("first_word").to_numpy(),
            "sentence": table.column("sentence").to_numpy(),
            "offsets": offsets,
            "n_words": int(offsets[-1]),
        }
        self.window_stats[name] = stats
        if stats.split_sentences:
            callbacks.on_event(Warning_(
                f"{stats.split_sentences:,} of {n:,} {name} sentences are longer than --max-length {max_length} "
                f"sub-word tokens; they were split into windows ({stats.windows:,} windows in all), so every word "
                "is still tagged and scored"))
        if stats.cut_words:
            callbacks.on_event(Warning_(
                f"{stats.cut_words:,} {name} word(s) have more sub-word tokens than fit in --max-length {max_length}; "
                "only their first sub-words were kept (their tags were kept)"))
        return EncodedSplit(name, rows, inputs, tag_ids, inputs["input_ids"].lengths.copy(), truncated=0)

    # ---- model ----------------------------------------------------------------------------------
    def build_model(self, backbone_path: str, data: PreparedData):
        from transformers import AutoModelForTokenClassification

        label_map = data.require_label_map()
        return AutoModelForTokenClassification.from_pretrained(
            backbone_path,
            num_labels=len(label_map),
            id2label=label_map.id2label,
            label2id=label_map.label2id,
            ignore_mismatched_sizes=True,
        )

    def make_batch(self, split: EncodedSplit, rows: np.ndarray) -> dict[str, np.ndarray]:
        lengths = split.lengths[rows]
        width = int(lengths.max())
        return {
            "input_ids": split.inputs["input_ids"].pad(rows, self.pad_id, width),
            "attention_mask": (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64),
            "labels": split.inputs["labels"].pad(rows, IGNORE, width),
        }

    def loss_units(self, labels: np.ndarray) -> int:
        return int((labels != IGNORE).sum())  # the loss is a mean over labelled sub-words

    def loss(self, logits, labels):
        import torch.nn.functional as F

        # A sum over labelled sub-words divided by their count (at least 1): no NaN for a batch whose
        # words all carry tags unseen in training, and no host-device sync to check for one.
        total = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                ignore_index=IGNORE, reduction="sum")
        return total / (labels != IGNORE).sum().clamp(min=1)

    # ---- evaluation -----------------------------------------------------------------------------
    def _decode(self, logits: np.ndarray, split: EncodedSplit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(gold tags, predicted tags, confidence) per word, as flat arrays."""
        probs = softmax(word_logits(logits, split))
        pred_ids = probs.argmax(-1)
        names = np.array(self.label_map.names, dtype=object)
        gold, _ = flat_column(split.rows, "tags")
        return gold, names[pred_ids], probs[np.arange(len(pred_ids)), pred_ids]

    def predicted_classes(self, logits, split) -> np.ndarray:
        return word_logits(logits, split).argmax(-1)  # one tag per word, as _decode reads them

    def evaluate(self, logits, split, loss, data) -> EvalResult:
        from sklearn.metrics import classification_report, confusion_matrix

        gold, pred, _ = self._decode(logits, split)
        offsets = split.inputs["offsets"]
        correct = gold == pred
        accuracy = float(correct.mean()) if len(gold) else 0.0
        errors_per_sentence = np.add.reduceat(~correct, offsets[:-1]) if len(gold) else np.zeros(0)
        errors_per_sentence[np.diff(offsets) == 0] = 0
        tag_labels = list(self.label_map.names) + sorted(set(gold.tolist()) - set(self.label_map.names))
        rep = classification_report(gold, pred, labels=tag_labels, output_dict=True, zero_division=0)
        per_tag = [{"label": t, "precision": float(rep[t]["precision"]), "recall": float(rep[t]["recall"]),
                    "f1": float(rep[t]["f1-score"]), "support": int(rep[t]["support"])} for t in tag_labels]
        report = {
            "labels": self.label_map.names,
            "tag_kind": "spans" if self.scheme != PLAIN else "tags",
            "tag_scheme": self.scheme,
            "per_tag": per_tag,
            "confusion_labels": tag_labels,
            "confusion_matrix": confusion_matrix(gold, pred, labels=tag_labels).tolist(),
            "n": int(len(offsets) - 1),
            "tokens": int(len(gold)),
            "sentences_with_errors": int((errors_per_sentence > 0).sum()),
        }
        stats = getattr(self, "window_stats", {}).get(split.name)
        if stats is not None:
            report["windows"] = {"windows": stats.windows, "split_sentences": stats.split_sentences,
                                 "cut_words": stats.cut_words}
        if self.scheme != PLAIN:
            from seqeval.metrics import classification_report as entity_report

            y_true = [gold[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])]
            y_pred = [pred[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])]
            ents = entity_report(y_true, y_pred, output_dict=True, zero_division=0)
            types = [k for k in ents if not k.endswith(" avg")]
            report["per_class"] = [{"label": t, "precision": float(ents[t]["precision"]),
                                    "recall": float(ents[t]["recall"]), "f1": float(ents[t]["f1-score"]),
                                    "support": int(ents[t]["support"])} for t in sorted(types)]
            micro, macro = ents.get("micro avg", {}), ents.get("macro avg", {})
            metrics = {
                "f1": float(micro.get("f1-score", 0.0)),
                "precision": float(micro.get("precision", 0.0)),
                "recall": float(micro.get("recall", 0.0)),
                "macro_f1": float(macro.get("f1-score", 0.0)),
                "accuracy": accuracy,
                "loss": float(loss),
            }
        else:
            report["per_class"] = per_tag
            known = [t for t in tag_labels if rep[t]["support"] > 0]
            macro = float(np.mean([rep[t]["f1-score"] for t in known])) if known else 0.0
            # One gold and one predicted tag per word: micro precision, recall and F1 all equal accuracy.
            metrics = {"f1": accuracy, "precision": accuracy, "recall": accuracy, "macro_f1": macro,
                       "accuracy": accuracy, "loss": float(loss)}
        return EvalResult(metrics, report)

    def write_predictions(self, path: Path, logits, split, data) -> None:
        gold, pred, conf = self._decode(logits, split)
        offsets = split.inputs["offsets"]
        with open(path, "w", encoding="utf-8") as f:
            start = 0
            for batch in iter_batches(split.rows, ["row", "tokens"], batch_rows=5000):
                for j, (row, tokens) in enumerate(zip(batch.column("row").to_pylist(), batch.column("tokens").to_pylist())):
                    a, b = offsets[start + j], offsets[start + j + 1]
                    g, p = gold[a:b].tolist(), pred[a:b].tolist()
                    f.write(json.dumps({
                        "row": row,
                        "tokens": tokens,
                        "gold": g,
                        "predicted": p,
                        "errors": sum(x != y for x, y in zip(g, p)),
                        "confidence": [round(float(c), 4) for c in conf[a:b]],
                    }, ensure_ascii=False) + "\n")
                start += batch.num_rows

    def report_text(self, result: EvalResult) -> str:
        rep, m = result.report, result.metrics
        rows = rep["per_class"]
        head = "entity" if rep["tag_kind"] == "spans" else "tag"
        lines = per_class_table(rows, head)
        lines.append("")
        if rep["tag_kind"] == "spans":
            lines.append(f"entity micro F1 {m['f1']:.4f} (precision {m['precision']:.4f}, recall {m['recall']:.4f})   "
                         f"macro F1 {m['macro_f1']:.4f}   token accuracy {m['accuracy']:.4f}")
        else:
            lines.append(f"token accuracy {m['accuracy']:.4f}   macro F1 {m['macro_f1']:.4f}")
        lines.append(f"{rep['n']:,} sentences, {rep['tokens']:,} tokens, {rep['sentences_with_errors']:,} sentences "
                     f"with at least one error; tag scheme {rep['tag_scheme']}")
        w = rep.get("windows")
        if w and w["split_sentences"]:
            lines.append(f"{w['split_sentences']:,} long sentences were split into windows")
        return "\n".join(lines)

    def model_card(self, **fields) -> str:
        """The export's README.md, with transformers' token-classification pipeline and its entity groups."""
        from ..export.model import model_card

        usage = f"""```python
from transformers import pipeline
tagger = pipeline("{self.pipeline_tag}", model="path/to/this/folder", aggregation_strategy="simple")
tagger("John Smith lives in Berlin")  # entity groups named by your tags (IOB2 tags group cleanly)
```
Training labelled the first sub-word of each word; `aggregation_strategy="first"` reads words the same way."""
        return model_card(**fields, usage=usage)


# ---------------------------------------------------------------------------- tagging new text

_WORDS = re.compile(r"\w+(?:[-'’.]\w+)*|[^\w\s]")


class Tagger:
    """Tags raw text with an exported model the way training aligned it (first sub-word per word).

        tagger = Tagger("RUN/model")
        tagger.tag("John lives in Berlin")  # [{"word": "John", "tag": "B-PER", "confidence": .97, ...}]
    """

    def __init__(self, model_dir: str | Path, device: str = "cpu") -> None:
        import torch
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        try:
            self.tokenizer([["a"]], is_split_into_words=True)
        except Exception:
            self.tokenizer = AutoTokenizer.from_pretrained(model_dir, add_prefix_space=True)
        self.model = AutoModelForTokenClassification.from_pretrained(model_dir).to(device).eval()
        self.device = device
        self.names = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        self.max_length = min(int(getattr(self.tokenizer, "model_max_length", 512) or 512), 512)
        self.specials = Specials.of(self.tokenizer)
        self._torch = torch

    @staticmethod
    def words(text: str) -> list[tuple[str, int, int]]:
        return [(m.group(), m.start(), m.end()) for m in _WORDS.finditer(text)]

    def tag_words(self, words: list[str]) -> list[tuple[str, float]]:
        if not words:
            return []
        torch = self._torch
        cols = encode_sentences(self.tokenizer, [words], None, self.max_length, self.specials, 0, 0, WindowStats())
        tags: list[tuple[str, float]] = []
        with torch.inference_mode():
            for ids, pos in zip(cols["input_ids"], cols["label_pos"]):
                logits = self.model(input_ids=torch.tensor([ids], device=self.device)).logits[0].float().cpu().numpy()
                probs = softmax(logits[pos])
                tags += [(self.names[k], float(probs[j, k])) for j, k in enumerate(probs.argmax(-1))]
        return tags

    def tag(self, text: str) -> list[dict]:
        found = self.words(text)
        tagged = self.tag_words([w for w, _, _ in found])
        return [{"word": w, "start": s, "end": e, "tag": t, "confidence": c} for (w, s, e), (t, c) in zip(found, tagged)]
