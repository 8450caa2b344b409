"""Exact communication accounting and the alpha-beta network model (docs/algorithms.md#communication).

Algorithms describe what crosses the network in a round as a ``Traffic``: bytes and
messages per worker, up (worker to server/peers) and down. ``NetworkModel`` turns that
into modelled seconds. Keeping the two apart lets one algorithm be priced on any topology.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

INDEX_BYTES = 4  # a coordinate/neuron index travels as int32

_SIZE_UNITS = {
    "bit": 1 / 8, "kbit": 1e3 / 8, "mbit": 1e6 / 8, "gbit": 1e9 / 8, "tbit": 1e12 / 8,
    "b": 1.0, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
}
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def _quantity(value: Any, pattern: str, units: Mapping[str, float], expects: str, *, positive: bool,
              default_unit: str | None = None) -> float:
    """A number with a unit (``pattern`` captures both) in base units; a bare number is taken as is."""
    def fits(number: float) -> bool:
        return (number > 0 if positive else number >= 0) and math.isfinite(number)

    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # a TOML integer beyond float range
            raise ValueError(expects) from None
        if not fits(number):
            raise ValueError(expects)
        return number
    match = re.fullmatch(pattern, str(value))
    unit = (match.group(2).lower() or default_unit) if match else None
    if not match or unit not in units:
        raise ValueError(expects)
    try:
        number = float(match.group(1)) * units[unit]
    except ValueError:
        raise ValueError(expects) from None
    if not fits(number):
        raise ValueError(expects)
    return number


def parse_bandwidth(value: Any) -> float:
    """Bandwidth in bytes per second from e.g. ``10Gbit``, ``1.25GB`` (per second implied)."""
    return _quantity(value, r"\s*([0-9.eE+-]+)\s*([A-Za-z]+)(?:/s|ps)?\s*", _SIZE_UNITS,
                     "a bandwidth > 0 such as 10Gbit, 100Mbit or 1GB", positive=True)


def parse_latency(value: Any) -> float:
    """Latency in seconds from e.g. ``50us``, ``1ms``, ``0``."""
    return _quantity(value, r"\s*([0-9.eE+-]+)\s*([a-zµ]*)\s*", _TIME_UNITS, "a latency >= 0 such as 50us, 1ms or 0",
                     positive=False, default_unit="s")


def parse_link(value: str) -> tuple[float, float]:
    """``BANDWIDTH,LATENCY`` (either order, e.g. ``1Gbit,100us``) as (latency seconds, bytes per second);
    each part must carry its unit, which tells which is which."""
    expects = "a bandwidth and a latency with units, such as 1Gbit,100us"
    parts = [part.strip() for part in str(value).split(",")]
    if len(parts) != 2:
        raise ValueError(expects)
    found: dict[str, float] = {}
    for part in parts:
        kinds = {}
        for kind, parse in (("bandwidth", parse_bandwidth), ("latency", parse_latency)):
            try:
                kinds[kind] = parse(part)
            except ValueError:
                pass
        if len(kinds) != 1 or not re.search(r"[A-Za-zµ]", part):
            raise ValueError(expects)
        found.update(kinds)
    if set(found) != {"bandwidth", "latency"}:
        raise ValueError(expects)
    return found["latency"], found["bandwidth"]


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
    #: ``"pairs"`` only: (2, n+1, n+1) bytes from rank row to rank column in the down and the up
    #: phase (rank 0 the coordinator, rank i+1 worker i)
    pairs: np.ndarray | None = None

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


def pair_traffic(pairs: np.ndarray) -> Traffic:
    """A round of direct messages between ranks (the partitioned server): ``pairs[phase, src, dst]``.

    A worker's ``bytes_down`` is what it receives in the down phase, its ``bytes_up`` what it
    sends in the up phase; each nonzero entry is one message.
    """
    down, up = pairs[0, :, 1:].sum(axis=0), pairs[1, 1:, :].sum(axis=1)
    messages = (pairs[0, :, 1:] > 0).sum(axis=0) + (pairs[1, 1:, :] > 0).sum(axis=1)
    return Traffic(up.astype(np.float64), down.astype(np.float64), messages.astype(np.float64), "pairs",
                   pairs.astype(np.float64))


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
        ``pairs`` (the partitioned server): each ordered pair of ranks has its own link and
        all links carry their bytes at once, so a phase takes one latency plus its busiest
        link's bytes over the bandwidth (the topology does not change this).
        ``allreduce`` (and any traffic on ``ring``): links are per worker and full-duplex,
        so a worker's time is its messages' latency plus the larger direction's bytes; the
        round takes as long as the slowest worker.
        """
        if traffic.bytes_up.size == 0 or (traffic.total_up == 0 and traffic.total_down == 0):
            return 0.0
        if traffic.pairs is not None:  # every link its own, in parallel; the up phase follows the down phase
            return sum(self.latency + float(phase.max()) / self.bandwidth for phase in traffic.pairs if phase.any())
        if traffic.pattern == "allreduce" or self.topology == "ring":
            per_worker = traffic.messages * self.latency + np.maximum(traffic.bytes_up, traffic.bytes_down) / self.bandwidth
            return float(per_worker.max())
        return 2.0 * self.latency + (traffic.total_down + traffic.total_up) / self.bandwidth

    def link_bytes(self, traffic: Traffic) -> tuple[str, np.ndarray]:
        """(kind, bytes each link carries in the round), links as ``round_time`` prices them.

        ``pairs``: every ordered pair of ranks, both phases, ((n+1)², rank-major);
        ``worker`` (all-reduce, or any traffic on ``ring``): each worker's link in each
        direction apart, full-duplex (2n: up, then down); ``server`` (``ps``): the server's one
        link, which carries every worker's bytes both ways (1). Links of one kind come in the
        same order every round, so a run adds them up per kind (``bytes_busiest_link``).
        """
        if traffic.pairs is not None:
            return "pairs", traffic.pairs.sum(axis=0).ravel()
        if traffic.pattern == "allreduce" or self.topology == "ring":
            return "worker", np.concatenate([traffic.bytes_up, traffic.bytes_down])
        return "server", np.array([traffic.total_up + traffic.total_down])
