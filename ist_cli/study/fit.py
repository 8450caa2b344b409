"""K(B) = K_min (1 + B_c / B): the steps-to-result model of McCandlish et al. 2018, fitted
by regressing K on 1/B (intercept K_min, slope K_min B_c, so B_c = slope / intercept).

The regression is weighted by 1/K^2, i.e. it fits relative errors: steps-to-result spans
orders of magnitude across B and its noise grows with it, so an unweighted fit would let the
smallest batch sizes decide the intercept alone. Both parameters are constrained to be
non-negative (a negative K_min or B_c has no meaning as steps or a batch size).

The confidence interval is a percentile bootstrap with two sources of variation, because
the minimum over trials has two: which metaparameters the search happened to try (each
batch size's trials are resampled and the minimum taken again) and run-to-run noise of the
best trial, which a resample of the same trials cannot show (each point is also multiplied
by its own fit residual, on the log scale, with a random sign: a wild bootstrap). Two
reached batch sizes fix the curve exactly (0 degrees of freedom): no interval is given then,
and the fit says why.
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
    """Point estimates and ``LEVEL`` bootstrap intervals (NaN where there is too little data).

    ``dof``: degrees of freedom of the fit (reached batch sizes − 2 parameters); ``no_ci``: why
    there is no interval (one line), empty when there is one."""

    k_min: float
    b_c: float
    k_min_ci: tuple[float, float]
    b_c_ci: tuple[float, float]
    points: int
    dof: int = 0
    no_ci: str = ""


def fit_lines(batch_sizes: np.ndarray, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares of K on 1/B with K_min ≥ 0 and K_min·B_c ≥ 0, for every row of
    ``steps``.

    ``batch_sizes``: (m,); ``steps``: (r, m), non-finite entries are left out of their row.
    Returns (K_min, B_c), each (r,), NaN for rows with fewer than two usable points. The
    problem is a convex quadratic in (intercept, slope): when the free optimum breaks a
    constraint the constrained one lies on a boundary (slope 0: K_min = the weighted mean;
    intercept 0: a line through the origin, B_c = inf), whichever fits better.
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
        # the two boundaries: a flat line at the weighted mean, and a line through the origin
        through_origin = np.maximum((w * x * k).sum(axis=1) / (w * x * x).sum(axis=1), 0.0)

        def sse(a: np.ndarray, c: np.ndarray) -> np.ndarray:
            return (w * (k - a[:, None] - c[:, None] * x) ** 2).sum(axis=1)

        free_ok = (intercept >= 0) & (slope >= 0)
        flat_better = sse(mk, np.zeros_like(mk)) <= sse(np.zeros_like(mk), through_origin)
        intercept = np.where(free_ok, intercept, np.where(flat_better, mk, 0.0))
        slope = np.where(free_ok, slope, np.where(flat_better, 0.0, through_origin))
        b_c = np.where(slope == 0, 0.0, slope / intercept)
    few = usable.sum(axis=1) < 2
    return np.where(few, np.nan, intercept), np.where(few, np.nan, b_c)


def fit_steps(batch_sizes: Sequence[int], trial_steps: Sequence[np.ndarray], *, resamples: int = RESAMPLES,
              seed: int = 0, level: float = LEVEL) -> Fit:
    """Fit K(B) to the minimum over trials at each B, with a bootstrap over trials.

    ``trial_steps[j]``: the steps-to-result of every trial at ``batch_sizes[j]``, ``inf`` for
    a trial that did not reach the goal (it can still be drawn by the bootstrap). No CI when
    the reached batch sizes do not over-determine the two parameters (``Fit.no_ci`` says so).
    """
    b = np.asarray(batch_sizes, dtype=np.float64)
    best = np.array([np.min(t) if len(t) else np.inf for t in trial_steps], dtype=np.float64)
    k_min, b_c = (float(v[0]) for v in fit_lines(b, best[None, :]))
    points = int(np.isfinite(best).sum())
    dof = max(points - 2, 0)
    nan = (float("nan"), float("nan"))
    if points < 2:
        return Fit(k_min, b_c, nan, nan, points, dof, f"{points} batch size reached the goal: no fit")
    if points == 2:
        return Fit(k_min, b_c, nan, nan, points, dof,
                   "2 batch sizes fix the 2-parameter curve exactly (0 degrees of freedom): no CI")
    if resamples < 1:
        return Fit(k_min, b_c, nan, nan, points, dof, "no bootstrap resamples: no CI")
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
    return Fit(k_min, b_c, _interval(k_boot, level), _interval(bc_boot, level), points, dof)


def _interval(replicates: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval of the replicates; B_c = inf (a fit with K_min = 0, perfect scaling
    throughout) is a valid replicate, so an end of the interval can be inf."""
    kept = replicates[~np.isnan(replicates)]
    if kept.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    method = "linear" if np.isfinite(kept).all() else "nearest"  # no interpolation towards inf
    low, high = np.quantile(kept, [alpha, 1.0 - alpha], method=method)
    return float(low), float(high)
