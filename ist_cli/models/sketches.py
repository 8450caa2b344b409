"""Random diagonal sketches C_i (docs/algorithms.md), drawn per round by the coordinator.

Every sketch here is diagonal, so it is stored as its diagonal: ``scales[i, j]`` is
C_i[j, j]. Zero entries are coordinates worker i neither receives nor returns.
"""

from __future__ import annotations

import numpy as np


def perm_scales(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """Perm-q (d = q n): C_i = n * sum_{j in block_i(pi)} e_j e_j^T, so (1/n) sum_i C_i = I."""
    if d % n:
        raise ValueError(f"Perm-q needs d divisible by n, got d={d}, n={n}")
    blocks = rng.permutation(d).reshape(n, d // n)
    scales = np.zeros((n, d))
    np.put_along_axis(scales, blocks, float(n), axis=1)
    return scales


def rand_scales(n: int, d: int, q: int, rng: np.random.Generator) -> np.ndarray:
    """Rand-q, independent per worker: C = (d/q) sum_{j in S} e_j e_j^T, |S| = q, E[C] = I."""
    scales = np.zeros((n, d))
    for i in range(n):
        scales[i, rng.choice(d, size=q, replace=False)] = d / q
    return scales


def identity_scales(n: int, d: int) -> np.ndarray:
    return np.ones((n, d))


def draw_scales(kind: str, n: int, d: int, q: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "perm":
        return perm_scales(n, d, rng)
    if kind == "rand":
        return rand_scales(n, d, q, rng)
    if kind == "identity":
        return identity_scales(n, d)
    raise ValueError(f"unknown sketch {kind!r}")
