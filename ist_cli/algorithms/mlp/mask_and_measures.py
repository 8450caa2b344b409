"""What the batch-size study adds to every MLP and convnet method, on the coordinator side:
the pruning mask at initialisation, full-training-set gradients, and the noise-scale and
Lipschitz measurements at evaluation time (docs/sparsity.md). The formulas live in
``ist_cli.training``; a network enters as its ``Gradients`` (flat size, prunable entries,
batch gradient), so the MLP and every layer spec share them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ist_cli.errors import UserError
from ist_cli.kernels import mlp as kernels
from ist_cli.models.mlp import B, NetLayout
from ist_cli.models.network import Layout
from ist_cli.seeding import stream
from ist_cli.settings import MLPSettings
from ist_cli.training.batches import minibatches
from ist_cli.training.lipschitz import lipschitz_estimate
from ist_cli.training.noise_scale import NoiseScaleEMA, two_batch_estimates
from ist_cli.training.prune_at_init import (
    kept_count,
    magnitude_scores,
    random_scores,
    snip_scores,
    top_kappa_mask,
)
from ist_cli.training.schedule import LRSchedule

GRADIENT_CHUNK = 1000  # rows per pass of a full-training-set gradient (Lee et al.'s batches of 1000)
NOISE_MICRO_BATCHES = 8  # micro-batches of --batch-size per evaluation-time noise-scale estimate
NOISE_METRICS = ("grad_norm_sq_est", "trace_cov_est", "noise_scale")


@dataclass(frozen=True)
class StudySettings:
    """The optimizer, schedule, pruning and measurement settings of one MLP run."""

    momentum: float
    nesterov: bool
    schedule: LRSchedule
    sparsity: float
    prune: str | None
    snip_batches: int | str | None
    prune_biases: bool
    noise_scale_every: int
    lipschitz_every: int

    @classmethod
    def from_settings(cls, settings: MLPSettings, steps_per_round: int) -> StudySettings:
        """``--decay-steps`` defaults to the run's whole step budget (rounds x steps per round)."""
        s = settings
        schedule = LRSchedule(float(s.lr))
        if s.lr_schedule == "linear-decay":
            steps = s.decay_steps if s.decay_steps is not None else s.rounds * steps_per_round
            schedule = LRSchedule(float(s.lr), s.lr_schedule, int(steps), float(s.end_lr_factor))
        return cls(momentum=float(s.momentum), nesterov=s.optimizer == "nesterov", schedule=schedule,
                   sparsity=float(s.sparsity), prune=s.prune, snip_batches=s.snip_batches,
                   prune_biases=bool(s.prune_biases), noise_scale_every=int(s.noise_scale_every),
                   lipschitz_every=int(s.lipschitz_every))

    @property
    def sparse(self) -> bool:
        return self.sparsity > 0


class Gradients(Protocol):
    """A network as the measurements see it: its flat size, its prunable entries and its batch gradient."""

    size: int

    def prunable(self, biases: bool) -> np.ndarray:
        """bool over the flat vector: every weight tensor, and the biases if ``biases`` (never BN gamma/beta)."""
        ...

    def loss_and_grad(self, params: np.ndarray, X: np.ndarray, y: np.ndarray, grad: np.ndarray) -> float:
        """The mean loss of rows ``X``; ``grad[:size]`` <- its gradient."""
        ...


@dataclass(frozen=True)
class MLPGradients:
    """``Gradients`` of the MLP of ``layout`` (``kernels.mlp``)."""

    layout: NetLayout
    batch_norm: bool

    @property
    def size(self) -> int:
        return self.layout.size

    def prunable(self, biases: bool) -> np.ndarray:
        prunable = np.zeros(self.layout.size, dtype=bool)
        for layer in range(self.layout.n_layers):
            self.layout.weight(prunable, layer)[...] = True
            if biases:
                self.layout.vector(prunable, layer, B)[...] = True
        return prunable

    def loss_and_grad(self, params: np.ndarray, X: np.ndarray, y: np.ndarray, grad: np.ndarray) -> float:
        layout = self.layout
        return float(kernels.loss_and_grad(params=params, offsets=layout.offsets, widths=layout.widths,
                                           batch_norm=self.batch_norm, scale=1.0, X=X, y=y, grad=grad))


def gradient_sum(params: np.ndarray, model: Gradients, X: np.ndarray, y: np.ndarray,
                 batches: list[np.ndarray]) -> np.ndarray:
    """float64 sum over ``batches`` of (batch size x the batch's mean gradient) = the sum of
    per-example gradients (batch norm: with each batch's own statistics)."""
    total = np.zeros(model.size)
    grad = np.empty(model.size, dtype=params.dtype)
    for rows in batches:
        model.loss_and_grad(params, X[rows], y[rows], grad)
        total += rows.size * grad.astype(np.float64)
    return total


def chunks(n_rows: int, size: int) -> list[np.ndarray]:
    return [np.arange(start, min(start + size, n_rows), dtype=np.int64) for start in range(0, n_rows, size)]


def pruning_mask(settings: StudySettings, params: np.ndarray, model: Gradients,
                 X: np.ndarray, y: np.ndarray, batch_size: int, seed: int) -> np.ndarray:
    """The kept entries (bool, flat) of the initial ``params``; raises UserError if none would be kept.
    Top-kappa over all prunable entries of every layer at once (conv and dense alike)."""
    prunable = model.prunable(settings.prune_biases)
    n_prunable = int(prunable.sum())
    kappa = kept_count(n_prunable, settings.sparsity)
    if kappa < 1:
        raise UserError(f"--sparsity: {settings.sparsity} keeps no weight of the {n_prunable} prunable ones "
                        f"(kappa = round(N(1-S)) = 0); expected a sparsity <= {1 - 0.5 / n_prunable:.6g}")
    if settings.prune == "random":
        scores = random_scores(model.size, seed)
    elif settings.prune == "magnitude":
        scores = magnitude_scores(params)
    else:

        if settings.snip_batches == "all":
            batches = chunks(X.shape[0], batch_size)
        else:
            rows = np.arange(X.shape[0], dtype=np.int64)
            batches = list(minibatches(rows, int(settings.snip_batches), batch_size, stream(seed, "snip")))
        scores = snip_scores(params, gradient_sum(params, model, X, y, batches))
    return top_kappa_mask(scores, prunable, kappa)


def named_mask(layout: NetLayout | Layout, keep: np.ndarray) -> dict[str, np.ndarray]:
    """``/mask``: uint8 arrays under the names of ``/final`` (1 kept, 0 pruned)."""
    return {name: view.astype(np.uint8) for name, view in layout.named(keep).items()}


def full_gradient(params: np.ndarray, model: Gradients, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The mean gradient over every training row, in chunks of ``GRADIENT_CHUNK`` (float64)."""
    return gradient_sum(params, model, X, y, chunks(X.shape[0], GRADIENT_CHUNK)) / X.shape[0]


def lipschitz(params_before: np.ndarray, params_after: np.ndarray, model: Gradients,
              X: np.ndarray, y: np.ndarray, keep: np.ndarray | None) -> float:
    """L-hat along the last update of the server model (10 full-training-set gradients)."""
    def gradient(w: np.ndarray) -> np.ndarray:
        return full_gradient(w, model, X, y)

    return lipschitz_estimate(gradient, params_before, params_after, keep)


def norm_sq(vector: np.ndarray) -> float:
    v = vector.astype(np.float64)
    return float(v @ v)


class NoiseScaleMeter:
    """The smoothed noise scale, fed from two-batch gradient-norm pairs (``observe``)."""

    def __init__(self) -> None:
        self.ema = NoiseScaleEMA()

    def observe(self, small_norm_sq: float, big_norm_sq: float, small: int, big: int) -> None:
        self.ema.update(*two_batch_estimates(small_norm_sq, big_norm_sq, small, big))

    def observe_micro_batches(self, params: np.ndarray, model: Gradients, X: np.ndarray,
                              y: np.ndarray, keep: np.ndarray | None, batch_size: int, seed: int, index: int) -> None:
        """k = ``NOISE_MICRO_BATCHES`` fresh batches of the training set at the current model:
        B_small = one batch (the mean of their squared norms), B_big = k batches (their mean)."""

        rows = np.arange(X.shape[0], dtype=np.int64)
        batches = minibatches(rows, NOISE_MICRO_BATCHES, batch_size, stream(seed, "noise-scale", index))
        grad = np.empty(model.size, dtype=params.dtype)
        small, mean = 0.0, np.zeros(model.size)
        for rows_b in batches:
            model.loss_and_grad(params, X[rows_b], y[rows_b], grad)
            g = grad.astype(np.float64)
            if keep is not None:
                g[~keep] = 0.0
            small += float(g @ g)
            mean += g
        mean /= NOISE_MICRO_BATCHES
        self.observe(small / NOISE_MICRO_BATCHES, float(mean @ mean), batch_size, batch_size * NOISE_MICRO_BATCHES)

    def metrics(self) -> dict[str, float]:
        return dict(zip(NOISE_METRICS, self.ema.value(), strict=True))



