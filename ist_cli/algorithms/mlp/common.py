"""What every MLP method shares (docs/algorithms.md): data and model in the arena, evaluation, workers' minibatches.

The arena holds the dataset once, the full model as one flat vector (``ist_cli.models.mlp``
layout) and each worker's shard of row ids; a method adds its own per-worker buffers. A
method overrides only what differs: its arena buffers, its worker, its aggregation and its
traffic. ``ist.py``, ``dp.py`` and ``local_sgd.py`` are the methods.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from ist_cli.algorithms.base import Algorithm
from ist_cli.algorithms.mlp.mask_and_measures import (
    Gradients,
    MLPGradients,
    NoiseScaleMeter,
    StudySettings,
    lipschitz,
    named_mask,
    pruning_mask,
)
from ist_cli.algorithms.plans import EVAL_CHUNK, MLPPlan
from ist_cli.comm import INDEX_BYTES, averaging_traffic
from ist_cli.data import dataset_from_settings, partition_indices
from ist_cli.kernels import mlp as kernels
from ist_cli.models.mlp import NetLayout, initial_params, net_layout
from ist_cli.models.subnet import ist_subnet_sizes
from ist_cli.runtime.arena import ArraySpec
from ist_cli.runtime.transport import Region, WorkerProgram
from ist_cli.seeding import stream
from ist_cli.settings import MLPSettings
from ist_cli.training.batches import minibatches
from ist_cli.training.goal import EvalSchedule, Goal

EVAL_TRAIN_LIMIT = 8192  # training loss is measured on at most this many fixed training rows


def logit_scores(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Summed cross-entropy and count of correct argmaxes of (rows, classes) ``logits`` (in float64)."""
    logits = logits.astype(np.float64)
    top = logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
    return float((log_norm - logits[np.arange(labels.size), labels]).sum()), float((logits.argmax(axis=1) == labels).sum())


@dataclass(frozen=True)
class Training:
    """What a worker needs to train: sent to every worker process with its program."""

    widths: tuple[int, ...]
    batch_norm: bool
    dtype: str
    n_workers: int
    seed: int
    study: StudySettings  # optimizer, learning-rate schedule, pruning
    batch_size: int
    local_steps: int
    scale: float  # IST's activation scaling (1.0: none)


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
        self.full = self.network()
        self.mask = arrays["mask"] if t.study.sparse else self.model[:0]  # empty: a dense model
        self.warm_kernels()  # load compiled kernels now, not inside round 1's timing

    def network(self) -> Any:
        """The full model as this worker trains it (what has its flat ``size``)."""
        return net_layout(self.training.widths, self.training.batch_norm)

    def warm_kernels(self) -> None:
        """Load the kernels this worker calls (the fork server compiled them: its plan's ``preload``)."""
        kernels.warm_up_training(self.training.dtype)

    def loss_and_grad(self, params: np.ndarray, X: np.ndarray, y: np.ndarray, grad: np.ndarray) -> float:
        """The full model's mean loss on rows ``X``; ``grad`` <- its gradient."""
        full = self.full
        return float(kernels.loss_and_grad(params=params, offsets=full.offsets, widths=full.widths,
                                           batch_norm=self.training.batch_norm, scale=1.0, X=X, y=y, grad=grad))

    def resident(self, worker: int) -> tuple[Region, ...]:
        # the pruning mask is fixed and known to every worker: sent once, never per round
        mask = (Region("mask"),) if self.training.study.sparse else ()
        return (Region("X_train"), Region("y_train"), Region("shard_index"), Region("shard_bounds"), *mask)

    def pruned(self, region: Region, mask: Region | None = None) -> Region:
        """``region`` as a pruned run sends it: its kept entries only (``mask`` defaults to the
        pruning mask of the full model); a dense run sends it whole."""
        if not self.training.study.sparse:
            return region
        return replace(region, mask=mask or Region("mask"))

    def batches(self, round_index: int, steps: int) -> np.ndarray:
        rng = stream(self.training.seed, "worker", round_index, self.worker)
        return minibatches(self.shard, steps, self.training.batch_size, rng)

    def train(self, layout: NetLayout, params: np.ndarray, grad: np.ndarray, velocity: np.ndarray,
              round_index: int, mask: np.ndarray) -> float:
        """R local steps on ``params`` (a network with ``layout``, pruned where ``mask`` is 0);
        the mean batch loss. Global step numbers (the schedule's) continue across rounds."""
        t, study = self.training, self.training.study
        steps = t.local_steps
        return float(kernels.train_steps(
            X=self.X, y=self.y, batches=self.batches(round_index, steps), params=params,
            offsets=layout.offsets, widths=layout.widths, batch_norm=t.batch_norm, scale=t.scale,
            lrs=study.schedule.for_steps((round_index - 1) * steps, steps), momentum=study.momentum,
            nesterov=study.nesterov, mask=mask, grad=grad, velocity=velocity, size=layout.size,
        ))


class MLPMethod(Algorithm):
    """The coordinator half every MLP method shares."""

    worker_class: type[MLPWorker]
    plan: ClassVar[type[MLPPlan]]

    def __init__(self, settings: MLPSettings) -> None:
        self.settings = settings
        self.n_workers = settings.workers
        self.data = dataset_from_settings(settings)
        self.dtype = np.dtype(settings.dtype)
        self.sizes = (self.data.n_train, self.data.n_test)
        self.build_model()
        self.shards = self.make_shards()
        self._eval_rows = self._training_subset()
        self.study = StudySettings.from_settings(settings, self.steps_per_round())
        self.keep: np.ndarray | None = None  # bool over the flat model: the pruning mask, once chosen
        self._noise = NoiseScaleMeter() if self.study.noise_scale_every else None
        self._before: np.ndarray | None = None  # the server model before the last round (Lipschitz)
        self._evaluations = 0

    def steps_per_round(self) -> int:
        """R local steps (DP's ``local_steps`` is pinned to 1 by the option table)."""
        return self.settings.local_steps

    def eval_schedule(self) -> EvalSchedule:
        s = self.settings
        return EvalSchedule(s.eval_every, s.eval_every_steps, self.steps_per_round(), s.rounds)

    def goal(self) -> Goal | None:
        return Goal.from_settings(self.settings)

    # -- the model (a convnet method overrides these) --------------------------------
    eval_chunk = EVAL_CHUNK

    def build_model(self) -> None:
        """Set the network's ``layout`` (and what its passes need) from the settings and data."""
        self.batch_norm = self.settings.batch_norm
        self.widths = (self.data.n_features, *self.settings.hidden, self.data.n_classes)
        self.layout = net_layout(self.widths, self.batch_norm)
        self.gradients: Gradients = MLPGradients(self.layout, self.batch_norm)

    def initial_model(self) -> np.ndarray:
        return initial_params(self.layout, self.settings.seed, self.dtype)

    def logits(self, model: np.ndarray, X: np.ndarray) -> np.ndarray:
        return kernels.forward_logits(params=model, offsets=self.layout.offsets, widths=self.layout.widths,
                                      batch_norm=self.batch_norm, scale=1.0, X=X)

    # -- hooks a method overrides -------------------------------------------------
    def make_shards(self) -> list[np.ndarray]:
        s = self.settings
        return partition_indices(self.data.y_train, self.n_workers, s.partition, s.seed)

    def buffers(self) -> ArraySpec:
        """The method's own arena arrays: the per-worker rows its plan names, ``row_size`` values each."""
        shape = (self.n_workers, self.row_size())
        return {name: (shape, self.dtype.str) for name in self.plan.worker_rows(self.study.sparse)}

    def row_size(self) -> int:
        """Values in one per-worker row: a whole replica."""
        return self.layout.size

    def training(self) -> Training:
        s = self.settings
        return Training(widths=self.widths, batch_norm=self.batch_norm, dtype=self.dtype.name,
                        n_workers=self.n_workers, seed=s.seed, study=self.study,
                        batch_size=s.batch_size, local_steps=s.local_steps, scale=1.0)

    # -- arena --------------------------------------------------------------------
    def arena_spec(self) -> ArraySpec:
        n, dt = self.n_workers, self.dtype.str
        (n_train, n_test), features = self.sizes, self.data.n_features
        return {
            "X_train": ((n_train, features), dt),
            "y_train": ((n_train,), "i8"),
            "X_test": ((n_test, features), dt),
            "y_test": ((n_test,), "i8"),
            "shard_index": ((sum(s.size for s in self.shards),), "i8"),
            "shard_bounds": ((n + 1,), "i8"),
            "model": ((self.layout.size,), dt),
            **({"mask": ((self.layout.size,), dt)} if self.study.sparse else {}),
            **({"X_val": ((self.data.n_val, features), dt), "y_val": ((self.data.n_val,), "i8")}
               if self.data.n_val else {}),
            **self.buffers(),
        }

    def initialize(self, arrays: dict[str, np.ndarray]) -> None:
        arrays["X_train"][...] = self.data.X_train
        arrays["y_train"][...] = self.data.y_train
        arrays["X_test"][...] = self.data.X_test
        arrays["y_test"][...] = self.data.y_test
        arrays["shard_index"][...] = np.concatenate(self.shards)
        arrays["shard_bounds"][1:] = np.cumsum([s.size for s in self.shards])
        if self.data.n_val:
            arrays["X_val"][...] = self.data.X_val
            arrays["y_val"][...] = self.data.y_val
        self.initialize_model(arrays)
        # The arena now holds the data; drop the loader's copy so the parent keeps one
        # (fresh empty arrays: a [:0] view would keep the loader's buffer alive).
        empty = np.empty((0, self.data.n_features), dtype=self.dtype)
        self.data = replace(self.data, X_train=empty, X_test=empty, X_val=empty if self.data.n_val else None)

    def initialize_model(self, arrays: dict[str, np.ndarray]) -> None:
        """The initial model into ``model`` (data already in the arena); a pruned run's mask chosen on it."""
        arrays["model"][...] = self.initial_model()
        if self.study.sparse:
            self.keep = pruning_mask(self.study, arrays["model"], self.gradients, self.data.X_train,
                                     self.data.y_train, self.settings.batch_size, self.settings.seed)
            arrays["mask"][...] = self.keep
            arrays["model"][~self.keep] = 0.0

    def worker_program(self) -> WorkerProgram:
        return self.worker_class(self.training())

    def plan_round(self, arrays: dict[str, np.ndarray], round_index: int) -> None:
        if self.study.lipschitz_every:
            self._before = arrays["model"].copy()

    def kept_total(self) -> int:
        """Values of the full model that cross the network: all of them, or the kept ones."""
        return int(self.keep.sum()) if self.keep is not None else self.layout.size

    # -- results ------------------------------------------------------------------
    def _training_subset(self) -> np.ndarray:
        n_train, limit = self.sizes[0], min(EVAL_TRAIN_LIMIT, self.settings.eval_samples or EVAL_TRAIN_LIMIT)
        if n_train <= limit:
            return np.arange(n_train, dtype=np.int64)
        rng = stream(self.settings.seed, "eval")
        return np.sort(rng.choice(n_train, size=limit, replace=False)).astype(np.int64)

    def _held_out_subset(self, name: str, rows: int) -> np.ndarray | None:
        """With ``--eval-samples N``: N fixed rows of the test or validation set, the same for every
        seed and method (so their scores compare on one set); None: every row."""
        limit = self.settings.eval_samples
        if not limit or rows <= limit:
            return None
        rng = stream(0, f"eval-{name}")
        return np.sort(rng.choice(rows, size=limit, replace=False)).astype(np.int64)

    def _scores(self, model: np.ndarray, X: np.ndarray, y: np.ndarray, rows: np.ndarray | None) -> tuple[float, float]:
        """Mean cross-entropy and accuracy of the full model, in chunks of ``EVAL_CHUNK`` rows."""
        total = rows.size if rows is not None else X.shape[0]
        loss = correct = 0.0
        with np.errstate(all="ignore"):
            for start in range(0, total, self.eval_chunk):
                stop = min(start + self.eval_chunk, total)
                part = X[rows[start:stop]] if rows is not None else X[start:stop]
                labels = y[rows[start:stop]] if rows is not None else y[start:stop]
                chunk_loss, chunk_correct = logit_scores(self.logits(model, part), labels)
                loss, correct = loss + chunk_loss, correct + chunk_correct
        return loss / total, correct / total

    @staticmethod
    def _set_columns(name: str) -> tuple[str, ...]:
        """The ``/metrics`` columns of one evaluation set: ``train``, ``test`` or ``val``."""
        if name == "train":
            return ("loss", "train_accuracy")
        return (f"{name}_loss", f"{name}_accuracy", *(("val_error",) if name == "val" else ()))

    def _set_metrics(self, arrays: dict[str, np.ndarray], name: str) -> dict[str, float]:
        """The metrics of one evaluation set (training: at most ``EVAL_TRAIN_LIMIT`` rows)."""
        rows = None
        if name == "train" and self._eval_rows.size != arrays["X_train"].shape[0]:
            rows = self._eval_rows
        elif name != "train":
            rows = self._held_out_subset(name, arrays[f"X_{name}"].shape[0])
        loss, accuracy = self._scores(arrays["model"], arrays[f"X_{name}"], arrays[f"y_{name}"], rows)
        return dict(zip(self._set_columns(name), (loss, accuracy, 1.0 - accuracy), strict=False))

    def _eval_sets(self, arrays: dict[str, np.ndarray]) -> tuple[str, ...]:
        return ("train", "test", "val") if "X_val" in arrays else ("train", "test")

    def evaluate(self, arrays: dict[str, np.ndarray]) -> dict[str, float]:
        """Every set's metrics, or (between full evaluations, with a goal) the goal's set only."""
        goal, every = self.goal(), self.settings.full_eval_every
        full = goal is None or every <= 1 or self._evaluations % every == 0
        metrics: dict[str, float] = {}
        for name in self._eval_sets(arrays) if full else (goal.eval_set,):
            metrics.update(self._set_metrics(arrays, name))
        metrics.update(self._measurements(arrays))
        self._evaluations += 1
        return metrics

    def complete(self, arrays: dict[str, np.ndarray], metrics: Mapping[str, float], full: bool) -> dict[str, float]:
        """``metrics`` with the sets ``evaluate`` skipped: measured if ``full``, else NaN."""
        out = dict(metrics)
        for name in self._eval_sets(arrays):
            columns = self._set_columns(name)
            if columns[0] not in out:
                out.update(self._set_metrics(arrays, name) if full else dict.fromkeys(columns, math.nan))
        return out

    def noise_from_workers(self) -> bool:
        """Does the method observe the noise scale every round from its workers' gradients?"""
        return False

    def _measurements(self, arrays: dict[str, np.ndarray]) -> dict[str, float]:
        """Noise scale and Lipschitz estimate on every K-th evaluation (NaN on the others)."""
        out: dict[str, float] = {}
        count, study, model, s = self._evaluations, self.study, arrays["model"], self.settings
        X, y = arrays["X_train"], arrays["y_train"]
        if self._noise is not None:
            due = count % study.noise_scale_every == 0
            if due and not self.noise_from_workers():
                self._noise.observe_micro_batches(model, self.gradients, X, y, self.keep,
                                                  s.batch_size, s.seed, count)
            out.update(self._noise.metrics() if due else dict.fromkeys(self._noise.metrics(), float("nan")))
        if study.lipschitz_every:
            due = count % study.lipschitz_every == 0 and self._before is not None
            with np.errstate(all="ignore"):
                out["lipschitz"] = lipschitz(self._before, model, self.gradients, X, y, self.keep) \
                    if due else float("nan")
        return out

    def run_file_groups(self) -> dict[str, Mapping[str, np.ndarray]]:
        return {"mask": named_mask(self.layout, self.keep)} if self.keep is not None else {}

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
        dp = averaging_traffic(n, float(self.kept_total() * value), self.settings.network.topology)
        dp_step = (dp.total_up + dp.total_down) / n
        return {
            "params": self.layout.size,
            "ist_bytes_per_round_per_worker": ist,
            "dp_bytes_per_round_per_worker": dp_step,
            "dp_bytes_per_R_local_steps_per_worker": dp_step * self.settings.local_steps,
        }
