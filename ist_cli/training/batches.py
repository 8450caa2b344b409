"""Minibatches: which rows of a worker's shard each SGD step reads (workers, SNIP, noise scale)."""

from __future__ import annotations

import numpy as np


def minibatches(shard: np.ndarray, steps: int, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """(steps, batch) row ids: a walk through fresh random permutations of the worker's shard.

    A shard smaller than the batch is repeated (rows appear twice in a batch) rather than
    giving a smaller batch, so every step of every worker has the same batch size.
    """
    need = steps * batch_size
    reps = -(-need // shard.size)
    order = np.concatenate([shard[rng.permutation(shard.size)] for _ in range(reps)])
    return np.ascontiguousarray(order[:need].reshape(steps, batch_size))
