"""The coordinator and worker halves of top-k compressed data-parallel SGD.

Every round each worker computes the full model's gradient on one minibatch (as ``dp``), then
sends only its ``k`` largest-magnitude entries: ``k`` values and their ``k`` int32 indices. The
coordinator scatters them into dense gradients (zero elsewhere), averages them and takes the
same (momentum) SGD step as ``dp``; the new model goes down whole.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ist_cli.algorithms.mlp.dp import DataParallel, DPWorker
from ist_cli.comm import INDEX_BYTES, Traffic, server_traffic
from ist_cli.runtime.arena import ArraySpec
from ist_cli.runtime.transport import Exchange, Region, WorkerProgram
from ist_topk_dp import TopKDPPlan


class TopKWorker(DPWorker):
    """Down: the model; up: its top-k values and indices (rows ``topk_values``, ``topk_index``)."""

    def setup(self, arrays: dict[str, np.ndarray], worker: int) -> None:
        super().setup(arrays, worker)
        self.values = arrays["topk_values"][worker]
        self.index = arrays["topk_index"][worker]

    def exchange(self, round_index: int) -> Exchange:
        return Exchange(down=(Region("model"),),
                        up=(Region("topk_values", self.worker), Region("topk_index", self.worker)))

    def step(self, round_index: int, payload: Any) -> float:
        loss = super().step(round_index, payload)
        grad, k = self.grad[: self.full.size], self.index.size
        # ties broken by position (a stable sort): the same entries whatever the process
        top = np.sort(np.argsort(-np.abs(grad), kind="stable")[:k])
        self.index[...] = top
        self.values[...] = grad[top]
        return loss


class TopKDP(DataParallel):
    worker_class = TopKWorker
    plan = TopKDPPlan

    def k(self) -> int:
        return max(1, math.ceil(self.layout.size * self.settings.option("topk_fraction")))

    def steps_per_round(self) -> int:
        return 1  # one gradient a round, as dp (local_steps is not one of this method's settings)

    def buffers(self) -> ArraySpec:
        shape = (self.n_workers, self.k())
        return {**super().buffers(), "topk_values": (shape, self.dtype.str), "topk_index": (shape, "<i4")}

    def worker_program(self) -> WorkerProgram:
        program = super().worker_program()
        program.can_allreduce = False
        return program

    def aggregate(self, arrays: dict[str, np.ndarray], round_index: int, results: Sequence[Any]) -> None:
        """Each worker's gradient row becomes its sparse gradient; then ``dp``'s averaged step."""
        grads = arrays["grad"]
        grads[...] = 0
        for worker in range(self.n_workers):
            grads[worker, arrays["topk_index"][worker]] = arrays["topk_values"][worker]
        super().aggregate(arrays, round_index, results)

    def round_traffic(self, round_index: int) -> Traffic:
        """Up: k values and k int32 indices per worker; down: the whole model."""
        n, value = self.n_workers, self.dtype.itemsize
        return server_traffic(np.full(n, float(self.k() * (value + INDEX_BYTES))),
                              np.full(n, float(self.layout.size * value)))
