"""Tiny generated data and a tiny BERT whose vocabulary covers it, for the tagging, pair and
regression tests. Import the fixtures into a test module to use them."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

FIRST = "john mary peter anna paul lucy mark emma".split()
LAST = "smith jones brown miller".split()
CITIES = "paris berlin london madrid rome vienna".split()
ORGS = "acme globex initech umbrella".split()
FILLER = "the a lives in works for visited likes and today he she it was very big small city company".split()
POS_WORDS = {"DET": ["the", "a"], "NOUN": ["dog", "cat", "city", "company"], "VERB": ["runs", "sleeps", "likes"],
             "ADJ": ["big", "small"], "PUNCT": ["."]}
ALL_WORDS = sorted(set(FIRST + LAST + CITIES + ORGS + FILLER + [w for ws in POS_WORDS.values() for w in ws]
                       + "same different yes no good bad first second score".split()))


def ner_sentences(n: int, seed: int = 0) -> list[list[tuple[str, str]]]:
    """Sentences of (token, IOB2 tag): names are PER, cities LOC, companies ORG."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        person = [rng.choice(FIRST)] + ([rng.choice(LAST)] if rng.random() < 0.5 else [])
        sent = [(w, ("B-PER" if i == 0 else "I-PER")) for i, w in enumerate(person)]
        kind = rng.random()
        if kind < 0.5:
            sent += [("lives", "O"), ("in", "O"), (rng.choice(CITIES), "B-LOC")]
        else:
            sent += [("works", "O"), ("for", "O"), (rng.choice(ORGS), "B-ORG")]
        if rng.random() < 0.3:
            sent += [("today", "O")]
        out.append(sent)
    return out


def pos_sentences(n: int, seed: int = 0) -> list[list[tuple[str, str]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        tags = ["DET"] + (["ADJ"] if rng.random() < 0.5 else []) + ["NOUN", "VERB", "PUNCT"]
        out.append([(rng.choice(POS_WORDS[t]), t) for t in tags])
    return out


def write_conll(path: Path, sentences, *, sep=" ", middle=(), docstart=False, newline="\n", trailing="") -> Path:
    lines = []
    if docstart:
        lines += [f"-DOCSTART-{sep}-X-{sep}O", ""]
    for sent in sentences:
        for tok, tag in sent:
            lines.append(sep.join([tok, *middle, tag]) + trailing)
        lines.append("")
    path.write_bytes(newline.join(lines).encode("utf-8"))
    return path


def write_conllu(path: Path, sentences) -> Path:
    lines = []
    for k, sent in enumerate(sentences):
        lines += [f"# sent_id = s{k}", f"# text = {' '.join(t for t, _ in sent)}"]
        for i, (tok, tag) in enumerate(sent, 1):
            lines.append("\t".join([str(i), tok, tok, tag, tag.lower(), "_", "0", "dep", "_", "_"]))
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def build_tiny_bert(folder: Path, words: list[str]) -> Path:
    """A 2-layer, 32-wide BERT encoder and a word-level tokenizer that knows ``words`` plus single letters
    (so unknown words split into several sub-words)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "'"] + words
    vocab += [chr(c) for c in range(ord("a"), ord("z") + 1)] + [f"##{chr(c)}" for c in range(ord("a"), ord("z") + 1)]
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(dict.fromkeys(vocab))}, do_lower_case=True)
    tok.save_pretrained(folder)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=128)
    torch.manual_seed(0)
    BertForSequenceClassification(config).bert.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_text_model(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-text-bert"), ALL_WORDS)
