"""Will it fit? Memory and space checks made before a run creates anything.

A run that cannot fit must end as one line naming the size needed and the space there is,
not as the OOM killer's SIGKILL, a SIGBUS on a full ``/dev/shm`` or a SIGSEGV inside HDF5
on a full disk. The numbers come from the kernel (``/proc/meminfo``, the cgroup limit,
``statvfs``); the estimate of what a run needs is ``ist_cli.footprint``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ist_cli.errors import RunFailed, UserError

#: private memory of one spawned worker before it touches any data (Python, numpy, numba)
WORKER_BASE_BYTES = 80 * 2**20  # measured: about 67 MiB private per worker (Linux, Python 3.11)
#: free space kept on the output file system beyond what the run file needs
DISK_MARGIN_BYTES = 64 * 2**20


def human_bytes(count: float) -> str:
    """``1.5 GiB``-style size for messages."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(count) < 1024 or unit == "PiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} PiB"  # pragma: no cover


@dataclass(frozen=True)
class RunEstimate:
    """Bytes a run needs: the shared arena, the coordinator's private copies, each worker's own.

    ``ranks``: an estimate per process of an MPI job whose ranks share nothing (no arena; the
    coordinator is rank 0, each worker a rank); its message names the busiest process."""

    arena: int
    coordinator: int
    per_worker: int
    workers: int
    ranks: bool = False

    @property
    def total(self) -> int:
        return self.arena + self.coordinator + self.workers * self.per_worker

    def describe(self) -> str:
        if self.ranks:
            workers = (f"each worker rank, about {human_bytes(self.per_worker)} (its shard, the subnet it trains "
                       "and its buffers)")
            coordinator = f"rank 0, the coordinator, about {human_bytes(self.coordinator)}"
            parts = (workers, coordinator) if self.per_worker >= self.coordinator else (coordinator, workers)
            return (f"about {human_bytes(self.total)} over {self.workers + 1} MPI processes on this machine "
                    f"(busiest: {parts[0]}; {parts[1]})")
        return (f"about {human_bytes(self.total)} (arena {human_bytes(self.arena)}, coordinator "
                f"{human_bytes(self.coordinator)}, {self.workers} workers x {human_bytes(self.per_worker)})")


def peak_resident_bytes() -> int:
    """This process's peak resident memory so far (``VmHWM`` of /proc/self/status; 0 where unknown)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_headroom() -> int | None:
    """``memory.max - memory.current`` of this process's cgroup (v2), None without a limit."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
    except (OSError, ValueError):
        return None


def available_memory() -> int | None:
    """Memory a new run can use now: the smaller of MemAvailable and the cgroup's headroom."""
    values = [v for v in (_meminfo_available(), _cgroup_headroom()) if v is not None]
    return min(values) if values else None


def free_space(path: str | Path) -> int | None:
    """Bytes an unprivileged writer can still use on the file system holding ``path``."""
    try:
        stats = os.statvfs(path)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def check_memory(estimate: RunEstimate, *, available: int | None = None) -> None:
    """Refuse, in one line, a run whose estimate exceeds the memory there is."""
    available = available_memory() if available is None else available
    if available is not None and estimate.total > available:
        raise UserError(f"the run needs {estimate.describe()} of memory; {human_bytes(available)} is available; "
                        "expected smaller --hidden/--dim/--workers or dataset sizes")


def check_space(path: str | Path, needed: int, what: str) -> None:
    """Refuse, in one line, when ``path``'s file system has less than ``needed`` bytes free."""
    free = free_space(path)
    if free is not None and needed > free:
        raise UserError(f"{what} needs {human_bytes(needed)} in {str(path)!r}; only {human_bytes(free)} is free")


class SpaceGuard:
    """Stops a run before HDF5 is asked to write into a full disk or a deleted directory.

    HDF5 does not fail cleanly on ENOSPC in the middle of an append (a coordinator was seen
    to die with SIGSEGV), so the run checks before each write that its ``.tmp`` still exists
    and that more than ``margin`` bytes stay free after the write; the margin is what the
    final status then needs. ``check`` raises ``RunFailed`` with a one-line reason.
    """

    def __init__(self, path: Path, margin: int = DISK_MARGIN_BYTES) -> None:
        self.path = Path(path)
        self.margin = margin

    def check(self, upcoming: int = 0) -> None:
        if not self.path.exists():
            raise RunFailed(f"the run file {str(self.path)!r} was deleted during the run "
                            "(its output directory removed?)")
        free = free_space(self.path.parent)
        if free is not None and free - upcoming < self.margin:
            raise RunFailed(f"out of disk space in {str(self.path.parent)!r}: {human_bytes(free)} free, the run "
                            f"stops while {human_bytes(self.margin)} is left to record its status")
