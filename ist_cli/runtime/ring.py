"""Ring all-reduce (sum) among the worker ranks of an MPI job, with its bytes counted.

The vector is cut into n nearly equal chunks. Reduce-scatter: in n - 1 steps each rank
sends one chunk to its right neighbour and adds the chunk it receives from its left one;
then rank r holds the full sum of chunk r + 1. All-gather: n - 1 more steps pass the summed
chunks round the ring. Every rank sends and receives 2(n - 1) messages; over all ranks each
chunk crosses n - 1 links in each phase, so the bytes sum to 2(n - 1) times the vector's:
``comm.allreduce_traffic`` (each worker's share is 2(n - 1)/n of it exactly when n divides
the vector's length). The sums are taken in ring order, not in worker order, so the result
may differ from a worker-ordered sum in the last bit.

Waiting polls with a short sleep (``runtime.mpi``'s reason: a blocking MPICH call spins a
core the rank being waited for may need).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

TAG_RING = 11
_POLL_SLEEP = 0.0002


def _wait_all(MPI: Any, requests: list[Any]) -> None:
    spins = 0
    while not MPI.Request.Testall(requests):
        spins += 1
        if spins > 50:
            time.sleep(_POLL_SLEEP)


def ring_allreduce(comm: Any, MPI: Any, x: np.ndarray) -> tuple[int, int]:
    """Replace the contiguous 1-D ``x`` on every rank of ``comm`` by the sum over ranks, in place;
    returns (bytes this rank sent, bytes it received)."""
    n, rank = comm.Get_size(), comm.Get_rank()
    if n == 1:
        return 0, 0
    bounds = [x.size * k // n for k in range(n + 1)]
    right, left = (rank + 1) % n, (rank - 1) % n
    scratch = np.empty(bounds[1] - bounds[0] + 1, dtype=x.dtype)
    sent = received = 0

    def chunk(k: int) -> np.ndarray:
        k %= n
        return x[bounds[k] : bounds[k + 1]]

    for phase in ("reduce", "gather"):
        for s in range(n - 1):
            out = chunk(rank - s) if phase == "reduce" else chunk(rank + 1 - s)
            into = chunk(rank - s - 1) if phase == "reduce" else chunk(rank - s)
            incoming = scratch[: into.size]
            requests = [comm.Irecv(incoming, source=left, tag=TAG_RING), comm.Isend(out, dest=right, tag=TAG_RING)]
            _wait_all(MPI, requests)
            if phase == "reduce":
                into += incoming
            else:
                into[...] = incoming
            sent += out.nbytes
            received += incoming.nbytes
    return sent, received
