"""Where an MPI run stands before MPI is initialised: inside a launcher or not, which rank.

Nothing here imports mpi4py, so ``ist run`` without ``--transport mpi`` never needs it,
and a worker rank can pin BLAS/numba to one thread before numpy is first imported.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from ist_cli.errors import UserError, install_hint
from ist_cli.runtime.threads import SINGLE_THREAD_ENV

# rank variables set by the launchers we know: MPICH/Hydra (PMI), PMIx, Open MPI, Slurm srun
_RANK_VARIABLES = ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID")
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS")
INSTALL_HINT = f"install the mpi extra: {install_hint('mpi')} (or mpi4py built against your system MPI)"


def launcher_rank() -> int | None:
    """This process's rank as the launcher announced it, or None outside any launcher.

    ``SLURM_PROCID`` alone (a batch script's shell) is not a launcher: it counts only when
    ``srun`` started a step (``SLURM_STEP_ID`` set).
    """
    for name in _RANK_VARIABLES:
        value = os.environ.get(name)
        if value is None or (name == "SLURM_PROCID" and "SLURM_STEP_ID" not in os.environ):
            continue
        try:
            return int(value)
        except ValueError:
            continue
    return None


def pin_worker_threads() -> None:
    """A worker rank computes with one BLAS/numba thread, as a shared-memory worker does.

    Called before numpy is imported (threads are fixed at import); a variable the user set
    explicitly is left alone.
    """
    rank = launcher_rank()
    if rank is not None and rank > 0:
        for key, value in SINGLE_THREAD_ENV.items():
            os.environ.setdefault(key, value)


def require_mpi4py() -> None:
    """A one-line UserError naming the extra to install when mpi4py is missing.

    Imports only the package: importing ``mpi4py.MPI`` initialises MPI, and a process that
    then becomes ``mpiexec`` (``relaunch``) would leave MPICH's shared-memory segment behind.
    """
    try:
        import mpi4py  # noqa: F401, PLC0415
    except ImportError:
        raise UserError(f"--transport mpi needs mpi4py, which is not installed; {INSTALL_HINT}") from None


def mpiexec_path() -> str:
    """The ``mpiexec`` beside this Python (the ``mpich`` wheel's), else the first on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.exists():
        return str(beside)
    found = shutil.which("mpiexec")
    if found is None:
        raise UserError(f"--transport mpi found no mpiexec beside {sys.executable} or on PATH; {INSTALL_HINT}")
    return found


# Each rank under a shell that outlives it. Hydra's proxy SIGKILLs every rank of its node as
# soon as one of its children dies by a signal, -disable-auto-cleanup or not; a child that exits
# (the shell, with 128 + the signal) only makes it send SIGUSR1 to the others (``rank_loss``).
# The shell traps INT, TERM and USR1 so that it never dies of one itself (its rank gets them
# with their default action, as without it); it reports a rank killed by a signal on stderr
# ("Killed"), while that rank's pipes to the launcher are still open.
RANK_SHELL = 'trap : INT TERM USR1; "$@"; exit $?'


def relaunch_command(n_ranks: int, argv: Sequence[str], survive_rank_loss: bool = False) -> list[str]:
    """``mpiexec -n N+1 python -m ist_cli ARGV``: the same command, once per rank.

    ``survive_rank_loss`` (the partitioned server, whose coordinator records a lost shard):
    the launcher leaves the other ranks alive when one dies, and each rank runs under
    ``RANK_SHELL``, so rank 0 can write the failed run file and end the job itself.
    """
    rank = [sys.executable, "-m", "ist_cli", *argv]
    if survive_rank_loss:
        return [mpiexec_path(), "-disable-auto-cleanup", "-n", str(n_ranks), "sh", "-c", RANK_SHELL, "ist-rank",
                *rank]
    return [mpiexec_path(), "-n", str(n_ranks), *rank]


def relaunch(n_ranks: int, argv: Sequence[str], survive_rank_loss: bool = False) -> None:
    """Replace this process by the launcher (so Ctrl-C and the exit code are the launcher's),
    once the rank count is known to fit the machine (``preflight.check_ranks``)."""
    from ist_cli.preflight import check_ranks  # noqa: PLC0415 - numpy: not before a rank pins its threads

    check_ranks(n_ranks, "--workers")
    require_mpi4py()
    command = relaunch_command(n_ranks, argv, survive_rank_loss)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)
