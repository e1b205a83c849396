"""Which training labels are probably wrong.

Every row gets out-of-sample class probabilities from K-fold cross-validation of a logistic
regression on the backbone's frozen features (see ``core/tasks/embeddings.py``): seconds to
minutes, not K fine-tunes. cleanlab (confident learning) then flags the rows whose given label
disagrees with those probabilities and scores every row (label quality, 0..1, lower = more
suspicious).

    result = find_label_issues("train.tsv", callbacks=..., cancel=...)
    result.ranked()  # most suspicious first

Rows are read by the task's own ``prepare_data`` with nothing held out, so columns, labels and
skipped rows are exactly those of a training run on the same file.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..cancel import NEVER, CancelToken
from ..config import DataConfig, ModelConfig, RunConfig, TrainConfig
from ..errors import InputError
from ..events import Callbacks, PhaseChanged, Progress
from ..tasks.table import LABEL_ISSUES, TASKS

log = logging.getLogger(__name__)

SUPPORTED = tuple(name for name, t in TASKS.items() if t.supports(LABEL_ISSUES))
METHODS = ("self_confidence", "normalized_margin")
TSV_COLUMNS = ("line", "given", "suggested", "score", "suggested_probability", "flagged", "text")


@dataclass
class LabelIssue:
    line: int  # the row's line in DATA (text files); the image's number in the scan (image folders)
    given: str
    suggested: str  # the most probable class out of sample
    score: float  # label quality, 0..1: lower = more likely wrong
    suggested_probability: float
    flagged: bool  # cleanlab counts it among the label issues
    text: str  # the text (pairs: "first ⟶ second") or the image's path
    index: int = 0  # position in the training rows read


@dataclass
class LabelIssues:
    path: str
    task: str
    labels: list[str]
    rows: list[LabelIssue]  # every training row, in file order
    method: str
    folds: int
    seconds: float = 0.0
    cv_accuracy: float = 0.0  # accuracy of the out-of-sample predictions against the given labels
    resolved: dict[str, Any] = field(default_factory=dict)

    def ranked(self, flagged_only: bool = False) -> list[LabelIssue]:
        rows = [r for r in self.rows if r.flagged or not flagged_only]
        return sorted(rows, key=lambda r: (r.score, r.line))

    @property
    def n_flagged(self) -> int:
        return sum(r.flagged for r in self.rows)

    def summary(self) -> dict[str, Any]:
        return {"data": self.path, "task": self.task, "rows": len(self.rows), "flagged": self.n_flagged,
                "method": self.method, "folds": self.folds, "cv_accuracy": round(self.cv_accuracy, 4),
                "seconds": round(self.seconds, 2)}


def out_of_sample_probabilities(features: np.ndarray, labels: np.ndarray, n_classes: int, folds: int = 5,
                                seed: int = 0, cancel: CancelToken = NEVER, progress=None) -> tuple[np.ndarray, int]:
    """(probabilities (n, n_classes), folds used): each row scored by a logistic regression that did
    not see it. Folds are stratified; a class too small for every fold simply gets probability 0 in
    the folds whose training part lacks it."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n = len(labels)
    counts = np.bincount(labels, minlength=n_classes)
    k = int(max(2, min(folds, counts[counts > 0].max(), n)))
    probs = np.zeros((n, n_classes), np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the least populated class has only 1 member", convergence notes
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        for i, (train, held) in enumerate(splitter.split(features, labels)):
            cancel.raise_if_cancelled()
            present = np.unique(labels[train])
            if len(present) == 1:
                probs[np.ix_(held, present)] = 1.0
            else:
                clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, C=0.5))
                clf.fit(features[train], labels[train])
                probs[np.ix_(held, clf.classes_)] = clf.predict_proba(features[held])
            if progress is not None:
                progress(i + 1, k)
    return probs, k


def rank_label_issues(labels: np.ndarray, probs: np.ndarray, method: str = "self_confidence") -> tuple[np.ndarray, np.ndarray]:
    """(quality scores (n,), flagged (n,) bool) by cleanlab's confident learning."""
    from cleanlab.filter import find_label_issues as cl_find
    from cleanlab.rank import get_label_quality_scores

    if method not in METHODS:
        raise InputError(f"unknown ranking method {method!r}; choose {' or '.join(METHODS)}")
    probs = np.clip(probs, 1e-12, None)
    probs = probs / probs.sum(1, keepdims=True)
    scores = get_label_quality_scores(labels, probs, method=method)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            flagged = cl_find(labels, probs, filter_by="prune_by_noise_rate", n_jobs=1)
    except (ValueError, IndexError):  # e.g. a class with a single row: fall back to "predicted another class"
        flagged = probs.argmax(1) != labels
    return np.asarray(scores, np.float64), np.asarray(flagged, bool)


def _texts(task, ds) -> list[str]:
    from ..data.tabular import arrow_table

    if task.modality == "image":
        return arrow_table(ds, ["path"]).column("path").to_pylist()
    texts = arrow_table(ds, ["text"]).column("text").to_pylist()
    if "text_pair" in ds.column_names:
        pairs = arrow_table(ds, ["text_pair"]).column("text_pair").to_pylist()
        return [f"{a} ⟶ {b}" for a, b in zip(texts, pairs)]
    return texts


def find_label_issues(data: str | Path, model: str | None = None, task: str | None = None, *,
                      data_config: DataConfig | None = None, folds: int = 5, method: str = "self_confidence",
                      max_length: int = 128, seed: int = 0, callbacks: Callbacks | None = None,
                      cancel: CancelToken = NEVER) -> LabelIssues:
    """Score every training row of ``data`` (a classification file or image folder); see the module."""
    import time

    from ..data.tabular import arrow_table
    from ..run.stages import check, find_backbone, prepare, quiet_libraries
    from ..tasks.embeddings import embed_split

    t0 = time.perf_counter()
    callbacks = callbacks or Callbacks()
    dc = dataclasses.replace(data_config or DataConfig(), train=str(data), val=None, test=None,
                             val_fraction=0.0, test_fraction=0.0, sample=None)
    config = RunConfig(task=task or "auto", data=dc, model=ModelConfig(name=model) if model else ModelConfig(),
                       train=TrainConfig(max_length=max_length, seed=seed))
    checked = check(config)
    t = checked.task
    if t.name not in SUPPORTED:
        raise InputError(f"label issues are found for classification of texts, pairs and images; this data reads "
                         f"as {t.name}", path=data)
    quiet_libraries()
    with tempfile.TemporaryDirectory(prefix="workbench-label-issues-") as tmp:
        # Read as a training run reads it (the run's own stage), with nothing held out.
        prepared = prepare(checked, Path(tmp), callbacks, cancel)
        backbone = find_backbone(prepared, callbacks)
        features, labels = embed_split(t, backbone.path, prepared.data, "train", max_length, Path(tmp), callbacks,
                                       cancel)
        train = prepared.data.splits["train"]
        lines = arrow_table(train, ["row"]).column("row").to_numpy()
        texts = _texts(t, train)
    resolved = prepared.data.resolved
    names = prepared.data.label_map.names if prepared.data.label_map else []
    callbacks.on_event(PhaseChanged("cross-validating", f"{folds} folds"))
    probs, k = out_of_sample_probabilities(features, labels, len(names), folds, seed, cancel,
                                           lambda d, n: callbacks.on_event(Progress("cross-validating", d, n)))
    callbacks.on_event(PhaseChanged("ranking", method))
    scores, flagged = rank_label_issues(labels, probs, method)
    suggested = probs.argmax(1)
    # Image rows are numbered from 1 in scan order (the preview's numbering); text rows by file line.
    numbers = lines + 1 if t.modality == "image" else lines
    rows = [LabelIssue(int(numbers[i]), names[labels[i]], names[suggested[i]], float(scores[i]),
                       float(probs[i, suggested[i]]), bool(flagged[i]), texts[i], i) for i in range(len(labels))]
    rows.sort(key=lambda r: r.line)
    return LabelIssues(str(Path(data).resolve()), t.name, names, rows, method, k, time.perf_counter() - t0,
                       float((suggested == labels).mean()) if len(labels) else 0.0,
                       {k_: v for k_, v in resolved.items() if k_ != "warnings"})


def issues_tsv(rows: list[LabelIssue]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t", lineterminator="\n")
    w.writerow(TSV_COLUMNS)
    for r in rows:
        w.writerow([r.line, r.given, r.suggested, f"{r.score:.6f}", f"{r.suggested_probability:.6f}",
                    int(r.flagged), r.text])
    return buf.getvalue()


def write_atomic(path: str | Path, text: str, overwrite: bool = False) -> Path:
    """Write ``text`` beside ``path`` and move it into place: never a half-written file, never an
    existing file replaced unless ``overwrite``, never a folder (``paths.check_output_path``: callers
    check against what they read before their work, this checks again at the moment of writing)."""
    from ..atomic import write_text_atomic
    from ..errors import write_failure
    from ..paths import check_output_path

    target = check_output_path(path, overwrite=overwrite)
    try:
        write_text_atomic(target, text)
    except OSError as e:
        raise (write_failure(e, target, permission_too=True) or e) from e
    return target
