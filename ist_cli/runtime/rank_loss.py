"""Which worker ranks of an MPI job have died, as rank 0 can tell without MPI.

A job launched to survive a lost rank (``mpi_launch.relaunch_command(survive_rank_loss=True)``)
gets a notice from MPICH's Hydra when a rank's process ends: SIGUSR1 to every other rank.
Every rank counts the notices (``listen``): rank 0 decides what a loss means and stops the
others; a worker rank that rank 0 does not stop soon after a notice has lost rank 0 itself.
MPI reports nothing about a dead peer (a receive from it just never completes), so rank 0
looks for the processes it knows: each worker rank tells it its pid and a hash of its host
name at start-up (``host_id``), and a rank on this host whose process is gone (or a zombie)
is lost. A loss on another host is known from the notice alone, without which rank
(``RankWatch.lost`` returns -1 for it).
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import sys
import time
import zlib
from collections.abc import Sequence

NOTICE = signal.SIGUSR1
REMOTE_GRACE = 2.0  # seconds after a notice without a loss on this host: a rank elsewhere is gone
ORPHAN_GRACE = 5.0  # seconds a worker rank waits, after a notice, for rank 0 to stop it
_notices = [0]
_first_notice: list[float | None] = [None]


def host_id() -> int:
    """This host's name as a 32-bit number (exact in a float64 message)."""
    return zlib.crc32(socket.gethostname().encode())


def _noticed(signum: int, frame: object) -> None:
    _notices[0] += 1
    if _first_notice[0] is None:
        _first_notice[0] = time.monotonic()


def listen() -> None:
    """Count the launcher's notices (main thread, early): rank 0 to find the lost rank, a
    worker rank to leave when rank 0 itself is the one lost (``orphaned``). At exit the notice is
    ignored: the interpreter's finalisation resets a signal with a Python handler to its default
    (for SIGUSR1, death), and the other ranks ending at the same time send notices into that
    window (a run that had finished then exited by SIGUSR1, 138)."""
    signal.signal(NOTICE, _noticed)
    atexit.register(signal.signal, NOTICE, signal.SIG_IGN)


def notices() -> int:
    return _notices[0]


def orphaned() -> bool:
    """A worker rank: has a notice come ``ORPHAN_GRACE`` seconds ago without rank 0 stopping it?
    Any loss ends the run, and rank 0 stops the survivors at once; silence means rank 0 is gone."""
    first = _first_notice[0]
    return first is not None and time.monotonic() - first >= ORPHAN_GRACE


def process_gone(pid: int) -> bool:
    """Has process ``pid`` of this host ended (gone, or a zombie its parent has not reaped)?"""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


class RankWatch:
    """Rank 0's view of its worker ranks: ``lost()`` after a notice, and every second anyway."""

    def __init__(self, pids: Sequence[int], hosts: Sequence[int], every: float = 1.0) -> None:
        here = host_id()
        self.pids = [pid if host == here else None for pid, host in zip(pids, hosts, strict=True)]
        self.every = every
        self._seen = notices()
        self._noticed_at: float | None = None
        self._next = time.monotonic() + every

    def due(self) -> bool:
        """Is it time to look (a new notice, or ``every`` seconds since the last look)?"""
        return notices() != self._seen or time.monotonic() >= self._next

    def lost(self) -> list[int]:
        """Workers (by index) whose process has ended; [-1] for one on another host that the
        notice announced and no process here explains after ``REMOTE_GRACE`` seconds."""
        now = time.monotonic()
        if notices() != self._seen and self._noticed_at is None:
            self._noticed_at = now
        self._seen, self._next = notices(), now + self.every
        gone = [worker for worker, pid in enumerate(self.pids) if pid is not None and process_gone(pid)]
        if gone or self._noticed_at is None:
            return gone
        remote = any(pid is None for pid in self.pids)
        return [-1] if remote and now - self._noticed_at >= REMOTE_GRACE else []

    def wait_for_loss(self, seconds: float) -> list[int]:
        """After a survivor's error: give a loss up to ``seconds`` to show (its notice may lag)."""
        deadline = time.monotonic() + seconds
        while True:
            lost = self.lost()
            if lost or time.monotonic() >= deadline:
                return lost
            time.sleep(0.05)


def exit_without_finalize(code: int) -> None:
    """End a worker rank that rank 0 released after a loss: MPI_Finalize would wait for the dead peer."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
