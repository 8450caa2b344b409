"""Is a process still there? Used wherever something a process left behind (a claim, a
shared-memory segment) must be told apart from something a live process still owns."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

_PR_SET_NAME = 15  # prctl(2)


def process_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (Linux ``/proc``), or None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def process_alive(pid: int | None, start_ticks: int | None = None) -> bool:
    """True when ``pid`` exists (and, if known, started at ``start_ticks``: not a recycled PID)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if start_ticks is not None:
        now_ticks = process_start_ticks(pid)
        if now_ticks is not None and now_ticks != start_ticks:
            return False
    stat = Path(f"/proc/{pid}/stat")
    try:  # a zombie (killed, not yet reaped) is dead for our purposes
        return stat.read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def set_process_name(name: str) -> None:
    """Name this process as ``ps -o comm``, ``top`` and psutil's ``name()`` show it (Linux,
    at most 15 bytes): forked workers otherwise carry the name of the server they came from."""
    try:
        ctypes.CDLL(None).prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: names are cosmetic
        pass
