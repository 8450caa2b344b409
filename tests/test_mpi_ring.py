"""Data parallelism over MPI on a ring: the gradient average is an all-reduce among the worker
ranks. The bytes the ranks move equal the ring accounting; the model equals the shared-memory
run's up to the summation order (float32 partial sums in ring order)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ist_cli.io.runfile import read_run
from tests.helpers import ist, one_error_line

pytest.importorskip("mpi4py")

MLP = ["--model", "mlp", "--hidden", "24,16", "--rounds", "5", "--eval-every", "1", "--algorithm", "dp",
       "--topology", "ring", "--momentum", "0.9"]


@pytest.mark.slow
@pytest.mark.parametrize(("extra", "workers"), [((), 3), (("--sparsity", "0.5"), 4), ((), 1)])
def test_ring_allreduce_moves_the_accounted_bytes_and_gives_the_shared_memory_model(tmp_path: Path, extra: tuple,
                                                                                    workers: int) -> None:
    common = ["run", *MLP, *extra, "--workers", str(workers), "--out", str(tmp_path), "--quiet"]
    ist(*common, "--name", "shm", check=True, timeout=300)
    ist(*common, "--name", "mpi", "--transport", "mpi", check=True, timeout=300)
    shm, mpi = read_run(tmp_path / "shm.h5"), read_run(tmp_path / "mpi.h5")
    # the accounting (comm.allreduce_traffic) against the bytes counted at the ranks' sends/receives
    assert mpi.metrics["bytes_up_measured"].tolist() == shm.metrics["bytes_up"].tolist()
    assert mpi.metrics["bytes_down_measured"].tolist() == shm.metrics["bytes_down"].tolist()
    if workers > 1:
        assert shm.metrics["bytes_up"][-1] > 0
    # the model did not travel each round: rank 0 got one averaged gradient a round, counted apart
    # (all workers together send 2(n - 1) gradients' worth per round)
    if workers > 1:
        gradient = shm.metrics["bytes_up"][-1] / 5 / (2 * (workers - 1))
        assert mpi.attrs["bytes_to_coordinator_measured"] == pytest.approx(5 * gradient, rel=1e-12)
    assert set(shm.final) == set(mpi.final)
    for key in shm.final:
        a, b = shm.final[key].astype(np.float64), mpi.final[key].astype(np.float64)
        scale = max(float(np.max(np.abs(a))), 1e-30)
        assert float(np.max(np.abs(a - b))) <= 1e-6 * scale, key
    np.testing.assert_allclose(mpi.metrics["loss"], shm.metrics["loss"], rtol=1e-5)


def test_ring_over_mpi_is_data_parallelism_only(tmp_path: Path) -> None:
    for algorithm in ("ist", "local-sgd"):
        line = one_error_line(ist("run", "--model", "mlp", "--algorithm", algorithm, "--topology", "ring",
                                  "--transport", "mpi", "--out", str(tmp_path)))
        assert "'ring'" in line and algorithm in line
    assert not any(tmp_path.iterdir())
