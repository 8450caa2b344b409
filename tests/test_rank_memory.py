"""Memory per MPI process: the check before a run sizes each rank of the partitioned server on its
own, and rank 0 keeps its arrays in private memory, paying only for the pages it writes.

References: the runtime's own shard and subnet layouts (``models.shards``, ``models.subnet``),
the kernel's resident-set counter (/proc/self/status) and the run file's per-rank records.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import psutil
import pytest

from ist_cli.config import resolve_config
from ist_cli.errors import UserError
from ist_cli.footprint import estimate_run
from ist_cli.io.runfile import read_attrs
from ist_cli.models.mlp import net_layout
from ist_cli.models.shards import shard_layout
from ist_cli.models.subnet import ist_subnet_sizes
from ist_cli.preflight import check_run_inputs
from ist_cli.runtime.arena import Arena
from tests.helpers import ist, ist_json, one_error_line, segments_of, shm_entries

GiB = 2**30


def _config(hidden, workers, server="partitioned", **more):
    return resolve_config({"model": "mlp", "algorithm": "ist", "dataset": "synthetic", "synthetic_features": 256,
                           "synthetic_classes": 10, "synthetic_samples": 512, "hidden": list(hidden),
                           "workers": workers, "server": server, **more})


def test_a_model_the_central_layout_refuses_fits_as_partitioned_ranks():
    """4.3 GB of float32 weights, 4 workers, 16 GiB free: the central layout (the whole model in
    the arena and in rank 0) does not fit, the partitioned ranks (a quarter each) do."""
    central, partitioned = _config([32768, 32768], 4, "central"), _config([32768, 32768], 4)
    assert 4 * net_layout([256, 32768, 32768, 10], False).size > 4 * 10**9
    with pytest.raises(UserError, match="arena"):
        check_run_inputs(central, available=16 * GiB, ranks=True)
    with pytest.raises(UserError, match="arena"):  # over shared memory the shards are arena rows: refused too
        check_run_inputs(partitioned, available=16 * GiB)
    check_run_inputs(partitioned, available=16 * GiB, ranks=True)


@pytest.mark.parametrize(("hidden", "workers", "norm"), [([4096, 4096], 2, "none"), ([3000, 2000, 1000], 3, "batch"),
                                                         ([32768, 32768], 8, "none")])
def test_each_worker_rank_is_sized_for_its_shard_and_subnet_and_rank_0_for_no_parameters(hidden, workers, norm):
    config = _config(hidden, workers, norm=norm)
    estimate = estimate_run(config, ranks=True)
    widths, batch_norm = [256, *hidden, 10], norm == "batch"
    shard = max(shard_layout(widths, workers, k, batch_norm).size for k in range(workers))
    subnet = int(ist_subnet_sizes(widths, workers, batch_norm)[0].max())
    assert estimate.ranks and estimate.arena == 0 and estimate.workers == workers
    # its shard, its rows (sub, grad, velocity) and the pieces it receives: at least that much
    assert estimate.per_worker >= 4 * (shard + 5 * subnet)
    model = 4 * net_layout(widths, batch_norm).size
    if workers >= 4:  # what makes the server model parallel: no rank near the model's size
        assert estimate.per_worker < 0.5 * model
    # rank 0 holds no parameters: the same for a model of any width over the same data
    assert estimate.coordinator == estimate_run(_config([64] * len(hidden), workers, norm=norm), ranks=True).coordinator
    assert estimate.total == estimate.coordinator + workers * estimate.per_worker


def test_a_central_run_over_mpi_keeps_the_central_estimate():
    config = _config([512, 256], 4, "central")
    assert estimate_run(config, ranks=True) == estimate_run(config)


def test_a_partitioned_run_too_large_for_the_machine_is_refused_before_anything_starts(tmp_path):
    """160 GB of weights: even a quarter per rank does not fit; one line naming the busiest
    process, exit 2, no output directory, no segment, no launcher started."""
    pytest.importorskip("mpi4py")
    before = shm_entries()
    out = tmp_path / "out"
    result = ist("run", "--model", "mlp", "--algorithm", "ist", "--server", "partitioned", "--transport", "mpi",
                 "--workers", "4", "--dataset", "synthetic", "--hidden", "200000,200000", "--out", str(out))
    line = one_error_line(result)
    assert "5 MPI processes" in line and "busiest: each worker rank" in line and "is available" in line
    assert not out.exists()
    # other runs on the machine may make segments meanwhile: none of a process that has ended is left
    assert not {name for name in shm_entries() - before if name.startswith("ist_")
                and not psutil.pid_exists(int(name.split("_")[-2]))}


def _resident() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_private_arrays_take_no_shared_memory_and_cost_only_the_pages_written():
    size = 64 * 2**20
    spec = {"written": ((size // 8,), "f8"), "untouched": ((size // 8,), "f8")}
    before, resident = segments_of(os.getpid()), _resident()
    arena = Arena.create(spec, tag="t", shared=False)
    try:
        assert segments_of(os.getpid()) == before  # no /dev/shm segment
        assert arena.layout.segment == "" and set(arena.arrays) == set(spec)
        assert not arena.arrays["written"].any() and not arena.arrays["untouched"].any()
        assert _resident() - resident < size // 4  # 128 MB of arrays, not resident until written
        arena.arrays["written"][...] = 1.0
        grown = _resident() - resident
        assert size * 0.9 < grown < size * 1.5, grown
    finally:
        arena.close()
    assert arena.arrays == {}


@pytest.mark.slow
def test_rank_0_of_a_partitioned_mpi_run_reserves_only_what_it_uses(tmp_path):
    """Two models 100 MB apart: rank 0 reserves no shared memory and its peak grows by well under
    a quarter of the model's growth, while the arena it once reserved grows by more than the model."""
    pytest.importorskip("mpi4py")
    peaks, models = [], []
    for width in (1000, 5000):
        name = f"w{width}"
        ist_json("run", "--model", "mlp", "--algorithm", "ist", "--server", "partitioned", "--transport", "mpi",
                 "--workers", "2", "--dataset", "synthetic", "--synthetic-samples", "96", "--synthetic-features", "16",
                 "--synthetic-classes", "4", "--hidden", f"{width},{width}", "--batch-size", "8", "--local-steps", "1",
                 "--rounds", "1", "--out", str(tmp_path), "--name", name, timeout=600)
        attrs = read_attrs(tmp_path / f"{name}.h5")
        assert attrs["status"] == "completed" and attrs["shm_bytes_rank0"] == 0
        peaks.append(float(np.asarray(attrs["peak_rss_bytes_per_rank"])[0]))
        models.append(4 * net_layout([16, width, width, 4], False).size)
    from ist_cli.algorithms import build_algorithm  # noqa: PLC0415 (loads the data: only for the arena's size)

    config = resolve_config({"model": "mlp", "algorithm": "ist", "server": "partitioned", "workers": 2,
                             "dataset": "synthetic", "synthetic_samples": 96, "synthetic_features": 16,
                             "synthetic_classes": 4, "hidden": [5000, 5000]})
    spec = build_algorithm(config).arena_spec()
    arena = sum(int(np.prod(shape)) * np.dtype(dtype).itemsize for shape, dtype in spec.values())
    assert arena > 1.5 * models[1]  # the model, its shard rows and the subnets' rows: what was reserved before
    assert peaks[1] - peaks[0] < 0.25 * (models[1] - models[0]), (peaks, models)
