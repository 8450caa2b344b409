"""IST, GD and DCGD on the quadratic model (docs/algorithms.md).

All three share one worker kernel, z <- z - lr C_i grad f_i(z) from a start point w_i, and
one aggregation, x <- mean_i z_i (IST's ``--server-update delta``: x <- x + mean_i (z_i - w_i),
the same when mean_i C_i = I; docs/theory.md); they differ in the start point, the sketch and so in
what crosses the network: IST sends C_i x down (its block: values and indices) and the
block's values up; GD (C_i = I) sends x down and z up; DCGD sends x down and gets the
sketched coordinates (values and indices) back, the worker drawing C_i from the shared seed.

The coordinator keeps the dense plan (``scales``, ``start``) and the dense results
(``out``); a worker computes from its exchange buffers (``down``/``up`` and their int32
``*_ids``) into private dense rows (``z_*``), so what it reads is what the network carries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ist_cli.algorithms.base import Algorithm
from ist_cli.algorithms.plans import DCGDPlan, GDPlan, QuadraticISTPlan
from ist_cli.comm import INDEX_BYTES, Traffic, averaging_traffic, server_traffic
from ist_cli.errors import UserError
from ist_cli.kernels import quadratic as kernels
from ist_cli.models.quadratic import initial_point, problem_from_settings
from ist_cli.models.sketches import draw_support, sketch_law, worker_weights
from ist_cli.runtime.arena import ArraySpec
from ist_cli.runtime.transport import Exchange, Region, WorkerProgram
from ist_cli.seeding import stream
from ist_cli.settings import QuadraticSettings

VALUE_BYTES = 8  # float64
PROBLEM_STORE_LIMIT = 256 * 2**20  # /problem is stored when it fits in this many bytes


@dataclass(frozen=True)
class LocalProblem:
    """What a quadratic worker needs besides its L_i and b_i."""

    lr: float
    local_steps: int
    sketch: str
    n_workers: int
    dim: int
    q: int  # coordinates a sketch keeps (d for the identity)
    seed: int


class DenseWorker(WorkerProgram):
    """The identity sketch (GD, or IST/DCGD with ``--sketch identity``): d values each way."""

    def __init__(self, problem: LocalProblem) -> None:
        self.problem = problem

    def setup(self, arrays: dict[str, np.ndarray], worker: int) -> None:
        self.worker = worker
        self.L, self.b = arrays["L"][worker], arrays["b"][worker]
        self.start, self.scales, self.out = arrays["start"][worker], arrays["scales"][worker], arrays["out"][worker]
        self.down, self.down_ids = arrays["down"][worker], arrays["down_ids"][worker]
        self.up, self.up_ids = arrays["up"][worker], arrays["up_ids"][worker]
        self.z_start, self.z_scales, self.z_out = (arrays[name][worker] for name in ("z_start", "z_scales", "z_out"))
        p = self.problem  # the sketch's weights on this worker's coordinates: from its own L_i, never sent
        self.weights = worker_weights(p.sketch, self.L, p.n_workers, p.dim, p.q)
        kernels.warm_up()  # load the compiled kernel now, not inside round 1's timing

    def resident(self, worker: int) -> tuple[Region, ...]:
        return Region("L", worker), Region("b", worker)

    def exchange(self, round_index: int) -> Exchange:
        d = self.problem.dim
        return Exchange(down=(Region("down", self.worker, d),), up=(Region("up", self.worker, d),))

    def local_steps(self, start: np.ndarray, scales: np.ndarray, out: np.ndarray) -> None:
        p = self.problem
        kernels.sketched_local_steps(L=self.L, b=self.b, start=start, scales=scales, lr=p.lr, steps=p.local_steps,
                                     out=out)

    def pack_down(self, round_index: int) -> None:
        self.down[:] = self.start

    def step(self, round_index: int, payload: Any) -> None:
        self.z_scales[:] = 1.0
        self.local_steps(self.down, self.z_scales, self.up)

    def unpack_up(self, round_index: int) -> None:
        self.out[:] = self.up


class ISTWorker(DenseWorker):
    """IST under a sparse sketch: down the block of C_i x (values, ids), up the block's values."""

    def exchange(self, round_index: int) -> Exchange:
        k, w = self.problem.q, self.worker
        return Exchange(down=(Region("down", w, k), Region("down_ids", w, k)), up=(Region("up", w, k),))

    def pack_down(self, round_index: int) -> None:
        k = self.problem.q
        ids = np.flatnonzero(self.scales)
        self.down_ids[:k] = ids
        self.down[:k] = self.start[ids]

    def step(self, round_index: int, payload: Any) -> None:
        p, ids = self.problem, self.down_ids[: self.problem.q]
        self.z_start[:] = 0.0
        self.z_start[ids] = self.down[: p.q]
        self.z_scales[:] = 0.0
        self.z_scales[ids] = self.weights[ids]
        self.local_steps(self.z_start, self.z_scales, self.z_out)
        self.up[: p.q] = self.z_out[ids]

    def unpack_up(self, round_index: int) -> None:
        ids = self.down_ids[: self.problem.q]
        self.out[:] = self.start  # off the block the kernel leaves the start as it was
        self.out[ids] = self.up[: self.problem.q]


class DCGDWorker(DenseWorker):
    """DCGD under a sparse sketch: x down; the worker draws C_i from the shared seed; values and ids up."""

    def exchange(self, round_index: int) -> Exchange:
        k, w = self.problem.q, self.worker
        return Exchange(down=(Region("down", w, self.problem.dim),), up=(Region("up", w, k), Region("up_ids", w, k)))

    def step(self, round_index: int, payload: Any) -> None:
        p = self.problem
        rng = stream(p.seed, "plan", round_index)
        self.z_scales[:] = np.where(draw_support(p.sketch, p.n_workers, p.dim, p.q, rng)[self.worker], self.weights, 0.0)
        self.local_steps(self.down, self.z_scales, self.z_out)
        ids = np.flatnonzero(self.z_scales)
        self.up_ids[: p.q] = ids
        self.up[: p.q] = self.z_out[ids]

    def unpack_up(self, round_index: int) -> None:
        ids = self.up_ids[: self.problem.q]
        self.out[:] = self.start
        self.out[ids] = self.up[: self.problem.q]


class QuadraticMethod(Algorithm):
    """What the three methods share: the problem in the arena, the plan, the average, the metrics."""

    sparse_worker: type[DenseWorker] = DenseWorker

    def __init__(self, settings: QuadraticSettings) -> None:
        self.settings = settings
        self.problem = problem_from_settings(settings)
        self.n_workers = self.problem.n_clients
        self.dim = self.problem.dim
        self.sketch = self.sketch_of(settings)
        try:
            self.law = sketch_law(self.sketch, self.problem.L, settings.sketch_q)
            self.law.draw(stream(settings.seed, "plan", 1))  # a plug-in's sets checked now, not in round 1
        except ValueError as exc:
            raise UserError(f"--sketch {self.sketch}: {exc}") from None
        self.q = self.law.q
        self.x_star = self.problem.x_star()
        self.f_star = self.problem.loss(self.x_star)
        self._support = np.full(self.n_workers, self.dim)

    def sketch_of(self, settings: QuadraticSettings) -> str:
        return settings.sketch

    def start_point(self, scales: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Where each worker's local steps start (one row per worker)."""
        return np.broadcast_to(x, scales.shape)

    # -- arena --------------------------------------------------------------------
    def arena_spec(self) -> ArraySpec:
        n, d = self.n_workers, self.dim
        rows = ((n, d), "f8")
        return {"L": ((n, d, d), "f8"), "b": rows, "x": ((d,), "f8"), "start": rows, "scales": rows, "out": rows,
                "down": rows, "down_ids": ((n, d), "i4"), "up": rows, "up_ids": ((n, d), "i4"),
                "z_start": rows, "z_scales": rows, "z_out": rows}

    def initialize(self, arrays: dict[str, np.ndarray]) -> None:
        arrays["L"][...] = self.problem.L
        arrays["b"][...] = self.problem.b
        arrays["x"][...] = initial_point(self.dim, self.settings.seed)

    def worker_program(self) -> WorkerProgram:
        s = self.settings
        kind = DenseWorker if self.sketch == "identity" else self.sparse_worker
        return kind(LocalProblem(lr=s.lr, local_steps=s.local_steps, sketch=self.sketch, n_workers=self.n_workers,
                                 dim=self.dim, q=self.q, seed=s.seed))

    # -- rounds -------------------------------------------------------------------
    def plan_round(self, arrays: dict[str, np.ndarray], round_index: int) -> None:
        rng = None if self.sketch == "identity" else stream(self.settings.seed, "plan", round_index)
        scales = self.law.draw(rng)
        arrays["scales"][...] = scales
        arrays["start"][...] = self.start_point(scales, arrays["x"])
        self._support = np.count_nonzero(scales, axis=1)

    def aggregate(self, arrays: dict[str, np.ndarray], round_index: int, results: Sequence[Any]) -> None:
        arrays["x"][...] = arrays["out"].mean(axis=0)

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

    def snapshot_every(self) -> int:
        return self.settings.save_params_every

    def _dense(self) -> np.ndarray:
        return np.full(self.n_workers, float(VALUE_BYTES * self.dim))


class IST(QuadraticMethod):
    sparse_worker = ISTWorker
    plan = QuadraticISTPlan

    def start_point(self, scales: np.ndarray, x: np.ndarray) -> np.ndarray:
        return scales * x

    def aggregate(self, arrays: dict[str, np.ndarray], round_index: int, results: Sequence[Any]) -> None:
        if self.settings.server_update == "delta":  # x + (1/n) Σ (z_i − w_i): the gradient form of the method
            arrays["x"] += (arrays["out"] - arrays["start"]).mean(axis=0)
        else:
            super().aggregate(arrays, round_index, results)

    def round_traffic(self, round_index: int) -> Traffic:
        """The worker receives its block of C_i x with indices and returns the values (the server knows the block)."""
        if self.sketch == "identity":
            return server_traffic(self._dense(), self._dense())
        support = self._support.astype(np.float64)
        return server_traffic(support * VALUE_BYTES, support * (VALUE_BYTES + INDEX_BYTES))


class GD(QuadraticMethod):
    plan = GDPlan

    def sketch_of(self, settings: QuadraticSettings) -> str:
        return "identity"

    def round_traffic(self, round_index: int) -> Traffic:
        """Plain averaging of d floats (ring: all-reduce)."""
        return averaging_traffic(self.n_workers, float(VALUE_BYTES * self.dim), self.settings.network.topology)


class DCGD(QuadraticMethod):
    sparse_worker = DCGDWorker
    plan = DCGDPlan

    def round_traffic(self, round_index: int) -> Traffic:
        """x down; the sketched gradient up as values and indices."""
        if self.sketch == "identity":
            return server_traffic(self._dense(), self._dense())
        support = self._support.astype(np.float64)
        return server_traffic(support * (VALUE_BYTES + INDEX_BYTES), self._dense())


#: algorithm name (its plan's) -> method class
METHODS: dict[str, type[QuadraticMethod]] = {method.plan.algorithm: method for method in (IST, GD, DCGD)}
