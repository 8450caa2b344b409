"""Random diagonal sketches C_i of DESIGN §2.1, drawn per round by the coordinator.

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


def expected_sketched_curvature(L: np.ndarray, kind: str, n: int, q: int) -> np.ndarray:
    """E[C L C] for one client's L (DESIGN §2.1), the ingredient of IST's limit point."""
    d = L.shape[0]
    D = np.diag(np.diag(L))
    if kind == "identity":
        return L.copy()
    scale = n if kind == "perm" else d / q
    size = d // n if kind == "perm" else q
    pair = size * (size - 1) / (d * (d - 1)) if d > 1 else 0.0
    # diagonal: scale^2 * P(j in S) = scale^2 * size/d; off-diagonal: scale^2 * P(j,k in S)
    return scale**2 * (size / d) * D + scale**2 * pair * (L - D)


def ist_limit(L: np.ndarray, b: np.ndarray, kind: str, q: int | None = None) -> np.ndarray:
    """x^inf = Mbar^{-1} bbar, where IST's mean iterate settles (R = 1), not x*."""
    n, d = b.shape
    q = q if q is not None else d // n
    M = np.mean([expected_sketched_curvature(L[i], kind, n, q) for i in range(n)], axis=0)
    return np.linalg.solve(M, b.mean(axis=0))
