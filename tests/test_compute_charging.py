"""Compute is charged as on a dedicated core: a worker's step is the CPU time of its thread, so
the same run on one core and on two is charged alike, though its wall time is not.

The step is made heavier than the default (wider hidden layers, a larger batch: the default
MLP's kind, digits, 8 workers) so that each worker's step (about 25 ms of CPU) is many
scheduler time slices long: the 8 workers' steps then share the cores throughout, and the
slowest step's wall time is about 8 steps' CPU on one core and 4 on two. A default step (about
0.2 ms) is shorter than a time slice, seldom preempted mid-step, and its wall time would hide
most of the waiting, which falls between steps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

pytestmark = pytest.mark.slow  # two runs of 8 workers

ROUNDS = 10
HEAVY_STEP = ["--hidden", "2048,2048", "--batch-size", "128"]  # default: 512,512 and 32


def pinned_run(cpus: set[int], out: Path) -> dict[str, np.ndarray]:
    """Run the CLI pinned to ``cpus`` (its workers inherit the affinity); the run file's series."""
    name = "cpus" + "_".join(map(str, sorted(cpus)))
    subprocess.run([sys.executable, "-m", "ist_cli", "run", "--model", "mlp", "--workers", "8",
                    "--rounds", str(ROUNDS), "--eval-every", str(ROUNDS), *HEAVY_STEP,
                    "--out", str(out), "--name", name, "--quiet"],
                   check=True, timeout=600, capture_output=True, preexec_fn=lambda: os.sched_setaffinity(0, cpus))
    with h5py.File(out / f"{name}.h5", "r") as handle:
        return {key: handle["rounds"][key][()] for key in handle["rounds"]} | {
            key: handle["metrics"][key][()] for key in ("compute_time", "compute_time_wall", "round")}


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores this process may run on")
def test_eight_workers_on_one_core_are_charged_as_on_two(tmp_path: Path) -> None:
    first, second = sorted(os.sched_getaffinity(0))[:2]
    one = pinned_run({first}, tmp_path)
    two = pinned_run({first, second}, tmp_path)
    for run in (one, two):
        # the metrics are the sums of the per-round series (the re-pricing depends on it)
        assert run["round"][-1] == ROUNDS and len(run["worker_compute"]) == ROUNDS
        charged = run["worker_compute"] + run["coordinator_compute"]
        wall = run["worker_compute_wall"] + run["coordinator_compute_wall"]
        assert run["compute_time"][-1] == pytest.approx(charged.sum(), rel=1e-12)
        assert run["compute_time_wall"][-1] == pytest.approx(wall.sum(), rel=1e-12)
        # thread CPU time never exceeds the wall time of the same step (up to clock granularity)
        assert np.all(run["worker_compute"] <= run["worker_compute_wall"] + 1e-4)
    charged_one, charged_two = one["compute_time"][-1] / ROUNDS, two["compute_time"][-1] / ROUNDS
    wall_one, wall_two = one["compute_time_wall"][-1] / ROUNDS, two["compute_time_wall"][-1] / ROUNDS
    # wall over CPU: about 8 on one free core and 4 on two; far above 4 on two cores means other
    # processes held them, and the wall ratio below then measures that load, not this run
    seen = (f"per round: charged {charged_one * 1e3:.1f} ms on one core, {charged_two * 1e3:.1f} on two; "
            f"wall {wall_one * 1e3:.1f} and {wall_two * 1e3:.1f} ms; wall/CPU {wall_one / charged_one:.1f} "
            f"and {wall_two / charged_two:.1f}")
    print(seen)  # the figures docs/algorithms.md gives (pytest -rP shows them)
    assert 0.75 <= charged_one / charged_two <= 1.25, seen
    # wall-time charging fails the same check: on one core each step also waits for the other
    # seven, on two for three (ideally twice as long)
    assert wall_one / wall_two >= 1.5, seen
