"""The K(B) = K_min (1 + B_c / B) fit: recovery and CI coverage on synthetic studies."""

from __future__ import annotations

import numpy as np

from ist_cli.study.fit import fit_lines, fit_steps

B = np.array([2, 4, 8, 16, 32, 64, 128, 256, 512, 1024], dtype=np.float64)
K_MIN, B_C = 400.0, 64.0


def synthetic_trials(rng: np.random.Generator, trials: int = 16, noise: float = 0.03) -> list[np.ndarray]:
    """Each trial's steps: K(B) x (metaparameter quality q >= 1, near 1 for a few trials)
    x run-to-run noise (log-normal, ``noise``); a few trials never reach the goal."""
    out = []
    for k in K_MIN * (1 + B_C / B):
        q = 1 + 2 * rng.random(trials) ** 2
        steps = k * q * np.exp(noise * rng.standard_normal(trials))
        steps[rng.random(trials) < 0.1] = np.inf
        out.append(steps)
    return out


def test_exact_data_is_fitted_exactly():
    k = K_MIN * (1 + B_C / B)
    k_min, b_c = fit_lines(B, k[None, :])
    np.testing.assert_allclose([k_min[0], b_c[0]], [K_MIN, B_C], rtol=1e-10)
    # an unreached batch size is left out, and fewer than two points give NaN
    k2 = k.copy()
    k2[3] = np.inf
    np.testing.assert_allclose([v[0] for v in fit_lines(B, k2[None, :])], [K_MIN, B_C], rtol=1e-10)
    assert np.isnan(fit_lines(B[:2], np.array([[100.0, np.inf]]))[0][0])


def test_fit_recovers_k_min_and_b_c_within_5_percent():
    fit = fit_steps(B, synthetic_trials(np.random.default_rng(7)), resamples=400)
    assert abs(fit.k_min / K_MIN - 1) < 0.05, fit
    assert abs(fit.b_c / B_C - 1) < 0.05, fit
    assert fit.k_min_ci[0] < fit.k_min < fit.k_min_ci[1]
    assert fit.b_c_ci[0] < fit.b_c < fit.b_c_ci[1]
    assert fit.points == B.size


def test_ci_covers_the_truth_in_at_least_90_percent_of_200_repetitions():
    rng = np.random.default_rng(2021)
    covered_k = covered_b = 0
    for repetition in range(200):
        fit = fit_steps(B, synthetic_trials(rng), resamples=300, seed=repetition)
        covered_k += fit.k_min_ci[0] <= K_MIN <= fit.k_min_ci[1]
        covered_b += fit.b_c_ci[0] <= B_C <= fit.b_c_ci[1]
    assert covered_k >= 180, covered_k
    assert covered_b >= 180, covered_b


def test_ci_is_not_trivially_wide():
    fit = fit_steps(B, synthetic_trials(np.random.default_rng(3)), resamples=400)
    assert fit.b_c_ci[1] - fit.b_c_ci[0] < 0.5 * B_C
    assert fit.k_min_ci[1] - fit.k_min_ci[0] < 0.2 * K_MIN
