"""Variable-length rows (token ids per text, tags per sentence) as flat numpy arrays."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


class RaggedColumn:
    """A list<int> Arrow column as (flat values, offsets) numpy views: zero-copy, fast gathers."""

    def __init__(self, column: pa.ChunkedArray | pa.Array) -> None:
        arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        if isinstance(arr, pa.ChunkedArray):  # pyarrow < 15 returned a ChunkedArray from combine_chunks
            arr = pa.concat_arrays(arr.chunks)
        self.values = arr.flatten().to_numpy(zero_copy_only=False)
        offsets = arr.offsets.to_numpy()
        self.starts = offsets[:-1]
        self.lengths = np.diff(offsets)

    def __len__(self) -> int:
        return len(self.lengths)

    def pad(self, rows: np.ndarray, pad_value: int, width: int, dtype=np.int64) -> np.ndarray:
        out = np.full((len(rows), width), pad_value, dtype=dtype)
        for j, i in enumerate(rows):
            n = min(self.lengths[i], width)
            s = self.starts[i]
            out[j, :n] = self.values[s : s + n]
        return out
