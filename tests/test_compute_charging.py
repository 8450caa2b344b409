"""Compute is charged as on a dedicated core: a worker's step is the CPU time of its thread, so
the same run on one core and on two is charged alike, though its wall time is not."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

pytestmark = pytest.mark.slow  # two runs of 8 workers


def pinned_run(cpus: str, out: Path) -> dict[str, np.ndarray]:
    name = "cpus" + cpus.replace(",", "_")
    subprocess.run(["taskset", "-c", cpus, sys.executable, "-m", "ist_cli", "run", "--model", "mlp", "--workers", "8",
                    "--rounds", "30", "--out", str(out), "--name", name, "--quiet"], check=True, timeout=600,
                   capture_output=True)
    with h5py.File(out / f"{name}.h5", "r") as handle:
        return {key: handle["rounds"][key][()] for key in handle["rounds"]} | {
            "compute_time": handle["metrics/compute_time"][()], "round": handle["metrics/round"][()]}


@pytest.mark.skipif(shutil.which("taskset") is None or len(os.sched_getaffinity(0)) < 2,
                    reason="needs taskset and two usable cores")
def test_eight_workers_on_one_core_are_charged_as_on_two(tmp_path: Path) -> None:
    one = pinned_run("0", tmp_path)
    two = pinned_run("0,1", tmp_path)
    for run in (one, two):
        # the metric is the sum of the per-round series (the re-pricing depends on it)
        per_round = run["worker_compute"] + run["coordinator_compute"]
        assert run["compute_time"][-1] == pytest.approx(per_round.sum(), rel=1e-12)
        assert run["round"][-1] == 30 and len(per_round) == 30
        # thread CPU time never exceeds the wall time of the same step (up to clock granularity)
        assert np.all(run["worker_compute"] <= run["worker_compute_wall"] + 1e-4)
    charged_one = one["compute_time"][-1] / 30
    charged_two = two["compute_time"][-1] / 30
    assert 0.75 <= charged_one / charged_two <= 1.25, (charged_one, charged_two)
