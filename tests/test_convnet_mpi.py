"""Convnet runs over MPI give the shared-memory run's numbers bit for bit, and the bytes
counted at MPI's sends and receives are the accounting's (small generated images)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.convnet_images import write_image_set
from tests.helpers import TIMING
from tests.test_mpi import MPI_ONLY, run_both

pytest.importorskip("mpi4py")

BASE = ["--model", "cnn", "--arch", "simple-cnn", "--batch-size", "8", "--lr", "0.05", "--eval-every", "1",
        "--rounds", "3", "--local-steps", "2", "--momentum", "0.9"]
CASES = {
    "dp": ["--algorithm", "dp"],
    "local-sgd": ["--algorithm", "local-sgd"],
    "local-sgd-sparse": ["--algorithm", "local-sgd", "--sparsity", "0.9"],
}


def assert_mpi_is_shared_memory_and_counts_the_accounting(shm, mpi) -> None:
    """The two runs' numbers and ``/final`` bit for bit; every round's counted bytes the accounted ones."""
    assert shm.run_id == mpi.run_id
    assert set(mpi.metrics) == set(shm.metrics) | MPI_ONLY
    for key in set(shm.metrics) - TIMING:
        assert np.array_equal(shm.metrics[key], mpi.metrics[key], equal_nan=True), key
    assert set(shm.final) == set(mpi.final)
    for key in shm.final:
        assert shm.final[key].tobytes() == mpi.final[key].tobytes(), key
    for direction in ("up", "down"):
        counted, accounted = mpi.metrics[f"bytes_{direction}_measured"], mpi.metrics[f"bytes_{direction}"]
        assert np.array_equal(counted, accounted), direction
        assert (np.diff(counted) > 0).all()


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_mpi_gives_the_shared_memory_final_model_and_counts_the_accounted_bytes(tmp_path, case):
    images = write_image_set(tmp_path / "images", train=96, test=24, side=16)
    shm, mpi = run_both(tmp_path / "runs", [*BASE, "--dataset", images, *CASES[case]], 2)
    assert_mpi_is_shared_memory_and_counts_the_accounting(shm, mpi)
