"""Domain adaptation: `workbench adapt` (masked-LM on unlabelled text) and its adapted backbone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import sentiment_rows, write_tsv
from text_tasks_helpers import ALL_WORDS, build_tiny_bert, ner_sentences, write_conll

from workbench.core.adaptation.adapt import adaptation_config, adapted_summary, run_adaptation
from workbench.core.cancel import NEVER
from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from workbench.core.errors import InputError
from workbench.core.events import Callbacks
from workbench.core.tasks.masked_lm import MaskedLanguageModeling


@pytest.fixture(scope="module")
def tiny_mlm(tmp_path_factory) -> Path:
    """A tiny BERT with its masked-LM head (BertForMaskedLM), and a word-level tokenizer that splits
    words it does not know into letters."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    folder = tmp_path_factory.mktemp("tiny-mlm")
    words = sorted(set(ALL_WORDS) - {"excellent", "terrible"})  # these two split into ##letters
    build_tiny_bert(folder, words + "good great bad awful movie film plot actor scene story".split())
    config = BertConfig.from_pretrained(folder)
    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(folder)
    return folder


@pytest.fixture()
def texts(tmp_path) -> Path:
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(text for text, _ in sentiment_rows(300)) + "\n\n", encoding="utf-8")
    return path


def _train(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 3, "batch_size": 16, "lr": 3e-3, "max_length": 32, "seed": 1, "save_minutes": 0,
                          **kw})


def test_adapt_lowers_the_held_out_loss_and_its_backbone_fine_tunes(tiny_mlm, texts, tmp_path, runs_home):
    from workbench.core.backbones import offline_backbones, resolve_backbone
    from workbench.core.run.pipeline import run_training

    result = run_adaptation(adaptation_config(str(texts), str(tiny_mlm), train=_train()))
    summary = adapted_summary(result)
    assert summary["loss_after"] < summary["loss_before"] - 0.3
    assert summary["perplexity_after"] == pytest.approx(np.exp(summary["loss_after"]))
    run = Path(result.run_dir)
    assert json.loads((run / "config.json").read_text())["data"]["val_fraction"] == 0.05
    assert json.loads((run / "before_training.json").read_text())["loss"] == summary["loss_before"]
    assert json.loads((run / "validation.json").read_text())["n_rows"] == {"train": 285, "validation": 15}
    evals = [e for e in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if e["event"] == "EvalMetrics"]
    assert evals[0]["step"] == 0 and len(evals) >= 5  # the curve starts from the untrained model

    backbone = Path(summary["backbone_dir"])
    assert backbone == run / "model" and (backbone / "tokenizer.json").is_file()
    info = resolve_backbone(str(backbone))
    assert info.name == f"{tiny_mlm.name} adapted on texts.txt" and info.source == "adapted"
    assert any(b.path == str(backbone) and b.name == info.name for b in offline_backbones("text"))

    tuned = run_training(RunConfig(data=DataConfig(train=str(write_tsv(tmp_path / "r.tsv", sentiment_rows(80)))),
                                   model=ModelConfig(name=str(backbone)), train=_train(epochs=1)))
    assert tuned.backbone["name"] == info.name and "accuracy" in tuned.metrics


def _task(tokenizer_dir, **train) -> MaskedLanguageModeling:
    task = MaskedLanguageModeling()
    task.configure(RunConfig(task="masked-lm", train=TrainConfig(**train)))
    task.load_preprocessor(str(tokenizer_dir))
    return task


def test_masking_follows_bert_and_whole_words_go_together(tiny_mlm, tmp_path):
    import datasets

    from workbench.core.tasks.base import EncodedSplit

    texts = ["the excellent movie was terrible and the plot was good"] * 200
    rows = datasets.Dataset.from_dict({"row": list(range(200)), "text": texts})
    for whole_word in (False, True):
        task = _task(tiny_mlm, whole_word_mask=whole_word)
        tok = task.load_preprocessor(str(tiny_mlm))
        split: EncodedSplit = task.encode("train", rows, tok, 64, tmp_path / str(whole_word), Callbacks(), NEVER)
        batch = task.make_batch(split, np.arange(200))
        ids = split.inputs["input_ids"].pad(np.arange(200), 0, batch["labels"].shape[1])
        masked = batch["labels"] != -100
        assert (batch["labels"][masked] == ids[masked]).all()
        assert not masked[:, 0].any() and not masked[ids == tok.sep_token_id].any()  # never [CLS] or [SEP]
        words = np.array([not t.startswith("##") for t in tok.convert_ids_to_tokens(ids[0])])
        if whole_word:
            # A masked piece of "excellent" (e, ##x, ##c, ...) means all of that word is masked.
            spans = np.cumsum(words)
            for r in range(200):
                for w in np.unique(spans[masked[r]]):
                    assert masked[r, spans == w].all()
            assert 0.08 < masked[:, words].mean() < 0.25  # ~15% of the words
        else:
            assert 0.11 < masked.sum() / (ids != 0)[:, 1:-1].sum() < 0.2  # ~15% of the tokens
            assert not (masked & ~words).all(axis=1).any()
        replaced = batch["input_ids"][masked]
        assert 0.7 < (replaced == tok.mask_token_id).mean() < 0.9  # 80% [MASK], the rest random or kept
        again = task.make_batch(split, np.arange(200))
        assert (again["labels"] == batch["labels"]).all()  # the same rows mask the same way (resume, before/after)


def test_adapt_reads_text_lines_table_columns_and_conll_sentences(tmp_path):
    task = MaskedLanguageModeling()
    cfg = adaptation_config("", "m").data

    def prepared(path, **kw):
        return task.prepare_data(DataConfig(**{**cfg.__dict__, "train": str(path), **kw}), 0, tmp_path / "c",
                                 Callbacks())

    data = prepared(write_tsv(tmp_path / "r.tsv", sentiment_rows(100), header=("sentiment", "tweet")), text_column="tweet")
    assert data.resolved["text_column"] == "tweet" and data.resolved["rows"] == {"train": 95, "validation": 5}
    conll = write_conll(tmp_path / "ner.conll", ner_sentences(40))
    data = prepared(conll)
    assert data.resolved["format"] == "conll" and data.resolved["texts"] == 40
    assert " lives in " in data.splits["train"]["text"][0] or " works for " in data.splits["train"]["text"][0]
    lines = tmp_path / "t.txt"
    lines.write_text("one text\n\n  \nanother text\n", encoding="utf-8")
    assert prepared(lines).resolved["texts"] == 2

    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(InputError, match="no text to adapt on") as e:
        prepared(empty)
    assert str(empty) in str(e.value)
    one = tmp_path / "one.txt"
    one.write_text("just one\n", encoding="utf-8")
    with pytest.raises(InputError, match="at least 2"):
        prepared(one)


@pytest.mark.slow
def test_cli_adapt(tiny_mlm, texts, tmp_path):
    from test_cli import wb

    out = tmp_path / "adapted"
    p = wb(["adapt", texts, "--model", tiny_mlm, "--epochs", 2, "--lr", "3e-3", "--batch-size", 16, "--max-length", 32,
            "--whole-word-mask", "--output", out], tmp_path / "home")
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["backbone_dir"] == str(out) and summary["perplexity_after"] < summary["perplexity_before"]
    assert (out / "model.safetensors").is_file()
    config = json.loads((Path(summary["run_dir"]) / "config.json").read_text())
    assert config["task"] == "masked-lm" and config["train"]["whole_word_mask"] is True
    listed = wb(["models"], tmp_path / "home")
    assert f"{tiny_mlm.name} adapted on texts.txt" in listed.stdout

    empty = tmp_path / "empty.txt"
    empty.write_text("")
    bad = wb(["adapt", empty, "--model", tiny_mlm], tmp_path / "home")
    assert bad.returncode == 2 and "no text to adapt on" in bad.stderr and str(empty) in bad.stderr
    assert "Traceback" not in bad.stderr
