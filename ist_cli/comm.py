"""Exact communication accounting and the alpha-beta network model (docs/algorithms.md#communication).

Algorithms describe what crosses the network in a round as a ``Traffic``: bytes and
messages per worker, up (worker to server/peers) and down. ``NetworkModel`` turns that
into modelled seconds. Keeping the two apart lets one algorithm be priced on any topology.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ist_cli.config import parse_bandwidth, parse_latency

INDEX_BYTES = 4  # a coordinate/neuron index travels as int32


@dataclass(frozen=True)
class Traffic:
    """What one round moves, per worker: ``bytes_up[i]``, ``bytes_down[i]``, ``messages[i]``.

    ``pattern`` is ``"ps"`` (every byte goes through one server link) or ``"allreduce"``
    (ring all-reduce: workers exchange with neighbours, no server).
    """

    bytes_up: np.ndarray
    bytes_down: np.ndarray
    messages: np.ndarray
    pattern: str = "ps"

    @property
    def total_up(self) -> float:
        return float(self.bytes_up.sum())

    @property
    def total_down(self) -> float:
        return float(self.bytes_down.sum())


def server_traffic(bytes_up: Any, bytes_down: Any) -> Traffic:
    """Server-mediated round: each worker receives one message and sends one back."""
    up = np.asarray(bytes_up, dtype=np.float64)
    down = np.asarray(bytes_down, dtype=np.float64)
    return Traffic(up, down, np.full(up.shape, 2.0), "ps")


def allreduce_traffic(n_workers: int, payload_bytes: float) -> Traffic:
    """Ring all-reduce of ``payload_bytes`` per worker: 2(n-1)/n of it each way, 2(n-1) messages."""
    if n_workers == 1:
        zeros = np.zeros(1)
        return Traffic(zeros, zeros.copy(), zeros.copy(), "allreduce")
    share = 2.0 * (n_workers - 1) / n_workers * payload_bytes
    each = np.full(n_workers, share)
    return Traffic(each, each.copy(), np.full(n_workers, 2.0 * (n_workers - 1)), "allreduce")


def averaging_traffic(n_workers: int, payload_bytes: float, topology: str) -> Traffic:
    """Averaging a full vector: ring all-reduce on ``ring``, up and down through the server on ``ps``."""
    if topology == "ring":
        return allreduce_traffic(n_workers, payload_bytes)
    return server_traffic(np.full(n_workers, float(payload_bytes)), np.full(n_workers, float(payload_bytes)))


@dataclass(frozen=True)
class NetworkModel:
    """alpha (seconds per message) and beta (bytes per second) of every link."""

    latency: float
    bandwidth: float
    topology: str = "ps"

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> NetworkModel:
        return cls(parse_latency(config["latency"]), parse_bandwidth(config["bandwidth"]), config["topology"])

    def round_time(self, traffic: Traffic) -> float:
        """Modelled seconds for one round's traffic.

        ``ps``: the server's link carries every worker's bytes; the down phase (plan and
        parameters) precedes the up phase (results), each costing one latency.
        ``allreduce`` (and any traffic on ``ring``): links are per worker and full-duplex,
        so a worker's time is its messages' latency plus the larger direction's bytes; the
        round takes as long as the slowest worker.
        """
        if traffic.bytes_up.size == 0 or (traffic.total_up == 0 and traffic.total_down == 0):
            return 0.0
        if traffic.pattern == "allreduce" or self.topology == "ring":
            per_worker = traffic.messages * self.latency + np.maximum(traffic.bytes_up, traffic.bytes_down) / self.bandwidth
            return float(per_worker.max())
        return 2.0 * self.latency + (traffic.total_down + traffic.total_up) / self.bandwidth
