"""Token classification: sub-word alignment, windows, metrics, end-to-end runs and the export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import needs_shared
from text_tasks_helpers import ner_sentences, pos_sentences, tiny_text_model, write_conll, write_conllu  # noqa: F401 (fixture)

from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from workbench.core.data.conll import read_tagged
from workbench.core.data.tag_schemes import IOBES, convert
from workbench.core.events import Callbacks, Warning_
from workbench.core.labels import build_label_map
from workbench.core.run.pipeline import run_training
from workbench.core.tasks.token_classification import (
    IGNORE,
    Specials,
    TokenClassification,
    WindowStats,
    encode_sentences,
)


class Recorder(Callbacks):
    def __init__(self):
        self.events = []

    def on_event(self, event):
        self.events.append(event)


def config(train, model, **kw):
    data = {k: kw.pop(k) for k in list(kw) if k in DataConfig.__dataclass_fields__}
    opts = dict(epochs=5, batch_size=16, lr=3e-3, max_length=32, seed=1)
    opts.update(kw)
    return RunConfig(data=DataConfig(train=str(train), **data), model=ModelConfig(name=str(model)),
                     train=TrainConfig(**opts))


@pytest.fixture()
def tokenizer(tiny_text_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_text_model)


# ---------------------------------------------------------------------------- alignment


def test_first_subword_carries_the_label(tokenizer):
    specials = Specials.of(tokenizer)
    assert tokenizer.convert_ids_to_tokens(specials.prefix + specials.suffix) == ["[CLS]", "[SEP]"]
    stats = WindowStats()
    # "xyz" is not in the vocabulary: it becomes x ##y ##z; "\u200b" tokenizes to nothing.
    out = encode_sentences(tokenizer, [["mary", "xyz", "\u200b", "lives"]], [[1, 2, 3, 0]], 32, specials, 0, 0, stats)
    ids, labels, pos = out["input_ids"][0], out["labels"][0], out["label_pos"][0]
    assert tokenizer.convert_ids_to_tokens(ids) == ["[CLS]", "mary", "x", "##y", "##z", "[UNK]", "lives", "[SEP]"]
    assert labels == [IGNORE, 1, 2, IGNORE, IGNORE, 3, 0, IGNORE]
    assert pos == [1, 2, 5, 6]
    assert (stats.windows, stats.split_sentences, stats.cut_words) == (1, 0, 0)


def test_long_sentences_split_into_windows_at_word_boundaries(tokenizer):
    specials = Specials.of(tokenizer)
    words = ["the", "big", "dog", "xyz", "likes", "the", "small", "cat", "and", "it", "was", "very"]
    tags = list(range(len(words)))
    stats = WindowStats()
    out = encode_sentences(tokenizer, [words, ["a", "dog"]], [tags, [0, 1]], 8, specials, 100, 7, stats)
    assert all(len(ids) <= 8 for ids in out["input_ids"])
    assert (stats.sentences, stats.split_sentences) == (2, 1)
    # Every word is labelled exactly once, in order, across the windows.
    labelled = [l for labels in out["labels"][:-1] for l in labels if l != IGNORE]
    assert labelled == tags
    starts = out["first_word"]
    assert starts[0] == 100 and starts[-1] == 112 and out["sentence"] == [7] * (len(starts) - 1) + [8]
    assert [len(p) for p in out["label_pos"][:-1]] == list(np.diff(starts[:-1] + [112]))

    stats = WindowStats()
    out = encode_sentences(tokenizer, [["zzzzzzzzzz", "dog"]], [[4, 5]], 8, specials, 0, 0, stats)
    assert stats.cut_words == 1  # 10 sub-words > 6 that fit: cut, tag kept
    assert out["labels"][0][1] == 4 and out["labels"][1][1] == 5


def test_token_balanced_batches():
    from workbench.core.training.batching import length_grouped_batches, random_batches, token_balanced_batches

    rng = np.random.default_rng(0)
    lengths = np.concatenate([rng.integers(3, 6, 600), rng.integers(60, 90, 400)])  # fragments and long sentences
    batches = token_balanced_batches(lengths, 16, np.random.default_rng(1))
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))  # every row exactly once
    assert len(batches) == 63  # as many steps as 16-row batches: ceil(1000 / 16)

    def spread(bs):  # coefficient of variation of the tokens per batch
        tokens = np.array([lengths[b].sum() for b in bs])
        return tokens.std() / tokens.mean()

    def padded(bs):
        return sum(lengths[b].max() * len(b) for b in bs)

    # Short rows come in bigger batches: tokens per batch vary far less than with 16-row groups...
    rows = length_grouped_batches(lengths, 16, np.random.default_rng(1), mega_factor=4)
    assert spread(batches) < 0.5 * spread(rows)
    assert max(map(len, batches)) > 2 * 16 > 16 > min(map(len, batches))
    # ...and padding stays far below random batches' (2.6x the real tokens here).
    assert padded(batches) < 0.5 * padded(random_batches(1000, 16, np.random.default_rng(1)))
    assert padded([batches[0]]) == max(padded([b]) for b in batches)  # the largest batch first


def _encoded(tmp_path, tokenizer, sentences, max_length=32):
    p = write_conll(tmp_path / "x.conll", sentences)
    rows = read_tagged(p, cache_dir=tmp_path / "c").dataset
    task = TokenClassification()
    task.label_map = build_label_map(t for s in sentences for _, t in s)
    task.scheme = "IOB2"
    task.load_preprocessor(str(tokenizer.name_or_path))
    return task, task.encode("test", rows, tokenizer, max_length, tmp_path / "enc", Callbacks())


def _logits_for(task, split, predicted: list[str]) -> np.ndarray:
    """Window logits whose first-sub-word argmax spells ``predicted`` (flat, one tag per word)."""
    width = int(split.lengths.max())
    logits = np.zeros((len(split), width, len(task.label_map)), dtype=np.float32)
    ids = task.label_map.encode(predicted)
    pos = split.inputs["label_pos"]
    for w in range(len(split)):
        for k in range(pos.lengths[w]):
            logits[w, pos.values[pos.starts[w] + k], ids[split.inputs["first_word"][w] + k]] = 5.0
    return logits


def test_entity_metrics_and_mapping_back_through_windows(tmp_path, tokenizer):
    gold = [[("mary", "B-PER"), ("smith", "I-PER"), ("visited", "O"), ("paris", "B-LOC")],
            [("acme", "B-ORG"), ("today", "O")]]
    # max_length 5 forces every sentence into several windows.
    task, split = _encoded(tmp_path, tokenizer, gold, max_length=5)
    assert len(split) > 2
    flat = [t for s in gold for _, t in s]
    perfect = task.evaluate(_logits_for(task, split, flat), split, 0.0, None)
    assert perfect.metrics["f1"] == 1.0 and perfect.metrics["accuracy"] == 1.0

    # LOC missed, a spurious LOC on "today": 2 of 3 entities right both ways.
    pred = ["B-PER", "I-PER", "O", "O", "B-ORG", "B-LOC"]
    r = task.evaluate(_logits_for(task, split, pred), split, 0.5, None)
    assert r.metrics["precision"] == pytest.approx(2 / 3) and r.metrics["recall"] == pytest.approx(2 / 3)
    assert r.metrics["f1"] == pytest.approx(2 / 3) and r.metrics["macro_f1"] == pytest.approx(2 / 3)
    assert r.metrics["accuracy"] == pytest.approx(4 / 6) and r.metrics["loss"] == 0.5
    per = {row["label"]: row for row in r.report["per_class"]}
    assert per["LOC"]["f1"] == 0 and per["PER"]["f1"] == 1 and per["ORG"]["support"] == 1
    cm = np.array(r.report["confusion_matrix"])
    labels = r.report["confusion_labels"]
    assert cm.sum() == 6 and cm[labels.index("B-LOC"), labels.index("O")] == 1
    assert r.report["sentences_with_errors"] == 2

    path = tmp_path / "pred.jsonl"
    task.write_predictions(path, _logits_for(task, split, pred), split, None)
    lines = [json.loads(l) for l in path.read_text().splitlines()]
    assert lines[0]["tokens"] == ["mary", "smith", "visited", "paris"]
    assert lines[0]["predicted"] == ["B-PER", "I-PER", "O", "O"] and lines[0]["errors"] == 1
    assert lines[1]["gold"] == ["B-ORG", "O"] and len(lines[1]["confidence"]) == 2


# ---------------------------------------------------------------------------- end to end


def test_ner_end_to_end_with_pipeline_export(tmp_path, tiny_text_model, runs_home):
    from transformers import pipeline

    sentences = ner_sentences(300, seed=1)
    sentences.insert(5, [("today", "O"), ("mary", "I-PER")])  # breaks IOB2: I- after O
    train = write_conll(tmp_path / "ner.conll", sentences, docstart=True)
    bad_line = 3 + sum(len(s) + 1 for s in sentences[:5]) + 1  # DOCSTART + blank, 5 sentences, then "mary"
    rec = Recorder()
    cfg = config(train, tiny_text_model)
    cfg.export_dir = str(tmp_path / "export")
    result = run_training(cfg, rec)
    assert result.task == "token-classification"
    assert result.metrics["f1"] > 0.9, result.report_text

    rd = Path(result.run_dir)
    validation = json.loads((rd / "validation.json").read_text())
    finding = next(f for f in validation["findings"] if f["code"] == "invalid_tag_sequence")
    assert finding["lines"] == [bad_line] and f"line {bad_line}" in finding["message"] and "ner.conll" in finding["message"]
    assert any(isinstance(e, Warning_) and "IOB2" in e.message for e in rec.events)

    report = json.loads((rd / "report.json").read_text())
    assert report["task"] == "token-classification" and report["tag_kind"] == "spans"
    assert [r["label"] for r in report["per_class"]] == ["LOC", "ORG", "PER"]
    preds = [json.loads(l) for l in (rd / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == report["n"] == 30
    assert all(len(p["tokens"]) == len(p["gold"]) == len(p["predicted"]) for p in preds)
    saved = json.loads((rd / "config.json").read_text())
    assert saved["task"] == "token-classification" and saved["data"]["tag_column"] == "last"
    assert saved["train"]["group_by_length"] is False  # tagging trains on random batches unless asked

    ner = pipeline("token-classification", model=cfg.export_dir, aggregation_strategy="simple", device="cpu")
    groups = ner("mary smith lives in berlin")
    assert [(g["entity_group"], g["word"]) for g in groups] == [("PER", "mary smith"), ("LOC", "berlin")]
    groups = ner("paul works for globex")
    assert [(g["entity_group"], g["word"]) for g in groups] == [("PER", "paul"), ("ORG", "globex")]

    from workbench.core.tasks.token_classification import Tagger

    tagged = Tagger(cfg.export_dir).tag("mary smith lives in berlin.")
    assert [t["tag"] for t in tagged] == ["B-PER", "I-PER", "O", "O", "B-LOC", "O"]
    assert tagged[4]["start"] == 20 and tagged[4]["end"] == 26


def test_pos_from_conllu_end_to_end(tmp_path, tiny_text_model, runs_home):
    train = write_conllu(tmp_path / "pos.conllu", pos_sentences(200, seed=2))
    test = write_conllu(tmp_path / "pos-test.conllu", pos_sentences(40, seed=3))
    result = run_training(config(train, tiny_text_model, test=str(test), epochs=4))
    m = result.metrics
    assert m["accuracy"] > 0.9 and m["f1"] == m["accuracy"], result.report_text
    report = json.loads(Path(result.run_dir, "report.json").read_text())
    assert report["tag_kind"] == "tags" and report["tag_scheme"] == "plain"
    assert [r["label"] for r in report["per_class"]] == ["ADJ", "DET", "NOUN", "PUNCT", "VERB"]
    assert np.array(report["confusion_matrix"]).shape == (5, 5)
    assert "token accuracy" in result.report_text
    # XPOS (lower-cased copies in this file) can be chosen instead.
    x = run_training(config(train, tiny_text_model, test=str(test), tag_column="xpos", max_steps=2))
    assert json.loads(Path(x.run_dir, "report.json").read_text())["labels"] == ["adj", "det", "noun", "punct", "verb"]


def test_iobes_input_trains_as_iob2_unless_asked(tmp_path, tiny_text_model, runs_home):
    sentences = [[(w, t) for (w, _), t in zip(s, convert([t for _, t in s], IOBES))] for s in ner_sentences(80)]
    train = write_conll(tmp_path / "ner.iobes", sentences, sep="\t")
    auto = run_training(config(train, tiny_text_model, max_steps=2))
    saved = json.loads(Path(auto.run_dir, "config.json").read_text())["resolved"]
    assert saved["tag_scheme_detected"] == "IOBES" and saved["tag_scheme"] == "IOB2"
    labels = json.loads(Path(auto.run_dir, "model", "config.json").read_text())["id2label"].values()
    assert sorted(labels) == ["B-LOC", "B-ORG", "B-PER", "I-PER", "O"]
    kept = run_training(config(train, tiny_text_model, max_steps=2, tag_scheme="iobes"))
    labels = json.loads(Path(kept.run_dir, "model", "config.json").read_text())["id2label"].values()
    assert {"S-LOC", "E-PER"} <= set(labels)


def test_long_sentences_are_windowed_not_cut(tmp_path, tiny_text_model, runs_home):
    long = [[(w, "O") for w in "the big dog likes the small cat and it was very big today".split()]
            + [("paris", "B-LOC")]] * 20
    train = write_conll(tmp_path / "long.conll", ner_sentences(100) + long)
    rec = Recorder()
    result = run_training(config(train, tiny_text_model, max_length=8, max_steps=3), rec)
    warned = [e.message for e in rec.events if isinstance(e, Warning_) and "windows" in e.message]
    assert warned and "--max-length 8" in warned[0]
    preds = [json.loads(l) for l in Path(result.run_dir, "predictions.jsonl").read_text().splitlines()]
    assert any(len(p["tokens"]) == 14 and len(p["predicted"]) == 14 for p in preds)
    assert json.loads(Path(result.run_dir, "report.json").read_text())["windows"]["split_sentences"] > 0


def test_unseen_test_tags_are_reported(tmp_path, tiny_text_model, runs_home):
    train = write_conll(tmp_path / "train.conll", ner_sentences(60))
    test = write_conll(tmp_path / "test.conll", ner_sentences(10) + [[("acme", "B-MISC"), ("today", "O")]])
    rec = Recorder()
    result = run_training(config(train, tiny_text_model, test=str(test), max_steps=2), rec)
    assert any(isinstance(e, Warning_) and "B-MISC" in e.message and "test.conll" in e.message for e in rec.events)
    report = json.loads(Path(result.run_dir, "report.json").read_text())
    assert "B-MISC" in report["confusion_labels"] and "B-MISC" not in report["labels"]


@pytest.mark.slow
def test_cli_trains_a_conll_file(tmp_path, tiny_text_model):
    from test_cli import wb

    train = write_conll(tmp_path / "ner.conll", ner_sentences(120))
    p = wb(["train", train, "--model", tiny_text_model, "--epochs", 2, "--lr", "3e-3", "--max-length", 32,
            "--metric", "accuracy", "--group-by-length"], tmp_path / "home")
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert json.loads(Path(summary["run_dir"], "config.json").read_text())["train"]["group_by_length"] is True
    assert summary["task"] == "token-classification"
    assert {"f1", "precision", "recall", "accuracy", "macro_f1"} <= set(summary["metrics"])
    assert "entity micro F1" in p.stdout and "PER" in p.stdout
    bad = wb(["train", train, "--model", tiny_text_model, "--metric", "mse"], tmp_path / "home")
    assert bad.returncode == 2 and "does not apply to token-classification" in bad.stderr
    both = wb(["train", train, "--model", tiny_text_model, "--group-by-length", "--no-group-by-length"], tmp_path / "home")
    assert both.returncode == 2 and "contradict" in both.stderr


@pytest.mark.slow
def test_short_run_with_real_minilm(tmp_path, runs_home):
    from transformers import pipeline

    train = write_conll(tmp_path / "ner.conll", ner_sentences(160, seed=4))
    cfg = RunConfig(data=DataConfig(train=str(train)), train=TrainConfig(epochs=1, batch_size=8, max_length=24, lr=1e-4),
                    export_dir=str(tmp_path / "minilm"))
    result = run_training(cfg)
    assert result.backbone["name"] == "all-MiniLM-L6-v2"
    assert result.metrics["f1"] > 0.8, result.report_text
    groups = pipeline("token-classification", model=cfg.export_dir, aggregation_strategy="simple", device="cpu")(
        "Anna lives in Madrid")
    assert {g["entity_group"] for g in groups} <= {"PER", "LOC", "ORG"} and groups


@needs_shared("conll2003", "train.txt")
@pytest.mark.slow
def test_real_conll2003_sample_runs(tmp_path, tiny_text_model, runs_home):
    from conftest import SHARED

    result = run_training(config(SHARED / "conll2003" / "train.txt", tiny_text_model, test=str(SHARED / "conll2003" / "test.txt"),
                                 sample=200, max_steps=2, val_fraction=0.0))
    report = json.loads(Path(result.run_dir, "report.json").read_text())
    assert report["n"] == 3453 and report["tokens"] == 46435
    assert [r["label"] for r in report["per_class"]] == ["LOC", "MISC", "ORG", "PER"]


def test_split_by_length_cuts_padding_and_keeps_every_row():
    from workbench.core.training.batching import split_by_length

    rows = np.arange(100, 116)
    lengths = np.array([5, 90, 6, 7, 88, 5, 6, 4, 30, 31, 5, 6, 7, 8, 29, 5])
    parts = split_by_length(rows, lengths, overhead=64)
    assert sorted(np.concatenate(parts).tolist()) == rows.tolist()
    by_row = dict(zip(rows.tolist(), lengths.tolist()))
    padded = sum(max(by_row[r] for r in p) * len(p) for p in parts)
    assert 1 < len(parts) <= 4 and padded + 64 * len(parts) < 90 * 16 + 64
    assert [max(by_row[r] for r in p) for p in parts] == sorted((max(by_row[r] for r in p) for p in parts), reverse=True)
    # Rows of one length gain nothing from a split; a huge fixed cost keeps any batch whole.
    assert len(split_by_length(rows, np.full(16, 20), overhead=1)) == 1
    assert len(split_by_length(rows, lengths, overhead=10_000)) == 1


def test_micro_batches_give_the_whole_batchs_gradient(tmp_path, tokenizer, tiny_text_model):
    """The loop trains a random batch as length-sorted parts on the CPU; weighted by labelled
    sub-words, their gradients add up to exactly the gradient of the batch padded as one."""
    import torch
    from transformers import AutoModelForTokenClassification

    from workbench.core.training.loop import TrainingLoop

    words = ["mary", "smith", "lives", "in", "berlin", "paul", "works", "for", "globex", "and"]
    sentences = [[(words[(i + k) % len(words)], "B-PER" if k == 0 else "O") for k in range(n)]
                 for i, n in enumerate([2, 25, 3, 24, 2, 4, 20, 3])]
    task, split = _encoded(tmp_path, tokenizer, sentences)
    rows = np.arange(len(split))

    def grads(group: bool | None) -> tuple[float, list]:
        torch.manual_seed(0)
        model = AutoModelForTokenClassification.from_pretrained(tiny_text_model, num_labels=len(task.label_map))
        model.eval()  # no dropout: the two ways must agree to rounding
        cfg = TrainConfig(group_by_length=group)
        loop = TrainingLoop(model, task, None, split, None, cfg, torch.device("cpu"), "fp32", Callbacks())
        loss = float(loop._forward_backward(rows, None))
        return loss, [p.grad.clone() for p in model.parameters() if p.grad is not None]

    from workbench.core.training.batching import split_by_length

    assert len(split_by_length(rows, split.lengths[rows], 64)) > 1  # the batch really is split
    whole_loss, whole = grads(True)  # grouped batches go through whole
    parts_loss, parts = grads(False)
    assert abs(whole_loss - parts_loss) < 1e-5
    assert len(whole) == len(parts)
    for a, b in zip(whole, parts):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
