"""A sketch from another package: the example sketch plug-in (examples/ist-shared-sketch) is
pip-installed into this environment, run by IST and DCGD over both transports, its iterates
checked against numpy and its bytes against the accounting, then uninstalled."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from ist_cli.io.runfile import read_run
from ist_cli.seeding import stream
from tests.helpers import ist, one_error_line
from tests.mpi_runs import (
    assert_counted_bytes_are_accounted,
    assert_mpi_gives_the_shared_memory_numbers,
    run_both,
)
from tests.plugin_support import fake_distribution, installed_example

N, D, Q, LR, ROUNDS = 4, 12, 5, 0.05, 4
RUN = ["--model", "quadratic", "--sketch", "shared-rand", "--workers", str(N), "--dim", str(D), "--sketch-q", str(Q),
       "--lr", str(LR), "--rounds", str(ROUNDS), "--eval-every", "1", "--save-params-every", "1"]


def sketches_in_help() -> str:
    lines = ist("run", "--help", check=True).stdout.splitlines()
    return next(line for line in lines if "--sketch [" in line)


def ist_reference(L: np.ndarray, b: np.ndarray, x: np.ndarray, support: np.ndarray) -> np.ndarray:
    """One IST round, one local step, averaged: z_i = C_i x - lr C_i (L_i C_i x - b_i), C_i = (d/q) 1[S_i]."""
    scales = np.where(support, D / Q, 0.0)
    starts = scales * x
    z = starts - LR * scales * (np.einsum("ijk,ik->ij", L, starts) - b)
    return z.mean(axis=0)


@pytest.mark.slow
def test_an_installed_sketch_trains_counts_its_bytes_and_uninstalls(tmp_path):
    assert "shared-rand" not in sketches_in_help()
    with installed_example("ist-shared-sketch", tmp_path):
        assert "shared-rand" in sketches_in_help()
        importlib.invalidate_caches()
        sketch = importlib.import_module("ist_shared_sketch").SharedRand()
        shm, mpi = run_both(tmp_path, RUN)
        assert shm.config["sketch"] == "shared-rand"
        assert_mpi_gives_the_shared_memory_numbers(shm, mpi)
        # the iterates, from the stored problem and the plug-in's sets (drawn from the plan stream)
        L, b, xs = shm.problem["L"], shm.problem["b"], shm.params["x"]
        assert xs.shape == (ROUNDS + 1, D)
        for r in range(1, ROUNDS + 1):
            support = sketch.support(N, D, Q, stream(0, "plan", r))
            assert (support == support[0]).all()  # one set for every worker
            np.testing.assert_allclose(xs[r], ist_reference(L, b, xs[r - 1], support), rtol=1e-12, atol=1e-14)
            assert not xs[r][~support[0]].any()  # the average of the C_i x: 0 off the one set
        # bytes: down q values and q int32 indices, up q values, per worker and round; MPI counted the same
        rounds = mpi.metrics["round"]
        assert np.array_equal(mpi.metrics["bytes_down"], rounds * N * Q * (8 + 4))
        assert np.array_equal(mpi.metrics["bytes_up"], rounds * N * Q * 8)
        assert_counted_bytes_are_accounted(mpi, "up")
        assert_counted_bytes_are_accounted(mpi, "down")
        # DCGD draws the sets in its workers from the shared seed: x down, q values and indices up
        dcgd = ["--algorithm", "dcgd", "--name", "dcgd", "--out", str(tmp_path), "--quiet"]
        ist("run", *RUN, *dcgd, "--transport", "mpi", check=True, timeout=300)
        run = read_run(tmp_path / "dcgd.h5")
        assert np.array_equal(run.metrics["bytes_up"], run.metrics["round"] * N * Q * (8 + 4))
        assert np.array_equal(run.metrics["bytes_up_measured"], run.metrics["bytes_up"])
        assert run.metrics["f_gap"][-1] < run.metrics["f_gap"][0]
        # the closed-form theory is for uniformly random sets only: a one-line error, not a wrong curve
        line = one_error_line(ist("theory", "--sketch", "shared-rand", "--workers", str(N), "--dim", str(D)))
        assert "'shared-rand' is a plug-in's" in line
        report = ist("report", str(tmp_path), check=True)
        assert "2 runs in 2 groups; 1 file skipped" in report.stdout  # mpi.h5 is shm.h5's run (same run id)
    assert "shared-rand" not in sketches_in_help()
    gone = ist("run", *RUN, "--name", "gone", "--out", str(tmp_path))
    assert gone.returncode == 2 and "--sketch: 'shared-rand' is not allowed" in gone.stderr, gone.stderr
    assert not (tmp_path / "gone.h5").exists()


def test_a_sketch_drawing_wrong_sets_is_one_error_line(tmp_path):
    (tmp_path / "odd_sketch.py").write_text(
        "import numpy as np\nfrom ist_cli.models.sketches import Sketch\n\n"
        "class Odd(Sketch):\n    def support(self, n, d, q, rng):\n        return np.ones((n, d), dtype=bool)\n\n"
        "class NotASketch:\n    pass\n")
    run = ["run", "--model", "quadratic", "--workers", "2", "--dim", "8", "--rounds", "1", "--out", str(tmp_path / "out")]
    env = fake_distribution(tmp_path, "[ist_cli.sketches]\nodd = odd_sketch:Odd\n")
    line = one_error_line(ist(*run, "--sketch", "odd", env=env))
    assert "--sketch odd: sketch plug-in 'odd'" in line and "q=4 entries per row" in line, line
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    env = fake_distribution(tmp_path / "two", "[ist_cli.sketches]\nperm = odd_sketch:Odd\nplain = odd_sketch:NotASketch\n")
    env["PYTHONPATH"] += f":{tmp_path}"
    result = ist("run", "--help", env=env)
    lines = result.stderr.splitlines()
    assert result.returncode == 0 and len(lines) == 2, result.stderr
    assert "'perm'" in lines[0] and "built-in" in lines[0] and "'plain'" in lines[1] and "Sketch" in lines[1]
