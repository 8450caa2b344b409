"""Local SGD on the MLP, and ``single`` (local SGD with one worker holding all the data).

Each worker starts the round from the server model, takes R SGD steps on its replica
(its momentum carries over between rounds) and the coordinator averages the replicas.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ist_cli.algorithms.mlp.common import MLPMethod, MLPWorker
from ist_cli.algorithms.plans import LocalSGDPlan, SinglePlan
from ist_cli.comm import Traffic, averaging_traffic
from ist_cli.runtime.transport import Exchange, Region


class ReplicaWorker(MLPWorker):
    """Down: the model into its replica (its ``sub`` row); up: the trained replica."""

    def setup(self, arrays: dict[str, np.ndarray], worker: int) -> None:
        super().setup(arrays, worker)
        self.sub = arrays["sub"][worker]
        self.grad = arrays["grad"][worker]
        self.velocity = arrays["velocity"][worker]

    def exchange(self, round_index: int) -> Exchange:
        replica = self.pruned(Region("sub", self.worker, self.full.size))
        return Exchange(down=(replica,), up=(replica,))

    def pack_down(self, round_index: int) -> None:
        self.sub[: self.full.size] = self.model

    def step(self, round_index: int, payload: Any) -> float:
        return self.train(self.full, self.sub, self.grad, self.velocity, round_index, self.mask)


class LocalSGD(MLPMethod):
    worker_class = ReplicaWorker
    plan = LocalSGDPlan

    def aggregate(self, arrays: dict[str, np.ndarray], round_index: int, results: Sequence[Any]) -> None:
        arrays["model"][...] = arrays["sub"][:, : self.layout.size].sum(axis=0, dtype=np.float64) / self.n_workers

    def round_traffic(self, round_index: int) -> Traffic:
        """The replica averaged once per round (ring: all-reduce); with a mask, only its kept values."""
        payload = float(self.kept_total() * self.dtype.itemsize)
        return averaging_traffic(self.n_workers, payload, self.settings.network.topology)


class Single(LocalSGD):
    """One worker with the whole training set: the baseline nothing is communicated for."""

    plan = SinglePlan

    def make_shards(self) -> list[np.ndarray]:
        return [np.arange(self.data.n_train, dtype=np.int64)]

    def round_traffic(self, round_index: int) -> Traffic:
        zero = np.zeros(1)
        return Traffic(zero, zero.copy(), zero.copy())
