"""The quantities of Shulgin & Richtárik's Theorems 1 and 2 for a sketch law (docs/theory.md).

Both theorems are about the *gradient form* x⁺ = x − γ g, g = B̄x − (1/n)Σ C_i b_i,
B̄ = (1/n)Σ C_i L_i C_i, which is IST's ``delta`` server update with one local step.
Where a theorem's assumption fails, the fields say so (``None`` plus a reason) instead of
holding a number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ist_cli.models.sketches import SketchLaw, expected_blb, expected_clc, inclusion, mean_sketch

PSD_TOL = 1e-12  # relative to the largest |eigenvalue|


@dataclass(frozen=True)
class Theorem1:
    """Interpolation case (b_i = 0): W̄ = ½E[L̄B̄ + B̄L̄] ⪰ 0 and E[B̄L̄B̄] ⪯ θW̄ give, for
    0 < γ ≤ 1/θ, E‖x^k − x*‖²_L̄ ≤ (1 − γ λ_min(L̄^{-1/2} W̄ L̄^{-1/2}))^k ‖x⁰ − x*‖²_L̄."""

    mean_B: np.ndarray  # E[B̄]
    W: np.ndarray  # W̄
    W_eigmin: float
    W_psd: bool
    theta: float | None  # smallest θ with E[B̄L̄B̄] ⪯ θW̄ (None: W̄ not positive definite)
    step_bound: float | None  # 1/θ
    mu: float | None  # λ_min(L̄^{-1/2} W̄ L̄^{-1/2})
    rate: float | None  # 1 − γ μ at the given γ, when γ ≤ 1/θ
    note: str


@dataclass(frozen=True)
class Theorem2:
    """Heterogeneous case with E[B̄] = I (the preconditioned Perm-1 sketch): E[g] = L̄⁻¹∇f(x) + h,
    and for β ∈ (0, ½), 0 < γ ≤ (½ − β)/(β + ½) the averaged ‖∇f‖²_{L̄⁻¹} is at most
    2(f(x⁰) − E f(x^K))/(γK) + (2β⁻¹(1 − γ) + γ)‖h‖²_L̄ + γσ²."""

    h: np.ndarray | None
    h_norm_sq: float | None  # ‖h‖²_L̄
    sigma_sq: float | None  # E‖g − E g‖²_L̄ (constant in x when B̄ = I)
    beta: float | None  # the largest β the step size allows: (1 − γ)/(2(1 + γ))
    neighbourhood: float | None  # (2β⁻¹(1 − γ) + γ)‖h‖²_L̄ + γσ² at that β
    note: str


def theorem1(law: SketchLaw, L: np.ndarray, lr: float) -> Theorem1:
    L = np.asarray(L, dtype=np.float64)
    Lbar = L.mean(axis=0)
    mean_B = expected_clc(law, L).mean(axis=0)
    W = 0.5 * (Lbar @ mean_B + mean_B @ Lbar)
    eig = np.linalg.eigvalsh(W)
    tol = PSD_TOL * max(1.0, float(np.abs(eig).max()))
    W_eigmin = float(eig[0])
    psd = W_eigmin >= -tol
    if W_eigmin <= tol:
        why = "indefinite" if not psd else "singular"
        return Theorem1(mean_B, W, W_eigmin, psd, None, None, None, None,
                        f"W̄ is {why} (λ_min = {W_eigmin:.3g}): Theorem 1's assumption fails, no step size or rate")
    blb = expected_blb(law, L)
    w_vals, w_vecs = np.linalg.eigh(W)
    w_inv_half = w_vecs @ np.diag(w_vals**-0.5) @ w_vecs.T
    theta = float(np.linalg.eigvalsh(w_inv_half @ blb @ w_inv_half)[-1])
    l_vals, l_vecs = np.linalg.eigh(Lbar)
    l_inv_half = l_vecs @ np.diag(l_vals**-0.5) @ l_vecs.T
    mu = float(np.linalg.eigvalsh(l_inv_half @ W @ l_inv_half)[0])
    bound = 1.0 / theta
    rate = 1.0 - lr * mu if lr <= bound * (1 + 1e-9) else None  # θ = 1 computes as 1 + 1e-16
    note = ("" if rate is not None else
            f"lr {lr:g} exceeds the bound 1/θ = {bound:.4g}: Theorem 1 gives no rate at this step size")
    return Theorem1(mean_B, W, W_eigmin, psd, theta, bound, mu, rate, note)


def theorem2(law: SketchLaw, L: np.ndarray, b: np.ndarray, lr: float) -> Theorem2:
    L, b = np.asarray(L, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if law.kind != "perm-precond" or law.q != 1:
        return Theorem2(None, None, None, None, None,
                        "Theorem 2 is stated for the preconditioned Perm-1 sketch (perm-precond with d = n), "
                        "where B̄ = I for every draw")
    Lbar = L.mean(axis=0)
    offset = np.mean(mean_sketch(law) * b, axis=0)  # (1/n)Σ E[C_i] b_i
    h = np.linalg.solve(Lbar, b.mean(axis=0)) - offset
    h_norm_sq = float(h @ Lbar @ h)
    sigma_sq = max(0.0, float(np.trace(Lbar @ offset_covariance(law, b))))  # rounding can give -1e-19
    if not 0 < lr < 1:
        return Theorem2(h, h_norm_sq, sigma_sq, None, None,
                        f"lr {lr:g} is outside Theorem 2's range 0 < γ ≤ (½ − β)/(β + ½) < 1")
    beta = (1 - lr) / (2 * (1 + lr))
    neighbourhood = (2 * (1 - lr) / beta + lr) * h_norm_sq + lr * sigma_sq
    return Theorem2(h, h_norm_sq, sigma_sq, beta, neighbourhood, "")


def offset_covariance(law: SketchLaw, b: np.ndarray) -> np.ndarray:
    """Cov of v = (1/n)Σ_i C_i b_i (d, d), exactly: E[s_i[a] s_j[b]] is w_i[a] w_j[b] times the
    chance a ∈ S_i and b ∈ S_j (one set: p1 or p2; two blocks of a permutation: 0 on a = b,
    else [q]₁[q]₁/[d]₂; independent sets: p1²)."""
    n, d, q = law.n, law.d, law.q
    t = law.weights * np.asarray(b, dtype=np.float64)  # (n, d)
    same = np.full((d, d), inclusion(q, d, 2))
    np.fill_diagonal(same, inclusion(q, d, 1))
    second = np.einsum("ia,ib->ab", t, t) * same
    cross_sum = np.outer(t.sum(axis=0), t.sum(axis=0)) - np.einsum("ia,ib->ab", t, t)  # Σ_{i≠j}
    if law.partitioned:
        cross = np.full((d, d), inclusion(q, d, 1) * inclusion(q, d - 1, 1) if d > 1 else 0.0)
        np.fill_diagonal(cross, 0.0)
    else:
        cross = np.full((d, d), inclusion(q, d, 1) ** 2)
    mean = np.mean(mean_sketch(law) * b, axis=0)
    return (second + cross_sum * cross) / n**2 - np.outer(mean, mean)
