"""Random diagonal sketches C_i of the quadratic model (docs/algorithms.md), drawn per round by
the coordinator, and their exact moments (the theory in docs/theory.md uses them).

Every sketch here is diagonal, so it is stored as its diagonal: ``scales[i, j]`` is
C_i[j, j]. Zero entries are coordinates worker i neither receives nor returns. Each sketch
is a *law* (``SketchLaw``): worker i gets a uniformly random set S_i of q coordinates and
C_i[j, j] = weights[i, j] for j in S_i. The sets are the blocks of one random permutation
(``perm``, ``perm-precond``: disjoint, covering) or independent (``rand``); ``identity`` is
q = d. An installed package may add a sketch of its own (``Sketch``, docs/extending.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ist_cli.plugins import SKETCHES_GROUP, plugins

SKETCHES = ("perm", "perm-precond", "rand", "identity")
PARTITIONED = ("perm", "perm-precond")  # the blocks of one permutation: disjoint, covering


class Sketch:
    """A sketch from an installed package (entry point group ``ist_cli.sketches``): worker i
    gets a random set S_i of q coordinates each round (``support``) and C_i[j, j] =
    ``weights(L_i)[j]`` on it. IST and DCGD send S_i's values and int32 indices, as for the
    built-in sparse sketches. Subclass it; the entry point names the class."""

    def q(self, d: int, n: int, q: int | None) -> int:
        """Coordinates per worker: ``--sketch-q`` when given, else d/n (at least 1); raise
        ValueError for a q the sketch cannot use."""
        q = max(1, d // n) if q is None else int(q)
        if not 1 <= q <= d:
            raise ValueError(f"needs 1 <= q <= d={d}, got q={q}")
        return q

    def weights(self, L_i: np.ndarray, n: int, q: int) -> np.ndarray:
        """C_i[j, j] on S_i, (d,) > 0, from worker i's own L_i (d, d), never sent: d/q by default."""
        d = L_i.shape[0]
        return np.full(d, d / q)

    def support(self, n: int, d: int, q: int, rng: np.random.Generator) -> np.ndarray:
        """The round's sets as a bool mask (n, d) with q entries per row, drawn from ``rng`` alone
        (workers that draw it themselves from the shared seed must get the coordinator's sets)."""
        raise NotImplementedError


def _plugin_problem(name: str, kind: Any) -> str | None:
    if isinstance(kind, type) and issubclass(kind, Sketch):
        return None
    return "expected a subclass of ist_cli.models.sketches.Sketch"


def plugin_sketches() -> dict[str, type[Sketch]]:
    """Name -> class of every installed sketch plug-in."""
    return plugins(SKETCHES_GROUP, frozenset(SKETCHES), _plugin_problem)


def sketch_names() -> tuple[str, ...]:
    """The built-in sketches, then the installed plug-ins'."""
    return (*SKETCHES, *plugin_sketches())


def _plugin(kind: str) -> Sketch | None:
    found = plugin_sketches().get(kind) if kind not in SKETCHES else None
    return None if found is None else found()


def _plugin_call(kind: str, what: str, call: Any) -> np.ndarray:
    """A plug-in's answer; whatever it raises becomes a ValueError naming it."""
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - the plug-in's own fault: one line naming it
        raise ValueError(f"sketch plug-in {kind!r} failed in {what} ({type(exc).__name__}: {exc})") from None


def _plugin_support(kind: str, sketch: Sketch, n: int, d: int, q: int, rng: np.random.Generator) -> np.ndarray:
    mask = np.asarray(_plugin_call(kind, "support", lambda: sketch.support(n, d, q, rng)))
    if mask.shape != (n, d) or mask.dtype != bool or np.any(mask.sum(axis=1) != q):
        raise ValueError(f"sketch plug-in {kind!r} drew {mask.dtype} sets of shape {mask.shape}; "
                         f"expected a bool ({n}, {d}) mask with q={q} entries per row")
    return mask


def perm_splits(d: int, n: int) -> bool:
    """Perm-q's one rule: the d coordinates split into n equal blocks of q = d/n."""
    return d % n == 0


def sketch_scale(kind: str, n: int, d: int, q: int) -> float:
    """The nonzero diagonal entry of a sketch: n for Perm-q, d/q for Rand-q, 1 for the identity."""
    return {"perm": float(n), "rand": d / q, "identity": 1.0}[kind]


def draw_support(kind: str, n: int, d: int, q: int, rng: np.random.Generator | None) -> np.ndarray:
    """The round's sets S_i as a mask (n, d): the blocks of one permutation (perm, perm-precond),
    independent q-subsets (rand), everything (identity). Workers that draw it themselves from the
    shared seed get the coordinator's sets."""
    mask = np.zeros((n, d), dtype=bool)
    if kind in PARTITIONED:
        if not perm_splits(d, n):
            raise ValueError(f"Perm-q needs d divisible by n, got d={d}, n={n}")
        np.put_along_axis(mask, rng.permutation(d).reshape(n, d // n), True, axis=1)
    elif kind == "rand":
        for i in range(n):
            mask[i, rng.choice(d, size=q, replace=False)] = True
    elif kind == "identity":
        mask[...] = True
    elif (plugin := _plugin(kind)) is not None:
        return _plugin_support(kind, plugin, n, d, q, rng)
    else:
        raise ValueError(f"unknown sketch {kind!r}; expected one of {', '.join(sketch_names())}")
    return mask


def perm_scales(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """Perm-q (d = q n): C_i = n * sum_{j in block_i(pi)} e_j e_j^T, so (1/n) sum_i C_i = I."""
    return np.where(draw_support("perm", n, d, d // n, rng), sketch_scale("perm", n, d, d // n), 0.0)


def sketch_q(d: int, n: int, sketch: str, q: int | None) -> int:
    """The q a sketch actually uses: Perm-q needs d = q·n; Rand-q defaults to d/n (at least 1)."""
    if sketch in PARTITIONED:
        if not perm_splits(d, n):
            raise ValueError(f"Perm-q needs d divisible by n, got d={d}, n={n}")
        if q is not None and q != d // n:
            raise ValueError(f"Perm-q with d={d}, n={n} has q={d // n}, got q={q}")
        return d // n
    if sketch == "rand":
        q = max(1, d // n) if q is None else int(q)
        if not 1 <= q <= d:
            raise ValueError(f"Rand-q needs 1 <= q <= d={d}, got q={q}")
        return q
    if sketch == "identity":
        return d
    if (plugin := _plugin(sketch)) is not None:
        return int(_plugin_call(sketch, "q", lambda: plugin.q(d, n, q)))
    raise ValueError(f"unknown sketch {sketch!r}; expected one of {', '.join(sketch_names())}")


def worker_weights(kind: str, L_i: np.ndarray, n: int, d: int, q: int) -> np.ndarray:
    """C_i[j, j] for j ∈ S_i (d,): √n·(L_i)_jj^{-1/2} for perm-precond (Shulgin & Richtárik's C̃_i),
    else the sketch's constant scale. A worker computes it from its own L_i."""
    if kind == "perm-precond":
        return math.sqrt(n) / np.sqrt(np.diagonal(L_i))
    if (plugin := _plugin(kind)) is not None:
        weights = np.asarray(_plugin_call(kind, "weights", lambda: plugin.weights(L_i, n, q)), dtype=np.float64)
        if weights.shape != (d,) or not np.all(np.isfinite(weights) & (weights > 0)):
            raise ValueError(f"sketch plug-in {kind!r} gave weights of shape {weights.shape}; expected ({d},), "
                             "finite and > 0")
        return weights
    return np.full(d, sketch_scale(kind, n, d, q))


def precond_weights(L: np.ndarray) -> np.ndarray:
    """``worker_weights`` of perm-precond for every client (n, d); raises ValueError naming the
    first client whose L_i has a diagonal entry <= 0."""
    n, d = L.shape[:2]
    diag = np.diagonal(L, axis1=1, axis2=2)
    bad = np.argwhere(~(diag > 0))
    if bad.size:
        i, j = bad[0]
        raise ValueError(f"preconditioning needs every L_i[j,j] > 0, but L_{i}[{j},{j}] = {diag[i, j]:g}")
    return np.array([worker_weights("perm-precond", L[i], n, d, d // n) for i in range(n)])


@dataclass(frozen=True)
class SketchLaw:
    """The joint law of one round's n sketches: C_i[j, j] = weights[i, j]·1[j ∈ S_i], |S_i| = q."""

    kind: str
    q: int
    weights: np.ndarray  # (n, d)

    @property
    def n(self) -> int:
        return self.weights.shape[0]

    @property
    def d(self) -> int:
        return self.weights.shape[1]

    @property
    def partitioned(self) -> bool:
        """The S_i are the blocks of one permutation (disjoint); otherwise independent."""
        return self.kind in PARTITIONED

    def inclusion(self, m: int) -> float:
        """P(m given distinct coordinates all lie in one worker's S_i) = [q]_m / [d]_m."""
        return inclusion(self.q, self.d, m)

    def draw(self, rng: np.random.Generator | None) -> np.ndarray:
        """One round's scales (n, d). Perm and perm-precond use the same permutation draw, so
        with one seed both see the same partitions."""
        return np.where(draw_support(self.kind, self.n, self.d, self.q, rng), self.weights, 0.0)


def inclusion(q: int, d: int, m: int) -> float:
    """[q]_m / [d]_m, the chance that m distinct coordinates all lie in a random q-subset of d."""
    if m > q:
        return 0.0
    p = 1.0
    for k in range(m):
        p *= (q - k) / (d - k)
    return p


def sketch_law(kind: str, L: np.ndarray, q: int | None = None) -> SketchLaw:
    """The law of ``kind`` for clients L (n, d, d): weights n (perm), √n·L_i[j,j]^{-1/2}
    (perm-precond), d/q (rand) or 1 (identity). Raises ValueError on an impossible request."""
    L = np.asarray(L, dtype=np.float64)
    if L.ndim != 3 or L.shape[1] != L.shape[2]:
        raise ValueError(f"L must have shape (n, d, d), got {L.shape}")
    n, d = L.shape[:2]
    q_used = sketch_q(d, n, kind, q)
    if kind == "perm-precond":
        weights = precond_weights(L)
    elif kind not in SKETCHES:  # a plug-in: each worker's from its own L_i
        weights = np.array([worker_weights(kind, L[i], n, d, q_used) for i in range(n)])
    else:
        weights = np.full((n, d), sketch_scale(kind, n, d, q_used))
    return SketchLaw(kind, q_used, weights)


# ----------------------------------------------------------------------------- moments
def mean_sketch(law: SketchLaw) -> np.ndarray:
    """diag E[C_i] (n, d) = (q/d)·weights."""
    return law.inclusion(1) * law.weights


def expected_clc(law: SketchLaw, L: np.ndarray) -> np.ndarray:
    """E[C_i L_i C_i] (n, d, d): entry (j, k) is w_ij w_ik L_i[j,k] times P(j, k ∈ S_i)."""
    W = law.weights[:, :, None] * law.weights[:, None, :]
    d = law.d
    prob = np.full((d, d), law.inclusion(2))
    np.fill_diagonal(prob, law.inclusion(1))
    return W * np.asarray(L, dtype=np.float64) * prob


def _class_sums(A: np.ndarray, B: np.ndarray, C: np.ndarray) -> dict[str, np.ndarray]:
    """Sums over (c, e) of A[a,c] B[c,e] C[e,b] (a ≠ b) by which of c, e fall in {a, b} or
    coincide, each a matrix product or a diagonal of one (O(d³)): ``full`` all (c, e);
    ``s0`` c, e ∈ {a, b}; ``g`` c = e ∈ {a, b}; ``f_c`` c ∈ {a, b}; ``f_e`` e ∈ {a, b};
    ``ce`` c = e; ``union`` c ∈ {a, b} or e ∈ {a, b} or c = e (inclusion-exclusion)."""
    AB, BC = A @ B, B @ C
    dA, dB, dC = np.diag(A), np.diag(B), np.diag(C)
    sums = {"full": AB @ C, "ce": A @ np.diag(dB) @ C, "AB": AB, "BC": BC,
            "s0": (dA[:, None] * dB[:, None] * C + dA[:, None] * B * dC[None, :]
                   + A * B.T * C + A * dB[None, :] * dC[None, :]),
            "g": dA[:, None] * dB[:, None] * C + A * dB[None, :] * dC[None, :],
            "f_c": dA[:, None] * BC + A * np.diag(BC)[None, :],
            "f_e": np.diag(AB)[:, None] * C + AB * dC[None, :]}
    sums["union"] = sums["f_c"] + sums["f_e"] + sums["ce"] - sums["s0"] - sums["g"]
    return sums


def _same_set_moment(A: np.ndarray, B: np.ndarray, C: np.ndarray, p: list[float]) -> np.ndarray:
    """Σ_{c,e} A[a,c] B[c,e] C[e,b] · p[|{a,c,e,b}|]: E[U A U B U C U] for U = Diag(1_S), S a
    uniform q-subset (p[m] = P(m distinct coordinates ⊂ S)). The (c, e) pairs are split by how
    many coordinates they add to {a, b}: 0 (``s0``), at most 1 (``union``), any (``full``)."""
    t = _class_sums(A, B, C)
    dA, dB, dC = np.diag(A), np.diag(B), np.diag(C)
    out = p[4] * t["full"] + (p[3] - p[4]) * t["union"] + (p[2] - p[3]) * t["s0"]
    # a = b: the pairs adding nothing are c = e = a; the three events of "union" all meet there
    s0d = dA * dB * dC
    union_d = dA * np.diag(t["BC"]) + np.diag(t["AB"]) * dC + np.diag(t["ce"]) - 2 * s0d
    np.fill_diagonal(out, p[3] * np.diag(t["full"]) + (p[2] - p[3]) * union_d + (p[1] - p[2]) * s0d)
    return out


def _disjoint_sets_moment(A: np.ndarray, B: np.ndarray, C: np.ndarray, r: dict[tuple[int, int], float]) -> np.ndarray:
    """Σ_{c,e} A[a,c] B[c,e] C[e,b] · P({a,c} ⊂ S, {e,b} ⊂ S'), S, S' two blocks of one random
    permutation: zero unless {a,c} ∩ {e,b} = ∅, else r[|{a,c}|, |{e,b}|]."""
    t = _class_sums(A, B, C)
    dA, dB, dC = np.diag(A), np.diag(B), np.diag(C)
    distinct = t["full"] - t["union"]  # c, e ∉ {a, b}, c ≠ e
    c_is_a = dA[:, None] * (t["BC"] - dB[:, None] * C - B * dC[None, :])  # e ∉ {a, b}
    e_is_b = (t["AB"] - dA[:, None] * B - A * dB[None, :]) * dC[None, :]  # c ∉ {a, b}
    out = (r[1, 1] * dA[:, None] * B * dC[None, :] + r[1, 2] * c_is_a + r[2, 1] * e_is_b
           + r[2, 2] * distinct)
    np.fill_diagonal(out, 0.0)
    return out


def expected_blb(law: SketchLaw, L: np.ndarray) -> np.ndarray:
    """E[B̄ L̄ B̄] with B̄ = (1/n) Σ_i C_i L_i C_i, exactly (O(n d³)).

    The i = j terms need the 4-point inclusion probabilities of one q-subset; the i ≠ j terms
    those of two disjoint blocks (perm) or are products of means (independent sets).
    """
    L = np.asarray(L, dtype=np.float64)
    n, d, q = law.n, law.d, law.q
    Lbar = L.mean(axis=0)
    weighted = law.weights[:, :, None] * L * law.weights[:, None, :]  # w_i w_iᵀ ∘ L_i
    p = [1.0] + [law.inclusion(m) for m in range(1, 5)]
    total = sum(_same_set_moment(weighted[i], Lbar, weighted[i], p) for i in range(n))
    if n > 1:
        if law.partitioned:
            r = {(m1, m2): inclusion(q, d, m1) * inclusion(q, d - m1, m2) if d > m1 else 0.0
                 for m1 in (1, 2) for m2 in (1, 2)}
            # Σ_{i≠j} f(W_i, W_j) = f(Σ W_i, Σ W_j) − Σ_i f(W_i, W_i): f is bilinear
            sum_w = weighted.sum(axis=0)
            total = total + _disjoint_sets_moment(sum_w, Lbar, sum_w, r)
            total = total - sum(_disjoint_sets_moment(weighted[i], Lbar, weighted[i], r) for i in range(n))
        else:
            mean_clc = expected_clc(law, L)
            sum_m = mean_clc.sum(axis=0)
            total = total + sum_m @ Lbar @ sum_m - sum(m @ Lbar @ m for m in mean_clc)
    return total / n**2
