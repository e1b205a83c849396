"""Tokenize a text column chunk by chunk into a memory-mapped Arrow file of token ids.

Chunks keep memory flat for a million rows, and give the cancel token and the progress callback a
chance to run between chunks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from ..cancel import NEVER, CancelToken
from ..data.ragged import RaggedColumn
from ..events import Callbacks, Progress

CHUNK = 2000


def tokenize_columns(
    texts: pa.ChunkedArray,
    tokenizer,
    max_length: int,
    path: Path,
    callbacks: Callbacks,
    cancel: CancelToken = NEVER,
    pairs: pa.ChunkedArray | None = None,
    phase: str = "tokenizing",
) -> tuple[dict[str, RaggedColumn], np.ndarray]:
    """Returns the token columns (input_ids, and token_type_ids when the model uses them) and lengths."""
    keep = ["input_ids"] + (["token_type_ids"] if "token_type_ids" in tokenizer.model_input_names else [])
    n = len(texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([(k, pa.list_(pa.int32())) for k in keep])
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for start in range(0, n, CHUNK):
            cancel.raise_if_cancelled()
            chunk = texts.slice(start, CHUNK).to_pylist()
            chunk = [t if t is not None else "" for t in chunk]
            if pairs is not None:
                second = [t if t is not None else "" for t in pairs.slice(start, CHUNK).to_pylist()]
                enc = tokenizer(chunk, second, truncation="longest_first", max_length=max_length)
            else:
                enc = tokenizer(chunk, truncation=True, max_length=max_length)
            writer.write_batch(
                pa.record_batch([pa.array(enc[k], type=pa.list_(pa.int32())) for k in keep], schema=schema)
            )
            callbacks.on_event(Progress(phase, min(start + CHUNK, n), n))
    table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
    cols = {k: RaggedColumn(table.column(k)) for k in keep}
    return cols, cols["input_ids"].lengths.copy()
