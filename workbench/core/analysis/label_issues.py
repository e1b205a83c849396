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

Several labels per row (multi-label tasks: texts, or a table of image paths and their label sets): one
logistic regression per label on the same folds gives each row an out-of-sample probability per label, and cleanlab's multi-label confident learning
(``cleanlab.multilabel_classification``) flags and scores the rows whose label set disagrees. A row's
suggestion is its most probable label set (every label at 0.5), given and suggested sets are written
joined by the file's separator ("billing|bug").
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
    line: int  # the row's line in DATA (text files, tables of image paths); the image's number in the scan (image folders)
    given: str
    suggested: str  # the most probable class out of sample
    score: float  # label quality, 0..1: lower = more likely wrong
    suggested_probability: float
    flagged: bool  # cleanlab counts it among the label issues
    text: str  # the text (pairs: "first ⟶ second") or the image's (absolute) path
    index: int = 0  # position in the training rows read
    # Multi-label rows: the sets themselves (``given``/``suggested`` are them joined by the separator);
    # ``suggested_probability`` is then the out-of-sample probability of the whole suggested set.
    given_labels: list[str] | None = None
    suggested_labels: list[str] | None = None

    @property
    def missing(self) -> list[str]:
        """Labels the model suggests that the row lacks (multi-label rows; [] otherwise)."""
        given = set(self.given_labels or [])
        return [x for x in self.suggested_labels or [] if x not in given]

    @property
    def extra(self) -> list[str]:
        """Labels the row has that the model does not suggest (multi-label rows; [] otherwise)."""
        suggested = set(self.suggested_labels or [])
        return [x for x in self.given_labels or [] if x not in suggested]


@dataclass
class LabelIssues:
    path: str
    task: str
    labels: list[str]
    rows: list[LabelIssue]  # every training row, in file order
    method: str
    folds: int
    seconds: float = 0.0
    cv_accuracy: float = 0.0  # accuracy of the out-of-sample predictions against the given labels (sets: exact match)
    resolved: dict[str, Any] = field(default_factory=dict)
    separator: str | None = None  # multi-label data: what joins a set's labels in given/suggested; None: one label

    @property
    def multilabel(self) -> bool:
        return self.separator is not None

    def ranked(self, flagged_only: bool = False) -> list[LabelIssue]:
        rows = [r for r in self.rows if r.flagged or not flagged_only]
        return sorted(rows, key=lambda r: (r.score, r.line))

    @property
    def n_flagged(self) -> int:
        return sum(r.flagged for r in self.rows)

    def summary(self) -> dict[str, Any]:
        out = {"data": self.path, "task": self.task, "rows": len(self.rows), "flagged": self.n_flagged,
               "method": self.method, "folds": self.folds, "cv_accuracy": round(self.cv_accuracy, 4),
               "seconds": round(self.seconds, 2)}
        if self.multilabel:
            out.update(labels=len(self.labels), label_separator=self.separator)
        return out


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


def out_of_sample_label_probabilities(features: np.ndarray, gold: np.ndarray, folds: int = 5, seed: int = 0,
                                      cancel: CancelToken = NEVER, progress=None) -> tuple[np.ndarray, int]:
    """(probabilities (n, labels), folds used) of multi-hot ``gold``: each row scored, label by label, by
    a logistic regression that did not see it. Label sets do not stratify, so the folds are random; a
    label constant in a fold's training part (never or always present) gets that part's rate."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold
    from sklearn.preprocessing import StandardScaler

    gold = np.asarray(gold) > 0.5
    n, n_labels = gold.shape
    k = int(max(2, min(folds, n)))
    probs = np.zeros((n, n_labels), np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence notes
        for i, (train, held) in enumerate(KFold(n_splits=k, shuffle=True, random_state=seed).split(features)):
            cancel.raise_if_cancelled()
            scaler = StandardScaler().fit(features[train])
            x_train, x_held = scaler.transform(features[train]), scaler.transform(features[held])
            for j in range(n_labels):
                y = gold[train, j]
                if y.all() or not y.any():
                    probs[held, j] = float(y.mean())
                    continue
                clf = LogisticRegression(max_iter=1000, C=0.5).fit(x_train, y)
                probs[held, j] = clf.predict_proba(x_held)[:, 1]
            if progress is not None:
                progress(i + 1, k)
    return probs, k


def rank_label_set_issues(gold: np.ndarray, probs: np.ndarray, method: str = "self_confidence") -> tuple[np.ndarray, np.ndarray]:
    """(quality scores (n,), flagged (n,) bool) of multi-hot ``gold`` against per-label probabilities, by
    cleanlab's multi-label confident learning."""
    from cleanlab.multilabel_classification import get_label_quality_scores
    from cleanlab.multilabel_classification.filter import find_label_issues as cl_find

    if method not in METHODS:
        raise InputError(f"unknown ranking method {method!r}; choose {' or '.join(METHODS)}")
    gold = np.asarray(gold) > 0.5
    sets = [list(map(int, np.flatnonzero(row))) for row in gold]
    probs = np.clip(np.asarray(probs, np.float64), 1e-6, 1 - 1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = get_label_quality_scores(sets, probs, method=method)
        try:
            flagged = cl_find(sets, probs, filter_by="prune_by_noise_rate", n_jobs=1)
        except (ValueError, IndexError):  # e.g. a label on one row only: fall back to "another set is likelier"
            flagged = ((probs >= 0.5) != gold).any(1)
    return np.asarray(scores, np.float64), np.asarray(flagged, bool)


def _label_set_rows(gold: np.ndarray, probs: np.ndarray, scores: np.ndarray, flagged: np.ndarray,
                    numbers: np.ndarray, texts: list[str], names: list[str], separator: str) -> list[LabelIssue]:
    """One LabelIssue per multi-label row: the given and the most probable label set, and its probability."""
    gold = np.asarray(gold) > 0.5
    suggested = probs >= 0.5
    # Labels are scored independently, so the suggested set's probability is the product over labels.
    set_probability = np.where(suggested, probs, 1 - probs).prod(1)
    rows = []
    for i in range(len(gold)):
        given = [names[j] for j in np.flatnonzero(gold[i])]
        suggests = [names[j] for j in np.flatnonzero(suggested[i])]
        rows.append(LabelIssue(int(numbers[i]), separator.join(given), separator.join(suggests), float(scores[i]),
                               float(set_probability[i]), bool(flagged[i]), texts[i], i, given, suggests))
    return rows


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
        raise InputError(f"label issues are found for classification of texts, pairs, images and label "
                         f"sets; this data reads as {t.name}", path=data)
    quiet_libraries()
    with tempfile.TemporaryDirectory(prefix="workbench-label-issues-") as tmp:
        # Read as a training run reads it (the run's own stage), with nothing held out.
        prepared = prepare(checked, Path(tmp), callbacks, cancel)
        backbone = find_backbone(prepared, callbacks)
        import torch

        # A backbone without pretrained weights (the small CNN) starts from random ones: seeded, the
        # same file ranks the same every time, and the caller's random state is left as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            features, labels = embed_split(t, backbone.path, prepared.data, "train", max_length, Path(tmp), callbacks,
                                           cancel)
        train = prepared.data.splits["train"]
        lines = arrow_table(train, ["row"]).column("row").to_numpy()
        texts = _texts(t, train)
    resolved = prepared.data.resolved
    names = prepared.data.label_map.names if prepared.data.label_map else []
    separator = resolved.get("label_separator") if np.ndim(labels) == 2 else None
    # Images in class folders are numbered from 1 in scan order (the preview's numbering); text rows,
    # and images listed in a table with their label sets, by file line.
    numbers = lines + 1 if t.modality == "image" and separator is None else lines
    rank = _rank_sets if separator is not None else _rank_classes
    rows, k, cv = rank(features, labels, names, numbers, texts, folds, method, seed, callbacks, cancel, separator)
    rows.sort(key=lambda r: r.line)
    return LabelIssues(str(Path(data).resolve()), t.name, names, rows, method, k, time.perf_counter() - t0, cv,
                       {k_: v for k_, v in resolved.items() if k_ != "warnings"}, separator)


def _cross_validating(callbacks: Callbacks, folds: int):
    """Announce the cross-validation; the fold progress callback."""
    callbacks.on_event(PhaseChanged("cross-validating", f"{folds} folds"))
    return lambda d, n: callbacks.on_event(Progress("cross-validating", d, n))


def _rank_classes(features, labels, names, numbers, texts, folds, method, seed, callbacks, cancel,
                  _separator=None) -> tuple[list[LabelIssue], int, float]:
    """(rows, folds used, out-of-sample accuracy) of one label per row."""
    probs, k = out_of_sample_probabilities(features, labels, len(names), folds, seed, cancel,
                                           _cross_validating(callbacks, folds))
    callbacks.on_event(PhaseChanged("ranking", method))
    scores, flagged = rank_label_issues(labels, probs, method)
    suggested = probs.argmax(1)
    rows = [LabelIssue(int(numbers[i]), names[labels[i]], names[suggested[i]], float(scores[i]),
                       float(probs[i, suggested[i]]), bool(flagged[i]), texts[i], i) for i in range(len(labels))]
    return rows, k, float((suggested == labels).mean()) if len(labels) else 0.0


def _rank_sets(features, gold, names, numbers, texts, folds, method, seed, callbacks, cancel,
               separator) -> tuple[list[LabelIssue], int, float]:
    """(rows, folds used, out-of-sample exact-match accuracy) of label sets (multi-hot ``gold``)."""
    probs, k = out_of_sample_label_probabilities(features, gold, folds, seed, cancel,
                                                 _cross_validating(callbacks, folds))
    callbacks.on_event(PhaseChanged("ranking", method))
    scores, flagged = rank_label_set_issues(gold, probs, method)
    rows = _label_set_rows(gold, probs, scores, flagged, numbers, texts, names, separator)
    exact = ((probs >= 0.5) == (np.asarray(gold) > 0.5)).all(1)
    return rows, k, float(exact.mean()) if len(exact) else 0.0


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
