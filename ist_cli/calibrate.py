"""``ist calibrate``: measure the links between rank 0 and each worker rank, fit alpha and beta.

A ping-pong of one message size between rank 0 and worker w takes 2 (alpha + s / beta);
half the fastest round trip of ``repeats`` is the one-way time t(s) (the fastest, not the median: on a shared machine a
round trip that waited for a core measures the scheduler, not the link). One alpha and one
beta (the model prices every link alike) are fitted to all workers' t(s) so that the
largest relative miss is smallest (a minimax fit, a small linear program), with alpha,
1/beta >= 0: small and large messages weigh alike, and the residual printed, that largest
relative miss over every measured (worker, size), is what the fit minimised.

MPI libraries switch protocols with message size (eager, then rendezvous), so no single
alpha and beta fit every size: measure the sizes your runs send (``--sizes``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.optimize import linprog

DEFAULT_SIZES = tuple(2**k for k in range(16, 23))  # 64 KiB .. 4 MiB: what IST/DP rounds send
DEFAULT_REPEATS = 50
_TAG = 11


@dataclass(frozen=True)
class Calibration:
    latency: float  # alpha, seconds per message
    bandwidth: float  # beta, bytes per second
    residual: float  # max relative error of the fit over the measurements
    sizes: list[int]
    seconds: list[list[float]]  # [worker][size]: measured one-way time (half the fastest round trip)

    @property
    def flags(self) -> str:
        return f"--latency {self.latency * 1e6:.4g}us --bandwidth {self.bandwidth / 1e9:.4g}GB"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "flags": self.flags}


def fit_alpha_beta(sizes: np.ndarray, seconds: np.ndarray) -> tuple[float, float, float]:
    """(alpha, beta, residual) of t = alpha + s / beta fitted to ``seconds`` (rows: workers)."""
    s = np.broadcast_to(sizes, seconds.shape).ravel().astype(np.float64)
    t = seconds.ravel()
    # variables (alpha, 1/beta, e): minimise e subject to |alpha + s/beta - t| / t <= e
    relative = np.column_stack([1.0 / t, s / t, -np.ones_like(t)])
    bounds = np.column_stack([-1.0 / t, -s / t, -np.ones_like(t)])
    solution = linprog([0.0, 0.0, 1.0], A_ub=np.vstack([relative, bounds]),
                       b_ub=np.concatenate([np.ones_like(t), -np.ones_like(t)]), bounds=[(0, None)] * 3)
    alpha, inverse_beta, _ = solution.x
    predicted = alpha + s * inverse_beta
    residual = float(np.max(np.abs(predicted - t) / t))
    return float(alpha), float(1.0 / inverse_beta) if inverse_beta > 0 else float("inf"), residual


def ping_pong(comm: Any, sizes: tuple[int, ...], repeats: int) -> np.ndarray | None:
    """Run on every rank; rank 0 returns one-way seconds [worker][size], the others None.

    Sizes are interleaved within each repeat, so a burst of load elsewhere on the machine
    slows one trip of every size rather than every trip of one size.
    """
    rank, workers = comm.Get_rank(), comm.Get_size() - 1
    buffers = [np.zeros(size, dtype=np.uint8) for size in sizes]
    trips = np.full((workers, len(sizes), repeats), np.inf)
    for worker in range(1, workers + 1):
        for repeat in range(-2, repeats):  # two unrecorded passes warm the path up
            for index, buffer in enumerate(buffers):
                comm.Barrier()
                if rank == 0:
                    start = time.perf_counter()
                    comm.Send(buffer, dest=worker, tag=_TAG)
                    comm.Recv(buffer, source=worker, tag=_TAG)
                    if repeat >= 0:
                        trips[worker - 1, index, repeat] = time.perf_counter() - start
                elif rank == worker:
                    comm.Recv(buffer, source=0, tag=_TAG)
                    comm.Send(buffer, dest=0, tag=_TAG)
    return trips.min(axis=2) / 2 if rank == 0 else None


def calibrate(comm: Any, sizes: tuple[int, ...] = DEFAULT_SIZES, repeats: int = DEFAULT_REPEATS) -> Calibration | None:
    """Measure and fit on rank 0 (``None`` on the other ranks)."""
    seconds = ping_pong(comm, sizes, repeats)
    if seconds is None:
        return None
    alpha, beta, residual = fit_alpha_beta(np.asarray(sizes, dtype=np.float64), seconds)
    return Calibration(alpha, beta, residual, list(sizes), seconds.tolist())
