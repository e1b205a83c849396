"""Text generation in the app, end to end (issue 32), in one app session on the tiny Llama: a chat
.jsonl opens as generation data (the Conversations tab), the Model page lists causal LMs and the
generation settings (which land in RunConfig.generation and in Copy Command), a run shows live
samples on the Train page, the Evaluate page lists the answers and the chat streams one, and the
Export page's Predict section answers a file of prompts.

``WORKBENCH_SHOTS=folder`` keeps screenshots of the pages in the light and the dark scheme there."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before Qt is imported

import pytest  # noqa: E402

pytest.importorskip("pytestqt")

from app_support import APP_MARKS, aloop, load, wait_task, window  # noqa: E402,F401 - fixtures
from app_support import shoot as _shoot  # noqa: E402

pytestmark = [*APP_MARKS, pytest.mark.timeout(300)]

CAPITALS = [("France", "Paris"), ("Spain", "Madrid"), ("Italy", "Rome"), ("Peru", "Lima"), ("Japan", "Tokyo"),
            ("Egypt", "Cairo")]


def write_chat(path: Path, n: int = 40) -> Path:
    """Chat examples as tests/test_generation_task.py writes them: a system prompt, a question, its answer."""
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            country, capital = CAPITALS[i % len(CAPITALS)]
            messages = [{"role": "system", "content": "Answer briefly."},
                        {"role": "user", "content": f"What is the capital of {country}? ({i})"},
                        {"role": "assistant", "content": f"{capital}."}]
            f.write(json.dumps({"messages": messages}) + "\n")
    return path


def _model_page_for_generation(qtbot, window):
    page = window.model_page
    window.go_to("model")
    qtbot.waitUntil(lambda: page.effective_task == "text-generation" and page.modality == "generation",
                    timeout=60000)
    return page


def test_generation_in_the_app_end_to_end(qtbot, window, tiny_llama_dir, tmp_path):
    from workbench.app.pages.data import FILE_FILTER
    from workbench.app.pages.model import INFO_ROLE
    from workbench.cli.main import build_parser, config_from_args

    # ---- Data: a chat .jsonl is generation data, shown as turns -----------------------------------
    data = load(qtbot, window, write_chat(tmp_path / "chat.jsonl"))
    assert data.task == "text-generation" and data.usable, data.problem
    dp = window.data_page
    assert "*.jsonl" in FILE_FILTER and "*.json)" in FILE_FILTER  # File > Open offers them
    tabs = dp.tabs
    assert tabs.isTabVisible(tabs.indexOf(dp.conversations)) and tabs.currentWidget() is dp.conversations
    assert not tabs.isTabVisible(tabs.indexOf(dp.label_issues))  # no labels to doubt
    qtbot.waitUntil(lambda: len(dp.conversations.examples) == 40, timeout=30000)
    assert "40 conversations" in dp.conversations.count.text()
    assert "OpenAI chat" in dp.conversations.count.text()
    text = dp.conversations.text()
    assert "What is the capital of France? (0)" in text and "Assistant" in text and "Paris." in text
    assert dp.preview_model.columnCount() >= 3  # the Rows tab: prompt, answer, turns
    _shoot(window, "data-conversations")

    # ---- Model: causal LMs, no frozen method, the generation settings -----------------------------
    page = _model_page_for_generation(qtbot, window)
    assert page._generation_box.isVisible() and not page._adapt_box.isVisible()
    methods = [page.method.itemData(i) for i in range(page.method.count())]
    assert methods == ["full", "lora", "adalora", "qlora"]
    listed = [page.backbones.topLevelItem(i).data(0, INFO_ROLE) for i in range(page.backbones.topLevelItemCount())]
    names = [b.name for b in listed]
    assert any("Qwen2.5-0.5B-Instruct" in n for n in names)  # the catalog, for users with the Hub
    hub = next(i for i, b in enumerate(listed) if b.source == "hub")
    assert "Training memory" in page.backbones.topLevelItem(hub).toolTip(3)
    from workbench.core.tasks.generation.backbones import offline_generation_backbones

    if any(b.name == "SmolLM2-135M-Instruct" for b in offline_generation_backbones()):
        assert page.selected_backbone.name == "SmolLM2-135M-Instruct"  # the offline default
    wait_task(qtbot, page.use_backbone(str(tiny_llama_dir)), timeout=60000)
    assert window.state.config.model.name == str(tiny_llama_dir)
    t = window.state.config.train
    t.epochs, t.batch_size, t.max_length, t.lr, t.refit, t.save_minutes = 2.0, 8, 48, 5e-3, False, 0
    page.sync_from_config()
    page.max_new_tokens.setValue(6)
    page.live_samples.setValue(2)
    page.eval_limit.setValue(6)
    page.gguf["q8_0"].setChecked(True)
    page.gguf["q8_0"].setChecked(False)
    g = window.state.config.generation
    assert (g.max_new_tokens, g.live_samples, g.eval_limit, g.gguf, g.train_on) == (6, 2, 6, [], "assistant")
    qtbot.waitUntil(lambda: "Trains" in page.trainable.text() or "could not" in page.trainable.text(), timeout=60000)
    assert "Trains" in page.trainable.text(), page.trainable.text()
    assert "Training memory, estimated" in page.generation_note.text()
    _shoot(window, "model-generation")

    # ---- Copy Command repeats the generation settings ---------------------------------------------
    window.go_to("train")
    train = window.train_page
    line = train.copy_command()
    again = config_from_args(build_parser().parse_args(shlex.split(line)[1:]))
    assert again.generation.max_new_tokens == 6 and again.generation.live_samples == 2
    assert again.generation.eval_limit == 6 and again.model.name == str(tiny_llama_dir)

    # ---- Train: live samples beside the curves -----------------------------------------------------
    assert not train.samples.isVisible()
    assert train.start_button.isEnabled(), train.reason.text()
    with qtbot.waitSignal(window.controller.started, timeout=10000) as started:
        train.start_button.click()
    run_dir = started.args[0]
    qtbot.waitUntil(lambda: train.samples.step is not None, timeout=120000)
    assert train.samples.isVisible() and len(train.samples.cards) == 2
    with qtbot.waitSignal(window.controller.finished, timeout=240000):
        pass
    assert train.samples.step and train.samples.step > 0  # the last evaluation's answers, after the base model's
    assert all(p is not None for p in train.samples.previous_outputs())
    assert "Sample answers of step" in train.samples.title.text()
    _shoot(window, "train-live-samples")

    # A past run shows its samples again from metrics.jsonl; new data clears them.
    train.show_run(run_dir)
    assert train.samples.isVisible() and train.samples.step and len(train.samples.histories) == 2

    # ---- Evaluate: the answers against the base model's, and the chat -----------------------------
    train.evaluate_button.click()
    ev = window.evaluate_page
    qtbot.waitUntil(lambda: ev.run is not None and type(ev.view).__name__ == "GenerationView", timeout=60000)
    view = ev.view
    qtbot.waitUntil(lambda: view.model.rowCount() > 0, timeout=30000)
    assert view.model.rowCount() == len(view.model.rows) and view.model.rows.has_base  # the test split, base too
    chat = view.try_it
    qtbot.waitUntil(lambda: chat.button.isEnabled(), timeout=60000)
    chat.input.setText("What is the capital of France?")
    pieces: list = []
    on_piece = chat._on_piece
    chat._on_piece = lambda value: (pieces.append(value), on_piece(value))
    chat.predict()
    qtbot.waitUntil(lambda: chat.pending is None, timeout=120000)
    (user, answers), = chat.history()
    assert user == "What is the capital of France?" and list(answers) == ["tuned"]
    streamed = "".join(piece for _, piece in pieces)
    assert len(pieces) > 2 and streamed == answers["tuned"]  # the answer came in pieces, as written
    _shoot(window, "evaluate-generation")

    # ---- Export page: answer a file of prompts ----------------------------------------------------
    window.go_to("export")
    panel = window.export_page.predict_panel
    assert panel.generation and not panel.choose_folder.isVisible()
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"What is the capital of {c}?"}) + "\n"
                               for c, _ in CAPITALS[:3]))
    panel.set_source(prompts)
    assert panel.output.text().endswith("prompts.predictions.jsonl")
    with qtbot.waitSignal(panel.finished, timeout=120000) as done:
        assert panel.start()
    assert done.args[0].rows == 3 and "3 answers saved" in panel.status.text()
    assert panel.table.columnCount() == 2 and panel.table.item(0, 0).text() == "What is the capital of France?"
    panel.set_source(tmp_path)  # a folder: the panel says what a generation model needs
    with qtbot.waitSignal(panel.failed, timeout=30000):
        assert panel.start()
    assert "file of prompts" in panel.status.text()

    # ---- New data (a folder with train and test conversations) clears the live samples --------------
    folder = tmp_path / "split"
    folder.mkdir()
    write_chat(folder / "train.jsonl", 30)
    write_chat(folder / "test.jsonl", 8)
    data = load(qtbot, window, folder)
    assert data.task == "text-generation" and data.test_path.endswith("test.jsonl")
    assert not train.samples.isVisible() and not train.samples.histories
