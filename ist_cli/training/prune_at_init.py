"""Pruning at initialisation: SNIP (Lee et al. 2019), random and magnitude scores, and the
global top-kappa mask that keeps the highest scores over all layers at once."""

from __future__ import annotations

import numpy as np

from ist_cli.seeding import stream

METHODS = ("snip", "random", "magnitude")


def kept_count(prunable: int, sparsity: float) -> int:
    """kappa = round(N (1 - S)), rounding halves up (floor(x + 1/2))."""
    return int(np.floor(prunable * (1.0 - sparsity) + 0.5))


def snip_scores(params: np.ndarray, grad_sum: np.ndarray) -> np.ndarray:
    """|w * dL/dw|: the connection sensitivity dL/dc at c = 1 (c the multiplicative mask)."""
    return np.abs(params.astype(np.float64) * grad_sum.astype(np.float64))


def magnitude_scores(params: np.ndarray) -> np.ndarray:
    return np.abs(params.astype(np.float64))


def random_scores(size: int, seed: int) -> np.ndarray:
    return stream(seed, "prune").random(size)


def top_kappa_mask(scores: np.ndarray, prunable: np.ndarray, kappa: int) -> np.ndarray:
    """bool over the flat vector: True where kept. Entries outside ``prunable`` are always kept;
    among the prunable ones the ``kappa`` highest scores are, ties going to the lower index
    (a stable sort), so the mask is deterministic even when many scores are equal (zero biases).
    """
    candidates = np.flatnonzero(prunable)
    order = np.argsort(-scores[candidates], kind="stable")
    keep = np.ones(scores.shape[0], dtype=bool)
    keep[candidates] = False
    keep[candidates[order[:kappa]]] = True
    return keep
