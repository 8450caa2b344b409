"""Worker halves of the MLP methods: each binds to arena views once and computes in place.

No worker copies the dataset or the full model: minibatch rows are taken from the shared
``X_train``, the model is read (and, for IST, written back by index) in the shared
``model`` vector, and each worker's trained values live in its own row of ``sub``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ist_cli.kernels import mlp as kernels
from ist_cli.models.mlp import B, net_layout
from ist_cli.models.subnet import neuron_index, subnet_layout
from ist_cli.seeding import stream


def minibatches(shard: np.ndarray, steps: int, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """(steps, batch) row ids: a walk through fresh random permutations of the worker's shard.

    A shard smaller than the batch is repeated (rows appear twice in a batch) rather than
    giving a smaller batch, so every step of every worker has the same batch size.
    """
    need = steps * batch_size
    reps = -(-need // shard.size)
    order = np.concatenate([shard[rng.permutation(shard.size)] for _ in range(reps)])
    return np.ascontiguousarray(order[:need].reshape(steps, batch_size))


class _MLPWorker:
    """What all MLP workers share: settings, arena views, minibatch drawing."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings

    def setup(self, arrays: dict[str, np.ndarray], worker: int) -> None:
        s = self.settings
        self.worker = worker
        self.X = arrays["X_train"]
        self.y = arrays["y_train"]
        bounds = arrays["shard_bounds"]
        self.shard = arrays["shard_index"][bounds[worker] : bounds[worker + 1]]
        self.model = arrays["model"]
        self.full = net_layout(s["widths"], s["batch_norm"])
        self.grad = arrays["grad"][worker]
        self.velocity = arrays["velocity"][worker] if "velocity" in arrays else self.grad[:0]
        self.sub = arrays["sub"][worker] if "sub" in arrays else None
        self.arrays = arrays
        kernels.warm_up(s["dtype"])  # load compiled kernels now, not inside round 1's timing

    def batches(self, round_index: int, steps: int) -> np.ndarray:
        rng = stream(self.settings["seed"], "worker", round_index, self.worker)
        return minibatches(self.shard, steps, self.settings["batch_size"], rng)

    def train(self, layout: Any, params: np.ndarray, round_index: int, scale: float) -> float:
        s = self.settings
        return float(kernels.train_steps(
            self.X, self.y, self.batches(round_index, s["local_steps"]), params, layout.offsets, layout.widths,
            s["batch_norm"], scale, s["lr"], s["momentum"], self.grad, self.velocity, layout.size,
        ))


class ISTWorker(_MLPWorker):
    """Gather this round's subnet, run R local steps, write it back by index (blocks are disjoint)."""

    def setup(self, arrays: dict[str, np.ndarray], worker: int) -> None:
        super().setup(arrays, worker)
        s = self.settings
        self.layout = subnet_layout(s["widths"], s["n_workers"], worker, s["batch_norm"])
        self.plans = [arrays[f"plan{h}"] for h in range(len(s["widths"]) - 2)]

    def step(self, round_index: int, payload: Any) -> float:
        full, layout = self.full, self.layout
        neurons, starts = neuron_index(self.settings["widths"], self.plans, self.worker)
        kernels.gather_subnet(self.model, full.offsets, full.widths, self.sub, layout.offsets, layout.widths,
                              neurons, starts)
        self.velocity[: layout.size] = 0.0  # a new subnet each round: momentum starts afresh
        loss = self.train(layout, self.sub, round_index, self.settings["scale"])
        # Safe in parallel: other workers' blocks touch other entries of the model; the
        # output bias, which every worker holds, is left to the coordinator to average.
        kernels.scatter_subnet(self.model, full.offsets, full.widths, self.sub, layout.offsets, layout.widths,
                               neurons, starts, True)
        return loss


class ReplicaWorker(_MLPWorker):
    """local-SGD and single: R steps on a full-model replica that starts from the server model."""

    def step(self, round_index: int, payload: Any) -> float:
        size = self.full.size
        self.sub[:size] = self.model
        return self.train(self.full, self.sub, round_index, 1.0)


class DPWorker(_MLPWorker):
    """Data parallel: the full model's gradient on one batch, into this worker's ``grad`` row."""

    def step(self, round_index: int, payload: Any) -> float:
        s, full = self.settings, self.full
        rows = self.batches(round_index, 1)[0]
        return float(kernels.loss_and_grad(self.model, full.offsets, full.widths, s["batch_norm"], 1.0,
                                           self.X[rows], self.y[rows], self.grad))


def output_bias_offset(widths: list[int], n_workers: int, worker: int, batch_norm: bool) -> int:
    """Where a worker's subnet keeps the output bias (its offset depends on the block sizes)."""
    layout = subnet_layout(widths, n_workers, worker, batch_norm)
    return int(layout.offsets[layout.n_layers - 1, B])
