"""What every MLP method shares (DESIGN §2.2): data and model in the arena, evaluation, workers' minibatches.

The arena holds the dataset once, the full model as one flat vector (``ist_cli.models.mlp``
layout) and each worker's shard of row ids; a method adds its own per-worker buffers. A
method overrides only what differs: its arena buffers, its worker, its aggregation and its
traffic. ``ist.py``, ``dp.py`` and ``local_sgd.py`` are the methods.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ist_cli.algorithms.base import Algorithm
from ist_cli.comm import INDEX_BYTES, averaging_traffic
from ist_cli.data import dataset_from_settings, partition_indices
from ist_cli.kernels import mlp as kernels
from ist_cli.models.mlp import NetLayout, initial_params, net_layout
from ist_cli.models.subnet import ist_subnet_sizes
from ist_cli.runtime.arena import ArraySpec
from ist_cli.runtime.transport import Region, WorkerProgram
from ist_cli.seeding import stream
from ist_cli.settings import MLPSettings

EVAL_TRAIN_LIMIT = 8192  # training loss is measured on at most this many fixed training rows
EVAL_CHUNK = 4096  # rows per forward pass at evaluation (also the batch-norm statistics' batch)


@dataclass(frozen=True)
class Training:
    """What a worker needs to train: sent to every worker process with its program."""

    widths: tuple[int, ...]
    batch_norm: bool
    dtype: str
    n_workers: int
    seed: int
    lr: float
    momentum: float
    batch_size: int
    local_steps: int
    scale: float  # IST's activation scaling (1.0: none)


def minibatches(shard: np.ndarray, steps: int, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """(steps, batch) row ids: a walk through fresh random permutations of the worker's shard.

    A shard smaller than the batch is repeated (rows appear twice in a batch) rather than
    giving a smaller batch, so every step of every worker has the same batch size.
    """
    need = steps * batch_size
    reps = -(-need // shard.size)
    order = np.concatenate([shard[rng.permutation(shard.size)] for _ in range(reps)])
    return np.ascontiguousarray(order[:need].reshape(steps, batch_size))


class MLPWorker(WorkerProgram):
    """What all MLP workers share: arena views, minibatch drawing, R local steps.

    No worker copies the dataset or the full model: minibatch rows are read from the shared
    ``X_train``; each worker trains in its own row of a per-worker buffer.
    """

    def __init__(self, training: Training) -> None:
        self.training = training

    def setup(self, arrays: dict[str, np.ndarray], worker: int) -> None:
        t = self.training
        self.worker = worker
        self.X = arrays["X_train"]
        self.y = arrays["y_train"]
        bounds = arrays["shard_bounds"]
        self.shard = arrays["shard_index"][bounds[worker] : bounds[worker + 1]]
        self.model = arrays["model"]
        self.full = net_layout(t.widths, t.batch_norm)
        kernels.warm_up(t.dtype)  # load compiled kernels now, not inside round 1's timing

    def resident(self, worker: int) -> tuple[Region, ...]:
        return (Region("X_train"), Region("y_train"), Region("shard_index"), Region("shard_bounds"))

    def batches(self, round_index: int, steps: int) -> np.ndarray:
        rng = stream(self.training.seed, "worker", round_index, self.worker)
        return minibatches(self.shard, steps, self.training.batch_size, rng)

    def train(self, layout: NetLayout, params: np.ndarray, grad: np.ndarray, velocity: np.ndarray,
              round_index: int) -> float:
        """R local SGD steps on ``params`` (a network with ``layout``); the mean batch loss."""
        t = self.training
        return float(kernels.train_steps(
            X=self.X, y=self.y, batches=self.batches(round_index, t.local_steps), params=params,
            offsets=layout.offsets, widths=layout.widths, batch_norm=t.batch_norm, scale=t.scale, lr=t.lr,
            momentum=t.momentum, grad=grad, velocity=velocity, size=layout.size,
        ))


class MLPMethod(Algorithm):
    """The coordinator half every MLP method shares."""

    worker_class: type[MLPWorker]

    def __init__(self, settings: MLPSettings) -> None:
        self.settings = settings
        self.n_workers = settings.workers
        self.data = dataset_from_settings(settings)
        self.dtype = np.dtype(settings.dtype)
        self.batch_norm = settings.batch_norm
        self.sizes = (self.data.n_train, self.data.n_test)
        self.widths = (self.data.n_features, *settings.hidden, self.data.n_classes)
        self.layout = net_layout(self.widths, self.batch_norm)
        self.shards = self.make_shards()
        self._eval_rows = self._training_subset()

    # -- hooks a method overrides -------------------------------------------------
    def make_shards(self) -> list[np.ndarray]:
        s = self.settings
        return partition_indices(self.data.y_train, self.n_workers, s.partition, s.seed)

    def buffers(self) -> ArraySpec:
        """The method's own arena arrays (per-worker buffers, plans)."""
        return {}

    def training(self) -> Training:
        s = self.settings
        return Training(widths=self.widths, batch_norm=self.batch_norm, dtype=self.dtype.name,
                        n_workers=self.n_workers, seed=s.seed, lr=s.lr, momentum=s.momentum,
                        batch_size=s.batch_size, local_steps=s.local_steps, scale=1.0)

    # -- arena --------------------------------------------------------------------
    def arena_spec(self) -> ArraySpec:
        n, dt = self.n_workers, self.dtype.str
        (n_train, n_test), features = self.sizes, self.widths[0]
        return {
            "X_train": ((n_train, features), dt),
            "y_train": ((n_train,), "i8"),
            "X_test": ((n_test, features), dt),
            "y_test": ((n_test,), "i8"),
            "shard_index": ((sum(s.size for s in self.shards),), "i8"),
            "shard_bounds": ((n + 1,), "i8"),
            "model": ((self.layout.size,), dt),
            **self.buffers(),
        }

    def initialize(self, arrays: dict[str, np.ndarray]) -> None:
        arrays["X_train"][...] = self.data.X_train
        arrays["y_train"][...] = self.data.y_train
        arrays["X_test"][...] = self.data.X_test
        arrays["y_test"][...] = self.data.y_test
        arrays["shard_index"][...] = np.concatenate(self.shards)
        arrays["shard_bounds"][1:] = np.cumsum([s.size for s in self.shards])
        arrays["model"][...] = initial_params(self.layout, self.settings.seed, self.dtype)
        # The arena now holds the data; drop the loader's copy so the parent keeps one
        # (fresh empty arrays: a [:0] view would keep the loader's buffer alive).
        empty = np.empty((0, self.widths[0]), dtype=self.dtype)
        self.data = replace(self.data, X_train=empty, X_test=empty)

    def warm_up(self) -> None:
        kernels.warm_up(self.dtype.name)

    def worker_program(self) -> WorkerProgram:
        return self.worker_class(self.training())

    # -- results ------------------------------------------------------------------
    def _training_subset(self) -> np.ndarray:
        n_train = self.sizes[0]
        if n_train <= EVAL_TRAIN_LIMIT:
            return np.arange(n_train, dtype=np.int64)
        rng = stream(self.settings.seed, "eval")
        return np.sort(rng.choice(n_train, size=EVAL_TRAIN_LIMIT, replace=False)).astype(np.int64)

    def _scores(self, model: np.ndarray, X: np.ndarray, y: np.ndarray, rows: np.ndarray | None) -> tuple[float, float]:
        """Mean cross-entropy and accuracy of the full model, in chunks of ``EVAL_CHUNK`` rows."""
        total = rows.size if rows is not None else X.shape[0]
        loss = correct = 0.0
        with np.errstate(all="ignore"):
            for start in range(0, total, EVAL_CHUNK):
                stop = min(start + EVAL_CHUNK, total)
                part = X[rows[start:stop]] if rows is not None else X[start:stop]
                labels = y[rows[start:stop]] if rows is not None else y[start:stop]
                logits = kernels.forward_logits(params=model, offsets=self.layout.offsets, widths=self.layout.widths,
                                                batch_norm=self.batch_norm, scale=1.0, X=part).astype(np.float64)
                top = logits.max(axis=1, keepdims=True)
                log_norm = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
                loss += float((log_norm - logits[np.arange(labels.size), labels]).sum())
                correct += float((logits.argmax(axis=1) == labels).sum())
        return loss / total, correct / total

    def evaluate(self, arrays: dict[str, np.ndarray]) -> dict[str, float]:
        model = arrays["model"]
        rows = None if self._eval_rows.size == arrays["X_train"].shape[0] else self._eval_rows
        train_loss, train_accuracy = self._scores(model, arrays["X_train"], arrays["y_train"], rows)
        test_loss, test_accuracy = self._scores(model, arrays["X_test"], arrays["y_test"], None)
        return {"loss": train_loss, "train_accuracy": train_accuracy, "test_loss": test_loss,
                "test_accuracy": test_accuracy}

    def round_metrics(self, results: Sequence[Any]) -> dict[str, float]:
        """``worker_train_loss``: the workers' mean training loss over the round's local steps."""
        return {"worker_train_loss": float(np.mean(results)) if len(results) else math.nan}

    def final_params(self, arrays: dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        return {name: view.copy() for name, view in self.layout.named(arrays["model"]).items()}

    def summary_extras(self) -> dict[str, Any]:
        """What IST and DP would send per round, to compare with what this method sent."""
        n, value = self.n_workers, self.dtype.itemsize
        values, indices = ist_subnet_sizes(self.widths, max(n, 1), self.batch_norm)
        ist = float((2 * values * value + indices * INDEX_BYTES).mean())
        dp = averaging_traffic(n, float(self.layout.size * value), self.settings.network.topology)
        dp_step = (dp.total_up + dp.total_down) / n
        return {
            "params": self.layout.size,
            "ist_bytes_per_round_per_worker": ist,
            "dp_bytes_per_round_per_worker": dp_step,
            "dp_bytes_per_R_local_steps_per_worker": dp_step * self.settings.local_steps,
        }
