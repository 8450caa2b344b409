"""Numba kernels for one client of the quadratic model; they know nothing of processes."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def sketched_local_steps(L: np.ndarray, b: np.ndarray, start: np.ndarray, scales: np.ndarray,
                         lr: float, steps: int, out: np.ndarray) -> None:
    """R steps of z <- z - lr * C (L z - b) from z = start, C = diag(scales); result in ``out``.

    One kernel serves IST (start = C x), GD (C = I, start = x) and DCGD (start = x):
    the algorithms differ only in what the coordinator writes and how it averages.
    ``L`` float64 (d, d); ``b``, ``start``, ``scales``, ``out`` float64 (d,); ``lr`` float;
    ``steps`` int. Callers outside this package pass arguments by keyword.
    """
    d = start.shape[0]
    for j in range(d):
        out[j] = start[j]
    for _ in range(steps):
        grad = np.dot(L, out)  # BLAS gemv
        for j in range(d):
            if scales[j] != 0.0:
                out[j] -= lr * scales[j] * (grad[j] - b[j])


def warm_up() -> None:
    """Compile (or load from cache) in the parent so workers start with a warm cache."""
    d = 2
    out = np.zeros(d)
    sketched_local_steps(np.eye(d), np.zeros(d), np.ones(d), np.ones(d), 0.1, 1, out)
