"""The seam between the runner and the processes that run workers.

A ``Transport`` starts N workers, runs a round (one payload per worker), returns each
worker's ``(seconds, result)`` and closes. A ``WorkerProgram`` (an algorithm's worker half)
never sees how: it says, per round, which arena regions go *down* to its worker before the
step and come back *up* after it (``exchange``), and splits its work into three phases:

- ``pack_down``: server state -> this worker's down regions (IST: gather the subnet);
- ``step``: the computation; reads only its down regions, its ``resident`` regions (data
  sent once at start) and its own private rows, and writes its up regions;
- ``unpack_up``: this worker's up regions -> server state (IST: scatter the subnet back).

With shared memory (``runtime.pool``) all three phases run in the worker process on the one
arena and nothing is copied. A transport without shared memory runs ``pack_down`` and
``unpack_up`` on the coordinator and moves exactly the bytes of the regions, which are the
bytes the algorithm's ``round_traffic`` counts. ``runtime.inprocess`` is such a transport,
in one process: the tests run every algorithm through it and require bitwise-equal results.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class Region:
    """A contiguous piece of one arena array: ``arrays[array][row][:count]``.

    ``row`` None means the whole array (then ``count`` counts its leading elements);
    ``count`` None means the whole row.
    """

    array: str
    row: int | None = None
    count: int | None = None

    def view(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        base = arrays[self.array] if self.row is None else arrays[self.array][self.row]
        return base if self.count is None else base[: self.count]

    def nbytes(self, arrays: dict[str, np.ndarray]) -> int:
        return int(self.view(arrays).nbytes)


@dataclass(frozen=True)
class Exchange:
    """What crosses the network for one worker in one round."""

    down: tuple[Region, ...] = ()
    up: tuple[Region, ...] = ()

    def bytes(self, arrays: dict[str, np.ndarray]) -> tuple[int, int]:
        """(bytes up, bytes down): compare with the algorithm's ``round_traffic`` on a ps topology."""
        return sum(r.nbytes(arrays) for r in self.up), sum(r.nbytes(arrays) for r in self.down)


class WorkerProgram:
    """The worker half of an algorithm; picklable (spawned processes get a copy).

    ``setup`` binds to arena arrays for worker ``worker``. The same program, set up on the
    coordinator's arrays, must be able to run ``pack_down``/``unpack_up`` there: that is how
    a transport without shared memory uses it. The defaults suit a program that only steps.
    """

    def setup(self, arrays: dict[str, np.ndarray], worker: int) -> None:
        """Bind to the arena's arrays once, before the first round."""

    def resident(self, worker: int) -> tuple[Region, ...]:
        """Regions worker ``worker`` reads that never change during the run (sent once, before ``setup``)."""
        return ()

    def exchange(self, round_index: int) -> Exchange:
        """This round's down and up regions of this worker."""
        return Exchange()

    def pack_down(self, round_index: int) -> None:
        """Fill this worker's down regions from the server state."""

    def step(self, round_index: int, payload: Any) -> Any:
        """Compute one round; return a small picklable result."""
        raise NotImplementedError

    def unpack_up(self, round_index: int) -> None:
        """Fold this worker's up regions into the server state."""


class Transport(Protocol):
    """Runs one run's workers. Built by a ``TransportFactory``; ``start`` once, ``close`` always."""

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers (for tests and fault messages)."""

    def start(self) -> None:
        """Start every worker and wait until each has set up."""

    def run_round(self, round_index: int, payloads: Sequence[Any] | None = None) -> list[tuple[float, Any]]:
        """One round on every worker: pack_down, step, unpack_up; (seconds, step result) per worker."""

    def close(self) -> None:
        """Stop every worker; never leaves a process behind."""


#: (program, the coordinator's arrays, the arena layout, number of workers) -> a transport
TransportFactory = Callable[..., Transport]
