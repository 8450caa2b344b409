"""Exact mean dynamics of the quadratic methods (Shulgin & Richtárik; docs/theory.md).

The round map x ↦ x⁺ is affine in x for a fixed draw of the sketches, and the draw is
independent of x, so the mean iterate obeys E[x^{k+1}] = P·E[x^k] + c exactly, with
P = E[round matrix] and c = E[round offset]. With one local step P and c are closed forms
of E[C_i] and E[C_i L_i C_i] (``models.sketches``); with R > 1 steps they are estimated by
Monte Carlo over sketch draws, with standard errors from the spread over batches.

IST (one step, z_i = C_i x − γ C_i (L_i C_i x − b_i)), with C̄ = (1/n)Σ C_i and
B̄ = (1/n)Σ C_i L_i C_i:
  average  x⁺ = (1/n)Σ z_i           P = E[C̄] − γ E[B̄]
  delta    x⁺ = x + (1/n)Σ(z_i − C_i x)  P = I − γ E[B̄]
  both     c = γ (1/n) Σ E[C_i] b_i.
DCGD: P = I − γ (1/n)Σ E[C_i] L_i, same c. GD: IST with the identity sketch.

Only numpy: the report draws it, ``ist theory`` prints it, the tests check runs against it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ist_cli.models.sketches import (
    SKETCHES,
    SketchLaw,
    expected_clc,
    mean_sketch,
    sketch_law,
    sketch_names,
    sketch_q,
)
from ist_cli.seeding import stream

SERVER_UPDATES = ("average", "delta")
SERVER_UPDATE_DEFAULT = "average"  # also what runs written before the setting existed did
MC_BATCHES = 20  # batches for the Monte-Carlo standard errors (grouped jackknife)

__all__ = [
    "DYNAMICS", "METHODS", "SERVER_UPDATES", "SKETCHES", "MeanDynamics", "Method", "Round", "expected_clc",
    "ist_bias_sq", "ist_limit", "mean_dynamics", "mean_trajectory", "optimum", "sketch_q",
]


@dataclass(frozen=True)
class Round:
    """What a quadratic method's round is, as the mean dynamics read it (one home, by name: the
    theory needs no method class, and models/ imports nothing of algorithms/)."""

    sketched_model: bool  # worker i steps from its sketched model C_i x (IST), or from x compressing its gradient (DCGD)
    fixed_sketch: str | None = None  # the sketch it always uses (GD: IST with the identity sketch); None: the run's
    local_steps: bool = False  # it may take more than one local step per round
    server_updates: bool = False  # the server-update setting applies (otherwise the default, average)
    theorems: bool = False  # Theorems 1-2 are about it

    @property
    def biased(self) -> bool:
        """Its mean iterate may settle away from x* (a model sketched by the run's random sketch)."""
        return self.sketched_model and self.fixed_sketch is None


#: algorithm -> its round, for every quadratic method
DYNAMICS = {
    "ist": Round(sketched_model=True, local_steps=True, server_updates=True, theorems=True),
    "gd": Round(sketched_model=True, fixed_sketch="identity", theorems=True),
    "dcgd": Round(sketched_model=False),
}
METHODS = tuple(DYNAMICS)


def round_of(algorithm: str) -> Round:
    """The round of a quadratic method; ValueError for any other name."""
    if algorithm not in DYNAMICS:
        raise ValueError(f"unknown algorithm {algorithm!r}; expected one of {', '.join(METHODS)}")
    return DYNAMICS[algorithm]


@dataclass(frozen=True)
class Method:
    """What the mean dynamics depend on: the algorithm, its sketch law and its step settings."""

    algorithm: str  # ist | gd | dcgd
    law: SketchLaw
    server_update: str = "average"
    lr: float = 0.02
    local_steps: int = 1

    def __post_init__(self) -> None:
        rule = round_of(self.algorithm)
        if self.server_update not in SERVER_UPDATES:
            raise ValueError(f"unknown server update {self.server_update!r}; expected one of {', '.join(SERVER_UPDATES)}")
        if not rule.local_steps and self.local_steps != 1:
            raise ValueError(f"{self.algorithm} takes one local step per round, got {self.local_steps}")

    @property
    def round(self) -> Round:
        return DYNAMICS[self.algorithm]


@dataclass(frozen=True)
class MeanDynamics:
    """E[x^{k+1}] = P E[x^k] + c. ``samples`` = 0 means exact; otherwise ``batches`` holds the
    per-batch estimates (P_b, c_b, size_b) behind the standard errors."""

    P: np.ndarray  # (d, d)
    c: np.ndarray  # (d,)
    samples: int = 0
    batches: tuple[tuple[np.ndarray, np.ndarray, int], ...] = ()

    @property
    def exact(self) -> bool:
        return self.samples == 0

    def spectral_radius(self) -> float:
        return float(np.max(np.abs(np.linalg.eigvals(self.P))))

    def limit(self) -> np.ndarray | None:
        """x^∞ = (I − P)⁻¹ c when ρ(P) < 1, else None (the mean does not settle)."""
        if not self.spectral_radius() < 1:
            return None
        return np.linalg.solve(np.eye(self.P.shape[0]) - self.P, self.c)

    def standard_error(self, quantity: Callable[[np.ndarray, np.ndarray], np.ndarray | float]) -> np.ndarray | float:
        """Grouped-jackknife standard error of ``quantity(P, c)`` (0 when exact): recompute it
        leaving out one batch of samples at a time."""
        if self.exact or len(self.batches) < 2:
            return 0.0 * np.asarray(quantity(self.P, self.c))
        total = self.samples
        values = []
        for P_b, c_b, size in self.batches:
            rest = total - size
            values.append(np.asarray(quantity((total * self.P - size * P_b) / rest, (total * self.c - size * c_b) / rest)))
        values = np.array(values)
        g = len(values)
        return np.sqrt((g - 1) / g * np.sum((values - values.mean(axis=0)) ** 2, axis=0))


def method_for(algorithm: str, sketch: str, L: np.ndarray, *, q: int | None = None, server_update: str = "average",
               lr: float = 0.02, local_steps: int = 1) -> Method:
    """The Method of a run's settings (GD is IST with the identity sketch)."""
    kind = round_of(algorithm).fixed_sketch or sketch
    return Method(algorithm, _covered_law(kind, L, q), server_update, lr, local_steps)


def _covered_law(kind: str, L: np.ndarray, q: int | None) -> SketchLaw:
    """The law of a built-in sketch: the moments here hold for uniformly random sets only, which
    a plug-in's sketch need not draw."""
    if kind not in SKETCHES:
        if kind not in sketch_names():
            raise ValueError(f"unknown sketch {kind!r}; expected one of {', '.join(sketch_names())}")
        raise ValueError(f"the theory covers the sketches {', '.join(SKETCHES)}; {kind!r} is a plug-in's")
    return sketch_law(kind, L, q)


def mean_dynamics(method: Method, L: np.ndarray, b: np.ndarray, *, samples: int | None = None,
                  seed: int = 0) -> MeanDynamics:
    """P and c of ``method`` on clients (L (n,d,d), b (n,d)): closed form for one local step,
    Monte Carlo over ``samples`` sketch draws otherwise (or when ``samples`` is given)."""
    L, b = np.asarray(L, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if samples is None:
        if method.local_steps != 1:
            raise ValueError(f"with {method.local_steps} local steps the mean dynamics have no closed form; "
                             "they need Monte-Carlo samples")
        return _closed_form(method, L, b)
    if samples < 2:
        raise ValueError(f"Monte Carlo needs at least 2 samples, got {samples}")
    return _monte_carlo(method, L, b, samples, seed)


def _closed_form(method: Method, L: np.ndarray, b: np.ndarray) -> MeanDynamics:
    law, lr = method.law, method.lr
    d = law.d
    mean_c = mean_sketch(law)  # (n, d): diag E[C_i]
    c = lr * np.mean(mean_c * b, axis=0)
    if method.round.sketched_model:
        B = expected_clc(law, L).mean(axis=0)
        start = np.eye(d) if method.server_update == "delta" else np.diag(mean_c.mean(axis=0))
        P = start - lr * B
    else:
        P = np.eye(d) - lr * np.mean(mean_c[:, :, None] * L, axis=0)
    return MeanDynamics(P, c)


def round_map(method: Method, L: np.ndarray, b: np.ndarray, scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The round's affine map x ↦ P_s x + c_s for one draw of the sketches ``scales`` (n, d)."""
    n, d = scales.shape
    lr, steps, sketched = method.lr, method.local_steps, method.round.sketched_model
    P, c = np.zeros((d, d)), np.zeros(d)
    for i in range(n):
        s = scales[i]
        start = np.diag(s) if sketched else np.eye(d)  # GD's identity sketch: diag(1) = I
        Z, z = start.copy(), np.zeros(d)  # z_i = Z x + z after each local step
        for _ in range(steps):
            Z -= lr * s[:, None] * (L[i] @ Z)
            z -= lr * s * (L[i] @ z - b[i])
        P += Z - start if method.server_update == "delta" else Z
        c += z
    P /= n
    c /= n
    if method.server_update == "delta":
        P += np.eye(d)
    return P, c


def _monte_carlo(method: Method, L: np.ndarray, b: np.ndarray, samples: int, seed: int) -> MeanDynamics:
    law = method.law
    d = law.d
    groups = np.array_split(np.arange(samples), min(MC_BATCHES, samples))
    batches = []
    for group in groups:
        P_b, c_b = np.zeros((d, d)), np.zeros(d)
        for s in group:
            P_s, c_s = round_map(method, L, b, law.draw(stream(seed, "theory", int(s))))
            P_b += P_s
            c_b += c_s
        batches.append((P_b / group.size, c_b / group.size, int(group.size)))
    P = sum(P_b * size for P_b, _, size in batches) / samples
    c = sum(c_b * size for _, c_b, size in batches) / samples
    return MeanDynamics(P, c, samples, tuple(batches))


def mean_trajectory(P: np.ndarray, c: np.ndarray, x0: np.ndarray, rounds: int) -> np.ndarray:
    """E[x^k] for k = 0..rounds (rounds+1, d), from x^0 = ``x0``."""
    xs = np.empty((rounds + 1, x0.shape[0]))
    xs[0] = x0
    for k in range(rounds):
        xs[k + 1] = P @ xs[k] + c
    return xs


def optimum(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x* = L̄⁻¹ b̄."""
    return np.linalg.solve(np.asarray(L, dtype=np.float64).mean(axis=0), np.asarray(b, dtype=np.float64).mean(axis=0))


def ist_limit(L: np.ndarray, b: np.ndarray, n: int, sketch: str, q: int | None = None, *,
              server_update: str = "average", lr: float | None = None) -> np.ndarray:
    """x^∞ of IST with one local step: E[B̄]⁻¹ (1/n)Σ E[C_i] b_i when it does not depend on the
    step size (delta form, or E[C̄] = I as for Perm-q, Rand-q, identity); the average form of
    perm-precond needs ``lr``."""
    L, b = np.asarray(L, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if L.ndim != 3 or L.shape[0] != n or b.shape != L.shape[:2]:
        raise ValueError(f"L and b must have shapes (n={n}, d, d) and (n, d), got {L.shape} and {b.shape}")
    law = _covered_law(sketch, L, q)
    mean_c = mean_sketch(law)
    if server_update == "average" and not np.allclose(mean_c.mean(axis=0), 1.0, rtol=0, atol=1e-12):
        if lr is None:
            raise ValueError(f"the average form of {sketch} has a limit that depends on the step size; give lr")
        limit = mean_dynamics(Method("ist", law, server_update, lr), L, b).limit()
        if limit is None:
            raise ValueError(f"the mean of {sketch} (average form, lr {lr}) does not converge: ρ(P) >= 1")
        return limit
    return np.linalg.solve(expected_clc(law, L).mean(axis=0), np.mean(mean_c * b, axis=0))


def ist_bias_sq(L: np.ndarray, b: np.ndarray, n: int, sketch: str, q: int | None = None,
                x_star: np.ndarray | None = None, *, server_update: str = "average", lr: float | None = None) -> float:
    """‖x^∞ − x*‖², the predicted limit of ``dist_to_opt_sq`` for IST's mean iterate."""
    x_star = optimum(L, b) if x_star is None else np.asarray(x_star, dtype=np.float64)
    gap = ist_limit(L, b, n, sketch, q, server_update=server_update, lr=lr) - x_star
    return float(gap @ gap)
