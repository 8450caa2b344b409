"""ResIST's per-round assignment of the partitioned residual blocks to workers, and its law.

The rule is Dun et al.'s (``sample_block_indices_with_overlap`` in their ResIST code), with
m blocks, S workers and b = ``min_blocks``:

1. concatenate q = ceil(max(S·b, m) / m) independent uniform permutations of the m blocks;
2. every worker gets max(⌊m/S⌋, b) blocks, the first m - S·max(⌊m/S⌋, b) workers one more
   (when that is positive); worker i takes the next that many entries of the sequence;
3. a worker whose entries repeat a block (its window straddles two permutations) keeps each
   block once and tops up to b with blocks drawn uniformly from those it does not hold.

So with S·b <= m the blocks are a uniformly random partition (each block held by exactly one
worker, worker i by s_i = ⌊m/S⌋ + [i < m mod S] blocks); with S·b > m every worker holds exactly
b blocks and a block is held by S·b/m workers on average. The first permutation is always used
whole, so no block is ever held by nobody. ``holder_law`` states the law of a block's holder
count (docs/algorithms.md derives it).
"""

from __future__ import annotations

import math

import numpy as np

from ist_cli.seeding import stream


def _check(n_blocks: int, n_workers: int, min_blocks: int) -> None:
    if n_workers < 1:
        raise ValueError(f"{n_workers} workers; expected at least 1")
    if n_blocks < 1:
        raise ValueError(f"{n_blocks} partitioned blocks; expected at least 1")
    if not 0 <= min_blocks <= n_blocks:
        raise ValueError(f"min blocks {min_blocks}; expected 0 to the {n_blocks} partitioned blocks")


def blocks_per_worker(n_blocks: int, n_workers: int, min_blocks: int) -> np.ndarray:
    """How many blocks each worker holds: exact, the same every round."""
    _check(n_blocks, n_workers, min_blocks)
    if n_workers * min_blocks > n_blocks:
        return np.full(n_workers, min_blocks, dtype=np.int64)
    sizes = np.full(n_workers, n_blocks // n_workers, dtype=np.int64)
    sizes[: n_blocks % n_workers] += 1
    return sizes


def assign_blocks(n_blocks: int, n_workers: int, min_blocks: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Per worker the sorted int64 ids (0 .. m-1) of the blocks it holds this round."""
    _check(n_blocks, n_workers, min_blocks)
    total = max(n_workers * min_blocks, n_blocks)
    sequence = np.concatenate([rng.permutation(n_blocks) for _ in range(-(-total // n_blocks))])
    per = max(n_blocks // n_workers, min_blocks)
    sizes = np.full(n_workers, per, dtype=np.int64)
    sizes[: max(n_blocks - n_workers * per, 0)] += 1
    held, start = [], 0
    for size in sizes:
        mine = np.unique(sequence[start : start + size])
        start += int(size)
        missing = min_blocks - mine.size
        if missing > 0:  # uniform without replacement among the blocks it lacks
            others = np.setdiff1d(np.arange(n_blocks), mine)
            mine = np.sort(np.concatenate([mine, rng.choice(others, size=missing, replace=False)]))
        held.append(mine.astype(np.int64))
    return tuple(held)


def draw_assignment(n_blocks: int, n_workers: int, min_blocks: int, seed: int, round_index: int) -> tuple[np.ndarray, ...]:
    """Round ``round_index``'s assignment from ``stream(seed, "plan", round)``: any process
    drawing it gets the same blocks."""
    return assign_blocks(n_blocks, n_workers, min_blocks, stream(seed, "plan", round_index))


def holder_counts(assignment: tuple[np.ndarray, ...], n_blocks: int) -> np.ndarray:
    """Number of workers holding each block."""
    return np.bincount(np.concatenate(assignment), minlength=n_blocks) if assignment else np.zeros(n_blocks, int)


def mean_holders(n_blocks: int, n_workers: int, min_blocks: int) -> float:
    """E[workers holding a block] = (slots per round) / m; all blocks alike by symmetry."""
    return float(blocks_per_worker(n_blocks, n_workers, min_blocks).sum()) / n_blocks


def holder_law(n_blocks: int, n_workers: int, min_blocks: int) -> dict[int, float]:
    """P(a given block is held by exactly k workers), k -> probability, for S·b <= 2m.

    S·b <= m: k = 1 surely. m < S·b <= 2m: two permutations, the second used for its first
    r = S·b - m entries; if b does not divide m, the window of the worker straddling the
    boundary holds the last t = m mod b entries of the first (T) and the first h = b - t of the
    second (H), and tops up D = |T ∩ H| blocks. With rho = (r - h)/(m - h) and
    pi = E[D / (m - b + D)], D ~ Hypergeometric(m - 1, t, h):

        P(3) = (1 - t/m)(1 - h/m) rho pi
        P(1) = (t/m)(h/m) + (t/m)(1 - h/m)(1 - rho) + (1 - t/m)(1 - h/m)(1 - rho)(1 - pi)
        P(2) = 1 - P(1) - P(3)

    (t = h = 0 when b divides m: then P(2) = r/m.)
    """
    m, S, b = n_blocks, n_workers, min_blocks
    _check(m, S, b)
    if S * b <= m:
        return {1: 1.0}
    if S * b > 2 * m:
        raise ValueError(f"closed form for S·b <= 2m only; here S·b = {S * b}, m = {m}")
    r, t = S * b - m, m % b
    h = b - t if t else 0
    rho = (r - h) / (m - h)
    pi = sum(math.comb(t, d) * math.comb(m - 1 - t, h - d) / math.comb(m - 1, h) * d / (m - b + d)
             for d in range(min(t, h) + 1))
    in_t, in_h = t / m, h / m
    p3 = (1 - in_t) * (1 - in_h) * rho * pi
    p1 = in_t * in_h + in_t * (1 - in_h) * (1 - rho) + (1 - in_t) * (1 - in_h) * (1 - rho) * (1 - pi)
    law = {1: p1, 2: 1.0 - p1 - p3, 3: p3}
    return {k: p for k, p in law.items() if p > 0}
