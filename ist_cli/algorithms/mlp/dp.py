"""Data-parallel SGD on the MLP: every round each worker computes the full model's gradient
on one minibatch; the coordinator averages them and takes one (momentum) SGD step, keeping
the velocity on the server as PyTorch's DDP + SGD would."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ist_cli.algorithms.mlp.common import MLPMethod, MLPWorker
from ist_cli.algorithms.mlp.mask_and_measures import norm_sq
from ist_cli.algorithms.plans import DPPlan
from ist_cli.comm import Traffic, averaging_traffic
from ist_cli.kernels import mlp as kernels
from ist_cli.kernels.sgd import sgd_update
from ist_cli.runtime.transport import Exchange, Region, WorkerProgram
from ist_cli.settings import MLPSettings


class DPWorker(MLPWorker):
    """Down: the model; up: its gradient on one batch (its ``grad`` row).

    All-reduce mode (``--topology ring`` over MPI): the model is sent once, at start; after
    the step the workers sum their gradients in a ring, and each applies the server's update
    (the same kernel, its own copy of the velocity) to its own model. The coordinator's copy
    stays identical from one averaged gradient a round, worker 0's, which is its only up region.
    """

    can_allreduce = False  # set by ``DataParallel.worker_program`` on a ring
    allreducing = False

    def use_allreduce(self) -> None:
        self.allreducing = True

    def setup(self, arrays: dict[str, np.ndarray], worker: int) -> None:
        super().setup(arrays, worker)
        self.grad = arrays["grad"][worker]
        self.all_grads = arrays["grad"]
        if self.allreducing:
            self.velocity = np.zeros(self.full.size, dtype=self.model.dtype)

    def warm_kernels(self) -> None:
        """A DP worker never trains locally: it computes gradients (and, on a ring, updates)."""
        kernels.warm_up_gradient(self.training.dtype)

    def resident(self, worker: int) -> tuple[Region, ...]:
        model = (Region("model"),) if self.allreducing else ()  # the initial model, once
        return (*super().resident(worker), *model)

    def exchange(self, round_index: int) -> Exchange:
        grad = self.pruned(Region("grad", self.worker, self.full.size))
        if self.allreducing:
            return Exchange(up=(grad,) if self.worker == 0 else ())
        return Exchange(down=(self.pruned(Region("model")),), up=(grad,))

    def allreduce(self, round_index: int) -> tuple[Region, ...]:
        return (self.pruned(Region("grad", self.worker, self.full.size)),) if self.allreducing else ()

    def after_allreduce(self, round_index: int) -> None:
        """The summed gradient becomes the mean, and the server's update is applied here."""
        t, size = self.training, self.full.size
        grad = self.grad[:size]
        grad[...] = (grad.astype(np.float64) / t.n_workers).astype(grad.dtype)
        study = t.study
        sgd_update(params=self.model, grad=grad, velocity=self.velocity, mask=self.mask, size=size,
                   lr=study.schedule.at(round_index - 1), momentum=study.momentum, nesterov=study.nesterov)

    def unpack_up(self, round_index: int) -> None:
        """All-reduce mode, on the coordinator: worker 0's row is the mean gradient; every row
        becomes it, so ``aggregate``'s mean of the rows is that gradient exactly."""
        if self.allreducing and self.worker == 0:
            self.all_grads[1:, : self.full.size] = self.all_grads[0, : self.full.size]

    def step(self, round_index: int, payload: Any) -> float:
        full = self.full
        rows = self.batches(round_index, 1)[0]
        loss = self.loss_and_grad(self.model, self.X[rows], self.y[rows], self.grad)
        if self.mask.size:  # only kept entries are sent: the pruned ones are exactly 0
            self.grad[: full.size][self.mask == 0] = 0.0
        return loss


class DataParallel(MLPMethod):
    worker_class = DPWorker  # one synchronous step per round: ``local_steps`` is pinned to 1
    plan = DPPlan

    def __init__(self, settings: MLPSettings) -> None:
        super().__init__(settings)
        self._server_velocity = np.zeros(self.layout.size, dtype=self.dtype)

    def worker_program(self) -> WorkerProgram:
        program = super().worker_program()
        program.can_allreduce = self.settings.network.topology == "ring"  # a transport may then all-reduce
        return program

    def noise_from_workers(self) -> bool:
        return self.n_workers > 1  # B_small = one worker's batch, B_big = all n of them: no extra gradient

    def aggregate(self, arrays: dict[str, np.ndarray], round_index: int, results: Sequence[Any]) -> None:
        size, n, study = self.layout.size, self.n_workers, self.study
        grads = arrays["grad"][:, :size]
        mean_grad = (grads.sum(axis=0, dtype=np.float64) / n).astype(self.dtype)
        if self._noise is not None and self.noise_from_workers():
            batch = self.settings.batch_size
            self._noise.observe(sum(norm_sq(grads[w]) for w in range(n)) / n, norm_sq(mean_grad), batch, n * batch)
        sgd_update(params=arrays["model"], grad=mean_grad, velocity=self._server_velocity,
                   mask=arrays["mask"] if study.sparse else mean_grad[:0], size=size,
                   lr=study.schedule.at(round_index - 1), momentum=study.momentum, nesterov=study.nesterov)

    def round_traffic(self, round_index: int) -> Traffic:
        """One full gradient up, the averaged one down (ring: all-reduce); with a mask, its kept values."""
        payload = float(self.kept_total() * self.dtype.itemsize)
        return averaging_traffic(self.n_workers, payload, self.settings.network.topology)
