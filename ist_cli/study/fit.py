"""K(B) = K_min (1 + B_c / B): the steps-to-result model of McCandlish et al. 2018, fitted
by regressing K on 1/B (intercept K_min, slope K_min B_c, so B_c = slope / intercept).

The regression is weighted by 1/K^2, i.e. it fits relative errors: steps-to-result spans
orders of magnitude across B and its noise grows with it, so an unweighted fit would let the
smallest batch sizes decide the intercept alone.

The confidence interval is a percentile bootstrap with two sources of variation, because
the minimum over trials has two: which metaparameters the search happened to try (each
batch size's trials are resampled and the minimum taken again) and run-to-run noise of the
best trial, which a resample of the same trials cannot show (each point is also multiplied
by its own fit residual, on the log scale, with a random sign: a wild bootstrap).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ist_cli.seeding import stream

RESAMPLES = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Fit:
    """Point estimates and ``LEVEL`` bootstrap intervals (NaN where there is too little data)."""

    k_min: float
    b_c: float
    k_min_ci: tuple[float, float]
    b_c_ci: tuple[float, float]
    points: int


def fit_lines(batch_sizes: np.ndarray, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares of K on 1/B, for every row of ``steps``.

    ``batch_sizes``: (m,); ``steps``: (r, m), non-finite entries are left out of their row.
    Returns (K_min, B_c), each (r,), NaN for rows with fewer than two usable points.
    """
    x = 1.0 / np.asarray(batch_sizes, dtype=np.float64)
    k = np.atleast_2d(np.asarray(steps, dtype=np.float64))
    usable = np.isfinite(k) & (k > 0)
    w = np.where(usable, 1.0 / np.where(usable, k, 1.0) ** 2, 0.0)
    k = np.where(usable, k, 0.0)
    sw = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = (w * x).sum(axis=1) / sw
        mk = (w * k).sum(axis=1) / sw
        sxx = (w * (x - mx[:, None]) ** 2).sum(axis=1)
        sxk = (w * (x - mx[:, None]) * (k - mk[:, None])).sum(axis=1)
        slope = sxk / sxx
        intercept = mk - slope * mx
        b_c = slope / intercept
    few = usable.sum(axis=1) < 2
    return np.where(few, np.nan, intercept), np.where(few, np.nan, b_c)


def fit_steps(batch_sizes: Sequence[int], trial_steps: Sequence[np.ndarray], *, resamples: int = RESAMPLES,
              seed: int = 0, level: float = LEVEL) -> Fit:
    """Fit K(B) to the minimum over trials at each B, with a bootstrap over trials.

    ``trial_steps[j]``: the steps-to-result of every trial at ``batch_sizes[j]``, ``inf`` for
    a trial that did not reach the goal (it can still be drawn by the bootstrap).
    """
    b = np.asarray(batch_sizes, dtype=np.float64)
    best = np.array([np.min(t) if len(t) else np.inf for t in trial_steps], dtype=np.float64)
    k_min, b_c = (float(v[0]) for v in fit_lines(b, best[None, :]))
    points = int(np.isfinite(best).sum())
    if points < 2 or resamples < 1:
        nan = (float("nan"), float("nan"))
        return Fit(k_min, b_c, nan, nan, points)
    rng = stream(seed, "study-fit-bootstrap")
    boot = np.empty((resamples, b.size))
    for j, trials in enumerate(trial_steps):
        values = np.asarray(trials, dtype=np.float64)
        if values.size == 0:
            boot[:, j] = np.inf
            continue
        picks = rng.integers(0, values.size, size=(resamples, values.size))
        boot[:, j] = values[picks].min(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        residual = np.log(best) - np.log(k_min * (1.0 + b_c / b))
    residual = np.where(np.isfinite(residual), residual, 0.0)
    signs = rng.choice(np.array([-1.0, 1.0]), size=boot.shape)
    k_boot, bc_boot = fit_lines(b, boot * np.exp(signs * residual))
    return Fit(k_min, b_c, _interval(k_boot, level), _interval(bc_boot, level), points)


def _interval(replicates: np.ndarray, level: float) -> tuple[float, float]:
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(low), float(high)
