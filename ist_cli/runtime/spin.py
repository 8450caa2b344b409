"""Waiting for a round without going to sleep, when there are cores to spare.

A process blocked in a read is woken by the kernel: tens of microseconds per wake-up, more
when its core was idle, paid twice per worker per round (the round's message, the reply).
When every worker can have a core of its own, each side first *spins* on a flag in shared
memory for at most ``SPIN_SECONDS``: the worker on "a message for you is in the pipe", the
coordinator on "every reply is in its pipe". The pipes stay the only channel (messages,
payloads, replies) and the pool still blocks on the pipes and the process sentinels after
the spin, so a worker that dies or hangs is noticed exactly as without it. When workers
outnumber the free cores nobody spins: a spinning process would take the core the process
it waits for needs.
"""

from __future__ import annotations

import ctypes
import os
import time
from multiprocessing.context import BaseContext
from typing import Any

SPIN_SECONDS = 200e-6  # per wait; longer waits (real compute) block, as without spinning
_STRIDE = 8  # int64 words per worker: one 64-byte cache line each, so workers' flags never share one


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this platform
        return os.cpu_count() or 1


def spare_cores() -> int:
    """Cores this process may use minus the machine's 1-minute load average (rounded)."""
    try:
        busy = round(os.getloadavg()[0])
    except OSError:
        busy = 0
    return usable_cores() - busy


def should_spin(n_workers: int) -> bool:
    """Spin only when every worker can have a free core (never when oversubscribed)."""
    return n_workers <= spare_cores()


class RoundFlags:
    """Per worker, in one small shared array: ``go``, the number of the coordinator's latest
    message, and ``done``, the number of the message the worker last answered; word 0 is the
    spin budget in nanoseconds (0: never spin), which both sides read.

    Picklable: a worker receives it as a process argument (multiprocessing passes the
    shared array's file descriptor).
    """

    def __init__(self, shared: Any) -> None:
        self._shared = shared
        self._words = memoryview(shared).cast("B").cast("q")

    @classmethod
    def create(cls, context: BaseContext, n_workers: int, spin: bool) -> RoundFlags:
        flags = cls(context.RawArray(ctypes.c_int64, _STRIDE * (n_workers + 1)))
        flags._words[0] = int(SPIN_SECONDS * 1e9) if spin else 0
        return flags

    def __reduce__(self) -> tuple[Any, ...]:
        return (RoundFlags, (self._shared,))

    @property
    def spinning(self) -> bool:
        return self._words[0] > 0

    def ring(self, worker: int, number: int) -> None:
        """Coordinator: message ``number`` for ``worker`` is in its pipe."""
        self._words[_STRIDE * (worker + 1)] = number

    def answered(self, worker: int, number: int) -> None:
        """Worker: the reply to message ``number`` is in the pipe."""
        self._words[_STRIDE * (worker + 1) + 1] = number

    def await_message(self, worker: int, last: int) -> None:
        """Worker: spin until a message after ``last`` is rung, at most the spin budget."""
        budget = self._words[0]
        if budget <= 0:
            return
        words, slot = self._words, _STRIDE * (worker + 1)
        deadline = time.perf_counter_ns() + budget
        while words[slot] == last and time.perf_counter_ns() < deadline:
            pass

    def await_answers(self, n_workers: int, number: int) -> bool:
        """Coordinator: spin until every worker answered message ``number``, at most the
        spin budget; True when they all did (every reply is then readable)."""
        budget = self._words[0]
        words = self._words
        slots = range(_STRIDE + 1, _STRIDE * (n_workers + 1) + 1, _STRIDE)
        if budget <= 0:
            return all(words[slot] == number for slot in slots)
        deadline = time.perf_counter_ns() + budget
        while True:
            if all(words[slot] == number for slot in slots):
                return True
            if time.perf_counter_ns() >= deadline:
                return False
