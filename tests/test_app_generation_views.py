"""The app's text-generation views (issue 32), on synthetic run folders and stand-in models: Evaluate's
generation view (score tiles against the base model, examples worst first, search, the detail, the
per-class report), the chat Try-it (streamed answers, multi-turn history, Stop, base vs fine-tuned),
the Train page's live samples and the Data page's conversations; then the chat on real tiny exports.

``WORKBENCH_SHOTS=folder`` keeps a screenshot of each widget in the light and the dark scheme there."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before Qt is imported

import pytest  # noqa: E402

pytest.importorskip("pytestqt")

from app_support import APP_MARKS  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtGui import QPalette  # noqa: E402

pytestmark = [*APP_MARKS, pytest.mark.timeout(300)]

ROWS = [  # (prompt, reference, output, base output, score, base score)
    ("Capital of France?", "Paris", "Paris", "London", 1.0, 0.0),
    ("Capital of Spain?", "Madrid", "Madrid is the capital", "Madrid", 0.5, 1.0),
    ("Capital of Italy?", "Rome", "Milan", "Venice", 0.0, 0.0),
    ("Capital of Peru?", "Lima", "Lima city", "Cusco", 0.667, 0.0),
]
METRICS = {"exact_match": 0.5, "token_f1": 0.542, "chrf": 0.61, "bleu": 0.3, "rouge_l": 0.55}
BASE_METRICS = {"exact_match": 0.25, "token_f1": 0.25, "chrf": 0.35, "bleu": 0.31, "rouge_l": 0.25}


def write_run(folder: Path, rows=ROWS, *, classes=None, base: Path | None = None, base_scored: bool = True) -> Path:
    """A finished text-generation run folder as the engine leaves it: status, config (with the
    backbone's folder), report (with its ``generation`` section), predictions.jsonl and model/."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "status.json").write_text(json.dumps({"state": "finished", "pid": 1}))
    config = {"task": "text-generation", "model": {"name": "tiny", "method": "lora"},
              "resolved": {"backbone": {"name": "tiny", "path": str(base) if base else "/nowhere/tiny"}}}
    (folder / "config.json").write_text(json.dumps(config))
    generation = {"headline": "token_f1", "metrics": METRICS, "base_metrics": BASE_METRICS if base_scored else None,
                  "classes": classes, "settings": {"max_new_tokens": 48, "temperature": 0.0, "top_p": 0.9, "seed": 0},
                  "examples": len(rows), "of": len(rows)}
    report = {"task": "text-generation", "split": "test", "n": len(rows),
              "metrics": {"loss": 1.2, "perplexity": 3.32, **METRICS}, "generation": generation}
    (folder / "report.json").write_text(json.dumps(report))
    lines = []
    for i, (prompt, ref, out, base_out, score, base_score) in enumerate(rows):
        lines.append(json.dumps({
            "row": i, "line": i + 1, "prompt": prompt, "reference": ref, "output": out,
            "messages": [{"role": "system", "content": "Answer with a city."}, {"role": "user", "content": prompt}],
            "base_output": base_out if base_scored else None, "score": score,
            "base_score": base_score if base_scored else None, "loss": 0.5}))
    (folder / "predictions.jsonl").write_text("".join(x + "\n" for x in lines))
    (folder / "model").mkdir(exist_ok=True)
    (folder / "model" / "config.json").write_text("{}")
    return folder


@pytest.fixture()
def base_dir(tmp_path) -> Path:
    folder = tmp_path / "backbone"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


class FakePredictor:
    """Stands in for GenerationPredictor: answers "<name> says: <last user message>" in pieces, and keeps
    every conversation it was asked to continue. ``gate``: each piece after the first waits for it."""

    instances: list["FakePredictor"] = []

    def __init__(self, folder: Path, gate: threading.Event | None = None) -> None:
        self.folder, self.gate = Path(folder), gate
        self.calls: list[list[dict]] = []
        self.settings_seen: list = []
        FakePredictor.instances.append(self)

    def answer(self, messages) -> list[str]:
        return [f"{self.folder.name} ", "says: ", messages[-1]["content"]]

    def stream_chat(self, messages, settings=None, stop=None):
        self.calls.append([dict(m) for m in messages])
        self.settings_seen.append(settings)
        for i, piece in enumerate(self.answer(messages)):
            if i and self.gate is not None:
                while not self.gate.wait(0.02):
                    if stop is not None and stop.cancelled:
                        return
            yield piece


@pytest.fixture()
def fakes():
    FakePredictor.instances = []
    yield FakePredictor.instances
    FakePredictor.instances = []


def _view(qtbot, factory=FakePredictor):
    from workbench.app.views.generation import ChatTryIt, GenerationView

    view = GenerationView(try_it=ChatTryIt(predictor_factory=factory))
    qtbot.addWidget(view)
    view.resize(1400, 900)
    return view


def _show(view, folder: Path):
    from workbench.core.run.history import load_run

    run = load_run(folder)
    view.show_run(run, type(view).prepare(run))
    return run


def _column(model, column: int) -> list[str]:
    return [model.index(r, column).data() for r in range(model.rowCount())]


# ---------------------------------------------------------------------------- the evaluate view


def test_generation_view_satisfies_the_protocol_with_its_chat_box(qtbot):
    from workbench.app.evaluation.try_it_base import TryIt
    from workbench.app.evaluation.view import EvaluateView
    from workbench.app.views.generation import ChatTryIt, GenerationView

    assert issubclass(ChatTryIt, TryIt)
    box = ChatTryIt()
    view = GenerationView(try_it=box)
    qtbot.addWidget(view)
    assert isinstance(view, EvaluateView) and view.try_it is box
    view.clear()
    view.shutdown()


def test_view_lists_examples_worst_first_with_tiles_against_the_base(qtbot, tmp_path, base_dir):
    from workbench.app.views.generation import ERROR_COLOUR, GOOD_COLOUR, GenerationModel

    view = _view(qtbot)
    _show(view, write_run(tmp_path / "run", base=base_dir))
    m = view.model
    # Worst first: score ascending; among equal scores the larger loss against the base first.
    assert _column(m, m.PROMPT) == ["Capital of Italy?", "Capital of Spain?", "Capital of Peru?", "Capital of France?"]
    assert _column(m, m.SCORE) == ["0.000", "0.500", "0.667", "1.000"]
    assert _column(m, m.CHANGE) == ["+0.000", "-0.500", "+0.667", "+1.000"]
    assert m.index(1, m.CHANGE).data(Qt.ItemDataRole.ForegroundRole) == ERROR_COLOUR
    assert m.index(3, m.CHANGE).data(Qt.ItemDataRole.ForegroundRole) == GOOD_COLOUR
    assert _column(m, m.BASE)[0] == "Venice" and not view.table.isColumnHidden(m.BASE)
    assert view.count.text() == "4 examples"

    # One tile per score, the headline first, each with the base model's score and the change, coloured.
    assert list(view.delta_tiles) == ["token_f1", "exact_match", "chrf", "bleu", "rouge_l"]
    f1 = view.delta_tiles["token_f1"]
    assert f1.value.text() == "0.542" and f1.title.text() == "Token F1 (headline)"
    assert f1.delta.text() == "base 0.250  (+0.292)"
    assert f1.delta.palette().color(QPalette.ColorRole.WindowText) == GOOD_COLOUR
    assert view.delta_tiles["bleu"].delta.palette().color(QPalette.ColorRole.WindowText) == ERROR_COLOUR
    assert view.better_tile.value.text() == "2" and view.worse.text() == "worse: 1, the same: 1"
    assert view.perplexity_tile.value.text() == "3.32"
    assert not view.classes.isVisibleTo(view)

    # The worst example is detailed: its turns, the reference and both answers, in full.
    detail = view.detail.toPlainText()
    for text in ("System", "Answer with a city.", "User", "Capital of Italy?", "Reference", "Rome", "Base model",
                 "Venice", "Fine-tuned", "Milan"):
        assert text in detail
    view.table.setCurrentIndex(m.index(3, m.PROMPT))
    assert "Paris" in view.detail.toPlainText() and view.detail.record["line"] == 1

    # A header click sorts; the search filters any column (prompts, references, answers, turns).
    m.sort(m.CHANGE, Qt.SortOrder.DescendingOrder)
    assert _column(m, m.PROMPT)[0] == "Capital of France?"
    m.sort(-1)
    view.search.setText("madrid")
    assert _column(m, m.PROMPT) == ["Capital of Spain?"] and view.count.text() == "1 of 4 examples"
    view.search.setText("venice")  # a base model's answer
    assert _column(m, m.PROMPT) == ["Capital of Italy?"]
    view.search.setText("")
    view.errors_only.setChecked(True)
    assert "Capital of France?" not in _column(m, m.PROMPT) and m.rowCount() == 3
    assert isinstance(m, GenerationModel)


def test_view_without_base_scores_hides_the_base_columns(qtbot, tmp_path):
    view = _view(qtbot)
    _show(view, write_run(tmp_path / "run", base_scored=False))
    m = view.model
    assert view.table.isColumnHidden(m.BASE) and view.table.isColumnHidden(m.CHANGE)
    assert view.delta_tiles["token_f1"].delta.text() == "base model not scored"
    assert not view.better_tile.isVisibleTo(view)
    assert not view.try_it.compare.isEnabled()  # the backbone folder is not on this machine
    view.clear()
    assert m.rowCount() == 0 and not view.delta_tiles


def test_view_shows_the_classes_of_generative_classification(qtbot, tmp_path):
    rows = [("Review: great", "positive", "Positive", None, 1.0, None),
            ("Review: awful", "negative", "positive", None, 0.0, None),
            ("Review: fine", "positive", "meh", None, 0.0, None),
            ("Review: bad", "negative", "negative", None, 1.0, None)]
    classes = {"labels": ["negative", "positive", "(other)"], "accuracy": 0.5,
               "per_class": [{"label": "negative", "precision": 1.0, "recall": 0.5, "f1": 0.667, "support": 2},
                             {"label": "positive", "precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}],
               "confusion_matrix": [[1, 1, 0], [0, 1, 1], [0, 0, 0]], "n": 4, "other": 1}
    view = _view(qtbot)
    _show(view, write_run(tmp_path / "run", rows, classes=classes, base_scored=False))
    assert view.classes.isVisibleTo(view)
    assert [view.per_class.model().index(r, 0).data() for r in range(2)] == ["negative", "positive"]
    assert view.confusion.matrix.labels == ["negative", "positive", "(other)"]
    # A cell lists its examples: answers compared stripped and case-folded, anything else "(other)".
    view.confusion.choose("negative", "positive")
    assert _column(view.model, view.model.PROMPT) == ["Review: awful"]
    assert "answered" in view.filters.cell_label.text()
    view.confusion.choose("positive", "(other)")
    assert _column(view.model, view.model.PROMPT) == ["Review: fine"]
    view.confusion.choose("positive", "positive")
    assert _column(view.model, view.model.PROMPT) == ["Review: great"]
    view.filters.show_all.click()
    assert view.model.rowCount() == 4


# ---------------------------------------------------------------------------- the chat


def _chat(qtbot, tmp_path, base_dir, factory=FakePredictor, **options):
    from workbench.app.views.generation import ChatTryIt

    box = ChatTryIt(predictor_factory=factory)
    qtbot.addWidget(box)
    box.resize(700, 600)
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    box.set_model(model, base_model=base_dir, settings={"max_new_tokens": 40, "temperature": 0.0, "top_p": 0.9},
                  **options)
    return box


def _send(qtbot, box, text: str, wait: bool = True) -> None:
    box.input.setText(text)
    qtbot.keyClick(box.input, Qt.Key.Key_Return)
    if wait:
        qtbot.waitUntil(lambda: box.pending is None, timeout=20000)


def test_chat_streams_answers_and_passes_the_history_back(qtbot, tmp_path, base_dir, fakes):
    box = _chat(qtbot, tmp_path, base_dir)
    assert box.max_tokens.value() == 40 and box.top_p.value() == pytest.approx(0.9)  # the run's settings
    box.system.setPlainText("Be brief.")
    # Shift+Enter is a new line, Enter sends.
    box.input.setText("Hello")
    qtbot.keyClick(box.input, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
    assert box.input.text().count("\n") == 1 and not box.turns
    box.input.setText("Hello")
    pieces: list[tuple[str, str]] = []  # what the worker hands the GUI thread, piece by piece
    original = box._on_piece
    box._on_piece = lambda value: (pieces.append(value), original(value))  # type: ignore[method-assign]
    with qtbot.waitSignal(box.predicted, timeout=20000) as answered:
        qtbot.keyClick(box.input, Qt.Key.Key_Return)
    assert answered.args[0] == {"tuned": "model says: Hello"}
    assert [p for side, p in pieces if p] == ["model ", "says: ", "Hello"]  # streamed piece by piece
    assert box.input.text() == ""
    [turn] = box.turns
    assert turn.bubbles["tuned"].text() == "model says: Hello"
    predictor = fakes[0]
    assert predictor.calls[0] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    assert predictor.settings_seen[0].max_new_tokens == 40 and predictor.settings_seen[0].top_p == pytest.approx(0.9)

    _send(qtbot, box, "And again?")
    assert len(fakes) == 1  # loaded once, from the app's model cache
    assert predictor.calls[1] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"},
                                  {"role": "assistant", "content": "model says: Hello"},
                                  {"role": "user", "content": "And again?"}]
    assert box.history() == [("Hello", {"tuned": "model says: Hello"}),
                             ("And again?", {"tuned": "model says: And again?"})]
    box.clear_chat()
    assert box.turns == [] and box.transcript.rows == [] and box.transcript.placeholder.isVisibleTo(box)
    box.shutdown()


def test_chat_compares_with_the_base_model_side_by_side(qtbot, tmp_path, base_dir, fakes):
    box = _chat(qtbot, tmp_path, base_dir)
    assert box.compare.isEnabled()
    _send(qtbot, box, "Hi")  # the base model is not loaded until it is asked for
    assert [p.folder.name for p in fakes] == ["model"]
    box.compare.setChecked(True)
    _send(qtbot, box, "Who are you?")
    assert [p.folder.name for p in fakes] == ["model", "backbone"]
    turn = box.turns[-1]
    assert turn.answers == {"tuned": "model says: Who are you?", "base": "backbone says: Who are you?"}
    # Side by side in one row: base on the left, fine-tuned on the right.
    base, tuned = turn.bubbles["base"], turn.bubbles["tuned"]
    holder = base.parentWidget()
    assert holder is tuned.parentWidget() and holder.layout().indexOf(base) < holder.layout().indexOf(tuned)
    # Each model continues the conversation with its own answers (the fine-tuned one's where it gave none).
    assert fakes[1].calls[0][-3:] == [{"role": "user", "content": "Hi"},
                                      {"role": "assistant", "content": "model says: Hi"},
                                      {"role": "user", "content": "Who are you?"}]
    _send(qtbot, box, "Again")
    assert {"role": "assistant", "content": "backbone says: Who are you?"} in fakes[1].calls[1]
    assert {"role": "assistant", "content": "model says: Who are you?"} in fakes[0].calls[-1]
    box.shutdown()


def test_chat_stop_ends_the_answer_and_the_chat_goes_on(qtbot, tmp_path, base_dir, fakes):
    gate = threading.Event()
    box = _chat(qtbot, tmp_path, base_dir, factory=lambda folder: FakePredictor(folder, gate))
    _send(qtbot, box, "Tell me a story", wait=False)
    qtbot.waitUntil(lambda: box.turns and box.turns[0].bubbles["tuned"].text() == "model ", timeout=20000)
    assert box.stop_button.isEnabled() and not box.button.isEnabled()
    _send(qtbot, box, "ignored while an answer is written", wait=False)
    assert len(box.turns) == 1
    box.stop_button.click()
    assert box.pending is None and not box.stop_button.isEnabled() and box.button.isEnabled()
    assert box.turns[0].bubbles["tuned"].title.text().endswith("stopped") and box.status.text() == "Stopped."
    gate.set()  # nothing more arrives from the stopped answer
    qtbot.wait(200)
    assert box.turns[0].answers == {"tuned": "model "}
    _send(qtbot, box, "Next")
    assert box.turns[1].answers == {"tuned": "model says: Next"}
    assert fakes[0].calls[-1][-2] == {"role": "assistant", "content": "model "}  # the partial answer is history
    box.shutdown()


def test_chat_failure_is_said_and_the_turn_dropped(qtbot, tmp_path, base_dir):
    from workbench.core.errors import InputError

    def broken(folder):
        raise InputError("is not a Workbench export", path=folder)

    box = _chat(qtbot, tmp_path, base_dir, factory=broken)
    _send(qtbot, box, "Hello?")
    assert "is not a Workbench export" in box.status.text()
    assert box.turns == [] and box.button.isEnabled()
    box.set_model(None, "no model")
    assert not box.input.isEnabled() and not box.compare.isEnabled() and box.status.text() == "no model"


# ---------------------------------------------------------------------------- live samples, conversations


def test_live_samples_show_the_latest_answer_over_the_one_before(qtbot):
    from workbench.app.views.generation_samples import LiveSamplesPanel
    from workbench.core.events import GenerationSamples

    panel = LiveSamplesPanel()
    qtbot.addWidget(panel)
    samples = [{"prompt": "2+2?", "reference": "4", "output": "fish"}, {"prompt": "Sky?", "reference": "blue",
                                                                       "output": ""}]
    panel.add(GenerationSamples(0, 0.0, tuple(samples)).to_dict())  # as metrics.jsonl holds it
    assert panel.latest_outputs() == ["fish", ""] and panel.previous_outputs() == [None, None]
    assert "base model" in panel.title.text()
    card = panel.cards[0]
    assert card.prompt.text() == "2+2?" and card.reference.text() == "Reference: 4"
    assert card.latest.text() == "Base model: fish" and not card.previous.isVisibleTo(panel)
    assert panel.cards[1].latest.text() == "Base model: (empty answer)"
    later = [{**samples[0], "output": "4"}, {**samples[1], "output": ""}]
    panel.add(GenerationSamples(40, 1.0, tuple(later)))
    assert panel.latest_outputs() == ["4", ""] and panel.previous_outputs() == ["fish", ""]
    assert card.latest.text() == "Step 40: 4" and card.previous.text() == "Base model: fish"
    assert card.previous.isVisibleTo(panel) and not card.previous.isEnabled()  # greyed
    assert panel.cards[1].previous.text() == "Base model: (the same)"
    assert "step 40 (epoch 1.00)" in panel.title.text()
    panel.add(GenerationSamples(80, 2.0, tuple({**s, "output": "four"} for s in later[:1])))
    assert len(panel.cards) == 1 and card.previous.text() == "Step 40: 4"
    panel.clear()
    assert panel.cards == [] and panel.step is None


def test_conversations_view_shows_turns_with_a_count(qtbot):
    from workbench.app.views.conversations import BATCH, ConversationsView
    from workbench.core.tasks.generation.conversations import Example

    view = ConversationsView()
    qtbot.addWidget(view)
    examples = [[{"role": "user", "content": "Hi <there>"}, {"role": "assistant", "content": "Hello!\nHow are you?"}],
                Example([{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2"},
                         {"role": "assistant", "content": "4"}], line=7)]
    view.set_examples(examples, "OpenAI chat messages")
    assert view.count.text() == "2 conversations \u00b7 OpenAI chat messages"
    text = view.text()
    for part in ("Conversation 1", "User", "Hi <there>", "Assistant", "Hello!\nHow are you?", "Conversation 2, line 7",
                 "System", "Be terse."):
        assert part in text
    assert not view.more.isVisibleTo(view)
    many = [[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}] for i in range(BATCH + 5)]
    view.set_examples(many, "prompt / completion")
    assert view.shown == BATCH and view.more.isVisibleTo(view) and "the first 100 shown" in view.count.text()
    view.more.click()
    assert view.shown == BATCH + 5 and f"a{BATCH + 4}" in view.text() and not view.more.isVisibleTo(view)
    view.clear()
    assert view.count.text() == "" and view.text() == ""


# ---------------------------------------------------------------------------- screenshots


def test_screenshots_in_light_and_dark(qtbot, qapp, tmp_path, base_dir, fakes):
    from workbench.app.look import dark_palette
    from workbench.app.views.conversations import ConversationsView
    from workbench.app.views.generation_samples import LiveSamplesPanel

    shots = Path(os.environ.get("WORKBENCH_SHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    view = _view(qtbot)
    _show(view, write_run(tmp_path / "run", base=base_dir))
    view.try_it.compare.setChecked(True)
    _send(qtbot, view.try_it, "What is the capital of France?")
    panel = LiveSamplesPanel()
    panel.add({"step": 0, "epoch": 0.0, "samples": [{"prompt": "Capital of France?", "reference": "Paris",
                                                     "output": "The capital of France is"}]})
    panel.add({"step": 40, "epoch": 1.0, "samples": [{"prompt": "Capital of France?", "reference": "Paris",
                                                      "output": "Paris"}]})
    conversations = ConversationsView()
    conversations.set_examples([[{"role": "system", "content": "Answer with a city."},
                                 {"role": "user", "content": "Capital of France?"},
                                 {"role": "assistant", "content": "Paris"}]] * 3, "OpenAI chat messages")
    for widget, size in ((panel, (420, 320)), (conversations, (560, 420))):
        qtbot.addWidget(widget)
        widget.resize(*size)
    light = qapp.palette()
    try:
        for scheme in ("light", "dark"):
            qapp.setPalette(dark_palette() if scheme == "dark" else light)
            for name, widget in (("generation_view", view), ("chat", view.try_it), ("live_samples", panel),
                                 ("conversations", conversations)):
                widget.show()
                qtbot.wait(20)
                path = shots / f"{name}_{scheme}.png"
                assert widget.grab().save(str(path)) and path.stat().st_size > 0
            # The turns are tinted from the palette, again after a change of scheme.
            tint = qapp.palette().color(QPalette.ColorRole.AlternateBase).name()
            assert tint in conversations.browser.toHtml() and tint in view.detail.toHtml()
    finally:
        qapp.setPalette(light)


# ---------------------------------------------------------------------------- the real models


def _export(source: Path, folder: Path) -> Path:
    """A text-generation export made of a tiny model folder (what the Export step writes, minus the card)."""
    shutil.copytree(source, folder)
    (folder / "workbench.json").write_text(json.dumps({"task": "text-generation",
                                                       "generation": {"max_new_tokens": 8}}))
    return folder


def test_chat_with_a_real_export_and_its_base_model(qtbot, tmp_path, tiny_llama_dir, tiny_gpt2_dir):
    from workbench.app.model_cache import MODELS
    from workbench.app.views.generation import ChatTryIt
    from workbench.core.predict.generation import GenerationPredictor
    from workbench.core.tasks.generation.generate import GenerationSettings

    export = _export(tiny_llama_dir, tmp_path / "model")
    box = ChatTryIt()
    qtbot.addWidget(box)
    # GPT-2 as the "base": a backbone folder without a chat template gets the default one, as in training.
    box.set_model(export, base_model=tiny_gpt2_dir, settings={"max_new_tokens": 6})
    box.compare.setChecked(True)
    _send(qtbot, box, "hello", wait=False)
    qtbot.waitUntil(lambda: box.pending is None, timeout=120000)
    assert box.status.text() == "", box.status.text()
    turn = box.turns[0]
    settings = GenerationSettings(max_new_tokens=6)
    expected = GenerationPredictor(export).chat([{"role": "user", "content": "hello"}], settings)
    assert turn.answers["tuned"] == expected  # greedy: the streamed pieces make the same answer
    assert isinstance(turn.answers["base"], str) and turn.bubbles["base"].text() == turn.answers["base"]
    _send(qtbot, box, "again", wait=False)
    qtbot.waitUntil(lambda: box.pending is None, timeout=120000)
    assert len(box.turns) == 2 and box.status.text() == ""
    box.shutdown()
    MODELS.clear()
