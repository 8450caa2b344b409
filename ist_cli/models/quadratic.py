"""The quadratic model of Shulgin & Richtarik (docs/algorithms.md): problem, objective, optimum.

f(x) = (1/n) sum_i f_i(x), f_i(x) = 1/2 x^T L_i x - x^T b_i.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ist_cli.errors import UserError
from ist_cli.seeding import stream


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


def load_problem(path: str | Path, n_clients: int) -> QuadraticProblem:
    """Read L (n,d,d) and b (n,d) from an .npz or .h5 (top level or /problem, as ist writes)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--problem-file: {str(path)!r} does not exist; expected an .npz or .h5 file with L and b")
    try:
        if path.suffix in (".h5", ".hdf5"):
            with h5py.File(path, "r") as handle:
                group: Any = handle["problem"] if "problem" in handle else handle
                L, b = np.asarray(group["L"][()], dtype=np.float64), np.asarray(group["b"][()], dtype=np.float64)
        else:
            with np.load(path) as data:
                L, b = np.asarray(data["L"], dtype=np.float64), np.asarray(data["b"], dtype=np.float64)
    except KeyError:
        raise UserError(f"--problem-file: {str(path)!r} has no arrays 'L' and 'b'") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"--problem-file: {str(path)!r} cannot be read ({exc})") from None
    if L.ndim != 3 or L.shape[1] != L.shape[2] or b.shape != L.shape[:2]:
        raise UserError(f"--problem-file: {str(path)!r} has L{L.shape}, b{b.shape}; expected L (n,d,d) and b (n,d)")
    if L.shape[0] != n_clients:
        raise UserError(f"--problem-file: {str(path)!r} holds {L.shape[0]} clients; expected --workers {L.shape[0]}")
    if not (np.isfinite(L).all() and np.isfinite(b).all()):
        raise UserError(f"--problem-file: {str(path)!r} contains NaN or inf")
    if not np.allclose(L, np.transpose(L, (0, 2, 1)), atol=1e-10):
        raise UserError(f"--problem-file: {str(path)!r} has non-symmetric L_i; expected symmetric matrices")
    try:
        np.linalg.cholesky(L.mean(axis=0))
    except np.linalg.LinAlgError:
        raise UserError(f"--problem-file: {str(path)!r} has a singular mean L; expected it positive definite") from None
    return QuadraticProblem(np.ascontiguousarray(L), np.ascontiguousarray(b))


def problem_from_config(config: Mapping[str, Any]) -> QuadraticProblem:
    if config.get("problem_file"):
        problem = load_problem(config["problem_file"], config["workers"])
        if problem.dim != config["dim"]:
            raise UserError(
                f"--dim: {config['dim']} does not match the problem file's dimension {problem.dim}; "
                f"expected --dim {problem.dim}"
            )
        return problem
    return generate_problem(
        config["workers"],
        config["dim"],
        seed=config["seed"],
        heterogeneous=config["heterogeneity"] == "heterogeneous",
        interpolation=config["interpolation"],
        samples=config["client_samples"],
        l2=config["l2"],
    )


def initial_point(dim: int, seed: int) -> np.ndarray:
    """x^0 ~ N(0, I): a nonzero start, so convergence to x* = 0 is not trivial."""
    return stream(seed, "init").standard_normal(dim)
