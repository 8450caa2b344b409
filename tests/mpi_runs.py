"""Runs over MPI for the tests: the same run over shared memory and over MPI compared, and long
MPI jobs started, watched, interrupted and killed.

``ist run --transport mpi`` re-executes itself under the mpich wheel's ``mpiexec`` on localhost,
one rank per worker plus the coordinator. Hydra starts each rank in a session of its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

from ist_cli.io.runfile import read_run
from tests.helpers import TIMING, ist, live_rounds, shm_entries

MPI_ONLY = {"comm_time_measured", "bytes_up_measured", "bytes_down_measured"}


def run_both(tmp_path: Path, args: list[str], workers: int | None = None):
    """``ist run ARGS`` as ``shm.h5`` over shared memory and as ``mpi.h5`` over MPI (with
    ``--workers`` if given here rather than in ``args``): the two run files, read."""
    common = ["run", *args, *([] if workers is None else ["--workers", str(workers)]), "--out", str(tmp_path),
              "--quiet"]
    ist(*common, "--name", "shm", check=True, timeout=300)
    ist(*common, "--name", "mpi", "--transport", "mpi", check=True, timeout=300)
    return read_run(tmp_path / "shm.h5"), read_run(tmp_path / "mpi.h5")


def assert_mpi_gives_the_shared_memory_numbers(shm, mpi) -> None:
    """One run id; MPI's metrics are shared memory's plus the measured ones, equal but for
    timings; ``/final`` bit for bit."""
    assert shm.run_id == mpi.run_id
    assert set(mpi.metrics) == set(shm.metrics) | MPI_ONLY
    for key in set(shm.metrics) - TIMING:
        assert np.array_equal(shm.metrics[key], mpi.metrics[key], equal_nan=True), key
    assert set(shm.final) == set(mpi.final)
    for key in shm.final:
        assert shm.final[key].tobytes() == mpi.final[key].tobytes(), key


def assert_counted_bytes_are_accounted(mpi, direction: str) -> None:
    """Every row's bytes counted at MPI's sends and receives (``up`` or ``down``) are the
    accounting's, and grow row by row."""
    counted, accounted = mpi.metrics[f"bytes_{direction}_measured"], mpi.metrics[f"bytes_{direction}"]
    assert np.array_equal(counted, accounted), direction
    assert (np.diff(counted) > 0).all(), direction


def assert_mpi_is_shared_memory_and_counts_the_accounting(shm, mpi) -> None:
    """The two runs' numbers and ``/final`` bit for bit; every round's counted bytes the accounted ones."""
    assert_mpi_gives_the_shared_memory_numbers(shm, mpi)
    for direction in ("up", "down"):
        assert_counted_bytes_are_accounted(mpi, direction)


# ----------------------------------------------------------------------------- long jobs
def python_ranks(launcher: int) -> dict[int, psutil.Process]:
    """The job's Python ranks by rank number (Hydra sets PMI_RANK in each; a rank runs under a
    shell, and rank 0 has a resource tracker: both have PMI_RANK too)."""
    ranks = {}
    for process in psutil.Process(launcher).children(recursive=True):
        try:
            rank = process.environ().get("PMI_RANK")
            if rank is not None and process.name().startswith("python") and "ist_cli" in process.cmdline():
                ranks[int(rank)] = process
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return ranks


def kill_job(launcher: subprocess.Popen) -> None:
    """SIGKILL the launcher and every rank: killing the launcher's process group alone would
    leave the ranks, each in its own session, running."""
    try:
        for process in psutil.Process(launcher.pid).children(recursive=True):
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
    except psutil.NoSuchProcess:
        pass
    os.killpg(launcher.pid, signal.SIGKILL)


def start_job(tmp_path: Path, args: list[str], ranks: int = 3, logged_round: int | None = None) -> subprocess.Popen:
    """``ist run --transport mpi ARGS --name long`` into ``tmp_path`` (self-launched, in a session
    of its own, stderr piped), once its ``ranks`` Python ranks are up and ``long.h5.tmp`` exists
    (and has logged ``logged_round``, if given)."""
    launcher = subprocess.Popen([sys.executable, "-m", "ist_cli", "run", "--transport", "mpi", *args, "--name", "long",
                                 "--quiet", "--out", str(tmp_path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    live = tmp_path / "long.h5.tmp"
    deadline = time.monotonic() + 240
    while (not live.exists() or len(python_ranks(launcher.pid)) < ranks
           or (logged_round is not None and max(live_rounds(live), default=-1) < logged_round)):
        if launcher.poll() is not None or time.monotonic() > deadline:
            if launcher.poll() is None:
                kill_job(launcher)
            raise AssertionError(f"the run never started or never logged round {logged_round}: "
                                 f"{launcher.stderr.read()}")
        time.sleep(0.2)
    return launcher


@dataclass
class Killed:
    """What became of a job one of whose ranks was SIGKILLed."""

    code: int  # the launcher's exit code
    seconds: float  # from the kill to the launcher's exit
    pids: set[int]  # every process of the job at the kill
    alive: list[psutil.Process]  # those still running 2 s after the launcher's exit
    lines: list[str]  # the launcher's non-blank stderr lines


def kill_rank(launcher: subprocess.Popen, rank: int) -> Killed:
    """SIGKILL one Python rank of a running job, as the OOM killer or a failing node would, and
    wait for the job's end (the whole job is killed if it does not end)."""
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
    lines = [line for line in launcher.stderr.read().splitlines() if line.strip()]
    return Killed(code, seconds, {process.pid for process in everything}, alive, lines)


def interrupt_and_check(tmp_path: Path, launcher: subprocess.Popen, before: set[str]) -> None:
    """Ctrl-C on the launcher: exit 130, one line, a failed file, no rank and no segment left."""
    try:
        everything = psutil.Process(launcher.pid).children(recursive=True)
        os.killpg(launcher.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        code = launcher.wait(timeout=30)
        _, alive = psutil.wait_procs(everything, timeout=10)
    finally:
        if launcher.poll() is None:
            kill_job(launcher)
            launcher.wait()
    assert code == 130
    assert alive == []
    run = read_run(tmp_path / "long.h5")
    assert run.attrs["status"] == "failed"
    lines = [line for line in launcher.stderr.read().splitlines() if line.strip()]
    assert lines == [f"ist: interrupted: stopped at round {run.attrs['rounds_completed']}; "
                     "the run file records it as failed"]
    assert run.attrs["error"] == f"interrupted by the user at round {run.attrs['rounds_completed']}"
    assert {name for name in shm_entries() - before if name.startswith("mpich_shm_")} == set()
