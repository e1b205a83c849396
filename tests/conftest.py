"""Shared fixtures: a tiny BERT and tokenizer built from configs (no downloads), and small data."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The app exports ONNX in a child process (a few seconds of imports per run); its tests train many
# runs, so they export in-process. tests/test_onnx_export.py checks the child process itself.
os.environ["WORKBENCH_ONNX_CHILD"] = "0"

# Tiny trained exports of every task, shared by the ONNX, predict, serve and app tests (one training each).
pytest_plugins = ["export_samples", "generation_samples"]

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"

POSITIVE = "good great excellent wonderful superb lovely brilliant delightful".split()
NEGATIVE = "bad awful terrible horrible dreadful poor boring dismal".split()
NEUTRAL = "movie film plot actor scene story music ending the a was and it this".split()


def sentiment_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        words = rng.sample(NEUTRAL, rng.randint(2, 8)) + rng.sample(POSITIVE if label == "pos" else NEGATIVE, 2)
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


def write_tsv(path: Path, rows, header=("text", "label")) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        if header:
            f.write("\t".join(header) + "\n")
        for r in rows:
            f.write("\t".join(r) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT with a word-level vocabulary covering the fixture sentences."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(POSITIVE + NEGATIVE + NEUTRAL))
    vocab += [chr(c) for c in range(ord("a"), ord("z") + 1)] + [f"##{chr(c)}" for c in range(ord("a"), ord("z") + 1)]
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(dict.fromkeys(vocab))}, do_lower_case=True)
    tok.save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        max_position_embeddings=128,
    )
    import torch

    torch.manual_seed(0)
    BertForSequenceClassification(config).bert.save_pretrained(folder)  # a bare encoder, like a real backbone
    return folder


@pytest.fixture()
def sentiment_tsv(tmp_path) -> Path:
    return write_tsv(tmp_path / "reviews.tsv", sentiment_rows(240))


@pytest.fixture()
def runs_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "wb-home"
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    return home / "runs"


def needs_shared(*parts: str):
    path = SHARED.joinpath(*parts)
    return pytest.mark.skipif(not path.exists(), reason=f"{path} not present (shared datasets are optional)")
