"""IST, GD and DCGD on the quadratic model (docs/algorithms.md).

All three share one worker kernel, z <- z - lr C_i grad f_i(z) from a start point, and
one aggregation, x <- mean_i z_i; they differ in the start point and the sketch:
IST starts from C_i x, GD uses C_i = I, DCGD starts from x with a random C_i.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ist_cli.algorithms.base import Algorithm
from ist_cli.comm import INDEX_BYTES, Traffic, averaging_traffic, server_traffic
from ist_cli.kernels import quadratic as kernels
from ist_cli.models.quadratic import QuadraticProblem, initial_point, problem_from_config
from ist_cli.models.sketches import draw_scales, identity_scales
from ist_cli.runtime.arena import ArraySpec
from ist_cli.seeding import stream

VALUE_BYTES = 8  # float64
PROBLEM_STORE_LIMIT = 256 * 2**20  # /problem is stored when it fits in this many bytes


class QuadraticWorker:
    """Worker half: one client's local steps, in place on its rows of the arena."""

    def __init__(self, lr: float, local_steps: int) -> None:
        self.lr = lr
        self.local_steps = local_steps

    def setup(self, arrays: dict[str, np.ndarray], worker: int) -> None:
        self.L = arrays["L"][worker]
        self.b = arrays["b"][worker]
        self.start = arrays["start"][worker]
        self.scales = arrays["scales"][worker]
        self.out = arrays["out"][worker]
        kernels.warm_up()  # load the compiled kernel now, not inside round 1's timing

    def step(self, round_index: int, payload: Any) -> None:
        kernels.sketched_local_steps(self.L, self.b, self.start, self.scales, self.lr, self.local_steps, self.out)


class QuadraticAlgorithm(Algorithm):
    def __init__(self, config: Mapping[str, Any], problem: QuadraticProblem | None = None) -> None:
        self.config = dict(config)
        self.name = config["algorithm"]
        self.problem = problem or problem_from_config(config)
        self.n_workers = self.problem.n_clients
        self.dim = self.problem.dim
        self.sketch = "identity" if self.name == "gd" else config["sketch"]
        self.q = config["sketch_q"] or max(1, self.dim // self.n_workers)
        self.x_star = self.problem.x_star()
        self.f_star = self.problem.loss(self.x_star)
        self._support = np.full(self.n_workers, self.dim)

    # -- arena --------------------------------------------------------------------
    def arena_spec(self) -> ArraySpec:
        n, d = self.n_workers, self.dim
        return {
            "L": ((n, d, d), "f8"),
            "b": ((n, d), "f8"),
            "x": ((d,), "f8"),
            "start": ((n, d), "f8"),
            "scales": ((n, d), "f8"),
            "out": ((n, d), "f8"),
        }

    def initialize(self, arrays: dict[str, np.ndarray]) -> None:
        arrays["L"][...] = self.problem.L
        arrays["b"][...] = self.problem.b
        arrays["x"][...] = initial_point(self.dim, self.config["seed"])

    def warm_up(self) -> None:
        kernels.warm_up()

    def worker_program(self) -> QuadraticWorker:
        return QuadraticWorker(self.config["lr"], self.config["local_steps"])

    # -- rounds -------------------------------------------------------------------
    def plan_round(self, arrays: dict[str, np.ndarray], round_index: int) -> Sequence[Any] | None:
        n, d = self.n_workers, self.dim
        if self.sketch == "identity":
            scales = identity_scales(n, d)
        else:
            scales = draw_scales(self.sketch, n, d, self.q, stream(self.config["seed"], "plan", round_index))
        arrays["scales"][...] = scales
        x = arrays["x"]
        arrays["start"][...] = scales * x if self.name == "ist" else x
        self._support = np.count_nonzero(scales, axis=1)
        return None

    def aggregate(self, arrays: dict[str, np.ndarray], round_index: int, results: Sequence[Any]) -> None:
        arrays["x"][...] = arrays["out"].mean(axis=0)

    def round_traffic(self, round_index: int) -> Traffic:
        """Dense vectors travel as d floats; sparse ones as values plus int32 indices.

        IST: the worker receives its block of C_i x with indices and returns the values
        (the server knows the block). DCGD: x down, the sketched gradient (values and
        indices) up. GD: plain averaging of d floats.
        """
        n, d = self.n_workers, self.dim
        dense = float(VALUE_BYTES * d)
        if self.name == "gd":
            return averaging_traffic(n, dense, self.config["topology"])
        support = self._support.astype(np.float64)
        sparse = self.sketch != "identity"
        if self.name == "ist":
            down = support * (VALUE_BYTES + INDEX_BYTES) if sparse else np.full(n, dense)
            up = support * VALUE_BYTES if sparse else np.full(n, dense)
        else:  # dcgd
            down = np.full(n, dense)
            up = support * (VALUE_BYTES + INDEX_BYTES) if sparse else np.full(n, dense)
        return server_traffic(up, down)

    # -- results ------------------------------------------------------------------
    def evaluate(self, arrays: dict[str, np.ndarray]) -> dict[str, float]:
        x = arrays["x"]
        with np.errstate(all="ignore"):
            loss = self.problem.loss(x)
            grad = self.problem.gradient(x)
            diff = x - self.x_star
            return {
                "loss": loss,
                "f_gap": loss - self.f_star,
                "grad_norm_sq": float(grad @ grad),
                "dist_to_opt_sq": float(diff @ diff),
            }

    def final_params(self, arrays: dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        return {"x": arrays["x"].copy()}

    def problem_arrays(self) -> Mapping[str, np.ndarray]:
        if self.problem.L.nbytes > PROBLEM_STORE_LIMIT:
            return {"x_star": self.x_star}
        return {"L": self.problem.L, "b": self.problem.b, "x_star": self.x_star}

    def snapshot(self, arrays: dict[str, np.ndarray]) -> np.ndarray | None:
        return arrays["x"].copy()
