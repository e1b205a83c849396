"""Frozen-backbone features of a task's rows, for fast models trained on top of them (label-issue
ranking): the mean-pooled last hidden state of a text backbone (pairs encoded jointly, as training
does), the pooled features of an image backbone (centre crops, as evaluation does).

Rows are turned into model inputs by the task itself (``encode`` + ``make_batch``), so the columns,
tokenization and image preprocessing are exactly those of a training run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..cancel import NEVER, CancelToken
from ..events import Callbacks, PhaseChanged, Progress

BATCH = 32


def _mean_pool(hidden, mask):
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def feature_model(task, backbone_path: str, data):
    """The backbone without a head, in eval mode, and a function batch -> (n, d) features."""
    import torch

    if task.modality == "image":
        model = task.build_model(backbone_path, data).eval()
        if hasattr(model, "architecture") and hasattr(model, "backbone"):  # workbench ImageClassifier
            return model, lambda b: model.backbone(torch.as_tensor(b["pixel_values"]))
        base = getattr(model, model.base_model_prefix)

        def hf_image(b):
            out = base(pixel_values=torch.as_tensor(b["pixel_values"]))
            pooled = getattr(out, "pooler_output", None)
            return (pooled if pooled is not None else out.last_hidden_state.mean(1)).flatten(1)

        return model, hf_image
    from transformers import AutoModel

    model = AutoModel.from_pretrained(backbone_path).eval()

    def text(b):
        inputs = {k: torch.as_tensor(v) for k, v in b.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        return _mean_pool(model(**inputs).last_hidden_state, inputs["attention_mask"])

    return model, text


def embed_split(task, backbone_path: str, data, split_name: str, max_length: int, cache_dir: Path,
                callbacks: Callbacks, cancel: CancelToken = NEVER) -> tuple[np.ndarray, np.ndarray]:
    """(features (n, d) float32, label ids (n,)) of ``data.splits[split_name]``, in the split's order."""
    return embed_rows(task, backbone_path, data, f"embed-{split_name}", data.splits[split_name], max_length,
                      cache_dir, callbacks, cancel)


def embed_rows(task, backbone_path: str, data, name: str, rows, max_length: int, cache_dir: Path,
               callbacks: Callbacks, cancel: CancelToken = NEVER, features=None) -> tuple[np.ndarray, np.ndarray]:
    """(features (n, d) float32, label ids (n,)) of the dataset ``rows``, in its order. ``name`` must not
    be "train" (image batches are then centre crops, not augmented ones); ``features``: a function
    from ``feature_model`` to reuse."""
    import torch

    preprocessor = task.load_preprocessor(backbone_path)
    split = task.encode(name, rows, preprocessor, max_length, cache_dir, callbacks, cancel)
    if features is None:
        _, features = feature_model(task, backbone_path, data)
    n = len(split)
    order = np.argsort(split.lengths, kind="stable")  # similar lengths together: less padding
    out: np.ndarray | None = None
    callbacks.on_event(PhaseChanged("embedding", f"{n:,} rows"))
    with torch.inference_mode():
        for start in range(0, n, BATCH):
            cancel.raise_if_cancelled()
            batch_rows = order[start:start + BATCH]
            feats = features(task.make_batch(split, batch_rows)).float().numpy()
            if out is None:
                out = np.zeros((n, feats.shape[1]), np.float32)
            out[batch_rows] = feats
            callbacks.on_event(Progress("embedding", min(start + BATCH, n), n))
    return (out if out is not None else np.zeros((0, 1), np.float32)), split.labels
