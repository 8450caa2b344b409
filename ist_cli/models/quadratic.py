"""The quadratic model of Shulgin & Richtarik (DESIGN §2.1): problem, objective, optimum.

f(x) = (1/n) sum_i f_i(x), f_i(x) = 1/2 x^T L_i x - x^T b_i.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ist_cli.errors import UserError, shown
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


PROBLEM_EXPECTS = "an .npz or .h5 file with arrays L (n,d,d) and b (n,d)"


def _declared_shapes(L_shape: tuple[int, ...], b_shape: tuple[int, ...], n_clients: int, dim: int, where: str) -> None:
    """Refuse wrong shapes from the file's headers, before a byte of the arrays is read."""
    if len(L_shape) != 3 or L_shape[1] != L_shape[2] or tuple(b_shape) != tuple(L_shape[:2]):
        raise UserError(f"{where} has L{tuple(L_shape)}, b{tuple(b_shape)}; expected L (n,d,d) and b (n,d)")
    if L_shape[0] != n_clients:
        raise UserError(f"{where} holds {L_shape[0]} clients; expected --workers {L_shape[0]}")
    if L_shape[1] != dim:
        raise UserError(f"--dim: {dim} does not match the problem file's dimension {L_shape[1]}; "
                        f"expected --dim {L_shape[1]}")


def _read_h5(path: Path, n_clients: int, dim: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(path, "r") as handle:
        group: Any = handle["problem"] if "problem" in handle else handle
        L, b = group["L"], group["b"]
        for name, node in (("L", L), ("b", b)):
            if not isinstance(node, h5py.Dataset) or node.dtype.kind not in "biuf":
                raise UserError(f"{where}: {name!r} is not a numeric array; expected {PROBLEM_EXPECTS}")
        _declared_shapes(L.shape, b.shape, n_clients, dim, where)
        return np.asarray(L[()], dtype=np.float64), np.asarray(b[()], dtype=np.float64)


def _npz_member_shape(archive: Any, name: str, where: str) -> tuple[int, ...]:
    """Shape of ``name`` in an .npz from its .npy header, without reading the array."""
    with archive.zip.open(f"{name}.npy") as member:
        version = np.lib.format.read_magic(member)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = reader(member)
    if dtype.kind not in "biuf":
        raise UserError(f"{where}: {name!r} has dtype {dtype}; expected {PROBLEM_EXPECTS}")
    return shape


def _read_npz(path: Path, n_clients: int, dim: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    loaded = np.load(path, allow_pickle=False, mmap_mode="r")
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise UserError(f"{where} is a single array, not an archive; expected {PROBLEM_EXPECTS}")
    with loaded as data:
        if "L" not in data.files or "b" not in data.files:
            raise KeyError("L")
        _declared_shapes(_npz_member_shape(data, "L", where), _npz_member_shape(data, "b", where), n_clients, dim,
                         where)
        return np.asarray(data["L"], dtype=np.float64), np.asarray(data["b"], dtype=np.float64)


def load_problem(path: str | Path, n_clients: int, dim: int) -> QuadraticProblem:
    """Read L (n,d,d) and b (n,d) from an .npz or .h5 (top level or /problem, as ist writes).

    Shapes and types are checked from the file's headers before the arrays are read.
    """
    path = Path(path)
    where = f"--problem-file: {shown(str(path))}"
    if not path.is_file():
        raise UserError(f"{where} does not exist or is not a regular file; expected {PROBLEM_EXPECTS}")
    try:
        if path.suffix in (".h5", ".hdf5"):
            L, b = _read_h5(path, n_clients, dim, where)
        else:
            L, b = _read_npz(path, n_clients, dim, where)
    except KeyError:
        raise UserError(f"{where} has no arrays 'L' and 'b'; expected {PROBLEM_EXPECTS}") from None
    except (OSError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{where} cannot be read ({shown(reason)[1:-1]}); expected {PROBLEM_EXPECTS}") from None
    if L.ndim != 3 or L.shape[1] != L.shape[2] or b.shape != L.shape[:2]:
        raise UserError(f"{where} has L{L.shape}, b{b.shape}; expected L (n,d,d) and b (n,d)")
    if L.shape[0] != n_clients:
        raise UserError(f"{where} holds {L.shape[0]} clients; expected --workers {L.shape[0]}")
    if not (np.isfinite(L).all() and np.isfinite(b).all()):
        raise UserError(f"{where} contains NaN or inf")
    if not np.allclose(L, np.transpose(L, (0, 2, 1)), atol=1e-10):
        raise UserError(f"{where} has non-symmetric L_i; expected symmetric matrices")
    try:
        np.linalg.cholesky(L.mean(axis=0))
    except np.linalg.LinAlgError:
        raise UserError(f"{where} has a singular mean L; expected it positive definite") from None
    return QuadraticProblem(np.ascontiguousarray(L), np.ascontiguousarray(b))


def problem_from_config(config: Mapping[str, Any]) -> QuadraticProblem:
    if config.get("problem_file"):
        return load_problem(config["problem_file"], config["workers"], config["dim"])
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
