"""The local Lipschitz (smoothness) estimate of Lee et al. along one optimizer step."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

GAMMAS = tuple(k / 10 for k in range(1, 10))


def lipschitz_estimate(gradient: Callable[[np.ndarray], np.ndarray], w_a: np.ndarray, w_b: np.ndarray,
                       keep: np.ndarray | None = None) -> float:
    """max over gamma in {0.1, ..., 0.9} of |grad f(w_a + gamma d) - grad f(w_a)| / |gamma d|, d = w_b - w_a.

    ``gradient`` is the full-objective gradient (float vector like ``w_a``); with a pruning
    mask ``keep`` (bool) only kept coordinates count, since the pruned ones are not
    parameters of the sparse network. NaN when the step is zero. Norms in float64.
    """
    w_a64 = w_a.astype(np.float64)
    step = w_b.astype(np.float64) - w_a64
    if keep is not None:
        step = np.where(keep, step, 0.0)
    step_norm = float(np.linalg.norm(step))
    if step_norm == 0.0:
        return float("nan")

    def grad_at(w: np.ndarray) -> np.ndarray:
        g = np.asarray(gradient(w.astype(w_a.dtype)), dtype=np.float64)
        return np.where(keep, g, 0.0) if keep is not None else g

    base = grad_at(w_a64)
    return max(float(np.linalg.norm(grad_at(w_a64 + gamma * step) - base)) / (gamma * step_norm) for gamma in GAMMAS)
