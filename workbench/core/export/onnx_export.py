"""ONNX for every task: the export, its check against PyTorch, and the optional int8 copy.

Every export folder gets ``model.onnx`` (inputs named as the task's model takes them: ``input_ids``,
``attention_mask`` and ``token_type_ids`` for text, ``pixel_values`` for images; output ``logits``;
batch and sequence axes dynamic) and ``onnx_check.json``, which records how ONNX Runtime and
PyTorch agree on the evaluation rows (top-1 agreement, largest logit difference). A task with
decision thresholds (multi-label: ``Task.decision_thresholds``) gets a second output ``labels``
(int64, 1 where sigmoid(logit) >= the label's threshold), and the check compares those decisions
(``labels_agreement``: rows whose decided labels all agree) instead of the top class. With
``quantize="int8"`` it also gets ``model.int8.onnx`` (onnxruntime's dynamic quantization: int8
weights, activations quantized on the fly) and, under ``"int8"`` in the same JSON, the task's metric
on the whole evaluation split for fp32 and int8 ONNX, sizes on disk and latency per example; an
int8 model that loses more than ``INT8_TOLERANCE`` is flagged (``"flagged": true`` and a warning).

The ONNX step never costs the user the PyTorch export: a failure is recorded in onnx_check.json
(``"exported": false``), warned about, and the folder is written without model.onnx.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..cancel import NEVER, CancelToken
from ..events import Callbacks, PhaseChanged, Progress, Warning_

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
CHECK_FILE = "onnx_check.json"
CHECK_ROWS = 1000  # the ONNX Runtime check runs on at most this many evaluation rows
INT8_TOLERANCE = 0.01  # one point of the task's metric: an int8 model losing more is flagged
QUANTIZE_CHOICES = ("int8",)
_TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function in float64 (exp overflowing to inf gives 0, as it should)."""
    x = np.asarray(x, np.float64)
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def decide_labels(logits: np.ndarray, thresholds: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scores, decided) of a multi-label model: sigmoid scores in float64, and True where a label's
    score reaches its threshold. The one rule the Predictor, the ONNX check and the graph follow."""
    scores = sigmoid(logits)
    return scores, scores >= np.asarray(thresholds, np.float64)


def export_onnx(model, path: Path, example: dict[str, np.ndarray], per_token: bool = False,
                thresholds: Sequence[float] | np.ndarray | None = None) -> Path:
    """Write ``model`` as ONNX with the inputs of ``example`` (name -> array, in the model's keyword
    names) and the output ``logits``; with ``thresholds`` (one per output), also ``labels``: int64,
    1 where sigmoid(logit) >= the threshold. The batch axis is dynamic, and so is the sequence axis
    of token inputs (and of the logits when ``per_token``)."""
    import torch

    names = list(example)

    class LogitsOnly(torch.nn.Module):
        # Hugging Face models return an output object and take keywords; ONNX wants tensors in order.
        def __init__(self, inner, cut: torch.Tensor | None) -> None:
            super().__init__()
            self.inner = inner
            self.decides = cut is not None
            if cut is not None:
                self.register_buffer("cut", cut)

        def forward(self, *inputs):
            out = self.inner(**dict(zip(names, inputs)))
            logits = out.logits if hasattr(out, "logits") else out
            if not self.decides:
                return logits
            # in float64, as decide_labels: a score within fp32 rounding of its threshold is decided alike
            return logits, (torch.sigmoid(logits.double()) >= self.cut).to(torch.int64)

    cut = None if thresholds is None else torch.from_numpy(np.asarray(thresholds, np.float64).reshape(-1))
    # eval() on the wrapper too: a wrapper in training mode would trace dropout into the graph.
    wrapped = LogitsOnly(model, cut).eval()
    outputs = ["logits"] if cut is None else ["logits", "labels"]
    axes = {n: ({0: "batch", 1: "sequence"} if n in _TEXT_INPUTS else {0: "batch"}) for n in names}
    axes["logits"] = {0: "batch", 1: "sequence"} if per_token else {0: "batch"}
    if cut is not None:
        axes["labels"] = dict(axes["logits"])
    tensors = tuple(torch.from_numpy(np.ascontiguousarray(example[n])) for n in names)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer notes about Python ints in shape arithmetic
        # The TorchScript exporter: the dynamo one needs onnxscript and gains nothing here.
        torch.onnx.export(wrapped, tensors, str(path), dynamo=False, input_names=names, output_names=outputs,
                          dynamic_axes=axes, opset_version=17)
    return path


def open_session(path: Path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # ONNX Runtime's notes about unused initializers are not the user's concern
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_session(session, batch: dict[str, np.ndarray]) -> np.ndarray:
    """Logits for one batch (the output named ``logits``, whatever other outputs the graph has)."""
    return run_outputs(session, batch, ("logits",))[0]


def run_outputs(session, batch: dict[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
    """The named outputs for one batch: only the inputs the graph takes, in the types it takes."""
    feed = {}
    for inp in session.get_inputs():
        value = batch[inp.name]
        feed[inp.name] = value.astype(np.float32 if "float" in inp.type else np.int64, copy=False)
    return session.run(list(outputs), feed)


def torch_logits(model, batch: dict[str, np.ndarray]) -> np.ndarray:
    import torch

    with torch.inference_mode():
        out = model(**{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()})
        return (out.logits if hasattr(out, "logits") else out).float().numpy()


def compare(ours: np.ndarray, theirs: np.ndarray, mask: np.ndarray | None) -> tuple[int, int, float]:
    """(items compared, items whose top class agrees, largest absolute difference). Per-token logits are
    compared only where ``mask`` (the attention mask) is set: padding carries no prediction."""
    if ours.ndim == 3 and mask is not None:
        m = mask.astype(bool)
        ours, theirs = ours[m], theirs[m]
    ours, theirs = ours.reshape(-1, ours.shape[-1]), theirs.reshape(-1, theirs.shape[-1])
    diff = float(np.abs(ours - theirs).max()) if ours.size else 0.0
    if ours.shape[-1] == 1:  # one output (regression): there is no top class, only the difference
        return len(ours), len(ours), diff
    return len(ours), int((ours.argmax(-1) == theirs.argmax(-1)).sum()), diff


def check_onnx(path: Path, model, batches: Iterable[dict[str, np.ndarray]], classes: bool = True,
               thresholds: Sequence[float] | np.ndarray | None = None) -> dict[str, Any]:
    """Run the ONNX file with ONNX Runtime and the PyTorch model on the same inputs; compare. With
    ``thresholds`` the decided labels are compared (the graph's ``labels`` output against PyTorch's
    thresholded scores), not the top class."""
    import onnxruntime as ort

    session = open_session(path)
    model.eval()
    rows = items = agree = 0
    max_diff = 0.0
    decisions = _Decisions(thresholds) if thresholds is not None else None
    for batch in batches:
        ours = torch_logits(model, batch)
        if decisions is None:
            theirs = run_session(session, batch)
        else:
            theirs, labels = run_outputs(session, batch, ("logits", "labels"))
            decisions.add(ours, labels)
        n, a, d = compare(ours, theirs, batch.get("attention_mask"))
        rows += len(ours)
        items += n
        agree += a
        max_diff = max(max_diff, d)
    out: dict[str, Any] = {"rows": rows}
    if items != rows:
        out["tokens"] = items
    out["top1_agreement"] = (agree / items if items else 1.0) if classes and decisions is None else None
    if decisions is not None:
        out.update(decisions.record())
    out["max_abs_diff"] = max_diff
    out["onnxruntime"] = ort.__version__
    return out


class _Decisions:
    """How ONNX Runtime's ``labels`` output agrees with PyTorch's logits thresholded by decide_labels."""

    def __init__(self, thresholds: Sequence[float] | np.ndarray) -> None:
        self.thresholds = np.asarray(thresholds, np.float64)
        self.rows = self.rows_agree = self.decisions = self.decisions_agree = 0

    def add(self, torch_logits: np.ndarray, onnx_labels: np.ndarray) -> None:
        ours = decide_labels(torch_logits, self.thresholds)[1]
        same = ours == (np.asarray(onnx_labels) == 1)
        self.rows += len(same)
        self.rows_agree += int(same.all(-1).sum())
        self.decisions += same.size
        self.decisions_agree += int(same.sum())

    def record(self) -> dict[str, Any]:
        return {"outputs": ["logits", "labels"],
                "labels_agreement": self.rows_agree / self.rows if self.rows else 1.0,
                "label_decisions_agreement": self.decisions_agree / self.decisions if self.decisions else 1.0}


def quantize_int8(source: Path, target: Path) -> Path:
    """Dynamic int8 quantization (weights int8, activations quantized per batch at run time): no
    calibration data needed, and the layers that carry the weight of a transformer (MatMul, Gemm)
    are the ones it speeds up."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger("root").setLevel(logging.ERROR)  # "consider pre-processing" advice on every call
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    return target


def file_size(path: Path) -> int:
    """Bytes on disk, counting external weight data beside the graph (``.onnx.data``)."""
    extra = path.with_name(path.name + ".data")
    return path.stat().st_size + (extra.stat().st_size if extra.exists() else 0)


# ---------------------------------------------------------------------------- inside a run's export


def _eval_batches(task, split, rows: np.ndarray, batch_size: int) -> Iterable[tuple[np.ndarray, dict[str, np.ndarray]]]:
    from ..training.batching import sorted_batches

    for part in sorted_batches(split.lengths[rows], batch_size):
        chosen = rows[part]
        batch = task.make_batch(split, chosen)
        batch.pop("labels", None)
        yield chosen, batch


def split_logits(task, split, run, batch_size: int, cancel: CancelToken = NEVER,
                 progress=None) -> tuple[np.ndarray, float]:
    """Logits for every row of ``split`` in row order from ``run(batch)``, and the seconds spent in it."""
    outs, order, seconds, done = [], [], 0.0, 0
    for rows, batch in _eval_batches(task, split, np.arange(len(split)), batch_size):
        cancel.raise_if_cancelled()
        t = time.perf_counter()
        outs.append(run(batch))
        seconds += time.perf_counter() - t
        order.append(rows)
        done += len(rows)
        if progress is not None:
            progress(done, len(split))
    if not outs:
        return np.zeros((0,)), seconds
    if outs[0].ndim == 3:  # per-token outputs: pad each batch to one width (padding is never read)
        width = max(o.shape[1] for o in outs)
        outs = [np.pad(o, ((0, 0), (0, width - o.shape[1]), (0, 0))) for o in outs]
    logits = np.concatenate(outs)
    result = np.empty_like(logits)
    result[np.concatenate(order)] = logits
    return result, seconds


def export_and_check(model, folder: Path, example: dict[str, np.ndarray], batches: Iterable[dict[str, np.ndarray]],
                     split_name: str, *, per_token: bool, classes: bool,
                     thresholds: Sequence[float] | np.ndarray | None = None) -> dict[str, Any]:
    """Export ``model`` to ``folder``/model.onnx and compare ONNX Runtime with it on ``batches`` (in
    this process or the child's); ``thresholds``: the decision thresholds of a multi-label model
    (``export_onnx``). A model the exporter cannot trace gives ``exported: false``."""
    path = folder / ONNX_FILE
    try:
        export_onnx(model, path, example, per_token=per_token, thresholds=thresholds)
    except Exception as e:  # an architecture the exporter cannot trace: the model itself is still fine
        log.warning("ONNX export failed; %s was not written", ONNX_FILE, exc_info=True)
        return {"exported": False, "error": f"{type(e).__name__}: {e}"}
    return {"exported": True, "file": ONNX_FILE, "size_bytes": file_size(path), "split": split_name,
            **check_onnx(path, model, batches, classes=classes, thresholds=thresholds)}


def export_with_onnx(task, model, folder: Path, split, data, *, quantize: str | None = None,
                     callbacks: Callbacks | None = None, cancel: CancelToken = NEVER, batch_size: int = 32) -> dict:
    """Write model.onnx (and with ``quantize``, model.int8.onnx) into the export ``folder`` being
    written, check them, and record the result in onnx_check.json; returns that record. Never raises
    for an ONNX problem: it is recorded and warned about, and the PyTorch export stands."""
    callbacks = callbacks or Callbacks()
    callbacks.on_event(PhaseChanged("exporting", "ONNX"))
    with task.export_state(model):
        model.eval()
        thresholds = task.decision_thresholds()  # the trained model's, so read inside export_state
        record = _export_in_child(task, folder, split, cancel, batch_size, thresholds) if in_child_process else None
        if record is None:
            rows = np.arange(min(len(split), CHECK_ROWS))
            batches = (b for _, b in _eval_batches(task, split, rows, batch_size))
            record = export_and_check(model, folder, task.onnx_example(split), batches, split.name,
                                      per_token=task.per_token_outputs, classes=task.has_classes,
                                      thresholds=thresholds)
    if not record["exported"]:
        for leftover in (folder / ONNX_FILE, folder / (ONNX_FILE + ".data")):
            leftover.unlink(missing_ok=True)
        callbacks.on_event(Warning_(f"ONNX export failed ({record['error'][:300]}); {ONNX_FILE} was not written "
                                    "(the PyTorch model is exported as usual)"))
        _write_record(folder, record)
        return record
    if record["rows"] and record["top1_agreement"] is not None and record["top1_agreement"] < 1.0:
        callbacks.on_event(Warning_(
            f"ONNX Runtime agrees with PyTorch on the top class of {record['top1_agreement']:.1%} of the checked "
            f"{split.name} rows (max logit difference {record['max_abs_diff']:.2g})"))
    if record["rows"] and record.get("labels_agreement", 1.0) < 1.0:
        callbacks.on_event(Warning_(
            f"ONNX Runtime decides the same labels as PyTorch on {record['labels_agreement']:.1%} of the checked "
            f"{split.name} rows (max logit difference {record['max_abs_diff']:.2g})"))
    if quantize:
        try:
            record["int8"] = quantize_and_compare(task, folder, split, data, callbacks=callbacks, cancel=cancel,
                                                  batch_size=batch_size)
        except Exception as e:
            if cancel.cancelled:
                raise
            log.warning("int8 quantization failed", exc_info=True)
            (folder / INT8_FILE).unlink(missing_ok=True)
            record["int8"] = {"written": False, "error": f"{type(e).__name__}: {e}"}
            callbacks.on_event(Warning_(f"int8 quantization failed ({record['int8']['error'][:300]}); {INT8_FILE} "
                                        "was not written"))
    _write_record(folder, record)
    return record


# The app exports ONNX in a child process: the TorchScript exporter holds the GIL for up to a
# second at a time, and the app's window would freeze that long. The CLI exports in-process (no
# window to keep responsive, and a child costs a few seconds of imports).
in_child_process = False
CHILD_TIMEOUT_S = 1800


def _export_in_child(task, folder: Path, split, cancel: CancelToken, batch_size: int,
                     thresholds: Sequence[float] | np.ndarray | None = None) -> dict | None:
    """Export and check ``folder``'s saved model in a child process (the same steps as in-process,
    on the model as written to disk). None when the child could not do it for a reason of its own
    (it did not start, crashed or was killed): the caller then exports in-process."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="wb-onnx-") as tmp_name:
        tmp = Path(tmp_name)
        rows = np.arange(min(len(split), CHECK_ROWS))
        arrays = {f"example/{k}": v for k, v in task.onnx_example(split).items()}
        for i, (_, batch) in enumerate(_eval_batches(task, split, rows, batch_size)):
            arrays.update({f"batch{i}/{k}": v for k, v in batch.items()})
        np.savez(tmp / "inputs.npz", **arrays)
        job = {"folder": str(folder), "task": task.name, "split": split.name, "per_token": task.per_token_outputs,
               "classes": task.has_classes, "inputs": str(tmp / "inputs.npz"), "result": str(tmp / "result.json"),
               "thresholds": None if thresholds is None else [float(t) for t in np.asarray(thresholds).reshape(-1)]}
        (tmp / "job.json").write_text(json.dumps(job), encoding="utf-8")
        # The child's messages go to a file: a pipe read only at the end could fill and stall it.
        with open(tmp / "stderr.txt", "wb") as err:
            try:
                proc = subprocess.Popen([sys.executable, "-m", "workbench.core.export.onnx_export", str(tmp / "job.json")],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
            except OSError:
                log.warning("could not start the ONNX export process; exporting in this one", exc_info=True)
                return None
            started = time.monotonic()
            while proc.poll() is None:
                if cancel.cancelled or time.monotonic() - started > CHILD_TIMEOUT_S:
                    proc.kill()
                    proc.wait()
                    cancel.raise_if_cancelled()
                    return None
                time.sleep(0.1)
        result = tmp / "result.json"
        if proc.returncode != 0 or not result.is_file():
            stderr = (tmp / "stderr.txt").read_text(encoding="utf-8", errors="replace")
            log.warning("the ONNX export process failed (exit %s); exporting in this one:\n%s", proc.returncode,
                        stderr[-2000:])
            return None
        return json.loads(result.read_text(encoding="utf-8"))


def _child_main(job_path: str) -> int:
    """The child process: export the saved model, check it on the given batches, write the record."""
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    from ..predict.loading import load_torch_model

    folder = Path(job["folder"])
    arrays = np.load(job["inputs"])
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key in arrays.files:
        group, name = key.split("/", 1)
        groups.setdefault(group, {})[name] = arrays[key]
    batches = [groups[k] for k in sorted((g for g in groups if g.startswith("batch")), key=lambda g: int(g[5:]))]
    model = load_torch_model(folder, job["task"])
    record = export_and_check(model, folder, groups["example"], batches, job["split"], per_token=job["per_token"],
                              classes=job["classes"], thresholds=job.get("thresholds"))
    Path(job["result"]).write_text(json.dumps(record), encoding="utf-8")
    return 0


def quantize_and_compare(task, folder: Path, split, data, *, callbacks: Callbacks | None = None,
                         cancel: CancelToken = NEVER, batch_size: int = 32) -> dict[str, Any]:
    """Write model.int8.onnx beside model.onnx and measure both on the whole evaluation split."""
    callbacks = callbacks or Callbacks()
    callbacks.on_event(PhaseChanged("exporting", "int8"))
    fp32, int8 = folder / ONNX_FILE, folder / INT8_FILE
    quantize_int8(fp32, int8)
    metric = task.quantize_metric
    better = task.greater_is_better.get(metric, True)
    out: dict[str, Any] = {"written": True, "file": INT8_FILE, "split": split.name, "rows": len(split),
                           "metric": metric, "tolerance": INT8_TOLERANCE}
    results = {}
    for name, path in (("fp32", fp32), ("int8", int8)):
        session = open_session(path)
        phase = f"evaluating {name} ONNX"
        logits, seconds = split_logits(task, split, lambda b: run_session(session, b), batch_size, cancel,
                                       lambda done, total: callbacks.on_event(Progress(phase, done, total)))
        metrics = task.evaluate(task.onnx_outputs_as_logits(logits), split, float("nan"), data).metrics
        results[name] = {k: v for k, v in metrics.items() if k != "loss"}
        out.setdefault("size_bytes", {})[name] = file_size(path)
        out.setdefault("latency_ms_per_example", {})[name] = round(1000 * seconds / max(len(split), 1), 4)
    out["metrics"] = results
    out["fp32"], out["int8"] = results["fp32"].get(metric), results["int8"].get(metric)
    if out["fp32"] is not None and out["int8"] is not None:
        delta = out["int8"] - out["fp32"]
        out["delta"] = delta
        loss = -delta if better else delta  # how much worse int8 is, in the metric's units
        out["flagged"] = bool(loss > INT8_TOLERANCE)
    else:
        out["delta"], out["flagged"] = None, False
    if out["flagged"]:
        callbacks.on_event(Warning_(
            f"the int8 model loses {abs(out['delta']) * 100:.1f} points of {metric} on the {split.name} split "
            f"({out['fp32']:.4f} fp32, {out['int8']:.4f} int8), more than the {INT8_TOLERANCE * 100:.0f}-point "
            f"tolerance; prefer {ONNX_FILE}"))
    return out


def _write_record(folder: Path, record: dict[str, Any]) -> None:
    (folder / CHECK_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")


def read_check(folder: str | Path) -> dict[str, Any] | None:
    """The onnx_check.json of an export, or None when it has none (or it is unreadable)."""
    try:
        record = json.loads((Path(folder) / CHECK_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


if __name__ == "__main__":  # the child process of _export_in_child
    import sys

    sys.exit(_child_main(sys.argv[1]))
