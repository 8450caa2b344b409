"""The quadratic model of Shulgin & Richtarik (docs/algorithms.md): problem, objective, optimum.

f(x) = (1/n) sum_i f_i(x), f_i(x) = 1/2 x^T L_i x - x^T b_i.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ist_cli.data.problem_file import load_problem_file
from ist_cli.seeding import stream

if TYPE_CHECKING:
    from ist_cli.settings import QuadraticSettings


@dataclass(frozen=True)
class QuadraticProblem:
    """Client matrices ``L`` (n, d, d) and vectors ``b`` (n, d), with derived averages."""

    L: np.ndarray
    b: np.ndarray

    @property
    def n_clients(self) -> int:
        return self.L.shape[0]

    @property
    def dim(self) -> int:
        return self.L.shape[1]

    @property
    def L_mean(self) -> np.ndarray:
        return self.L.mean(axis=0)

    @property
    def b_mean(self) -> np.ndarray:
        return self.b.mean(axis=0)

    def x_star(self) -> np.ndarray:
        return np.linalg.solve(self.L_mean, self.b_mean)

    def loss(self, x: np.ndarray) -> float:
        return float(0.5 * x @ self.L_mean @ x - x @ self.b_mean)

    def gradient(self, x: np.ndarray) -> np.ndarray:
        return self.L_mean @ x - self.b_mean


def generate_problem(
    n_clients: int,
    dim: int,
    *,
    seed: int,
    heterogeneous: bool = True,
    interpolation: bool = False,
    samples: int | None = None,
    l2: float = 0.1,
) -> QuadraticProblem:
    """L_i = A_i^T A_i / m + l2 I with A_i ~ N(0,1)^{m x d}.

    ``homogeneous`` shares one A and one b across clients. ``interpolation`` sets
    b_i = L_i x_true with x_true = 0, the regime in which IST's sketched local problems
    share the optimum too (docs/architecture.md explains why x_true must be 0).
    """
    m = samples or 2 * dim
    rng = stream(seed, "problem")
    count = n_clients if heterogeneous else 1
    A = rng.standard_normal((count, m, dim))
    L = np.einsum("kmi,kmj->kij", A, A) / m + l2 * np.eye(dim)
    L = 0.5 * (L + np.transpose(L, (0, 2, 1)))
    b = np.zeros((count, dim)) if interpolation else rng.standard_normal((count, dim))
    if not heterogeneous:
        L = np.repeat(L, n_clients, axis=0)
        b = np.repeat(b, n_clients, axis=0)
    return QuadraticProblem(np.ascontiguousarray(L), np.ascontiguousarray(b))


def problem_from_settings(settings: QuadraticSettings) -> QuadraticProblem:
    """The problem of a run: loaded from ``--problem-file`` (checked against ``--dim``) or generated."""
    if settings.problem_file:
        return QuadraticProblem(*load_problem_file(settings.problem_file, settings.workers, settings.dim))
    return generate_problem(
        settings.workers,
        settings.dim,
        seed=settings.seed,
        heterogeneous=settings.heterogeneity == "heterogeneous",
        interpolation=settings.interpolation,
        samples=settings.client_samples,
        l2=settings.l2,
    )


def initial_point(dim: int, seed: int) -> np.ndarray:
    """x^0 ~ N(0, I): a nonzero start, so convergence to x* = 0 is not trivial."""
    return stream(seed, "init").standard_normal(dim)
