"""Faults of the partitioned server over MPI: a killed owner rank, a killed coordinator, Ctrl-C.

Every run is real: ``ist run --transport mpi --server partitioned`` re-executes itself under
the mpich wheel's ``mpiexec``; ranks are killed with SIGKILL from here, as the OOM killer or
a failing node would. An owner's shard exists nowhere else, so its loss fails the run, and
rank 0, which survives it, must say which shard is gone in the run file and on stderr.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import h5py
import psutil
import pytest

from ist_cli.io.runfile import read_run
from tests.helpers import files_in, shm_entries

pytest.importorskip("mpi4py")

from tests.test_mpi import interrupt_and_check, kill_job  # noqa: E402 (mpi4py checked first)

LONG = ["--model", "mlp", "--algorithm", "ist", "--server", "partitioned", "--workers", "2", "--hidden", "24,16",
        "--local-steps", "1", "--rounds", "1000000", "--eval-every", "50", "--name", "long", "--quiet"]


def python_ranks(launcher: int) -> dict[int, psutil.Process]:
    """The run's Python ranks by rank number (each runs under a shell, and rank 0 has a resource
    tracker: both have PMI_RANK too)."""
    ranks = {}
    for process in psutil.Process(launcher).children(recursive=True):
        try:
            rank = process.environ().get("PMI_RANK")
            if rank is not None and process.name().startswith("python") and "ist_cli" in process.cmdline():
                ranks[int(rank)] = process
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return ranks


def start_rounds(tmp_path: Path) -> subprocess.Popen:
    """A long partitioned MPI run (self-launched, its own session) that has logged round 50."""
    launcher = subprocess.Popen([sys.executable, "-m", "ist_cli", "run", "--transport", "mpi", *LONG,
                                 "--out", str(tmp_path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    rounds = 0
    while rounds < 50 or len(python_ranks(launcher.pid)) < 3:
        if launcher.poll() is not None or time.monotonic() > deadline:
            if launcher.poll() is None:
                kill_job(launcher)
            raise AssertionError(f"the run never reached round 50: {launcher.stderr.read()}")
        time.sleep(0.2)
        try:
            with h5py.File(tmp_path / "long.h5.tmp", "r", swmr=True) as live:
                rounds = int(live["metrics/round"][-1])
        except (OSError, KeyError):
            continue
    return launcher


def kill_rank(tmp_path: Path, rank: int) -> tuple[int, float, list, list[str]]:
    """SIGKILL one rank of a running job: (exit code, seconds to the job's end, ranks left, stderr lines)."""
    launcher = start_rounds(tmp_path)
    try:
        everything = psutil.Process(launcher.pid).children(recursive=True)
        python_ranks(launcher.pid)[rank].kill()
        killed = time.monotonic()
        code = launcher.wait(timeout=60)
        seconds = time.monotonic() - killed
        _, alive = psutil.wait_procs(everything, timeout=2)
    finally:
        if launcher.poll() is None:
            kill_job(launcher)
            launcher.wait()
    return code, seconds, alive, [line for line in launcher.stderr.read().splitlines() if line.strip()]


@pytest.mark.slow
def test_a_killed_owner_rank_fails_the_run_within_10_seconds_naming_its_lost_shard(tmp_path):
    before = shm_entries()
    code, seconds, alive, lines = kill_rank(tmp_path, 2)  # worker 1: the owner of shard 1
    assert seconds < 10 and alive == [], (seconds, alive)
    assert code == 1, (code, lines)
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
    code, seconds, alive, _ = kill_rank(tmp_path, 0)
    assert seconds < 10 and alive == [] and code != 0, (seconds, alive, code)
    assert "long.h5" not in files_in(tmp_path)  # at most the .tmp of a coordinator killed mid-write
    assert {name for name in shm_entries() - before if name.startswith("mpich_shm_")} == set()


@pytest.mark.slow
def test_ctrl_c_ends_a_partitioned_mpi_run_as_today(tmp_path):
    before = shm_entries()
    interrupt_and_check(tmp_path, start_rounds(tmp_path), before)
