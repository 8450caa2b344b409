"""Which transport a run on this machine gets: a one-worker ``single`` run needs no worker.

``single`` with one worker is plain minibatch SGD: its worker's round (``pack_down``,
``step``, ``unpack_up`` on the arena, exactly what a pool worker runs) can run in the
coordinator's own process, which spares the run the fork server, a worker process and the
round's two messages, and copies nothing. The numbers are bitwise those of the
shared-memory pool (``tests/test_warm_trials.py``). The round deadline still holds: a
round that takes longer than the watchdog allows ends the process with SIGALRM (the
default action; a step stuck in a kernel never returns to Python to raise anything), which
the caller sees as a killed run, as it would see a worker the pool gave up on.

Every other run gets the shared-memory pool, its fork server started here (before the data
loads) so that it warms up meanwhile.
"""

from __future__ import annotations

import copy
import os
import signal
import time
from functools import partial
from typing import Any

from ist_cli.runtime.arena import ArenaLayout
from ist_cli.runtime.forkserver import start_server
from ist_cli.runtime.transport import (
    StepClock,
    StepTime,
    TransportBase,
    TransportFactory,
    WorkerProgram,
)
from ist_cli.runtime.watchdog import RoundWatchdog


class OwnProcessTransport(TransportBase):
    """The pool's one worker, in this process: same program calls on the same arena, same
    round deadline (``runtime.watchdog``)."""

    def __init__(self, program: WorkerProgram, arrays: dict, layout: ArenaLayout, n_workers: int, *,
                 round_timeout: float | None = None) -> None:
        self.program = program
        self.arrays = arrays
        self.n_workers = n_workers
        self._workers: list[WorkerProgram] = []
        self._watchdog = RoundWatchdog(round_timeout)

    @property
    def pids(self) -> list[int]:
        return [os.getpid()] * self.n_workers

    def start(self) -> None:
        for worker in range(self.n_workers):
            program = copy.deepcopy(self.program)  # a pool worker gets its own (unpickled) copy too
            program.setup(self.arrays, worker)
            self._workers.append(program)

    def run_round(self, round_index: int, payloads: Any = None) -> list[tuple[StepTime, Any]]:
        started = time.monotonic()
        armed = signal.getsignal(signal.SIGALRM) == signal.SIG_DFL
        if armed:
            signal.setitimer(signal.ITIMER_REAL, self._watchdog.timeout())
        try:
            replies = []
            for worker, program in enumerate(self._workers):
                clock = StepClock()  # as a pool worker times its round
                program.pack_down(round_index)
                result = program.step(round_index, payloads[worker] if payloads is not None else None)
                program.unpack_up(round_index)
                replies.append((clock.stop(), result))
        finally:
            if armed:
                signal.setitimer(signal.ITIMER_REAL, 0)
        self._watchdog.record(time.monotonic() - started)
        return replies

    def close(self) -> None:
        self._workers = []


def default_transport(in_process: bool, preload: tuple[str, ...], round_timeout: float | None) -> TransportFactory:
    """The transport of a run on this machine (``in_process``: its one worker steps here, as the
    method's plan allows); starts the fork server if workers need one."""
    if in_process:
        return partial(OwnProcessTransport, round_timeout=round_timeout)
    from ist_cli.runtime.pool import shared_memory_transport

    start_server(preload)
    return partial(shared_memory_transport, round_timeout=round_timeout, preload=preload)
