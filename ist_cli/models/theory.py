"""Theory overlay for the quadratic model (Shulgin & Richtárik; derivation in docs/algorithms.md).

With R = 1 local step the IST update is affine in the iterate and the sketch is independent
of it, so the mean iterate obeys E[x⁺] = E[x] − γ(M̄ E[x] − b̄) with
M̄ = (1/n) Σ_i E[C_i L_i C_i]. It therefore tends to x^∞ = M̄⁻¹ b̄, not to x*; the gap
‖x^∞ − x*‖² is IST's irreducible bias, drawn as a reference line by the report.

Only numpy: the report draws it, the tests check runs against it.
"""

from __future__ import annotations

import numpy as np

SKETCHES = ("perm", "rand", "identity")


def sketch_q(d: int, n: int, sketch: str, q: int | None) -> int:
    """The q a sketch actually uses: Perm-q needs d = q·n; Rand-q defaults to d/n (at least 1)."""
    if sketch == "perm":
        if d % n != 0:
            raise ValueError(f"Perm-q needs d divisible by n, got d={d}, n={n}")
        if q is not None and q != d // n:
            raise ValueError(f"Perm-q with d={d}, n={n} has q={d // n}, got q={q}")
        return d // n
    if sketch == "rand":
        q = max(1, d // n) if q is None else int(q)
        if not 1 <= q <= d:
            raise ValueError(f"Rand-q needs 1 <= q <= d={d}, got q={q}")
        return q
    if sketch == "identity":
        return d
    raise ValueError(f"unknown sketch {sketch!r}; expected one of {', '.join(SKETCHES)}")


def expected_clc(L_i: np.ndarray, sketch: str, q: int, n: int) -> np.ndarray:
    """E[C L_i C] for one client's sketch C (d×d).

    Perm-q (d = q·n, C = n·Σ_{j∈block} e_j e_jᵀ) and Rand-q (C = (d/q)·Σ_{j∈S} e_j e_jᵀ,
    |S| = q) share one formula with scale c = d/q (= n for Perm-q): a diagonal entry survives
    with probability q/d, an off-diagonal pair with probability q(q−1)/(d(d−1)), so
    E[C L C] = c·D + c²·q(q−1)/(d(d−1))·(L − D), D = Diag(L). Identity: C L C = L.
    """
    L_i = np.asarray(L_i, dtype=np.float64)
    d = L_i.shape[0]
    if sketch == "identity":
        return L_i.copy()
    q = sketch_q(d, n, sketch, q)
    scale = d / q
    D = np.diag(np.diag(L_i))
    pair = q * (q - 1) / (d * (d - 1)) if d > 1 else 0.0
    return scale * D + scale**2 * pair * (L_i - D)


def mean_sketched_hessian(L: np.ndarray, n: int, sketch: str, q: int | None = None) -> np.ndarray:
    """M̄ = (1/n) Σ_i E[C_i L_i C_i] for L of shape (n, d, d)."""
    L = np.asarray(L, dtype=np.float64)
    if L.ndim != 3 or L.shape[0] != n or L.shape[1] != L.shape[2]:
        raise ValueError(f"L must have shape (n={n}, d, d), got {L.shape}")
    d = L.shape[1]
    q_used = sketch_q(d, n, sketch, q)
    return np.mean([expected_clc(L[i], sketch, q_used, n) for i in range(n)], axis=0)


def ist_limit(L: np.ndarray, b: np.ndarray, n: int, sketch: str, q: int | None = None) -> np.ndarray:
    """x^∞ = M̄⁻¹ b̄: where IST's mean iterate converges (R = 1, no preconditioning)."""
    b = np.asarray(b, dtype=np.float64)
    if b.ndim != 2 or b.shape[0] != n:
        raise ValueError(f"b must have shape (n={n}, d), got {b.shape}")
    M = mean_sketched_hessian(L, n, sketch, q)
    return np.linalg.solve(M, b.mean(axis=0))


def optimum(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x* = L̄⁻¹ b̄."""
    return np.linalg.solve(np.asarray(L, dtype=np.float64).mean(axis=0), np.asarray(b, dtype=np.float64).mean(axis=0))


def ist_bias_sq(
    L: np.ndarray, b: np.ndarray, n: int, sketch: str, q: int | None = None, x_star: np.ndarray | None = None
) -> float:
    """‖x^∞ − x*‖², the predicted limit of ``dist_to_opt_sq`` for IST's mean iterate."""
    x_star = optimum(L, b) if x_star is None else np.asarray(x_star, dtype=np.float64)
    gap = ist_limit(L, b, n, sketch, q) - x_star
    return float(gap @ gap)
