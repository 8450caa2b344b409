"""An array written to the run file block by block, never whole in memory (a partitioned ``/final``).

``blocks()`` yields (where, values): ``values`` goes to ``dataset[where]``. The blocks must
cover the array; each is fetched only when it is written, so the writer holds one at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SlicedArray:
    shape: tuple[int, ...]
    dtype: np.dtype
    blocks: Callable[[], Iterable[tuple[Any, np.ndarray]]]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


def materialised(array: np.ndarray | SlicedArray) -> np.ndarray:
    """The whole array in memory (a ``SlicedArray``'s blocks written into a fresh one): for a
    reader that wants what the file will hold, never for the writer."""
    if not isinstance(array, SlicedArray):
        return np.asarray(array)
    out = np.zeros(array.shape, dtype=array.dtype)
    for where, values in array.blocks():
        out[where] = values
    return out
