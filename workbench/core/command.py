"""The command line that repeats a run's settings: the Train page's "Copy command", and the flags
``workbench train`` reads (the CLI builds its parser from ``TRAIN_FLAGS``).

    command_line(config) -> "workbench train /data/reviews.tsv --epochs 3 --batch-size 32 ..."
"""

from __future__ import annotations

import shlex
from pathlib import Path

from .config import DEFAULT_MODEL, DataConfig, ModelConfig, RunConfig, TrainConfig
from .tasks.table import DEFAULT_TASK, TEXT_GENERATION, default_lr, lr_help, method_help, spec_or_none

ALL = "all"


def count_or_all(value: str) -> int | str:
    """A count, or ``ALL`` (--eval-limit all; the config holds None for it)."""
    import argparse

    if value.strip().lower() == ALL:
        return ALL
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'all', got {value!r}") from None


def comma_list(value: str) -> list[str]:
    """A comma-separated option (--label-columns a,b,c) as its parts."""
    return [part.strip() for part in value.split(",") if part.strip()]


TRAIN_FLAGS = {
    # flag: (section, field, type, help)
    "--val": ("data", "val", str, "validation file (default: a stratified 10%% of DATA)"),
    "--test": ("data", "test", str, "test file for the final report (default: a stratified 10%% of DATA when no --val)"),
    "--text-column": ("data", "text_column", str, "text column: a header name or a 0-based position (default: guessed)"),
    "--label-column": ("data", "label_column", str, "label column: a header name or a 0-based position (default: guessed)"),
    "--label-separator": ("data", "label_separator", str, "multi-label: what separates the labels in the label "
                          "column: '|', ',' or ';' (default: detected)"),
    "--label-columns": ("data", "label_columns", comma_list, "multi-label: one 0/1 column per label "
                        "instead of a label column, comma-separated names or 0-based positions, e.g. billing,bug"),
    "--text-pair-column": ("data", "text_pair_column", str, "sentence pairs: the second text column (default: guessed, e.g. sentence2, hypothesis)"),
    "--tag-column": ("data", "tag_column", str, "tagging: CoNLL tag column as a 0-based position (default: the last); CoNLL-U: upos (default) or xpos"),
    "--tag-scheme": ("data", "tag_scheme", str, "tagging: auto (IOB2 for span tags, converting IOB1/IOBES/BILOU), iob2, iobes, io, or none (tags as written, token-level metrics)"),
    "--delimiter": ("data", "delimiter", str, "field separator (default: sniffed; use 'tab' for a tab)"),
    "--sample": ("data", "sample", int, "train on a stratified random sample of N rows of DATA (quick trials)"),
    "--val-fraction": ("data", "val_fraction", float, "share of DATA held out for validation when no --val (default 0.1; 0 for none)"),
    "--test-fraction": ("data", "test_fraction", float, "share of DATA held out for testing when neither --val nor --test (default 0.1)"),
    "--model": ("model", "name", str, f"backbone: a local folder, an installed packaged model or a hub id (default {DEFAULT_MODEL})"),
    "--method": ("model", "method", str, method_help()),
    "--lora-rank": ("model", "lora_rank", int, "lora/adalora: adapter rank r (default 8; adalora: the rank kept on average)"),
    "--lora-alpha": ("model", "lora_alpha", float, "lora/adalora: scaling alpha; updates scale by alpha/r (default 16)"),
    "--lora-dropout": ("model", "lora_dropout", float, "lora/adalora: dropout on the adapter input (default 0.1)"),
    "--epochs": ("train", "epochs", float, "passes over the training data (default 3; image folders: enough for "
                 "about 300 optimizer steps, 3 to 15 epochs, with early stopping after 3 epochs without improvement)"),
    "--batch-size": ("train", "batch_size", int, "examples per step (default 32)"),
    "--lr": ("train", "lr", float, lr_help()),
    "--max-length": ("train", "max_length", int, "tokens per example; longer texts are cut (default 128)"),
    "--seed": ("train", "seed", int, "random seed (default 42)"),
    "--weight-decay": ("train", "weight_decay", float, "AdamW weight decay (default 0.01)"),
    "--warmup-ratio": ("train", "warmup_ratio", float, "share of steps with a rising learning rate (default 0.06)"),
    "--grad-accum": ("train", "grad_accum", int, "micro-batches per optimizer step (default 1)"),
    "--max-grad-norm": ("train", "max_grad_norm", float, "gradient clipping norm; 0 turns it off (default 1.0)"),
    "--device": ("train", "device", str, "auto, cpu, cuda, cuda:N or mps (default auto: CUDA, then MPS, then CPU)"),
    "--precision": ("train", "precision", str, "auto, fp32, bf16 or fp16 (default auto: bf16/fp16 on a GPU, fp32 on the CPU)"),
    "--eval-steps": ("train", "eval_steps", int, "also evaluate every N steps (default: each epoch only)"),
    "--early-stopping": ("train", "early_stopping_patience", int, "stop after N evaluations without improvement; best weights are restored"),
    "--metric": ("train", "metric", str, "metric choosing the best checkpoint, e.g. accuracy, macro_f1, weighted_f1 or loss (default: the task's, macro_f1 for classification)"),
    "--max-steps": ("train", "max_steps", int, "stop after N optimizer steps"),
    "--image-size": ("train", "image_size", int, "images: pixels per side fed to the model (default: the backbone's, "
                     "224 for efficientnet-lite0; about 3x the image side, at least 64, for small images)"),
    "--augment": ("train", "augment", str, "images: strong (random resized crops down to 25%% of the area, flips), mild "
                  "(crops of 70%%+ of the whole image, no flips) or none (default: mild for images enlarged 2x or "
                  "more to fit the input, else strong)"),
    "--batch-norm": ("train", "batch_norm", str, "images, Workbench's own backbones: frozen keeps the pretrained "
                     "batch-norm statistics while every weight trains (about 10%% faster on a CPU), update "
                     "re-estimates them from each batch (default)"),
    "--feature-views": ("train", "feature_views", int, "images with --method frozen: the backbone's outputs are "
                        "computed once and cached for N views of each training image, the centre crop and N-1 "
                        "augmented crops, so epochs after the first N train only the head; 0 computes them every "
                        "time (default 1)"),
    "--save-minutes": ("train", "save_minutes", float, "write a checkpoint (for --resume) every M minutes of training, besides one at each evaluation; 0: only at evaluations (default 10)"),
    "--save-steps": ("train", "save_steps", int, "also write a checkpoint every N optimizer steps"),
    "--train-on": ("generation", "train_on", str, "text generation: which tokens carry loss: assistant (the answers "
                   "and their end-of-turn, default) or all"),
    "--max-new-tokens": ("generation", "max_new_tokens", int, "text generation: most tokens an answer may have when "
                         "the run generates the test answers and live samples, and the export's default (default 128)"),
    "--temperature": ("generation", "temperature", float, "text generation: sampling temperature; 0 is greedy "
                      "(default 0)"),
    "--top-p": ("generation", "top_p", float, "text generation: nucleus sampling share with --temperature above 0 "
                "(default 1.0)"),
    "--live-samples": ("generation", "live_samples", int, "text generation: validation prompts answered at each "
                       "evaluation, to watch the answers change (default 3; 0: none)"),
    "--eval-limit": ("generation", "eval_limit", count_or_all, "text generation: test examples answered and scored "
                     "for the report, or all (default 300; the loss covers all)"),
    "--gguf": ("generation", "gguf", comma_list, "text generation: also write GGUF files for llama.cpp, Ollama and LM "
               "Studio: f16 and/or q8_0, comma-separated (each read back and checked)"),
    "--num-processes": ("train", "num_processes", int, "train on N processes (one per GPU, or CPU processes with "
                        "--device cpu) through torch.distributed.run; each takes --batch-size rows of every step, so "
                        "the effective batch is batch-size x N x grad-accum (default 1)"),
}

# Always written when set: a run pins values for options left out (the learning rate of LoRA: the
# task's default for the method), and a person reading the line wants to see them.
ALWAYS = ("--epochs", "--batch-size", "--lr")


def command_line(config: RunConfig, program: str = "workbench") -> str:
    """``workbench train ...`` with the flags that give ``config``'s settings (the run directory
    aside: a repeat makes its own). Paths are written as the config holds them."""
    defaults = RunConfig(data=DataConfig(), model=ModelConfig(), train=TrainConfig())
    args = [program, "train", config.data.train]
    if config.task and config.task != "auto":
        args += ["--task", config.task]
    for flag, (section, field, _, _) in TRAIN_FLAGS.items():
        value = getattr(getattr(config, section), field) if flag != "--lr" else _stated_lr(config)
        if value is None and field == "eval_limit":
            value = ALL  # None here is a choice, not "unset": the default is 300
        if value is None or (flag not in ALWAYS and value == getattr(getattr(defaults, section), field)):
            continue
        if field == "delimiter" and value == "\t":
            value = "tab"
        args += [flag, _text(value)]
    d, m, t = config.data, config.model, config.train
    switches = [
        (d.has_header is True, "--header"), (d.has_header is False, "--no-header"),
        (d.skip_bad_rows, "--skip-bad-rows"),
        (t.group_by_length is True, "--group-by-length"), (t.group_by_length is False, "--no-group-by-length"),
        (t.refit is True, "--refit"), (t.refit is False, "--no-refit"),
        (t.keep_checkpoints, "--keep-checkpoints"), (t.compile, "--compile"),
        (m.export_adapter, "--export-adapter"),
        (not config.generation.base_eval, "--no-base-eval"),
        (config.generation.gradient_checkpointing, "--gradient-checkpointing"),
    ]
    args += [flag for on, flag in switches if on]
    if m.lora_targets:
        args += ["--lora-targets", ",".join(m.lora_targets)]
    if config.export_dir:
        args += ["--export", config.export_dir] + (["--overwrite"] if config.overwrite_export else [])
    if config.quantize:
        args += ["--quantize", config.quantize]
    return shlex.join(args)


def _stated_lr(config: RunConfig) -> float | None:
    """--lr as the run resolves it when left out: the table's rate of a text task. An image task's rate
    depends on its backbone (Task.default_lr, which imports the backbone catalog): the line leaves it out
    and the repeat resolves it again, the same way."""
    if config.train.lr is not None:
        return config.train.lr
    task = config.task if config.task and config.task != "auto" else None
    if task is None and Path(config.data.train or "").is_dir():  # --task auto on a folder: images
        return None
    if task is None and Path(config.data.train or "").suffix.lower() in (".jsonl", ".json"):
        task = TEXT_GENERATION  # --task auto on JSON conversations (the only task that reads JSON)
    spec = spec_or_none(task or DEFAULT_TASK)
    if not spec or spec.modality != "text" or config.model.method not in spec.lr:  # qlora outside generation:
        return None  # the run refuses it with a message; the line does not guess a rate
    return default_lr(spec.name, config.model.method)


def _text(value) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 3.0 epochs: "3"
    return str(value)
