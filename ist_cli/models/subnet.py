"""IST's per-round partition of hidden neurons into worker blocks (docs/algorithms.md).

Blocks are cut from a random permutation with ``np.array_split`` sizes, so when a width
is not a multiple of n the first ``width % n`` workers get one neuron more. The sizes
are fixed for the run; only the neurons in each block change from round to round.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ist_cli.models.mlp import NetLayout, net_layout
from ist_cli.seeding import stream


def block_sizes(width: int, n_workers: int) -> np.ndarray:
    """Neurons per worker of a hidden layer of ``width``: sizes differ by at most 1."""
    sizes = np.full(n_workers, width // n_workers, dtype=np.int64)
    sizes[: width % n_workers] += 1
    return sizes


def draw_partition(hidden: Sequence[int], n_workers: int, seed: int, round_index: int) -> list[np.ndarray]:
    """Per hidden layer an (n, max_block) int64 array; row i holds worker i's neurons (padded with -1).

    One permutation per layer from ``stream(seed, "plan", round)``; the same arguments give
    the same partition in any process.
    """
    rng = stream(seed, "plan", round_index)
    plans = []
    for width in hidden:
        sizes = block_sizes(width, n_workers)
        permutation = rng.permutation(width)
        plan = np.full((n_workers, int(sizes.max())), -1, dtype=np.int64)
        start = 0
        for worker, size in enumerate(sizes):
            plan[worker, :size] = permutation[start : start + size]
            start += size
        plans.append(plan)
    return plans


def subnet_widths(widths: Sequence[int], n_workers: int, worker: int) -> np.ndarray:
    """Widths of worker ``worker``'s subnet: full input and output, its block of each hidden layer."""
    full = [int(w) for w in widths]
    hidden = [int(block_sizes(w, n_workers)[worker]) for w in full[1:-1]]
    return np.asarray([full[0], *hidden, full[-1]], dtype=np.int64)


def subnet_layout(widths: Sequence[int], n_workers: int, worker: int, batch_norm: bool) -> NetLayout:
    return net_layout(subnet_widths(widths, n_workers, worker), batch_norm)


def neuron_index(widths: Sequence[int], plans: Sequence[np.ndarray], worker: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat int64 neuron ids of every layer of ``worker``'s subnet and the (L+2,) start offsets.

    Layer 0 (inputs) and layer L (outputs) are never partitioned: all their ids appear.
    """
    full = [int(w) for w in widths]
    parts = [np.arange(full[0], dtype=np.int64)]
    for plan in plans:
        row = plan[worker]
        parts.append(row[row >= 0])
    parts.append(np.arange(full[-1], dtype=np.int64))
    starts = np.zeros(len(parts) + 1, dtype=np.int64)
    starts[1:] = np.cumsum([p.size for p in parts])
    return np.concatenate(parts), starts


def ist_subnet_sizes(widths: Sequence[int], n_workers: int, batch_norm: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per worker: values in its subnet and hidden-neuron indices it must be told (closed form).

    values_i = sum_l s_l s_{l+1} + sum_h s_h (hidden biases) + d_L (output bias)
               [+ 2 sum_h s_h for batch-norm gamma, beta], with s_0 = d_0, s_L = d_L.
    """
    values = np.zeros(n_workers, dtype=np.int64)
    indices = np.zeros(n_workers, dtype=np.int64)
    for worker in range(n_workers):
        sizes = subnet_widths(widths, n_workers, worker)
        hidden = int(sizes[1:-1].sum())
        values[worker] = int((sizes[:-1] * sizes[1:]).sum()) + hidden + int(sizes[-1]) + (2 * hidden if batch_norm else 0)
        indices[worker] = hidden
    return values, indices
