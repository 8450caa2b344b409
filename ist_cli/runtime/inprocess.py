"""A transport with every worker in the coordinator's process, one after another.

Each worker gets private copies of the arena arrays, as an MPI rank would: its resident
regions are copied once at start, its down regions before each step and its up regions
back after it (a masked region packed to its kept entries and unpacked, as over a network);
``pack_down``/``unpack_up`` run on the coordinator's arrays. So a run through
this transport reproduces a shared-memory run bit for bit only if every algorithm's
``exchange`` names everything its worker reads and writes: the tests hold it to that.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ist_cli.runtime.arena import ArenaLayout
from ist_cli.runtime.transport import (
    Region,
    StepClock,
    StepTime,
    TransportBase,
    WorkerProgram,
    receive_down,
)


class InProcessTransport(TransportBase):
    def __init__(self, program: WorkerProgram, arrays: dict[str, np.ndarray], layout: ArenaLayout,
                 n_workers: int) -> None:
        self.program = program
        self.arrays = arrays
        self.n_workers = n_workers
        self._servers: list[WorkerProgram] = []  # set up on the coordinator's arrays
        self._workers: list[WorkerProgram] = []  # set up on private copies
        self._private: list[dict[str, np.ndarray]] = []

    @property
    def pids(self) -> list[int]:
        return [os.getpid()] * len(self._workers)

    def start(self) -> None:
        for worker in range(self.n_workers):
            server = copy.deepcopy(self.program)
            server.setup(self.arrays, worker)
            private = {name: np.zeros_like(array) for name, array in self.arrays.items()}
            program = copy.deepcopy(self.program)
            _copy(program.resident(worker), self.arrays, private)
            program.setup(private, worker)
            self._servers.append(server)
            self._workers.append(program)
            self._private.append(private)

    def run_round(self, round_index: int, payloads: Sequence[Any] | None = None) -> list[tuple[StepTime, Any]]:
        replies = []
        for worker, (server, program, private) in enumerate(zip(self._servers, self._workers, self._private,
                                                                strict=True)):
            exchange = server.exchange(round_index)
            clock = StepClock()
            server.pack_down(round_index)
            receive_down(program, round_index, private, _wire([region.pack(self.arrays) for region in exchange.down]))
            result = program.step(round_index, payloads[worker] if payloads is not None else None)
            for region in exchange.up:
                buffer = region.buffer(self.arrays)
                buffer[...] = region.pack(private)
                region.unpack(self.arrays, buffer)
            server.unpack_up(round_index)
            replies.append((clock.stop(), result))
        return replies

    def close(self) -> None:
        self._servers, self._workers, self._private = [], [], []


def _copy(regions: Sequence[Region], source: dict[str, np.ndarray], target: dict[str, np.ndarray]) -> None:
    for region in regions:
        region.view(target)[...] = region.view(source)


def _wire(sent: list[np.ndarray]) -> Callable[[np.ndarray], None]:
    """A receiver that fills each buffer with the next array sent, in order."""
    messages = iter(sent)

    def receive(buffer: np.ndarray) -> None:
        buffer[...] = next(messages)

    return receive
