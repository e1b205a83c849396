"""A multi-label export at work: the in-memory model's thresholded sigmoid, ONNX Runtime's ``labels``
output, Predictor (PyTorch, ONNX, int8), `workbench predict` and `workbench serve` decide the same labels.

The export is made by hand (the task that trains one lives in core/tasks/multilabel): a tiny BERT with
problem_type "multi_label_classification" and three labels, thresholds picked from its own scores so
that labels fire for some inputs and not others and one input decides the empty set, and the ONNX
export's own code path (``export_with_onnx``) with a small task object standing in for the real one.
"""

from __future__ import annotations

import csv
import json
import shutil
import threading
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import NEGATIVE, POSITIVE

from workbench.cli.main import main
from workbench.core.errors import InputError
from workbench.core.export import onnx_export
from workbench.core.export.onnx_export import open_session, run_outputs
from workbench.core.predict.predictor import Predictor

LABELS = ["billing", "bug", "praise"]
MAX_LENGTH = 32
TEXTS = [
    "good great film", "awful dismal plot", "the movie was boring and the ending was bad",
    "lovely music and a superb actor", "a story", "terrible horrible dreadful poor scene",
    "wonderful delightful brilliant", "the plot was fine", "it was a film", "dismal boring music",
    "excellent ending", "the actor was poor and the story was dull",
]
MARGIN = 1e-4  # every score is at least this far from its label's threshold: fp32 noise cannot flip a decision


class FakeSplit:
    """What the ONNX export reads of an encoded split: a name, lengths, rows (and gold labels here)."""

    def __init__(self, ids: list[list[int]], gold: np.ndarray) -> None:
        self.name = "test"
        self.ids = ids
        self.lengths = np.array([len(r) for r in ids])
        self.gold = gold

    def __len__(self) -> int:
        return len(self.ids)


class FakeMultiLabelTask:
    """The part of a Task that ``export_with_onnx`` (and its int8 step) calls, for the hand-made model."""

    name = "text-multilabel"
    per_token_outputs = False
    has_classes = True  # the decided labels are checked instead of the top class all the same
    quantize_metric = "micro_f1"
    greater_is_better = {"micro_f1": True}

    def __init__(self, thresholds: np.ndarray) -> None:
        self.thresholds = thresholds

    @contextmanager
    def export_state(self, model):
        yield model

    def decision_thresholds(self) -> np.ndarray:
        return self.thresholds

    def make_batch(self, split: FakeSplit, rows: np.ndarray) -> dict[str, np.ndarray]:
        width = max(len(split.ids[r]) for r in rows)
        ids = np.zeros((len(rows), width), np.int64)
        mask = np.zeros((len(rows), width), np.int64)
        for j, r in enumerate(rows):
            ids[j, :len(split.ids[r])] = split.ids[r]
            mask[j, :len(split.ids[r])] = 1
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}

    def onnx_example(self, split: FakeSplit) -> dict[str, np.ndarray]:
        return self.make_batch(split, np.arange(2))

    def onnx_outputs_as_logits(self, outputs: np.ndarray) -> np.ndarray:
        return outputs

    def evaluate(self, logits, split: FakeSplit, loss, data):
        decided = onnx_export.decide_labels(logits, self.thresholds)[1]
        tp = int((decided & split.gold).sum())
        return SimpleNamespace(metrics={"micro_f1": 2 * tp / max(int(decided.sum() + split.gold.sum()), 1)})


@dataclass
class Export:
    folder: Path
    thresholds: np.ndarray  # in label order
    logits: np.ndarray  # the in-memory PyTorch model's, for TEXTS
    scores: np.ndarray  # their sigmoid in float64
    expected: list[list[str]]  # the decided labels per text
    empty: int  # the text that decides the empty set
    split: FakeSplit
    model: object


def _torch_logits(model, tokenizer, texts, pairs=None) -> np.ndarray:
    import torch

    enc = tokenizer(texts, pairs, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits.float().numpy()


def _gold(text: str) -> list[float]:
    words = set(text.split())
    return [float(bool(words & set(NEGATIVE))), float(bool(words & {"plot", "ending", "story"})),
            float(bool(words & set(POSITIVE)))]


def _train(model, tokenizer) -> None:
    """A few steps of binary cross-entropy on TEXTS: an untrained head scores every text about the same."""
    import torch

    enc = tokenizer(TEXTS, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt")
    gold = torch.tensor([_gold(t) for t in TEXTS])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(40):
        optimizer.zero_grad()
        model(**enc, labels=gold).loss.backward()  # problem_type multi_label_classification: BCE with logits
        optimizer.step()
    model.eval()


def _pick_thresholds(scores: np.ndarray) -> tuple[np.ndarray, int]:
    """Thresholds from the model's own scores: one text (not the top scorer of any label) is just below
    every threshold, so it decides the empty set while the texts above it decide labels; of the
    candidates, the one whose scores lie farthest from the next text's."""
    tops = set(scores.argmax(0).tolist())
    best: tuple[float, int, np.ndarray] | None = None
    for e in (i for i in range(len(scores)) if i not in tops):
        cut, gaps = [], []
        for j in range(scores.shape[1]):
            above = scores[:, j][scores[:, j] > scores[e, j]].min()
            cut.append((scores[e, j] + above) / 2)
            gaps.append(above - scores[e, j])
        if best is None or min(gaps) > best[0]:
            best = (min(gaps), e, np.array(cut))
    assert best is not None and best[0] > 2 * MARGIN, "the model's scores are too close to pick thresholds"
    return best[2], best[1]


def _write_meta(folder: Path, thresholds: np.ndarray, **extra) -> None:
    meta = {"task": "text-multilabel", "labels": LABELS, "inputs": {"text_column": "text", "label_column": "labels"},
            "max_length": MAX_LENGTH, "thresholds": dict(zip(LABELS, map(float, thresholds))),
            "thresholds_fallback": [], "label_separator": "|",
            "files": sorted(p.name for p in folder.iterdir()) + ["workbench.json"]}
    meta.update(extra)
    (folder / "workbench.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")


@pytest.fixture(scope="module")
def multilabel(tmp_path_factory, tiny_model_dir) -> Export:
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("multilabel") / "model"
    folder.mkdir()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(3)
    model = BertForSequenceClassification.from_pretrained(
        tiny_model_dir, num_labels=3, problem_type="multi_label_classification",
        id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)}).eval()
    _train(model, tokenizer)
    logits = _torch_logits(model, tokenizer, TEXTS)
    scores = onnx_export.sigmoid(logits)
    thresholds, empty = _pick_thresholds(scores)
    decided = scores >= thresholds
    expected = [[n for n, on in zip(LABELS, row) if on] for row in decided]
    assert expected[empty] == [] and any(0 < len(e) < len(LABELS) for e in expected), expected
    assert all(decided[:, j].any() and not decided[:, j].all() for j in range(len(LABELS)))
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.model_max_length = MAX_LENGTH
    tokenizer.save_pretrained(folder)
    _write_meta(folder, thresholds)
    ids = tokenizer(TEXTS, truncation=True, max_length=MAX_LENGTH)["input_ids"]
    split = FakeSplit(ids, decided)
    onnx_export.export_with_onnx(FakeMultiLabelTask(thresholds), model, folder, split, None, quantize="int8",
                                 batch_size=5)
    return Export(folder, thresholds, logits, scores, expected, empty, split, model)


def _copy(export: Export, tmp_path: Path) -> Path:
    return Path(shutil.copytree(export.folder, tmp_path / "model"))


# ---------------------------------------------------------------------------- ONNX


def test_the_onnx_graph_decides_the_labels_as_the_torch_model(multilabel):
    check = json.loads((multilabel.folder / "onnx_check.json").read_text())
    assert check["exported"] and check["rows"] == len(TEXTS) and check["max_abs_diff"] < 1e-4
    assert check["outputs"] == ["logits", "labels"] and check["top1_agreement"] is None
    assert check["labels_agreement"] == 1.0 and check["label_decisions_agreement"] == 1.0
    assert check["int8"]["written"] and check["int8"]["metric"] == "micro_f1" and check["int8"]["fp32"] == 1.0

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(multilabel.folder)
    enc = dict(tok(TEXTS, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="np"))
    session = open_session(multilabel.folder / "model.onnx")
    assert [o.name for o in session.get_outputs()] == ["logits", "labels"]
    logits, labels = run_outputs(session, enc, ("logits", "labels"))
    assert labels.dtype == np.int64 and labels.shape == (len(TEXTS), len(LABELS))
    assert np.array_equal(labels, (multilabel.scores >= multilabel.thresholds).astype(np.int64))
    assert [[n for n, on in zip(LABELS, row) if on] for row in labels] == multilabel.expected
    assert np.allclose(logits, multilabel.logits, atol=1e-4)
    # The graph's batch axis is dynamic: one text at a time gives the same decisions.
    one = dict(tok(TEXTS[multilabel.empty], return_tensors="np"))
    assert run_outputs(session, one, ("labels",))[0].tolist() == [[0, 0, 0]]
    # The int8 graph keeps both outputs (ONNX Runtime's quantizer leaves the decision ops alone).
    int8 = open_session(multilabel.folder / "model.int8.onnx")
    assert [o.name for o in int8.get_outputs()] == ["logits", "labels"]


def test_the_child_process_export_carries_the_thresholds(multilabel, tmp_path, monkeypatch):
    folder = _copy(multilabel, tmp_path)
    for name in ("model.onnx", "model.int8.onnx", "onnx_check.json"):
        (folder / name).unlink()

    def fail(*args, **kwargs):
        raise AssertionError("exported in this process")

    monkeypatch.setattr(onnx_export, "in_child_process", True)
    monkeypatch.setattr(onnx_export, "export_onnx", fail)
    record = onnx_export.export_with_onnx(FakeMultiLabelTask(multilabel.thresholds), multilabel.model, folder,
                                          multilabel.split, None)
    assert record["exported"] and record["labels_agreement"] == 1.0 and record["top1_agreement"] is None
    answers = Predictor(folder, backend="onnx").predict(TEXTS)
    assert [a["labels"] for a in answers] == multilabel.expected


def test_a_task_without_thresholds_exports_logits_only(multilabel, tmp_path):
    path = onnx_export.export_onnx(multilabel.model, tmp_path / "plain.onnx",
                                   FakeMultiLabelTask(None).onnx_example(multilabel.split))
    assert [o.name for o in open_session(path).get_outputs()] == ["logits"]


# ---------------------------------------------------------------------------- Predictor


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_predictor_decides_the_thresholded_labels(multilabel, backend):
    p = Predictor(multilabel.folder, backend=backend, precision="fp32")
    answers = p.predict(TEXTS, batch_size=4)
    assert [a["labels"] for a in answers] == multilabel.expected
    assert answers[multilabel.empty]["labels"] == []
    for a, row in zip(answers, multilabel.scores):
        assert list(a["scores"]) == LABELS
        assert np.allclose([a["scores"][n] for n in LABELS], row, atol=1e-5)
    described = p.describe()
    assert described["task"] == "text-multilabel" and described["label_separator"] == "|"
    assert described["thresholds"] == dict(zip(LABELS, multilabel.thresholds.tolist()))


def test_int8_predicts_with_the_same_rule(multilabel):
    p = Predictor(multilabel.folder, int8=True)
    assert p.model_file == "model.int8.onnx"
    for a in p.predict(TEXTS):
        assert a["labels"] == [n for n, t in zip(LABELS, multilabel.thresholds) if a["scores"][n] >= t]


def test_a_label_without_a_threshold_is_decided_at_one_half(multilabel, tmp_path):
    folder = _copy(multilabel, tmp_path)
    meta = json.loads((folder / "workbench.json").read_text())
    del meta["thresholds"]["bug"]
    meta["thresholds_fallback"] = ["bug"]
    (folder / "workbench.json").write_text(json.dumps(meta))
    p = Predictor(folder, backend="torch", precision="fp32")
    assert p.thresholds.tolist() == [multilabel.thresholds[0], 0.5, multilabel.thresholds[2]]
    assert p.describe()["thresholds_fallback"] == ["bug"]
    for a, row in zip(p.predict(TEXTS), multilabel.scores):
        assert ("bug" in a["labels"]) == (row[1] >= 0.5)


def test_sentence_pairs_are_encoded_together(multilabel, tmp_path):
    folder = _copy(multilabel, tmp_path)
    meta = json.loads((folder / "workbench.json").read_text())
    meta["inputs"] = {"text_column": "a", "text_pair_column": "b"}
    (folder / "workbench.json").write_text(json.dumps(meta))
    pairs = [["good great film", "awful plot"], ["a story", "the ending was superb"]]
    p = Predictor(folder, backend="torch", precision="fp32")
    assert p.pairs
    from transformers import AutoTokenizer

    logits = _torch_logits(multilabel.model, AutoTokenizer.from_pretrained(folder), [a for a, _ in pairs],
                           [b for _, b in pairs])
    decided = onnx_export.sigmoid(logits) >= multilabel.thresholds
    assert [a["labels"] for a in p.predict(pairs)] == [[n for n, on in zip(LABELS, r) if on] for r in decided]


@pytest.mark.parametrize("change, problem", [
    ({"thresholds": "high"}, "thresholds are str"),
    ({"thresholds": [0.2, 0.3, 0.4]}, "thresholds are list"),
    ({"thresholds": {"billing": "0.3"}}, "threshold of label 'billing' is '0.3'"),
    ({"thresholds": {"bug": True}}, "threshold of label 'bug' is True"),
    ({"thresholds": {"bug": 1.5}}, "threshold of label 'bug' is 1.5"),
    ({"thresholds": {"refund": 0.2}}, "name labels the model does not have ('refund'"),
    ({"label_separator": "\t"}, "label_separator '\\t'"),
    ({"thresholds_fallback": ["refund"]}, "thresholds_fallback ['refund']"),
    ({"labels": LABELS + ["refund"]}, "gives 3 scores per input but workbench.json lists 4 labels"),
])
def test_damaged_metadata_names_workbench_json(multilabel, tmp_path, capsys, change, problem):
    folder = _copy(multilabel, tmp_path)
    meta = json.loads((folder / "workbench.json").read_text())
    meta.update(change)
    (folder / "workbench.json").write_text(json.dumps(meta))
    with pytest.raises(InputError) as e:
        Predictor(folder, backend="onnx").predict(TEXTS[:2])
    assert e.value.path == str(folder / "workbench.json") and problem in str(e.value)
    src = tmp_path / "in.tsv"
    src.write_text("text\ngood film\n")
    code = main(["predict", str(folder), str(src), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "workbench.json" in err and problem in err and "Traceback" not in err
    assert not (tmp_path / "in.predictions.tsv").exists()


# ---------------------------------------------------------------------------- workbench predict


def _read_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


@pytest.mark.parametrize("separator, suffix", [("|", ".tsv"), (";", ".csv")])
def test_batch_predict_writes_labels_and_scores(multilabel, tmp_path, capsys, separator, suffix):
    folder = _copy(multilabel, tmp_path)
    meta = json.loads((folder / "workbench.json").read_text())
    meta["label_separator"] = separator
    (folder / "workbench.json").write_text(json.dumps(meta))
    src = tmp_path / f"tickets{suffix}"
    delimiter = "\t" if suffix == ".tsv" else ","
    with open(src, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(["id", "text"])
        writer.writerows([i, t] for i, t in enumerate(TEXTS))
    code = main(["predict", str(folder), str(src), "-q"])
    out = capsys.readouterr().out
    assert code == 0
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["rows"] == len(TEXTS) and summary["label_separator"] == separator
    rows = _read_rows(tmp_path / "tickets.predictions.tsv")
    assert list(rows[0]) == ["line", "text", "labels"] + [f"p_{n}" for n in LABELS]
    assert [r["text"] for r in rows] == TEXTS
    decided = [r["labels"].split(separator) if r["labels"] else [] for r in rows]
    assert decided == multilabel.expected
    assert rows[multilabel.empty]["labels"] == ""
    for r, row in zip(rows, multilabel.scores):
        assert np.allclose([float(r[f"p_{n}"]) for n in LABELS], row, atol=2e-6)


# ---------------------------------------------------------------------------- workbench serve


def _call(url: str, body=None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status, json.loads(r.read())


@contextmanager
def _serving(folder: Path, **options):
    """The server of tests/test_serve.py's way: make_server on a free port, run in a thread."""
    from workbench.cli.serve import make_server

    server, sock = make_server(folder, host="127.0.0.1", port=0, **options)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_serve_answers_labels_and_scores(multilabel, backend):
    with _serving(multilabel.folder, backend=backend) as url:
        status, health = _call(url + "/health")
        assert status == 200 and health["task"] == "text-multilabel" and health["labels"] == LABELS
        assert health["thresholds"] == dict(zip(LABELS, multilabel.thresholds.tolist()))
        assert health["label_separator"] == "|" and health["backend"] == backend
        status, out = _call(url + "/predict", {"inputs": TEXTS})
    assert status == 200
    predictions = out["predictions"]
    assert [set(p) for p in predictions] == [{"labels", "scores"}] * len(TEXTS)
    assert [p["labels"] for p in predictions] == multilabel.expected
    assert predictions[multilabel.empty]["labels"] == []
    for p, row in zip(predictions, multilabel.scores):
        assert np.allclose([p["scores"][n] for n in LABELS], row, atol=1e-5)
