"""Everything the theory says about one quadratic configuration: the calculator behind
``ist theory`` and the report's theory overlay (one function, so both print the same x^∞).

Numbers come from ``models.theory`` (mean dynamics) and ``models.theorems`` (Theorems 1-2);
this module only chooses what applies to the configured method and packs it as JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ist_cli.models.quadratic import initial_point, problem_from_settings
from ist_cli.models.theorems import Theorem1, Theorem2, theorem1, theorem2
from ist_cli.models.theory import (
    SERVER_UPDATE_DEFAULT,
    MeanDynamics,
    mean_dynamics,
    mean_trajectory,
    method_for,
    optimum,
    round_of,
)

if TYPE_CHECKING:
    from ist_cli.settings import QuadraticSettings


@dataclass(frozen=True)
class Analysis:
    """The theory of one configuration (method, problem, x⁰)."""

    settings: dict[str, Any]
    dynamics: MeanDynamics
    x_star: np.ndarray
    x_limit: np.ndarray | None
    mean_dist_sq: np.ndarray  # ‖E[x^k] − x*‖², k = 0..rounds
    theorem1: Theorem1 | None
    theorem2: Theorem2 | None
    notes: tuple[str, ...]

    def error(self, quantity) -> Any:
        return self.dynamics.standard_error(quantity)

    @property
    def rho(self) -> float:
        return self.dynamics.spectral_radius()

    @property
    def bias_sq(self) -> float | None:
        """‖x^∞ − x*‖², the irreducible bias of the mean (None when the mean does not settle)."""
        return None if self.x_limit is None else float((self.x_limit - self.x_star) @ (self.x_limit - self.x_star))

    def to_json(self) -> dict[str, Any]:
        dyn = self.dynamics
        out: dict[str, Any] = {
            **self.settings,
            "exact": dyn.exact,
            "spectral_radius": self.rho,
            "spectral_radius_se": float(self.error(_rho)),
            "converges": self.x_limit is not None,
            "x_star": self.x_star.tolist(),
            "x_limit": None if self.x_limit is None else self.x_limit.tolist(),
            "bias": None if self.bias_sq is None else float(np.sqrt(self.bias_sq)),
            "bias_sq": self.bias_sq,
            "mean_dist_sq": [float(v) if np.isfinite(v) else None for v in self.mean_dist_sq],
            "notes": list(self.notes),
        }
        if self.x_limit is not None:
            out["x_limit_se"] = np.asarray(self.error(_limit)).tolist()
            out["bias_se"] = float(self.error(lambda P, c: _bias(P, c, self.x_star)))
        if self.theorem1 is not None:
            t1 = self.theorem1
            out["theorem1"] = {
                "mean_B": t1.mean_B.tolist(), "mean_B_minus_I_max": float(np.abs(t1.mean_B - np.eye(len(t1.W))).max()),
                "W": t1.W.tolist(), "W_eigmin": t1.W_eigmin, "W_psd": t1.W_psd, "theta": t1.theta,
                "step_bound": t1.step_bound, "mu": t1.mu, "rate": t1.rate, "note": t1.note,
            }
        if self.theorem2 is not None:
            t2 = self.theorem2
            out["theorem2"] = {
                "h": None if t2.h is None else t2.h.tolist(), "h_norm_sq": t2.h_norm_sq, "sigma_sq": t2.sigma_sq,
                "beta": t2.beta, "neighbourhood": t2.neighbourhood, "note": t2.note,
            }
        return out


def _rho(P: np.ndarray, c: np.ndarray) -> float:
    return float(np.max(np.abs(np.linalg.eigvals(P))))


def _limit(P: np.ndarray, c: np.ndarray) -> np.ndarray:
    return np.linalg.solve(np.eye(P.shape[0]) - P, c)


def _bias(P: np.ndarray, c: np.ndarray, x_star: np.ndarray) -> float:
    gap = _limit(P, c) - x_star
    return float(np.sqrt(gap @ gap))


def analyze(settings: QuadraticSettings, L: np.ndarray, b: np.ndarray, x0: np.ndarray, *,
            samples: int | None = None, theorems: bool = True) -> Analysis:
    """The theory of a quadratic run's ``settings`` on clients (L, b) from x⁰.

    Exact for one local step unless ``samples`` asks for Monte Carlo; R > 1 needs ``samples``.
    Raises ValueError for what the theory cannot do (the CLI turns it into a one-line error).
    """
    algorithm, rounds = settings.algorithm, settings.rounds
    rule = round_of(algorithm)
    server_update = settings.server_update if rule.server_updates else SERVER_UPDATE_DEFAULT
    lr, steps = float(settings.lr), int(settings.local_steps)
    method = method_for(algorithm, settings.sketch, L, q=settings.sketch_q, server_update=server_update,
                        lr=lr, local_steps=steps)
    dyn = mean_dynamics(method, L, b, samples=samples, seed=settings.seed)
    x_star = optimum(L, b)
    x_limit = dyn.limit()
    with np.errstate(over="ignore", invalid="ignore"):  # a diverging mean overflows to inf
        xs = mean_trajectory(dyn.P, dyn.c, np.asarray(x0, dtype=np.float64), rounds)
        dist = np.sum((xs - x_star) ** 2, axis=1)
    settings = {"algorithm": algorithm, "sketch": method.law.kind, "q": method.law.q, "server_update": server_update,
                "lr": lr, "local_steps": steps, "workers": method.law.n, "dim": method.law.d,
                "rounds": rounds, "samples": dyn.samples}
    notes: list[str] = []
    if x_limit is None:
        notes.append(f"ρ(P) = {dyn.spectral_radius():.6g} >= 1: the mean iterate does not converge at lr {lr:g}")
    t1 = t2 = None
    if theorems and rule.theorems and steps == 1:
        t1, t2 = theorem1(method.law, L, lr), theorem2(method.law, L, b, lr)
        if np.any(np.asarray(b) != 0):
            notes.append("Theorem 1 assumes interpolation (b_i = 0); this problem has b ≠ 0, so its rate bounds "
                         "only the b = 0 version of the problem")
        if server_update == "average" and method.law.kind in ("perm-precond", "rand"):
            notes.append("Theorems 1-2 analyse the delta (gradient) form; with --server-update average this "
                         "sketch runs a different method ((1/n)Σ C_i ≠ I)")
    elif theorems and not rule.theorems:
        notes.append(f"Theorems 1-2 are about IST (and GD); for {algorithm.upper()} only the mean dynamics are computed")
    elif theorems:
        notes.append(f"Theorems 1-2 are about one local step; with R = {steps} only the mean dynamics are computed")
    return Analysis(settings, dyn, x_star, x_limit, dist, t1, t2, tuple(notes))


def run_inputs(settings: QuadraticSettings, problem: Mapping[str, np.ndarray],
               params: Mapping[str, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(L, b, x⁰) of a quadratic run from what its file holds: /problem (regenerated from the
    settings when it was too large to store) and x⁰ from /params (else from the seed, as the run drew it)."""
    if "L" in problem and "b" in problem:
        L, b = np.asarray(problem["L"]), np.asarray(problem["b"])
    else:
        regenerated = problem_from_settings(settings)
        L, b = regenerated.L, regenerated.b
    params = params or {}
    if "x" in params and "round" in params and len(params["round"]) and params["round"][0] == 0:
        x0 = np.asarray(params["x"][0])
    else:
        x0 = initial_point(settings.dim, settings.seed)
    return L, b, x0
