"""The one mapping between the user's label names and the integer ids a model predicts.

Every part of the engine (training, evaluation, export, prediction) builds it through
:func:`build_label_map`, so ids never depend on which file or code path saw the labels first.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_INTEGER = re.compile(r"[+-]?\d+\Z")


@dataclass(frozen=True)
class LabelMap:
    names: list[str]  # the user's label names as strings, in id order

    def __post_init__(self) -> None:
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"label names repeat: {self.names}")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    def encode(self, values: Iterable[Any] | pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Ids (int64) for ``values``; -1 for a value that is not a known label (or empty, or null)."""
        arr = _as_string_array(values)
        ids = pc.index_in(pc.utf8_trim_whitespace(arr), value_set=pa.array(self.names, type=pa.string()))
        return np.asarray(pc.fill_null(ids, -1).to_numpy(zero_copy_only=False), dtype=np.int64)

    def to_json(self) -> str:
        return json.dumps({"names": self.names}, ensure_ascii=False)

    @classmethod
    def from_json(cls, data: str | bytes | dict) -> "LabelMap":
        obj = json.loads(data) if isinstance(data, (str, bytes)) else data
        return cls([str(n) for n in obj["names"]])


def build_label_map(values: Iterable[Any] | pa.Array | pa.ChunkedArray) -> LabelMap:
    """Distinct labels of ``values`` (stripped; empty and null ignored) in a stable order.

    All integer-like ("0", " 2", "-1") sort numerically, so "10" comes after "9"; anything else sorts
    as strings. Names keep their string form: the model's id2label shows what the user wrote.
    """
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        arr = pc.utf8_trim_whitespace(_as_string_array(values))
        distinct = pc.unique(arr).drop_null().to_pylist()
    else:
        distinct = {str(v).strip() for v in values if v is not None}
    names = [n for n in distinct if n != ""]
    if names and all(_INTEGER.match(n) for n in names):
        names.sort(key=lambda n: (int(n), n))  # "01" and "1" are distinct names; keep them apart stably
    else:
        names.sort()
    return LabelMap(names)


def _as_string_array(values: Iterable[Any] | pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values if values.type == pa.string() else values.cast(pa.string())
    return pa.array([None if v is None else str(v) for v in values], type=pa.string())
