"""``/rounds``: what every round cost, kept so a finished run can be priced on another network.

The metrics rows hold cumulative totals priced on the run's own network model; this series
holds the inputs of that pricing, per round: the slowest worker's and the coordinator's
compute (thread CPU and wall seconds) and the round's ``Traffic`` per worker link (bytes up,
bytes down, messages, and whether it was an all-reduce). ``repricing`` turns it back into
``comm_time_model`` and ``sim_time`` on any ``NetworkModel`` (docs/schema.md#rounds).

Rows are buffered and written in batches (at each metrics row and at the end), so a fast
round costs no HDF5 write of its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ist_cli.comm import Traffic
from ist_cli.runtime.transport import StepTime

#: column -> shape of one round's entry (``n`` stands for the number of workers)
COLUMNS: dict[str, tuple[str, ...]] = {
    "round": (),
    "worker_compute": (),
    "worker_compute_wall": (),
    "coordinator_compute": (),
    "coordinator_compute_wall": (),
    "bytes_up": ("n",),
    "bytes_down": ("n",),
    "messages": ("n",),
    "allreduce": (),
}


class RoundLog:
    """The rows of ``/rounds`` not yet written."""

    def __init__(self, n_workers: int) -> None:
        self.n_workers = n_workers
        self._rows: list[tuple[Any, ...]] = []

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Each column's per-round shape, for ``RunFileWriter.create_rounds``."""
        return {name: tuple(self.n_workers for _ in dims) for name, dims in COLUMNS.items()}

    def add(self, round_index: int, slowest_worker: StepTime, coordinator: StepTime, traffic: Traffic) -> None:
        self._rows.append((round_index, slowest_worker.cpu, slowest_worker.wall, coordinator.cpu, coordinator.wall,
                           traffic.bytes_up, traffic.bytes_down, traffic.messages,
                           1.0 if traffic.pattern == "allreduce" else 0.0))

    def flush(self, writer: Any) -> None:
        """Append the buffered rows through ``writer`` (a ``RunFileWriter``) and forget them."""
        if not self._rows:
            return
        columns = {}
        for index, name in enumerate(COLUMNS):
            values = [row[index] for row in self._rows]
            columns[name] = np.asarray(values, dtype=np.int64 if name == "round" else np.float64)
        writer.append_rounds(columns)
        self._rows = []


def traffic_of(rounds: dict[str, np.ndarray], index: int) -> Traffic:
    """Round ``index`` (row of ``/rounds``) as the ``Traffic`` the run priced."""
    return Traffic(np.asarray(rounds["bytes_up"][index], dtype=np.float64),
                   np.asarray(rounds["bytes_down"][index], dtype=np.float64),
                   np.asarray(rounds["messages"][index], dtype=np.float64),
                   "allreduce" if rounds["allreduce"][index] else "ps")
