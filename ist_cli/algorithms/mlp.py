"""IST, data-parallel SGD, local SGD and single-worker SGD on the MLP (docs/algorithms.md).

Coordinator half. The arena holds the dataset once, the full model as one flat vector
(``ist_cli.models.mlp`` layout), each worker's shard of row ids, per-worker buffers
(``sub``: gathered subnet or replica; ``grad``; ``velocity``) and, for IST, the round's
partition. Workers compute in place; the coordinator draws the plan, averages what is
shared, evaluates the reassembled model and prices the traffic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ist_cli.algorithms.base import Algorithm
from ist_cli.algorithms.mlp_workers import DPWorker, ISTWorker, ReplicaWorker, output_bias_offset
from ist_cli.comm import INDEX_BYTES, Traffic, averaging_traffic, server_traffic
from ist_cli.data import dataset_from_config, partition_indices
from ist_cli.kernels import mlp as kernels
from ist_cli.models.mlp import B, initial_params, net_layout
from ist_cli.models.subnet import block_sizes, draw_partition, ist_subnet_sizes
from ist_cli.runtime.arena import ArraySpec
from ist_cli.runtime.pool import WorkerProgram
from ist_cli.seeding import stream

EVAL_TRAIN_LIMIT = 8192  # training loss is measured on at most this many fixed training rows
EVAL_CHUNK = 4096  # rows per forward pass at evaluation (also the batch-norm statistics' batch)


def subnet_scale(config: Mapping[str, Any]) -> str:
    """``auto`` resolves to what trained best on digits (docs/mlp.md): width under batch norm, else none."""
    scale = config.get("subnet_scale", "auto")
    if scale == "auto":
        return "width" if config["norm"] == "batch" else "none"
    return scale


class MLPAlgorithm(Algorithm):
    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = dict(config)
        self.name = config["algorithm"]
        self.n_workers = 1 if self.name == "single" else int(config["workers"])
        self.data = dataset_from_config(config)
        self.dtype = np.dtype(config["dtype"])
        self.batch_norm = config["norm"] == "batch"
        self.sizes = (self.data.n_train, self.data.n_test)
        self.widths = [self.data.n_features, *[int(w) for w in config["hidden"]], self.data.n_classes]
        self.layout = net_layout(self.widths, self.batch_norm)
        self.local_steps = 1 if self.name == "dp" else int(config["local_steps"])
        if self.name == "single":
            self.shards = [np.arange(self.data.n_train, dtype=np.int64)]
        else:
            self.shards = partition_indices(self.data.y_train, self.n_workers, config["partition"], config["seed"])
        self.scale = float(self.n_workers) if self.name == "ist" and subnet_scale(config) == "width" else 1.0
        self._eval_rows = self._training_subset()
        # where each worker's subnet keeps the shared output bias: fixed for the run
        self._output_bias_offsets = [output_bias_offset(self.widths, self.n_workers, worker, self.batch_norm)
                                     for worker in range(self.n_workers)] if self.name == "ist" else []
        self._server_velocity = np.zeros(self.layout.size if self.name == "dp" else 0, dtype=self.dtype)

    # -- arena --------------------------------------------------------------------
    def _buffer_size(self) -> int:
        if self.name != "ist":
            return self.layout.size
        values, _ = ist_subnet_sizes(self.widths, self.n_workers, self.batch_norm)
        return int(values.max())

    def arena_spec(self) -> ArraySpec:
        n, dt = self.n_workers, self.dtype.str
        (n_train, n_test), features = self.sizes, self.widths[0]
        spec: dict[str, tuple[tuple[int, ...], str]] = {
            "X_train": ((n_train, features), dt),
            "y_train": ((n_train,), "i8"),
            "X_test": ((n_test, features), dt),
            "y_test": ((n_test,), "i8"),
            "shard_index": ((sum(s.size for s in self.shards),), "i8"),
            "shard_bounds": ((n + 1,), "i8"),
            "model": ((self.layout.size,), dt),
            "grad": ((n, self._buffer_size()), dt),
        }
        if self.name != "dp":
            spec["sub"] = ((n, self._buffer_size()), dt)
            spec["velocity"] = ((n, self._buffer_size()), dt)
        if self.name == "ist":
            for h, width in enumerate(self.widths[1:-1]):
                spec[f"plan{h}"] = ((n, int(block_sizes(width, n).max())), "i8")
        return spec

    def initialize(self, arrays: dict[str, np.ndarray]) -> None:
        arrays["X_train"][...] = self.data.X_train
        arrays["y_train"][...] = self.data.y_train
        arrays["X_test"][...] = self.data.X_test
        arrays["y_test"][...] = self.data.y_test
        arrays["shard_index"][...] = np.concatenate(self.shards)
        arrays["shard_bounds"][1:] = np.cumsum([s.size for s in self.shards])
        arrays["model"][...] = initial_params(self.layout, self.config["seed"], self.dtype)
        # The arena now holds the data; drop the loader's copy so the parent keeps one
        # (fresh empty arrays: a [:0] view would keep the loader's buffer alive).
        empty = np.empty((0, self.widths[0]), dtype=self.dtype)
        self.data = replace(self.data, X_train=empty, X_test=empty)

    def warm_up(self) -> None:
        kernels.warm_up(self.dtype.name)

    def worker_program(self) -> WorkerProgram:
        settings = {
            "widths": self.widths, "batch_norm": self.batch_norm, "dtype": self.dtype.name,
            "n_workers": self.n_workers, "seed": int(self.config["seed"]), "lr": float(self.config["lr"]),
            "momentum": float(self.config["momentum"]), "batch_size": int(self.config["batch_size"]),
            "local_steps": self.local_steps, "scale": self.scale,
        }
        kind = {"ist": ISTWorker, "dp": DPWorker}.get(self.name, ReplicaWorker)
        return kind(settings)

    # -- rounds -------------------------------------------------------------------
    def plan_round(self, arrays: dict[str, np.ndarray], round_index: int) -> Sequence[Any] | None:
        if self.name == "ist":
            plans = draw_partition(self.widths[1:-1], self.n_workers, self.config["seed"], round_index)
            for h, plan in enumerate(plans):
                arrays[f"plan{h}"][...] = plan
        return None

    def aggregate(self, arrays: dict[str, np.ndarray], round_index: int, results: Sequence[Any]) -> None:
        model, size, n = arrays["model"], self.layout.size, self.n_workers
        if self.name == "ist":
            # Blocks were written back by the workers; only the shared output bias is averaged.
            start = int(self.layout.offsets[self.layout.n_layers - 1, B])
            classes = self.widths[-1]
            total = np.zeros(classes)
            for worker, offset in enumerate(self._output_bias_offsets):
                total += arrays["sub"][worker, offset : offset + classes]
            model[start : start + classes] = total / n
        elif self.name == "dp":
            mean_grad = (arrays["grad"][:, :size].sum(axis=0, dtype=np.float64) / n).astype(self.dtype)
            kernels.sgd_update(model, mean_grad, self._server_velocity, size, float(self.config["lr"]),
                               float(self.config["momentum"]))
        else:
            model[...] = arrays["sub"][:, :size].sum(axis=0, dtype=np.float64) / n

    def round_traffic(self, round_index: int) -> Traffic:
        """Closed forms (value bytes = the dtype's itemsize, indices int32).

        IST: worker i receives its subnet's P_i values plus the ids of its hidden neurons
        and returns P_i values. DP: one full gradient up, the averaged one down (ring:
        all-reduce). local SGD: the replica averaged once per round. single: nothing.
        """
        n, value = self.n_workers, self.dtype.itemsize
        if self.name == "single":
            zero = np.zeros(1)
            return Traffic(zero, zero.copy(), zero.copy())
        if self.name == "ist":
            values, indices = ist_subnet_sizes(self.widths, n, self.batch_norm)
            return server_traffic(values * value, values * value + indices * INDEX_BYTES)
        return averaging_traffic(n, float(self.layout.size * value), self.config["topology"])

    # -- results ------------------------------------------------------------------
    def _training_subset(self) -> np.ndarray:
        n_train = self.sizes[0]
        if n_train <= EVAL_TRAIN_LIMIT:
            return np.arange(n_train, dtype=np.int64)
        rng = stream(self.config["seed"], "eval")
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
                logits = kernels.forward_logits(model, self.layout.offsets, self.layout.widths, self.batch_norm,
                                                1.0, part).astype(np.float64)
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

    def final_params(self, arrays: dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        return {name: view.copy() for name, view in self.layout.named(arrays["model"]).items()}

    def summary_extras(self) -> dict[str, Any]:
        n, value = self.n_workers, self.dtype.itemsize
        values, indices = ist_subnet_sizes(self.widths, max(n, 1), self.batch_norm)
        ist = float((2 * values * value + indices * INDEX_BYTES).mean())
        dp = averaging_traffic(n, float(self.layout.size * value), self.config["topology"])
        dp_step = (dp.total_up + dp.total_down) / n
        return {
            "params": self.layout.size,
            "ist_bytes_per_round_per_worker": ist,
            "dp_bytes_per_round_per_worker": dp_step,
            "dp_bytes_per_R_local_steps_per_worker": dp_step * int(self.config["local_steps"]),
        }
