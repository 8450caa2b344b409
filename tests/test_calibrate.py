"""The alpha-beta fit of ``ist calibrate`` is the minimax fit, checked against independent oracles.

The MPI measurement itself is exercised in test_mpi.py; here the fit gets data whose best
answer is known in closed form or found by a plain-numpy grid search.
"""

from __future__ import annotations

import numpy as np
import pytest

from ist_cli.calibrate import fit_alpha_beta

SIZES = np.array([2.0**k for k in range(16, 23)])


def grid_minimax(sizes: np.ndarray, seconds: np.ndarray) -> float:
    """Smallest largest-relative-miss of t = a + s*k over a refined grid of a, k >= 0 (plain numpy)."""
    s = np.broadcast_to(sizes, seconds.shape).ravel()
    t = seconds.ravel()
    a_low, a_high, k_low, k_high = 0.0, float(t.max()), 0.0, float((t / s).max())
    best = np.inf
    for _ in range(6):
        a = np.linspace(a_low, a_high, 201)[:, None, None]
        k = np.linspace(k_low, k_high, 201)[None, :, None]
        misses = (np.abs(a + s * k - t) / t).max(axis=2)
        i, j = np.unravel_index(np.argmin(misses), misses.shape)
        best = min(best, float(misses[i, j]))
        a_step, k_step = (a_high - a_low) / 20, (k_high - k_low) / 20
        a0, k0 = float(a[i, 0, 0]), float(k[0, j, 0])
        a_low, a_high = max(0.0, a0 - a_step), a0 + a_step
        k_low, k_high = max(0.0, k0 - k_step), k0 + k_step
    return best


def test_a_noise_free_line_is_recovered_exactly():
    alpha, beta = 20e-6, 5e9
    fitted_alpha, fitted_beta, residual = fit_alpha_beta(SIZES, (alpha + SIZES / beta)[None, :])
    assert fitted_alpha == pytest.approx(alpha, rel=1e-6)
    assert fitted_beta == pytest.approx(beta, rel=1e-6)
    assert residual < 1e-6


def test_times_that_fall_with_size_get_infinite_bandwidth_and_the_best_constant():
    """With 1/beta pinned at 0 the minimax constant for relative misses is 2*lo*hi/(lo+hi)."""
    seconds = np.linspace(3e-4, 1e-4, SIZES.size)[None, :]
    alpha, beta, residual = fit_alpha_beta(SIZES, seconds)
    lo, hi = seconds.min(), seconds.max()
    assert beta == float("inf")
    assert alpha == pytest.approx(2 * lo * hi / (lo + hi), rel=1e-6)
    assert residual == pytest.approx((hi - lo) / (hi + lo), rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_noisy_times_of_several_workers_get_the_minimax_fit(seed):
    """A protocol switch halfway and 30% noise: no line fits, and no line fits better than the LP's."""
    rng = np.random.default_rng(seed)
    workers = 1 + seed % 3
    clean = np.where(SIZES < 2**19, 15e-6 + SIZES / 8e9, 40e-6 + SIZES / 4e9)
    seconds = clean[None, :] * rng.uniform(0.85, 1.15, size=(workers, SIZES.size))
    alpha, beta, residual = fit_alpha_beta(SIZES, seconds)
    predicted = alpha + SIZES / beta
    assert residual == pytest.approx(float((np.abs(predicted - seconds) / seconds).max()), rel=1e-9)
    best = grid_minimax(SIZES, seconds)
    assert residual <= best + 1e-9
    assert residual >= best - 1e-3  # the grid search gets within 0.1% of it: the oracle is sharp
