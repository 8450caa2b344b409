"""A finished run priced on another network, from its ``/rounds`` series (no re-run).

``comm_time_model`` at a metrics row is the sum, over the rounds up to the row's round, of
``NetworkModel.round_time`` of each round's traffic, added in round order as the run added it;
so on the run's own network the result equals the stored column, and on another it equals a
run made with that ``--latency``/``--bandwidth`` (same formula, same floating-point sums).
``sim_time`` is the stored ``compute_time`` plus that.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ist_cli.comm import NetworkModel, parse_link
from ist_cli.errors import UserError
from ist_cli.io.runfile import RunData
from ist_cli.rounds import traffic_of


@dataclass(frozen=True)
class Link:
    """A network to price runs on, as the user spelled it (``label``) and in base units."""

    label: str
    latency: float
    bandwidth: float

    @classmethod
    def parse(cls, text: str, option: str = "--network") -> Link:
        try:
            latency, bandwidth = parse_link(text)
        except ValueError as exc:
            raise UserError(f"{option}: {text!r} is not allowed; expected {exc}") from None
        return cls(text.replace(" ", ""), latency, bandwidth)

    def model(self, topology: str) -> NetworkModel:
        return NetworkModel(self.latency, self.bandwidth, topology)


def round_times(run: RunData, network: NetworkModel) -> tuple[np.ndarray, np.ndarray]:
    """(rounds, modelled seconds of each round) of ``run``'s ``/rounds`` on ``network``."""
    rounds = run.rounds
    seconds = np.array([network.round_time(traffic_of(rounds, i)) for i in range(len(rounds["round"]))])
    return np.asarray(rounds["round"], dtype=np.int64), seconds


def comm_time_model(run: RunData, network: NetworkModel) -> np.ndarray:
    """The cumulative modelled communication time at each ``/metrics`` row of ``run`` on ``network``."""
    rounds, seconds = round_times(run, network)
    cumulative = np.zeros(len(seconds) + 1)
    total = 0.0
    for index, value in enumerate(seconds):  # in round order, one addition at a time: as the run did
        total += value
        cumulative[index + 1] = total
    done = np.searchsorted(rounds, np.asarray(run.metrics["round"]), side="right")
    return cumulative[done]


def can_reprice(run: RunData) -> bool:
    return bool(run.rounds) and "round" in run.rounds and "topology" in run.config


def repriced(run: RunData, link: Link) -> RunData:
    """``run`` as if it had run on ``link``: ``comm_time_model`` and ``sim_time`` recomputed, the
    config's ``latency`` and ``bandwidth`` replaced by ``network`` (the link as the user spelled
    it), so a report groups by it."""
    comm = comm_time_model(run, link.model(run.config["topology"]))
    metrics = dict(run.metrics)
    metrics["comm_time_model"] = comm
    metrics["sim_time"] = np.asarray(run.metrics["compute_time"]) + comm
    config = {key: value for key, value in run.config.items() if key not in ("latency", "bandwidth")}
    config["network"] = link.label
    attrs = {**run.attrs, "run_id": f"{run.run_id}@{link.label}"}
    return dataclasses.replace(run, metrics=metrics, config=config, attrs=attrs)


def reprice_all(runs: list[RunData], links: list[Link]) -> tuple[list[RunData], list[RunData]]:
    """Every run priced on every link; (re-priced runs, runs without ``/rounds`` that could not be)."""
    ok = [run for run in runs if can_reprice(run)]
    missing = [run for run in runs if not can_reprice(run)]
    return [repriced(run, link) for link in links for run in ok], missing
