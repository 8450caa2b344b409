"""Data-parallel SGD, local SGD and ``single`` on a convolutional network (``--model cnn``).

The methods are the MLP's (``algorithms.mlp``: their coordinator and worker halves, arena
rows, regions and byte accounting), with the network a layer spec (``--arch``, built by
``plans.convnet``) trained by ``models.network_driver``: the arena holds the images as rows
and the model as one flat vector of the spec's layout, so a replica, a gradient, a pruning
mask and what crosses the network are that vector, whatever the architecture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ist_cli.algorithms.mlp.common import MLPMethod, MLPWorker, Training
from ist_cli.algorithms.mlp.dp import DataParallel, DPWorker
from ist_cli.algorithms.mlp.local_sgd import LocalSGD, ReplicaWorker, Single
from ist_cli.algorithms.plans import ConvNetDPPlan, ConvNetLocalSGDPlan, ConvNetSinglePlan, convnet
from ist_cli.comm import averaging_traffic
from ist_cli.errors import UserError
from ist_cli.kernels import conv as conv_kernels
from ist_cli.kernels import sgd as sgd_kernels
from ist_cli.models import network as nw
from ist_cli.models.network_driver import NetworkDriver

EVAL_CHUNK = 256  # images per forward pass at evaluation (a convnet's activations are large)


@dataclass(frozen=True)
class ConvTraining(Training):
    """What a convnet worker needs: the MLP's training settings and the layer spec."""

    net: nw.Network | None = None


@dataclass(frozen=True)
class SpecGradients:
    """``mask_and_measures.Gradients`` of a layer spec: every W is prunable, b if asked."""

    driver: NetworkDriver

    @property
    def size(self) -> int:
        return self.driver.size

    def prunable(self, biases: bool) -> np.ndarray:
        prunable = np.zeros(self.driver.size, dtype=bool)
        for param in self.driver.layout.params:
            if param.kind == "W" or (biases and param.kind == "b"):
                prunable[param.offset : param.offset + param.size] = True
        return prunable

    def loss_and_grad(self, params: np.ndarray, X: np.ndarray, y: np.ndarray, grad: np.ndarray) -> float:
        return self.driver.loss_and_grad(params, X, y, grad)


class ConvWorker(MLPWorker):
    """The MLP worker's arena views and minibatches; the layer-spec driver's passes."""

    training: ConvTraining

    def network(self) -> NetworkDriver:
        return NetworkDriver(self.training.net)

    def warm_kernels(self) -> None:
        conv_kernels.warm_up(self.training.dtype)
        sgd_kernels.warm_up(self.training.dtype)

    def loss_and_grad(self, params: np.ndarray, X: np.ndarray, y: np.ndarray, grad: np.ndarray) -> float:
        return self.full.loss_and_grad(params, X, y, grad)

    def train(self, layout: Any, params: np.ndarray, grad: np.ndarray, velocity: np.ndarray,
              round_index: int, mask: np.ndarray) -> float:
        """R local steps of the network ``layout`` drives (a replica's: ``self.full``; a subnet's)."""
        t, study = self.training, self.training.study
        steps = t.local_steps
        return layout.train_steps(params=params, grad=grad, velocity=velocity, mask=mask, X=self.X, y=self.y,
                                  batches=self.batches(round_index, steps),
                                  lrs=study.schedule.for_steps((round_index - 1) * steps, steps),
                                  momentum=study.momentum, nesterov=study.nesterov)


class ConvDPWorker(ConvWorker, DPWorker):
    pass


class ConvReplicaWorker(ConvWorker, ReplicaWorker):
    pass


class ConvNetMethod(MLPMethod):
    """What the convnet methods change of the MLP's coordinator half: the model."""

    eval_chunk = EVAL_CHUNK

    def build_model(self) -> None:
        s = self.settings
        if self.data.image_shape is None:
            raise UserError(f"--dataset: {s.dataset!r} holds no images; expected fashion-mnist[:DIR], mnist:DIR "
                            "or cifar10:DIR for --model cnn")
        self.batch_norm = False
        self.net = convnet(s.arch, self.data.image_shape, self.data.n_classes, s.widths, s.blocks)
        self.driver = NetworkDriver(self.net)
        self.layout = self.driver.layout
        self.gradients = SpecGradients(self.driver)

    def initial_model(self) -> np.ndarray:
        return nw.initial_params(self.net, self.settings.seed, self.dtype)

    def logits(self, model: np.ndarray, X: np.ndarray) -> np.ndarray:
        return self.driver.logits(model, X)

    def training(self) -> ConvTraining:
        s = self.settings
        return ConvTraining(widths=(), batch_norm=False, dtype=self.dtype.name, n_workers=self.n_workers, seed=s.seed,
                            study=self.study, batch_size=s.batch_size, local_steps=s.local_steps, scale=1.0,
                            net=self.net)

    def summary_extras(self) -> dict[str, Any]:
        """What DP would send per round, to compare with what this method sent."""
        n, value = self.n_workers, self.dtype.itemsize
        dp = averaging_traffic(n, float(self.kept_total() * value), self.settings.network.topology)
        dp_step = (dp.total_up + dp.total_down) / n
        return {"params": self.layout.size, "dp_bytes_per_round_per_worker": dp_step,
                "dp_bytes_per_R_local_steps_per_worker": dp_step * self.settings.local_steps}


class ConvDataParallel(ConvNetMethod, DataParallel):
    worker_class = ConvDPWorker
    plan = ConvNetDPPlan


class ConvLocalSGD(ConvNetMethod, LocalSGD):
    worker_class = ConvReplicaWorker
    plan = ConvNetLocalSGDPlan


class ConvSingle(ConvNetMethod, Single):
    worker_class = ConvReplicaWorker
    plan = ConvNetSinglePlan


#: algorithm name (its plan's) -> method class
METHODS: dict[str, type[MLPMethod]] = {method.plan.algorithm: method
                                       for method in (ConvDataParallel, ConvLocalSGD, ConvSingle)}
