"""Channel-wise IST on a convolutional network (``--model cnn --algorithm ist``; docs/algorithms.md).

Each round the coordinator partitions every hidden layer's output channels (neurons of a
dense layer) among the workers, tensors joined by a residual addition alike
(``models.channel_subnet``), and writes each worker's channel ids into its ``ids`` row. Worker
i gathers its subnet (per weight layer the kernel slice [its in-channels, its out-channels],
its channels' bias, gamma and beta, the whole classifier bias) from the full model by index,
trains that small dense network for R local steps and writes it back by index: the slices
are disjoint, so every worker writes its own entries. The classifier bias, which every subnet
holds, is the one shared tensor: the coordinator averages it, as IST on the MLP does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ist_cli.algorithms.convnet import ConvNetMethod, ConvWorker
from ist_cli.algorithms.plans import ConvNetISTPlan
from ist_cli.comm import INDEX_BYTES, Traffic, server_traffic
from ist_cli.models.channel_subnet import ChannelSubnets
from ist_cli.models.network_driver import NetworkDriver
from ist_cli.models.subnet_bytes import channel_subnet_sizes
from ist_cli.runtime.arena import ArraySpec
from ist_cli.runtime.transport import Exchange, Region


class ChannelISTWorker(ConvWorker):
    """Down: its channel ids (``ids``) and its subnet's values (``sub``); up: the trained subnet."""

    def setup(self, arrays: dict[str, np.ndarray], worker: int) -> None:
        super().setup(arrays, worker)
        t = self.training
        self.subnets = ChannelSubnets(t.net, t.n_workers)
        self.driver = NetworkDriver(self.subnets.network(worker))
        self.size = self.driver.size
        self.n_ids = int(self.subnets.id_counts()[worker])
        self.shared = self.subnets.shared_span(worker)
        self.ids = arrays["ids"][worker]
        self.sub = arrays["sub"][worker]
        self.grad = arrays["grad"][worker]
        self.velocity = arrays["velocity"][worker]
        self.submask = arrays["submask"][worker] if "submask" in arrays else self.mask
        self._index: tuple[int, np.ndarray] | None = None

    def exchange(self, round_index: int) -> Exchange:
        values = self.pruned(Region("sub", self.worker, self.size), Region("submask", self.worker, self.size))
        # the ids first: a worker derives its values' mask from them (``derive_masks``)
        return Exchange(down=(Region("ids", self.worker, self.n_ids), values), up=(values,))

    def index(self, round_index: int) -> np.ndarray:
        """Where the subnet's values sit in the full model this round (from the ``ids`` row)."""
        if self._index is None or self._index[0] != round_index:
            self._index = (round_index, self.subnets.subnet_index(self.ids, self.worker))
        return self._index[1]

    def pack_down(self, round_index: int) -> None:
        np.take(self.model, self.index(round_index), out=self.sub[: self.size])
        if self.mask.size:
            self.derive_masks(round_index)

    def derive_masks(self, round_index: int) -> None:
        """The subnet's part of the fixed pruning mask (resident), gathered like its values: the
        mask itself never crosses per round."""
        np.take(self.mask, self.index(round_index), out=self.submask[: self.size])

    def step(self, round_index: int, payload: Any) -> float:
        self.velocity[: self.size] = 0.0  # a new subnet each round: momentum starts afresh
        return self.train(self.driver, self.sub, self.grad, self.velocity, round_index, self.submask)

    def unpack_up(self, round_index: int) -> None:
        # Safe in parallel: other workers' slices are other entries of the model; the
        # classifier bias, which every worker holds, is left to the coordinator to average.
        index, (start, stop) = self.index(round_index), self.shared
        self.model[index[:start]] = self.sub[:start]
        self.model[index[stop : self.size]] = self.sub[stop : self.size]


class ChannelIST(ConvNetMethod):
    worker_class = ChannelISTWorker
    plan = ConvNetISTPlan

    def build_model(self) -> None:
        super().build_model()
        self.subnets = ChannelSubnets(self.net, self.n_workers)
        self._shared = [self.subnets.shared_span(worker) for worker in range(self.n_workers)]
        self._kept_per_worker = np.zeros(self.n_workers)

    def row_size(self) -> int:
        """The largest subnet's values."""
        return int(channel_subnet_sizes(self.net, self.n_workers)[0].max())

    def buffers(self) -> ArraySpec:
        ids = ((self.n_workers, max(int(self.subnets.id_counts().max()), 1)), "i4")  # int32: INDEX_BYTES each
        return {**super().buffers(), "ids": ids}

    def plan_round(self, arrays: dict[str, np.ndarray], round_index: int) -> None:
        super().plan_round(arrays, round_index)
        arrays["ids"][...] = self.subnets.draw(self.settings.seed, round_index)
        if self.study.sparse:  # what each worker's messages carry: its subnet's kept values
            self._kept_per_worker = np.array([
                arrays["mask"][self.subnets.subnet_index(arrays["ids"][w], w)].sum(dtype=np.float64)
                for w in range(self.n_workers)])

    def aggregate(self, arrays: dict[str, np.ndarray], round_index: int, results: Sequence[Any]) -> None:
        """Slices were written back by the workers; only the shared classifier bias is averaged."""
        bias = self.layout.params[-1]
        total = np.zeros(bias.size)
        for worker, (start, stop) in enumerate(self._shared):
            total += arrays["sub"][worker, start:stop]
        arrays["model"][bias.offset : bias.offset + bias.size] = total / self.n_workers

    def round_traffic(self, round_index: int) -> Traffic:
        """Worker i receives its subnet's P_i values and its channel ids, and returns P_i values."""
        values, ids = channel_subnet_sizes(self.net, self.n_workers)
        if self.study.sparse:  # the mask is known to all: only kept values cross, no index for them
            values = self._kept_per_worker
        value = self.dtype.itemsize
        return server_traffic(values * value, values * value + ids * INDEX_BYTES)
