"""How much memory a run will need, from its resolved config alone, before anything is allocated.

An estimate, deliberately on the high side: the arena (shared data, model and per-worker
buffers), the coordinator's private copies (the generated problem or the loaded dataset
before it moves into the arena, the initial model, DP's server velocity) and each worker's
own memory (the interpreter with numpy and numba, plus a minibatch's activations). Sizes
are Python integers, so absurd widths (10^30) give an absurd estimate, never an overflow.
A dataset read from a file is counted at the size of its file on disk: its real shape is
known only once it is read, and the arena check in ``runtime.arena`` covers the rest.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ist_cli.data import mnist1d
from ist_cli.runtime.budget import WORKER_BASE_BYTES, RunEstimate

#: (samples, features, classes) of the built-in digits dataset
DIGITS_SHAPE = (1797, 64, 10)
#: (features, classes) of mnist1d (its samples are ``mnist1d:N``)
MNIST1D_SHAPE = (40, 10)


def estimate_run(config: Mapping[str, Any]) -> RunEstimate:
    """The memory ``config`` (resolved) will need, as arena, coordinator and per-worker bytes."""
    if config["model"] == "quadratic":
        return _quadratic(config)
    return _mlp(config)


def _quadratic(config: Mapping[str, Any]) -> RunEstimate:
    n, d = int(config["workers"]), int(config["dim"])
    m = int(config.get("client_samples") or 2 * d)
    count = n if config.get("heterogeneity") == "heterogeneous" else 1
    matrices = n * d * d * 8
    # L; per worker 9 float64 rows (b, start, scales, out, down, up, z_*) and 2 int32 ones; x; alignment
    arena = matrices + 10 * n * d * 8 + d * 8 + 64 * 16
    # generation: A (count, m, d), the einsum result and its symmetrised copy, repeated to n clients
    coordinator = 8 * count * m * d + 3 * matrices
    return RunEstimate(arena=arena, coordinator=coordinator, per_worker=WORKER_BASE_BYTES + 3 * d * 8, workers=n)


def _dataset_shape(config: Mapping[str, Any]) -> tuple[int, int, int, int]:
    """(samples, features, classes, bytes of the raw source) as far as the config tells."""
    spec = str(config.get("dataset", "digits"))
    if spec == "digits":
        return (*DIGITS_SHAPE, 0)
    if spec == "synthetic":
        return int(config["synthetic_samples"]), int(config["synthetic_features"]), int(config["synthetic_classes"]), 0
    if spec.split(":")[0] == "mnist1d":
        _, _, count = spec.partition(":")
        samples = int(count) if count.isdigit() else mnist1d.DEFAULT_SAMPLES
        return samples, *MNIST1D_SHAPE, 8 * samples * MNIST1D_SHAPE[0]  # generated in float64
    _, _, argument = spec.partition(":")
    return 0, 1, 2, _size_on_disk(Path(argument).expanduser())


def _size_on_disk(path: Path) -> int:
    try:
        if path.is_dir():
            return sum(entry.stat().st_size for entry in os.scandir(path) if entry.is_file())
        return path.stat().st_size if path.is_file() else 0
    except OSError:
        return 0


def _mlp_params(config: Mapping[str, Any], widths: list[int]) -> tuple[int, int]:
    """(parameter count, bytes per parameter) of the network ``widths``."""
    itemsize = 8 if config.get("dtype") == "float64" else 4
    params = sum(fan_in * fan_out + fan_out for fan_in, fan_out in zip(widths, widths[1:], strict=False))
    if config.get("norm") == "batch":
        params += 2 * sum(widths[1:-1])
    return params, itemsize


def _mlp_widths(config: Mapping[str, Any]) -> tuple[list[int], int, int]:
    """(widths, samples, bytes of a file source) as far as the config tells."""
    samples, features, classes, raw = _dataset_shape(config)
    return [features, *(int(w) for w in config["hidden"]), classes], samples, raw


def _mlp(config: Mapping[str, Any]) -> RunEstimate:
    single = config["algorithm"] == "single"
    n = 1 if single else int(config["workers"])
    widths, samples, raw = _mlp_widths(config)
    features = widths[0]
    params, itemsize = _mlp_params(config, widths)
    sparse = float(config.get("sparsity") or 0) > 0
    # an IST worker's buffers hold about its share of the hidden units' weights; the rest a whole replica
    ist = config["algorithm"] == "ist"
    buffer = params // n + sum(widths) if ist else params
    # dp: grad; ist: sub, grad, velocity (and its share of the mask when sparse); local sgd: grad, sub, velocity
    buffers = (1 if config["algorithm"] == "dp" else 3 + (ist and sparse)) * n * buffer
    data = samples * (features * itemsize + 16)
    model = params * (2 if sparse else 1)  # the model, and the pruning mask of a sparse run
    arena = data + (model + buffers) * itemsize + 8 * sum(widths)
    # the loaded dataset (or its file, several times over while parsed) plus the initial model and DP's velocity
    coordinator = data + 4 * raw + 2 * params * itemsize
    activations = 4 * int(config.get("batch_size", 32)) * sum(widths) * itemsize
    return RunEstimate(arena=arena, coordinator=coordinator, per_worker=WORKER_BASE_BYTES + activations, workers=n)


def estimate_file_bytes(config: Mapping[str, Any]) -> int:
    """Bytes the run file will take at most: metric rows, /rounds, /params snapshots, /problem, /final."""
    rounds = int(config["rounds"])
    rows = rounds // int(config["eval_every"]) + 2
    metrics = rows * 32 * 8 + rounds * (6 + 3 * int(config["workers"])) * 8  # /rounds: 6 scalars, 3 per worker
    if config["model"] == "quadratic":
        n, d = int(config["workers"]), int(config["dim"])
        save_every = int(config.get("save_params_every") or 0)
        snapshots = (rounds // save_every + 1) * (d + 1) * 8 if save_every else 0
        return metrics + snapshots + n * (d * d + d) * 8 + 2 * d * 8 + 64 * 1024
    params, itemsize = _mlp_params(config, _mlp_widths(config)[0])
    return metrics + params * itemsize + 64 * 1024
