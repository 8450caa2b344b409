"""How much memory and disk a run will need, from its resolved config alone, before anything is allocated.

An estimate, deliberately on the high side, made by the method's plan
(``ist_cli.algorithms.plans``): the arena (shared data, model and per-worker buffers), the
coordinator's private copies (the generated problem or the loaded dataset before it moves
into the arena, the initial model, DP's server velocity) and each worker's own memory (the
interpreter with numpy and numba, plus a minibatch's activations). Over MPI the partitioned
server is sized per process instead: no arena, each worker rank its shard, subnet and
buffers, rank 0 no parameters. A dataset read from a
file is counted at the size of its file on disk; the arena check in ``runtime.arena``
covers the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ist_cli.algorithms.plans import plan_of
from ist_cli.data.shape import dataset_shape
from ist_cli.runtime.budget import RunEstimate


def estimate_run(config: Mapping[str, Any], ranks: bool = False) -> RunEstimate:
    """The memory ``config`` (resolved) will need, as arena, coordinator and per-worker bytes;
    ``ranks``: its workers are MPI ranks, which share nothing (the plan's per-process estimate)."""
    plan = plan_of(config)
    return plan.estimate_ranks(config) if ranks else plan.estimate_run(config)


def known_samples(config: Mapping[str, Any]) -> int | None:
    """The dataset's sample count when the config alone tells it (not for a file), else None."""
    if "dataset" not in config:  # a model without a dataset (the quadratic)
        return None
    return dataset_shape(config)[0] or None


def estimate_file_bytes(config: Mapping[str, Any]) -> int:
    """Bytes the run file will take at most: metric rows, /params snapshots, /problem, /final."""
    return plan_of(config).file_bytes(config)
