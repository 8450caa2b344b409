"""Run files with known metric values for the report tests, written by the real
``RunFileWriter``; plus independent reference computations the tests compare against."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from ist_cli.config import config_hash, resolve_config
from ist_cli.io.runfile import RunFileWriter
from ist_cli.seeding import stream

ENV = {"host": "testhost", "python": "3.11.0", "packages": {"numpy": "9.9.9", "h5py": "8.8.8"}}
ROUNDS = 21


def quadratic_problem(n: int = 4, d: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """L_i = A_iᵀA_i/m + 0.1 I, b_i ~ N(0, I), x* = L̄⁻¹b̄ (docs/algorithms.md)."""
    rng = np.random.default_rng(1000 + seed)
    A = rng.standard_normal((n, 2 * d, d))
    L = np.einsum("nmi,nmj->nij", A, A) / (2 * d) + 0.1 * np.eye(d)
    b = rng.standard_normal((n, d))
    return {"L": L, "b": b, "x_star": np.linalg.solve(L.mean(0), b.mean(0))}


def known_metrics(algorithm: str, seed: int, rounds: int = ROUNDS) -> dict[str, np.ndarray]:
    """Deterministic curves: loss decays over 4 decades, its level depends on seed and algorithm."""
    r = np.arange(rounds, dtype=np.float64)
    scale = 1.0 + 0.1 * seed + (0.5 if algorithm == "gd" else 0.0)
    per_round = 96.0 if algorithm == "ist" else 384.0
    return {
        "round": r,
        "loss": scale * np.exp(-r * np.log(1e4) / (rounds - 1)) + 0.01 * seed,
        "wall_time": 0.5 + 0.01 * r * (1 + 0.01 * seed),
        "compute_time": 0.008 * r,
        "comm_time_model": 0.002 * r,
        "bytes_up": per_round * r,
        "bytes_down": 1.5 * per_round * r,
        "grad_norm_sq": scale * np.exp(-r / 4),
        "dist_to_opt_sq": 0.3 + scale * np.exp(-r / 3),
        "f_gap": 1.0 + 0.1 * np.sin(r + seed),  # spans less than two decades
    }


def write_run(
    directory: Path,
    *,
    algorithm: str = "ist",
    seed: int = 0,
    status: str = "completed",
    problem: dict[str, np.ndarray] | None = None,
    metrics: dict[str, np.ndarray] | None = None,
    **overrides: object,
) -> Path:
    config = resolve_config({"model": "quadratic", "workers": 4, "dim": 8, "algorithm": algorithm,
                             "seed": seed, **overrides})
    path = Path(directory) / f"{algorithm}-s{seed}-{config_hash(config, 6)}.h5"
    writer = RunFileWriter(path, run_id=config_hash(config), config=config, env=ENV, seed=seed,
                           version="0.1.0", git_commit="deadbeef")
    metrics = known_metrics(algorithm, seed) if metrics is None else metrics
    names = list(metrics)
    for k in range(len(metrics["round"])):
        writer.append_metrics({name: metrics[name][k] for name in names})
    writer.write_group("final", {"x": np.zeros(config.get("dim", 1))})
    if problem is not None:
        writer.write_group("problem", problem)
    return writer.close(status)


def small_sweep(directory: Path, seeds: tuple[int, ...] = (0, 1, 2, 3)) -> list[Path]:
    """ist and gd, four seeds each: two groups."""
    problem = quadratic_problem()
    return [write_run(directory, algorithm=a, seed=s, problem=problem) for a in ("ist", "gd") for s in seeds]


def h5_final(path: Path, metric: str) -> float:
    """Read straight from HDF5, not through ``read_run``."""
    with h5py.File(path, "r") as handle:
        if metric == "bytes":
            return float(handle["metrics/bytes_up"][-1] + handle["metrics/bytes_down"][-1])
        return float(handle[f"metrics/{metric}"][-1])


def h5_config(path: Path) -> str:
    with h5py.File(path, "r") as handle:
        return handle["config"][()].decode()


def reference_bootstrap(values: list[float], resamples: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """Plain index-resampling percentile bootstrap with the same random draws."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 1:
        return float(x[0]), float(x[0]), float(x[0])
    idx = stream(seed, "bootstrap").integers(0, x.size, size=(resamples, x.size))
    means = x[idx].mean(axis=1)
    return float(x.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))
