"""Faults of the partitioned server over MPI: a killed owner rank, a killed coordinator, Ctrl-C.

Every run is real: ``ist run --transport mpi --server partitioned`` re-executes itself under
the mpich wheel's ``mpiexec``; ranks are killed with SIGKILL from here, as the OOM killer or
a failing node would. An owner's shard exists nowhere else, so its loss fails the run, and
rank 0, which survives it, must say which shard is gone in the run file and on stderr.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ist_cli.io.runfile import read_run
from tests.helpers import files_in, shm_entries
from tests.mpi_runs import Killed, interrupt_and_check, kill_rank, start_job

pytest.importorskip("mpi4py")

LONG = ["--model", "mlp", "--algorithm", "ist", "--server", "partitioned", "--workers", "2", "--hidden", "24,16",
        "--local-steps", "1", "--rounds", "1000000", "--eval-every", "50"]


def kill_rank_in_the_rounds(tmp_path: Path, rank: int) -> Killed:
    """SIGKILL one rank of a long partitioned run that has logged round 50."""
    return kill_rank(start_job(tmp_path, LONG, logged_round=50), rank)


@pytest.mark.slow
def test_a_killed_owner_rank_fails_the_run_within_10_seconds_naming_its_lost_shard(tmp_path):
    before = shm_entries()
    killed = kill_rank_in_the_rounds(tmp_path, 2)  # worker 1: the owner of shard 1
    lines = killed.lines
    assert killed.seconds < 10 and killed.alive == [], (killed.seconds, killed.alive)
    assert killed.code == 1, (killed.code, lines)
    assert lines[-1].startswith("ist: error: worker 1 (rank 2, pid ") and " died during round " in lines[-1], lines
    assert "its shard 1 (the parameters of hidden-neuron block 1 of every layer) is lost" in lines[-1]
    assert not any("Traceback" in line for line in lines), lines
    assert files_in(tmp_path) == ["long.h5"]  # rank 0 survived to finish it: renamed, no .tmp left
    run = read_run(tmp_path / "long.h5")
    assert run.attrs["status"] == "failed"
    assert run.attrs["error"].splitlines()[0] == lines[-1].removeprefix("ist: error: ")
    assert run.metrics["round"][-1] >= 50
    assert {name for name in shm_entries() - before if name.startswith("mpich_shm_")} == set()


@pytest.mark.slow
def test_a_killed_coordinator_leaves_no_worker_rank(tmp_path):
    """Rank 0 gone, nobody stops the workers: they leave on their own after the launcher's notice."""
    before = shm_entries()
    killed = kill_rank_in_the_rounds(tmp_path, 0)
    assert killed.seconds < 10 and killed.alive == [] and killed.code != 0, (killed.seconds, killed.alive, killed.code)
    assert "long.h5" not in files_in(tmp_path)  # at most the .tmp of a coordinator killed mid-write
    assert {name for name in shm_entries() - before if name.startswith("mpich_shm_")} == set()


@pytest.mark.slow
def test_ctrl_c_ends_a_partitioned_mpi_run_as_today(tmp_path):
    before = shm_entries()
    interrupt_and_check(tmp_path, start_job(tmp_path, LONG, logged_round=50), before)
