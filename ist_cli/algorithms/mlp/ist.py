"""Independent Subnetwork Training on the MLP (Yuan et al.; docs/algorithms.md).

Each round the coordinator partitions every hidden layer's neurons into one block per
worker. Worker i gathers the subnet on its blocks (all inputs, all outputs) out of the full
model, trains it for R local steps and writes it back by index: the blocks are disjoint, so
every worker writes its own entries of the model. The output bias, which every subnet
holds, is the one shared parameter: the coordinator averages it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ist_cli.algorithms.mlp.common import MLPMethod, MLPWorker, Training
from ist_cli.algorithms.plans import ISTPlan
from ist_cli.comm import INDEX_BYTES, Traffic, server_traffic
from ist_cli.kernels import mlp as kernels
from ist_cli.kernels import sgd as sgd_kernels
from ist_cli.kernels.cache import kernels_cached
from ist_cli.models.mlp import B
from ist_cli.models.shards import draw_plans
from ist_cli.models.subnet import (
    block_sizes,
    ist_subnet_sizes,
    neuron_index,
    subnet_layout,
)
from ist_cli.runtime.arena import ArraySpec
from ist_cli.runtime.transport import Exchange, Region
from ist_cli.settings import MLPSettings


class ISTWorker(MLPWorker):
    """Down: its subnet's values (``sub``) and hidden-neuron ids (``ids``); up: the trained subnet."""

    def setup(self, arrays: dict[str, np.ndarray], worker: int) -> None:
        super().setup(arrays, worker)
        t = self.training
        self.layout = subnet_layout(t.widths, t.n_workers, worker, t.batch_norm)
        self.plans = [arrays[f"plan{h}"] for h in range(len(t.widths) - 2)]
        self.sub = arrays["sub"][worker]
        self.ids = arrays["ids"][worker]
        self.grad = arrays["grad"][worker]
        self.velocity = arrays["velocity"][worker]
        self.hidden = int(self.layout.widths[1:-1].sum())
        self.submask = arrays["submask"][worker] if "submask" in arrays else self.mask

    def warm_kernels(self) -> None:
        super().warm_kernels()
        kernels.warm_up_subnets(self.training.dtype)

    def exchange(self, round_index: int) -> Exchange:
        size = self.layout.size
        values = self.pruned(Region("sub", self.worker, size), Region("submask", self.worker, size))
        # the ids first: a worker derives its values' mask from them (``derive_masks``)
        return Exchange(down=(Region("ids", self.worker, self.hidden), values), up=(values,))

    def _neurons(self) -> tuple[np.ndarray, np.ndarray]:
        return neuron_index(self.training.widths, self.plans, self.worker)

    def pack_down(self, round_index: int) -> None:
        neurons, starts = self._neurons()
        full, layout = self.full, self.layout
        kernels.gather_subnet(full=self.model, full_offsets=full.offsets, full_widths=full.widths, sub=self.sub,
                              sub_offsets=layout.offsets, sub_widths=layout.widths, neurons=neurons, starts=starts)
        self.ids[: self.hidden] = neurons[starts[1] : starts[-2]]  # what the worker is told: its hidden neurons
        if self.mask.size:
            self.derive_masks(round_index)

    def step(self, round_index: int, payload: Any) -> float:
        if self.training.study.momentum:  # a new subnet each round: momentum starts afresh
            self.velocity[: self.layout.size] = 0.0  # (plain SGD never reads it: its pages stay untouched)
        return self.train(self.layout, self.sub, self.grad, self.velocity, round_index, self.submask)

    def derive_masks(self, round_index: int) -> None:
        """The subnet's part of the fixed pruning mask (resident), gathered like its weights from
        the hidden-neuron ids (``ids``): the mask itself never crosses per round. It is the mask
        of the subnet's values on the wire, so both sides compute it: the coordinator (or, with
        shared memory, the worker) in ``pack_down``, a worker without shared memory on arrival."""
        widths = self.layout.widths
        neurons = np.concatenate([np.arange(widths[0]), self.ids[: self.hidden].astype(np.int64),
                                  np.arange(widths[-1])])
        starts = np.concatenate([[0], np.cumsum(widths)]).astype(np.int64)
        full, layout = self.full, self.layout
        kernels.gather_subnet(full=self.mask, full_offsets=full.offsets, full_widths=full.widths, sub=self.submask,
                              sub_offsets=layout.offsets, sub_widths=layout.widths, neurons=neurons, starts=starts)

    def unpack_up(self, round_index: int) -> None:
        # Safe in parallel: other workers' blocks touch other entries of the model; the
        # output bias, which every worker holds, is left to the coordinator to average.
        neurons, starts = self._neurons()
        full, layout = self.full, self.layout
        kernels.scatter_subnet(full=self.model, full_offsets=full.offsets, full_widths=full.widths, sub=self.sub,
                               sub_offsets=layout.offsets, sub_widths=layout.widths, neurons=neurons, starts=starts,
                               skip_output_bias=True)


def output_bias_offset(widths: Sequence[int], n_workers: int, worker: int, batch_norm: bool) -> int:
    """Where a worker's subnet keeps the output bias (its offset depends on the block sizes)."""
    layout = subnet_layout(widths, n_workers, worker, batch_norm)
    return int(layout.offsets[layout.n_layers - 1, B])


class IST(MLPMethod):
    worker_class = ISTWorker
    plan = ISTPlan

    def __init__(self, settings: MLPSettings) -> None:
        super().__init__(settings)
        # where each worker's subnet keeps the shared output bias: fixed for the run
        self._output_bias_offsets = [output_bias_offset(self.widths, self.n_workers, worker, self.batch_norm)
                                     for worker in range(self.n_workers)]
        self._server_bytes, self._rounds_counted = 0.0, 0

    def initialize(self, arrays: dict[str, np.ndarray]) -> None:
        super().initialize(arrays)
        # On a first run this process compiles what train_steps calls last (the loss and the
        # update) and the subnet kernels while the fork server compiles train_steps (two cores);
        # the server then loads them from numba's cache (``ISTPlan.preload``). Once they are
        # cached this process never calls them: loading them would only delay round 1.
        dtype = self.dtype.name
        if not kernels_cached((f"ist_cli.kernels.sgd:warm_up:{dtype}", f"ist_cli.kernels.mlp:warm_up_subnets:{dtype}")):
            sgd_kernels.warm_up(dtype)
            kernels.warm_up_subnets(dtype)

    def training(self) -> Training:
        scale = float(self.n_workers) if self.settings.scale_by_width else 1.0
        return replace(super().training(), scale=scale)

    def row_size(self) -> int:
        """The largest subnet's values."""
        return int(ist_subnet_sizes(self.widths, self.n_workers, self.batch_norm)[0].max())

    def buffers(self) -> ArraySpec:
        n = self.n_workers
        indices = ist_subnet_sizes(self.widths, n, self.batch_norm)[1]
        spec = {**super().buffers(), "ids": ((n, max(int(indices.max()), 1)), "i4")}  # int32: INDEX_BYTES each
        for h, width in enumerate(self.widths[1:-1]):
            spec[f"plan{h}"] = ((n, int(block_sizes(width, n).max())), "i8")
        return spec

    def plan_round(self, arrays: dict[str, np.ndarray], round_index: int) -> None:
        super().plan_round(arrays, round_index)
        plans = draw_plans(self.settings.partition_rule, self.widths[1:-1], self.n_workers, self.settings.seed,
                           round_index)
        for h, plan in enumerate(plans):
            arrays[f"plan{h}"][...] = plan
        if self.study.sparse:
            self._kept_per_worker = self._kept_values(arrays["mask"], plans)

    def _kept_values(self, mask: np.ndarray, plans: Sequence[np.ndarray]) -> np.ndarray:
        """Per worker: the kept values of its subnet this round (what its messages carry)."""
        full, kept = self.layout, np.zeros(self.n_workers)
        for worker in range(self.n_workers):
            layout = subnet_layout(self.widths, self.n_workers, worker, self.batch_norm)
            neurons, starts = neuron_index(self.widths, plans, worker)
            part = np.empty(layout.size, dtype=mask.dtype)
            kernels.gather_subnet(full=mask, full_offsets=full.offsets, full_widths=full.widths, sub=part,
                                  sub_offsets=layout.offsets, sub_widths=layout.widths, neurons=neurons, starts=starts)
            kept[worker] = part.sum(dtype=np.float64)
        return kept

    def aggregate(self, arrays: dict[str, np.ndarray], round_index: int, results: Sequence[Any]) -> None:
        """Blocks were written back by the workers; only the shared output bias is averaged."""
        model = arrays["model"]
        start = int(self.layout.offsets[self.layout.n_layers - 1, B])
        classes = self.widths[-1]
        total = np.zeros(classes)
        for worker, offset in enumerate(self._output_bias_offsets):
            total += arrays["sub"][worker, offset : offset + classes]
        model[start : start + classes] = total / self.n_workers

    def round_traffic(self, round_index: int) -> Traffic:
        """Worker i receives its subnet's P_i values plus the ids of its hidden neurons and returns P_i values."""
        values, indices = ist_subnet_sizes(self.widths, self.n_workers, self.batch_norm)
        if self.study.sparse:  # the mask is known to all: only kept values cross, no index for them
            values = self._kept_per_worker
        value = self.dtype.itemsize
        traffic = server_traffic(values * value, values * value + indices * INDEX_BYTES)
        self._server_bytes += traffic.total_up + traffic.total_down
        self._rounds_counted += 1
        return traffic

    def summary_extras(self) -> dict[str, Any]:
        """The busiest process's bytes per round: the server's, which sends and receives every subnet."""
        return {**super().summary_extras(), "server": "central",
                "busiest_rank_bytes_per_round": self._server_bytes / max(self._rounds_counted, 1)}
