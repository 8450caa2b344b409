"""A method's coordinator and worker halves driven in this process: real arena, real WorkerPool,
and the check that the regions a worker exchanges are the bytes the accounting counts."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from ist_cli.runtime.arena import Arena
from ist_cli.runtime.pool import WorkerPool


@contextmanager
def rounds_on_pool(algorithm, rounds: int) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """(a copy of the model before the rounds, the arena's arrays after ``rounds`` real rounds on a
    WorkerPool); the pool has stopped and the arena lives until the block ends."""
    with Arena.create(algorithm.arena_spec()) as arena:
        arrays = arena.arrays
        algorithm.initialize(arrays)
        algorithm.warm_up()
        start = arrays["model"].copy()
        with WorkerPool(algorithm.worker_program(), arena.layout, algorithm.n_workers) as pool:
            for round_index in range(1, rounds + 1):
                algorithm.plan_round(arrays, round_index)
                replies = pool.run_round(round_index)
                algorithm.aggregate(arrays, round_index, [r for _, r in replies])
        yield start, arrays


def assert_regions_are_the_accounted_bytes(algorithm, rounds: int = 2) -> None:
    """On the ps topology, each worker's down regions hold ``bytes_down[worker]`` bytes and its up
    regions ``bytes_up[worker]``, round after round."""
    with Arena.create(algorithm.arena_spec()) as arena:
        algorithm.initialize(arena.arrays)
        for round_index in range(1, rounds + 1):
            algorithm.plan_round(arena.arrays, round_index)
            traffic = algorithm.round_traffic(round_index)
            for worker in range(algorithm.n_workers):
                program = copy.deepcopy(algorithm.worker_program())
                program.setup(arena.arrays, worker)
                program.pack_down(round_index)  # as a transport does before it sends (IST: the subnet's mask)
                up, down = program.exchange(round_index).bytes(arena.arrays)
                assert (up, down) == (traffic.bytes_up[worker], traffic.bytes_down[worker]), (round_index, worker)
