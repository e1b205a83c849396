"""`workbench train` on chat data from the command line: the task detected, the report, the export that
`predict` and `chat` use; and the real offline backbone (SmolLM2-135M-Instruct) end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import wb
from test_generation_task import write_chat


@pytest.mark.slow
def test_train_detects_chat_data_reports_and_the_export_answers(tiny_llama_dir, tmp_path):
    data = write_chat(tmp_path / "chat.jsonl", 120)
    export = tmp_path / "out"
    p = wb(["train", data, "--model", tiny_llama_dir, "--epochs", 10, "--lr", "5e-3", "--batch-size", 8,
            "--max-length", 64, "--no-refit", "--max-new-tokens", 8, "--eval-limit", 8, "--export", export],
           tmp_path / "home")
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["task"] == "text-generation"
    assert summary["metrics"]["exact_match"] >= 0.75
    assert "base model" in p.stdout and "fine-tuned" in p.stdout  # the before/after table
    assert "Text generation" in p.stderr or "text-generation" in p.stderr

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"messages": [{"role": "system", "content": "Answer briefly."},
                                                {"role": "user", "content": "What is the capital of Italy? (1)"}]})
                       + "\n", encoding="utf-8")
    out = tmp_path / "answers.jsonl"
    p = wb(["predict", export, prompts, "-o", out, "--max-new-tokens", 8], tmp_path / "home")
    assert p.returncode == 0, p.stderr
    assert json.loads(out.read_text().splitlines()[0])["output"] == "Rome."

    p = wb(["chat", export, "--system", "Answer briefly.", "--max-new-tokens", 8], tmp_path / "home",
           input="What is the capital of Spain? (2)\n/exit\n")
    assert p.returncode == 0, p.stderr
    assert "Madrid." in p.stdout


@pytest.mark.slow
def test_the_offline_default_backbone_fine_tunes_with_lora_and_exports_gguf(tmp_path, smollm2_home):
    """SmolLM2-135M-Instruct from its PyPI package: a few LoRA steps, the base model's answers scored first,
    the merged export reloaded, and a Q8_0 GGUF file read back."""
    data = write_chat(tmp_path / "chat.jsonl", 24)
    p = wb(["train", data, "--method", "lora", "--epochs", 1, "--batch-size", 8, "--max-length", 64, "--no-refit",
            "--max-new-tokens", 8, "--eval-limit", 3, "--live-samples", 1, "--gguf", "q8_0"], smollm2_home[0],
           timeout=1200)
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    run = Path(summary["run_dir"])
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["name"] == "SmolLM2-135M-Instruct"
    meta = json.loads((run / "model" / "workbench.json").read_text())
    assert meta["gguf"]["q8_0"]["file"] == "model.q8_0.gguf" and (run / "model" / "model.q8_0.gguf").is_file()
    assert meta["gguf"]["q8_0"]["check"]["prompts"] == 2
    report = json.loads((run / "report.json").read_text())
    assert report["generation"]["base_metrics"] is not None
    answers = [json.loads(x) for x in (run / "predictions.jsonl").read_text().splitlines()]
    assert 1 <= len(answers) <= 3 and all(a["base_output"] for a in answers)  # 10% of 24 held out for test


def test_eval_limit_all_answers_every_test_example_and_repeats_as_written():
    from workbench.cli.main import build_parser, config_from_args
    from workbench.core.command import command_line

    def parsed(*flags):
        return config_from_args(build_parser().parse_args(["train", "chat.jsonl", "--task", "text-generation", *flags]))

    assert parsed().generation.eval_limit == 300  # the default
    assert parsed("--eval-limit", "12").generation.eval_limit == 12
    every = parsed("--eval-limit", "all")
    assert every.generation.eval_limit is None  # None: all of them
    line = command_line(every)
    assert "--eval-limit all" in line  # a repeat keeps "all", not the default of 300
    assert parsed(*line.split()[line.split().index("--eval-limit"):][:2]).generation.eval_limit is None
    from workbench.cli.exits import UsageError

    with pytest.raises(UsageError, match="--eval-limit: expected a whole number or 'all', got 'most'"):
        parsed("--eval-limit", "most")
