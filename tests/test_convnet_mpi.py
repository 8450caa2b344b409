"""Convnet runs over MPI give the shared-memory run's numbers bit for bit, and the bytes
counted at MPI's sends and receives are the accounting's (small generated images)."""

from __future__ import annotations

import pytest

from tests.convnet_images import write_image_set
from tests.mpi_runs import assert_mpi_is_shared_memory_and_counts_the_accounting, run_both

pytest.importorskip("mpi4py")

BASE = ["--model", "cnn", "--arch", "simple-cnn", "--batch-size", "8", "--lr", "0.05", "--eval-every", "1",
        "--rounds", "3", "--local-steps", "2", "--momentum", "0.9"]
CASES = {
    "dp": ["--algorithm", "dp"],
    "local-sgd": ["--algorithm", "local-sgd"],
    "local-sgd-sparse": ["--algorithm", "local-sgd", "--sparsity", "0.9"],
}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_mpi_gives_the_shared_memory_final_model_and_counts_the_accounted_bytes(tmp_path, case):
    images = write_image_set(tmp_path / "images", train=96, test=24, side=16)
    shm, mpi = run_both(tmp_path / "runs", [*BASE, "--dataset", images, *CASES[case]], 2)
    assert_mpi_is_shared_memory_and_counts_the_accounting(shm, mpi)
