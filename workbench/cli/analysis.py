"""`workbench label-issues`, `workbench compare` and `workbench explain`: what is wrong with the data,
what changed between two runs, which tokens (or pixels) made a model decide. Each prints a readable
table and ends stdout with one JSON line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..core.escaping import one_line
from ..core.tasks.table import EXPLANATIONS, LABEL_ISSUES, TASKS, modality_of, prediction_kind, spec_or_none
from .progress import add_quiet_flag

ANALYSIS_COMMANDS = ("label-issues", "compare", "explain")


def _label_issue_tasks() -> str:
    """--task's help: "auto, A, B or C", the tasks whose rows label-issues can rank."""
    names = ["auto", *(name for name, t in TASKS.items() if t.supports(LABEL_ISSUES))]
    return ", ".join(names[:-1]) + " or " + names[-1]


def add_parsers(sub) -> None:
    li = sub.add_parser(
        "label-issues", help="rank the training rows whose label is probably wrong",
        description="Score every training row of DATA by cross-validating a logistic regression on the backbone's "
                    "frozen features and ranking with cleanlab (confident learning). Prints the most suspicious rows; "
                    "writes a TSV (line, given, suggested, score, ...) most suspicious first with -o; the last stdout "
                    "line is a JSON summary.")
    li.add_argument("data", help="a classification .tsv/.csv file (texts, pairs or label sets), a folder of images in "
                                 "class folders, or a table of image paths and their label sets")
    li.add_argument("--model", default=None, help="backbone whose frozen features are used (default: the task's default)")
    li.add_argument("--task", default=None, help=_label_issue_tasks())
    li.add_argument("-o", "--output", help="write the ranked rows to this TSV file")
    li.add_argument("--overwrite", action="store_true", help="let -o/--corrected replace an existing file")
    li.add_argument("--all", action="store_true", help="write every row to the TSV, not only the flagged ones")
    li.add_argument("--top", type=int, default=20, help="rows to print (default 20)")
    li.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    li.add_argument("--method", default="self_confidence", choices=("self_confidence", "normalized_margin"),
                    help="cleanlab's label quality score (default self_confidence)")
    li.add_argument("--text-column", default=None)
    li.add_argument("--text-pair-column", default=None)
    li.add_argument("--label-column", default=None)
    li.add_argument("--label-separator", default=None,
                    help="several labels per row: what separates them in the label column (|, , or ;; default: detected)")
    li.add_argument("--label-columns", default=None, metavar="A,B,C",
                    help="several labels per row given as 0/1 columns, one per label")
    li.add_argument("--delimiter", default=None)
    li.add_argument("--max-length", type=int, default=128, help="tokens per text (default 128)")
    li.add_argument("--corrected", metavar="COPY",
                    help="also write a corrected copy of DATA (the original is never changed) applying --fix to "
                         "every flagged row; train on COPY next")
    li.add_argument("--fix", choices=("exclude", "relabel"), default="exclude",
                    help="what --corrected does with a flagged row: leave it out (default) or give it the suggested label")
    add_quiet_flag(li, "no progress")

    c = sub.add_parser(
        "compare", help="what changed between two runs scored on the same test data",
        description="Metric deltas with paired significance tests (McNemar for accuracy, paired bootstrap for F1 and "
                    "errors) and the examples RUN_B fixed or broke relative to RUN_A; the last stdout line is JSON "
                    "with at least fixed and broken (counts of examples).")
    c.add_argument("run_a", metavar="RUN_A")
    c.add_argument("run_b", metavar="RUN_B")
    c.add_argument("--examples", type=int, default=10, help="fixed and broken examples to print (default 10 each)")
    c.add_argument("-o", "--output", help="write every fixed/broken example to this JSONL file")
    c.add_argument("--overwrite", action="store_true", help="let -o replace an existing file")

    e = sub.add_parser(
        "explain", help="which tokens of a text (or pixels of an image) pushed a model towards its answer",
        description="Integrated gradients of an exported text model (RUN/model or an --export folder): each token's "
                    "share of the explained logit, strongest first; for an image model (Workbench's own "
                    "architectures), a gradient saliency map of the image, saved as a heat map over it with -o. A "
                    "classifier explains its predicted class; a multi-label model each label it decides at its "
                    "thresholds (the top label when it decides none), or the labels named by --label. The last stdout "
                    "line is JSON with every token's attribution (images: each label's score, threshold, where the "
                    "saliency peaks and the file saved).")
    e.add_argument("model", metavar="EXPORT_DIR")
    e.add_argument("text", metavar="TEXT_OR_IMAGE", help="the text to explain, or an image file for an image model")
    e.add_argument("--text-pair", default=None, help="the second text, for a sentence-pair model")
    e.add_argument("--label", action="append", default=None,
                   help="a multi-label model's label to explain (repeat for several; default: the decided ones); an "
                        "image classifier's class (default: the predicted one)")
    e.add_argument("-o", "--output", metavar="FOLDER", default=None,
                   help="image models: save each explained label's heat map as FOLDER/IMAGE.LABEL.png")
    e.add_argument("--overwrite", action="store_true", help="let -o replace heat maps saved before")
    e.add_argument("--steps", type=int, default=48, help="integration steps (default 48)")
    e.add_argument("--top", type=int, default=10, help="tokens to print per label (default 10)")


def _check_label_issues_outputs(args: argparse.Namespace) -> None:
    """DATA can be read; -o and --corrected can be written (``paths.check_output_path``, the check of
    `predict` and of corrected copies made in the app): never DATA itself or inside it (an image
    folder), never inside the --model folder, an existing file only with --overwrite, in a folder that
    exists and can be written, and not both the same file."""
    from ..core.errors import InputError
    from ..core.paths import check_data_path, check_output_path

    data = Path(args.data).expanduser()
    check_data_path(data, folder_ok=True)
    model = Path(args.model).expanduser() if args.model else None
    reads = [("the data", data), ("the --model folder", model if model is not None and model.is_dir() else None)]
    out = copy = None
    if args.output:
        out = check_output_path(args.output, reads, what="the issues table", overwrite=args.overwrite)
    if args.corrected:
        copy = check_output_path(args.corrected, reads, what="the corrected copy", overwrite=args.overwrite,
                                 folder_ok=data.is_dir())
    if out is not None and out == copy:
        raise InputError("is named by both -o and --corrected; give the issues table and the corrected copy "
                         "different names", path=out)


def cmd_label_issues(args: argparse.Namespace) -> int:
    from ..core.analysis.label_issues import find_label_issues, issues_tsv, write_atomic
    from ..core.config import DataConfig
    from ..core.corrections import write_corrected_copy
    from ..core.errors import InputError
    from .interrupt import cancel_then_stop, cancelled_by_ctrl_c
    from .progress import TerminalProgress

    if args.folds < 2:
        raise InputError(f"--folds must be at least 2, got {args.folds}")
    _check_label_issues_outputs(args)  # before any work: a bad -o must not cost the whole computation
    delimiter = "\t" if args.delimiter and args.delimiter.lower() in ("tab", "\\t") else args.delimiter
    dc = DataConfig(text_column=args.text_column, text_pair_column=args.text_pair_column,
                    label_column=args.label_column, delimiter=delimiter, label_separator=args.label_separator,
                    label_columns=[c.strip() for c in args.label_columns.split(",")] if args.label_columns else None)
    progress = TerminalProgress(enabled=not args.quiet)
    with cancelled_by_ctrl_c(progress, "workbench: cancelled", cancel_then_stop) as cancel:
        result = find_label_issues(args.data, args.model, args.task, data_config=dc, folds=args.folds,
                                   method=args.method, max_length=args.max_length, callbacks=progress, cancel=cancel)
    ranked = result.ranked()
    flagged = [r for r in ranked if r.flagged]
    print(f"{result.n_flagged:,} of {len(result.rows):,} rows flagged as probable label errors "
          f"({result.folds}-fold out-of-sample accuracy {result.cv_accuracy:.3f}; {result.seconds:.1f} s)")
    shown = (flagged or ranked)[: max(0, args.top)]
    if shown:
        where = "image" if modality_of(result.task) == "image" and not result.multilabel else "line"
        print(f"{where:>6}  {'given':<14} {'suggested':<14} {'score':>7}  text")
        for r in shown:
            text = one_line(r.text)
            print(f"{r.line:>6}  {one_line(r.given)[:14]:<14} {one_line(r.suggested)[:14]:<14} {r.score:7.4f}  "
                  f"{text[:80]}{'…' if len(text) > 80 else ''}")
    summary = result.summary()
    if args.output:
        summary["output"] = str(write_atomic(args.output, issues_tsv(ranked if args.all else flagged),
                                             overwrite=args.overwrite))
        print(f"wrote {args.output}", file=sys.stderr)
    if args.corrected:
        decisions = {r.line: (None if args.fix == "exclude" else r.suggested) for r in flagged}
        copy = write_corrected_copy(result, decisions, args.corrected, overwrite=args.overwrite)
        summary["corrected"] = str(copy)
        print(f"corrected copy ({args.fix} {len(decisions):,} rows): {copy}; train on it with "
              f"`workbench train {copy}`", file=sys.stderr)
    print(json.dumps(summary))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ..core.analysis.compare import compare_runs
    from ..core.analysis.label_issues import write_atomic

    diff = compare_runs(args.run_a, args.run_b)
    print(diff.text(args.examples))
    summary = diff.summary()
    if args.output:
        lines = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in diff.changed)
        summary["output"] = str(write_atomic(args.output, lines, overwrite=args.overwrite))
    print(json.dumps(summary))
    return 0


def _explained_task(args: argparse.Namespace) -> str:
    """The export's task (InputError for a folder that is not an export, or a task with no explanations)."""
    from ..core.errors import InputError
    from ..core.predict.predictor import read_meta

    task = read_meta(Path(args.model).expanduser())["task"]
    spec = spec_or_none(task)
    if spec is None or not spec.supports(EXPLANATIONS):
        raise InputError(f"explanations are for text and image classifiers; this model is {task}", path=args.model)
    if args.output and spec.modality != "image":
        raise InputError("-o saves image models' heat maps; a text model's attributions are in the JSON line")
    return task


def _explanations(args: argparse.Namespace, task: str) -> list:
    """The attributions `workbench explain` prints for a text export of ``task``."""
    from ..core.analysis.explain import explain_text, explain_text_labels
    from ..core.errors import InputError

    if args.steps < 1:
        raise InputError(f"--steps must be at least 1, got {args.steps}")
    if prediction_kind(task) == "labels":
        return explain_text_labels(str(Path(args.model).expanduser()), args.text, args.label, args.steps)
    if args.label:
        raise InputError("--label is for multi-label models; a classifier explains its predicted class")
    return [explain_text(str(Path(args.model).expanduser()), args.text, args.text_pair, args.steps)]


def _image_saliencies(args: argparse.Namespace) -> list:
    """The saliency maps `workbench explain` prints for an image export, after checking the image."""
    from ..core.analysis.explain import image_saliencies
    from ..core.data.images import ImageProblem
    from ..core.errors import InputError
    from ..core.paths import check_data_path
    from ..core.tasks.image.models import read_image_config

    model = Path(args.model).expanduser()
    if read_image_config(model) is None:
        raise InputError("saliency maps are for Workbench's own image models (small-cnn, efficientnet-lite0); this "
                         "export is a Hugging Face image model", path=model)
    image = check_data_path(Path(args.text).expanduser())
    if args.text_pair is not None:
        raise InputError("--text-pair is for sentence-pair text models; this is an image model")
    try:
        return image_saliencies(str(model), str(image), args.label)
    except ImageProblem as e:
        raise InputError(f"is not an image the model can read ({e})", path=image) from None


def _heat_map_files(args: argparse.Namespace, image: Path, labels: list[str]) -> list[Path]:
    """Where -o saves each label's heat map: FOLDER/IMAGE.LABEL.png, each checked before any is written."""
    import re

    from ..core.errors import InputError
    from ..core.paths import check_output_path

    folder = Path(args.output).expanduser()
    if not folder.is_dir():
        raise InputError("is not a folder; -o names the folder the heat maps are saved in (create it first)",
                         path=folder)
    names = [f"{image.stem}.{re.sub(r'[^A-Za-z0-9_.-]+', '_', label) or 'label'}.png" for label in labels]
    return [check_output_path(folder / n, [("the image", image), ("the model folder", Path(args.model).expanduser())],
                              what="the heat map", overwrite=args.overwrite) for n in names]


def cmd_explain_image(args: argparse.Namespace) -> int:
    from PIL import Image

    from ..core.analysis.explain import overlay
    from ..core.atomic import replacing

    explained = _image_saliencies(args)
    image = Path(args.text).expanduser()
    files = _heat_map_files(args, image, [x.label for x in explained]) if args.output else []
    out = []
    for i, x in enumerate(explained):
        h, w = x.saliency.shape
        row, col = x.peak
        if x.threshold is not None:
            head = (f"{one_line(x.label)}: score {x.score:.3f} {'≥' if x.decided else '<'} threshold "
                    f"{x.threshold:.3f} ({'decided' if x.decided else 'not decided'})")
        else:
            head = f"{one_line(x.label)}: probability {x.score:.3f}"
        print(f"{head}; saliency peaks at row {row}, column {col} of the {w}x{h} image the model saw")
        record = {"label": x.label, "score": round(x.score, 6), "peak": [row, col], "size": [w, h]}
        if x.threshold is not None:
            record.update(threshold=x.threshold, decided=x.decided)
        if files:
            with replacing(files[i]) as tmp:
                Image.fromarray(overlay(x.image, x.saliency)).save(tmp, format="PNG")
            record["saved"] = str(files[i])
            print(f"  saved {files[i]}", file=sys.stderr)
        out.append(record)
    print(json.dumps({"model": args.model, "image": args.text, "explained": out}, ensure_ascii=False))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    task = _explained_task(args)
    if modality_of(task) == "image":
        return cmd_explain_image(args)
    out = []
    for att in _explanations(args, task):
        tokens = [(t, s) for t, s, sp in zip(att.tokens, att.scores, att.special) if not sp]
        head = f"{one_line(att.label)}: logit {att.logit:+.3f} (baseline {att.baseline_logit:+.3f})"
        if att.score is not None:
            head += f", score {att.score:.3f}, {'decided' if att.decided else 'not decided'}"
        print(head)
        for token, score in sorted(tokens, key=lambda x: -abs(x[1]))[: max(0, args.top)]:
            print(f"  {score:+9.4f}  {one_line(token)}")
        out.append({"label": att.label, "logit": att.logit, "baseline_logit": att.baseline_logit, "delta": att.delta,
                    **({"score": att.score, "decided": att.decided} if att.score is not None else {}),
                    "tokens": [[t, round(s, 6)] for t, s in tokens]})
    print(json.dumps({"model": args.model, "explained": out}, ensure_ascii=False))
    return 0


def run_analysis(args: argparse.Namespace) -> int:
    commands = {"label-issues": cmd_label_issues, "compare": cmd_compare, "explain": cmd_explain}
    return commands[args.command](args)
