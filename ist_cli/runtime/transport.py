"""The seam between the runner and the processes that run workers.

A ``Transport`` starts N workers, runs a round (one payload per worker), returns each
worker's ``(StepTime, result)`` and closes. A ``WorkerProgram`` (an algorithm's worker half)
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

A region with a ``mask`` (a pruned model: the mask is fixed, resident on every worker)
moves only the entries its mask keeps, packed, with no index: the receiver knows where
they go. A mask a worker derives each round from other down regions (IST: its subnet's
share of the pruning mask, from its neuron ids) is computed in ``derive_masks``, which a
transport calls after the unmasked down regions arrived and before the masked ones are
unpacked (``receive_down``). Regions without a mask move as before, with no packing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np


class StepTime(NamedTuple):
    """What a worker's round cost it, in seconds: ``cpu``, the CPU time of the thread that ran it
    (what the step takes on a core of its own: workers compute with one BLAS/numba thread), and
    ``wall``, the elapsed time, which also counts waiting for a core on an oversubscribed machine."""

    cpu: float
    wall: float


class StepClock:
    """Started at construction; ``stop`` gives the ``StepTime`` since (thread CPU and wall clocks)."""

    __slots__ = ("_cpu", "_wall")

    def __init__(self) -> None:
        self._cpu, self._wall = step_clock()

    def stop(self) -> StepTime:
        cpu, wall = step_clock()
        return StepTime(cpu - self._cpu, wall - self._wall)


def step_clock() -> tuple[float, float]:
    """The two clocks a ``StepTime`` is measured on, now: (thread CPU, wall) seconds. For the
    pool worker's round loop, where a ``StepClock`` object per round is measurable."""
    return time.thread_time(), time.perf_counter()


def step_time(readings: tuple[float, float]) -> StepTime:
    """A ``StepTime`` from a worker's plain (cpu, wall) pair, without ``__new__``'s argument parsing."""
    return tuple.__new__(StepTime, readings)


@dataclass(frozen=True)
class Region:
    """A contiguous piece of one arena array: ``arrays[array][row][:count]``.

    ``row`` None means the whole array (then ``count`` counts its leading elements);
    ``count`` None means the whole row. ``mask``, a region of the same length, keeps the
    entries where it is nonzero: only they move; the receiver sets the others to 0, the
    value a pruned entry holds on every side.
    """

    array: str
    row: int | None = None
    count: int | None = None
    mask: Region | None = None

    def view(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        base = arrays[self.array] if self.row is None else arrays[self.array][self.row]
        return base if self.count is None else base[: self.count]

    def nbytes(self, arrays: dict[str, np.ndarray]) -> int:
        if self.mask is None:
            return int(self.view(arrays).nbytes)
        return int(np.count_nonzero(self.mask.view(arrays))) * self.view(arrays).itemsize

    def pack(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """What a sender sends: the view itself, or its kept entries packed contiguously."""
        view = self.view(arrays)
        return view if self.mask is None else view[self.mask.view(arrays) != 0]

    def buffer(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """Where a receiver receives: the view itself, or a scratch array of the kept entries' length."""
        if self.mask is None:
            return self.view(arrays)
        return np.empty(self.nbytes(arrays) // self.view(arrays).itemsize, dtype=self.view(arrays).dtype)

    def unpack(self, arrays: dict[str, np.ndarray], received: np.ndarray) -> None:
        """After receiving into ``buffer``: scatter the kept entries back (nothing to do without a mask)."""
        if self.mask is None:
            return
        view = self.view(arrays)
        view[...] = 0
        view[self.mask.view(arrays) != 0] = received


@dataclass(frozen=True)
class Exchange:
    """What crosses the network for one worker in one round, in this order (masked down
    regions after the unmasked ones: see ``receive_down``)."""

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
    ``peers``: over MPI its workers also exchange pieces with each other (``runtime.mpi_peers``).
    """

    peers = False

    def mpi_peers(self) -> Any:
        """A ``peers`` program's MPI module (``runtime.mpi_peers``), named by the program so that
        ``runtime.mpi`` need not import it."""
        raise NotImplementedError

    def setup(self, arrays: dict[str, np.ndarray], worker: int) -> None:
        """Bind to the arena's arrays once, before the first round."""

    def lost_with(self, worker: int) -> str:
        """What a run loses with worker ``worker`` beyond its round, for a fault message ("": nothing)."""
        return ""

    def resident(self, worker: int) -> tuple[Region, ...]:
        """Regions worker ``worker`` reads that never change during the run (sent once, before ``setup``)."""
        return ()

    def exchange(self, round_index: int) -> Exchange:
        """This round's down and up regions of this worker."""
        return Exchange()

    def pack_down(self, round_index: int) -> None:
        """Fill this worker's down regions from the server state (and the masks of masked ones)."""

    def derive_masks(self, round_index: int) -> None:
        """On a worker without shared memory: compute the masks of masked down regions from the
        unmasked down regions, which have arrived (see ``receive_down``)."""

    def step(self, round_index: int, payload: Any) -> Any:
        """Compute one round; return a small picklable result."""
        raise NotImplementedError

    def unpack_up(self, round_index: int) -> None:
        """Fold this worker's up regions into the server state."""

    #: True for a program that can average among the workers themselves (a ring all-reduce);
    #: a transport that can run one calls ``use_allreduce`` before ``setup`` (``runtime.mpi``)
    can_allreduce = False
    allreducing = False  # set by ``use_allreduce``

    def use_allreduce(self) -> None:
        """From now on ``exchange`` and ``unpack_up`` are the all-reduce's (see ``allreduce``)."""
        raise NotImplementedError

    def allreduce(self, round_index: int) -> tuple[Region, ...]:
        """Regions summed over all workers after ``step`` (all-reduce mode only)."""
        return ()

    def after_allreduce(self, round_index: int) -> None:
        """On a worker, once the ``allreduce`` regions hold the sum over workers."""


def receive_down(program: WorkerProgram, round_index: int, arrays: dict[str, np.ndarray],
                 receive: Callable[[np.ndarray], None]) -> None:
    """A worker's side of a round's down regions, in ``exchange`` order: ``receive`` fills
    each region's buffer from the wire; ``derive_masks`` runs before the first masked one,
    so every masked down region must come after the unmasked ones."""
    derived = False
    for region in program.exchange(round_index).down:
        if region.mask is not None and not derived:
            program.derive_masks(round_index)
            derived = True
        elif region.mask is None and derived:
            raise ValueError(f"down region {region.array!r} without a mask follows a masked one")
        buffer = region.buffer(arrays)
        receive(buffer)
        region.unpack(arrays, buffer)


class Transport(Protocol):
    """Runs one run's workers. Built by a ``TransportFactory``; ``start`` once, ``close`` always."""

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers (for tests and fault messages)."""

    def start(self) -> None:
        """Start every worker and wait until each has set up."""

    def run_round(self, round_index: int, payloads: Sequence[Any] | None = None) -> list[tuple[StepTime, Any]]:
        """One round on every worker: pack_down, step, unpack_up; (its ``StepTime``, step result) per worker."""

    def close(self) -> None:
        """Stop every worker; never leaves a process behind."""

    def metrics(self) -> dict[str, float]:
        """Cumulative metrics the transport measures itself (``/metrics`` columns; MPI: bytes, time)."""

    def attrs(self) -> dict[str, Any]:
        """Run-file attributes the transport records (MPI: start-up and control bytes)."""


class TransportBase:
    """What a transport measures by default: nothing of its own (``Transport.metrics``/``attrs``)."""

    def metrics(self) -> dict[str, float]:
        return {}

    def attrs(self) -> dict[str, Any]:
        return {}


class TransportFactory(Protocol):
    """Builds a run's transport (not started): the worker half of the method, the coordinator's
    arena arrays, the arena's layout (for workers that attach to it) and the number of workers."""

    def __call__(self, program: WorkerProgram, arrays: dict[str, np.ndarray], layout: Any,
                 n_workers: int) -> Transport: ...


def shares_memory(factory: Any) -> bool:
    """Do the workers a ``TransportFactory`` builds attach to the coordinator's arena? Not MPI
    ranks (``shares_memory = False`` on the factory): their coordinator's arrays are then its
    own private memory, and the run's memory is estimated per process."""
    return bool(getattr(factory, "shares_memory", True))
