"""The theory of docs/theory.md against independent numpy: every moment and every mean map is
compared with a brute-force average over *all* equally likely sketch draws of tiny problems
(all permutations for Perm-q, all subset tuples for Rand-q), and with plain-numpy rounds."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ist_cli.models.quadratic import generate_problem
from ist_cli.models.sketches import expected_blb, expected_clc, mean_sketch, sketch_law
from ist_cli.models.theorems import offset_covariance, theorem1, theorem2
from ist_cli.models.theory import Method, ist_limit, mean_dynamics, mean_trajectory

CASES = [("perm", 2, 4, None), ("perm", 3, 6, None), ("perm", 4, 4, None), ("perm-precond", 2, 4, None),
         ("perm-precond", 3, 6, None), ("perm-precond", 3, 3, None), ("rand", 2, 4, 2), ("rand", 3, 4, 1),
         ("identity", 2, 3, None)]


def all_draws(kind: str, weights: np.ndarray, q: int):
    """Every equally likely round of sketches (n, d), built from the definition."""
    n, d = weights.shape
    if kind == "identity":
        yield weights.copy()
    elif kind in ("perm", "perm-precond"):
        for perm in itertools.permutations(range(d)):
            scales = np.zeros((n, d))
            for i in range(n):
                block = list(perm[i * q:(i + 1) * q])
                scales[i, block] = weights[i, block]
            yield scales
    else:
        subsets = list(itertools.combinations(range(d), q))
        for combo in itertools.product(subsets, repeat=n):
            scales = np.zeros((n, d))
            for i, subset in enumerate(combo):
                scales[i, list(subset)] = weights[i, list(subset)]
            yield scales


def reference_weights(kind: str, L: np.ndarray, q: int) -> np.ndarray:
    n, d = L.shape[:2]
    if kind == "perm-precond":
        return np.sqrt(n) / np.sqrt(np.array([np.diag(Li) for Li in L]))
    return np.full((n, d), {"perm": n, "rand": d / q, "identity": 1.0}[kind], dtype=float)


def one_round(x, scales, L, b, lr, steps, algorithm="ist", server_update="average"):
    """Plain numpy: each worker's R local steps, then the server's update."""
    n = L.shape[0]
    outs, starts = [], []
    for i in range(n):
        start = scales[i] * x if algorithm == "ist" else x.copy()
        z = start.copy()
        for _ in range(steps):
            z = z - lr * scales[i] * (L[i] @ z - b[i])
        outs.append(z)
        starts.append(start)
    if server_update == "delta":
        return x + np.mean(np.array(outs) - np.array(starts), axis=0)
    return np.mean(outs, axis=0)


def exact_map(kind, L, b, q, lr, steps, algorithm, server_update):
    """(P, c) averaged over all draws, each draw's affine map read off by applying it to 0 and e_k."""
    d = L.shape[1]
    weights = reference_weights(kind, L, q)
    P, c, count = np.zeros((d, d)), np.zeros(d), 0
    for scales in all_draws(kind, weights, q):
        c_s = one_round(np.zeros(d), scales, L, b, lr, steps, algorithm, server_update)
        for k in range(d):
            P[:, k] += one_round(np.eye(d)[k], scales, L, b, lr, steps, algorithm, server_update) - c_s
        c += c_s
        count += 1
    return P / count, c / count


@pytest.mark.parametrize("kind,n,d,q", CASES)
def test_sketch_moments_equal_the_average_over_all_draws(kind, n, d, q) -> None:
    problem = generate_problem(n, d, seed=1)
    L = problem.L
    law = sketch_law(kind, L, q)
    q_used = law.q
    np.testing.assert_allclose(law.weights, reference_weights(kind, L, q_used), rtol=1e-15)
    Lbar = L.mean(axis=0)
    draws = list(all_draws(kind, law.weights, q_used))
    mean_c = np.mean(draws, axis=0)
    clc = np.mean([s[:, :, None] * L * s[:, None, :] for s in draws], axis=0)
    blb = np.mean([(lambda B: B @ Lbar @ B)((s[:, :, None] * L * s[:, None, :]).mean(axis=0)) for s in draws], axis=0)
    v = np.array([np.mean(s * problem.b, axis=0) for s in draws])
    np.testing.assert_allclose(mean_sketch(law), mean_c, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(expected_clc(law, L), clc, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(expected_blb(law, L), blb, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(offset_covariance(law, problem.b), np.cov(v.T, bias=True), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("server_update", ["average", "delta"])
@pytest.mark.parametrize("kind,n,d,q", [c for c in CASES if c[2] <= 4])
def test_closed_form_mean_map_equals_the_average_round(kind, n, d, q, server_update) -> None:
    problem = generate_problem(n, d, seed=2)
    lr = 0.07
    method = Method("ist", sketch_law(kind, problem.L, q), server_update, lr)
    dyn = mean_dynamics(method, problem.L, problem.b)
    P, c = exact_map(kind, problem.L, problem.b, method.law.q, lr, 1, "ist", server_update)
    np.testing.assert_allclose(dyn.P, P, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dyn.c, c, rtol=1e-12, atol=1e-14)
    # the trajectory is the recursion, and the limit its fixed point
    x0 = np.arange(d, dtype=float)
    xs = mean_trajectory(dyn.P, dyn.c, x0, 3)
    np.testing.assert_allclose(xs[3], P @ (P @ (P @ x0 + c) + c) + c, rtol=1e-12)
    if dyn.spectral_radius() < 1:
        limit = dyn.limit()
        np.testing.assert_allclose(P @ limit + c, limit, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind,q", [("perm", None), ("rand", 2)])
def test_dcgd_closed_form_and_its_limit_is_the_optimum(kind, q) -> None:
    problem = generate_problem(2, 4, seed=4)
    method = Method("dcgd", sketch_law(kind, problem.L, q), "average", 0.05)
    dyn = mean_dynamics(method, problem.L, problem.b)
    P, c = exact_map(kind, problem.L, problem.b, method.law.q, 0.05, 1, "dcgd", "average")
    np.testing.assert_allclose(dyn.P, P, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dyn.c, c, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dyn.limit(), problem.x_star(), rtol=1e-9)


@pytest.mark.parametrize("kind,q,server_update", [("perm", None, "average"), ("perm-precond", None, "delta"),
                                                  ("rand", 2, "average"), ("perm-precond", None, "average")])
def test_monte_carlo_with_local_steps_matches_the_exact_average_within_its_error(kind, q, server_update) -> None:
    problem = generate_problem(2, 4, seed=5)
    steps, lr = 3, 0.1
    method = Method("ist", sketch_law(kind, problem.L, q), server_update, lr, steps)
    with pytest.raises(ValueError, match="Monte-Carlo samples"):
        mean_dynamics(method, problem.L, problem.b)
    dyn = mean_dynamics(method, problem.L, problem.b, samples=2000, seed=1)
    P, c = exact_map(kind, problem.L, problem.b, method.law.q, lr, steps, "ist", server_update)
    se_P = dyn.standard_error(lambda P_, c_: P_)
    se_c = dyn.standard_error(lambda P_, c_: c_)
    assert np.all(se_P[np.abs(P) > 1e-12] > 0)
    z = np.concatenate([((dyn.P - P) / np.where(se_P > 0, se_P, 1)).ravel(), (dyn.c - c) / se_c])
    assert np.max(np.abs(z)) < 4.5, z  # 20 entries: |z| > 4.5 has chance ~1e-4
    assert np.mean(z**2) < 3.0  # the error bar is not grossly too large either
    assert np.mean(z**2) > 0.2
    # derived quantity: the limit's error bar covers the exact limit
    exact_limit = np.linalg.solve(np.eye(4) - P, c)
    se_limit = dyn.standard_error(lambda P_, c_: np.linalg.solve(np.eye(4) - P_, c_))
    assert np.all(np.abs(dyn.limit() - exact_limit) < 4.5 * se_limit)


def test_preconditioned_perm1_has_identity_mean_hessian_and_the_papers_fixed_point() -> None:
    n = d = 4
    problem = generate_problem(n, d, seed=6, heterogeneous=False)
    law = sketch_law("perm-precond", problem.L)
    np.testing.assert_allclose(expected_clc(law, problem.L).mean(axis=0), np.eye(d), atol=1e-12)
    paper = sum(np.diag(problem.L[i]) ** -0.5 * problem.b[i] for i in range(n)) / (n * np.sqrt(n))
    np.testing.assert_allclose(ist_limit(problem.L, problem.b, n, "perm-precond", server_update="delta"), paper,
                               rtol=1e-12)
    t1 = theorem1(law, problem.L, lr=1.0)
    assert t1.theta == pytest.approx(1.0, rel=1e-10) and t1.mu == pytest.approx(1.0, rel=1e-10)
    assert t1.rate == pytest.approx(0.0, abs=1e-10)  # "converges in one iteration" (in mean, b = 0)
    t2 = theorem2(law, problem.L, problem.b, lr=0.5)
    h = problem.x_star() - paper
    assert t2.h_norm_sq == pytest.approx(h @ problem.L_mean @ h, rel=1e-10)
    assert t2.beta == pytest.approx(1 / 6)
    assert t2.neighbourhood == pytest.approx((2 * 0.5 * 6 + 0.5) * t2.h_norm_sq + 0.5 * t2.sigma_sq, rel=1e-12)
    assert t2.sigma_sq == pytest.approx(0.0, abs=1e-12)  # homogeneous: every draw gives the same offset


def test_perm1_w_is_indefinite_in_the_papers_example() -> None:
    a, bb, c = 1.0, 4.0, 1.8  # c > 2ab/(a+b) = 1.6
    L = np.array([[[a, c], [c, bb]]] * 2)
    t1 = theorem1(sketch_law("perm", L), L, lr=0.1)
    assert not t1.W_psd and t1.theta is None and "indefinite" in t1.note
    expected = np.array([[a * a, c * (a + bb) / 2], [c * (a + bb) / 2, bb * bb]]) * 2  # n·(paper's W̄), n = 2
    np.testing.assert_allclose(t1.W, expected, rtol=1e-12)
    L_ok = np.array([[[a, 0.9], [0.9, bb]]] * 2)  # c = 0.9 < 1.6: positive definite
    ok = theorem1(sketch_law("perm", L_ok), L_ok, 0.1)
    assert ok.W_psd and ok.theta is not None


def test_theorem1_theta_is_the_smallest_valid_constant() -> None:
    problem = generate_problem(2, 4, seed=7)
    law = sketch_law("rand", problem.L, 2)
    t1 = theorem1(law, problem.L, lr=1e-4)
    assert t1.W_psd and t1.theta > 0
    blb = expected_blb(law, problem.L)
    assert np.linalg.eigvalsh(t1.theta * t1.W - blb)[0] > -1e-9 * t1.theta
    assert np.linalg.eigvalsh(0.99 * t1.theta * t1.W - blb)[0] < 0
    assert t1.rate == pytest.approx(1 - 1e-4 * t1.mu)
    assert theorem1(law, problem.L, lr=2 / t1.theta).rate is None


def test_the_theorys_method_table_agrees_with_the_option_table() -> None:
    """The theory's per-method facts (models.theory.DYNAMICS) are the option table's: a method
    with a fixed sketch takes no --sketch, only those with local steps or a server-update choice
    take those settings, and GD's fixed sketch is the identity."""
    from ist_cli.config import ALGORITHMS, OPTIONS_BY_KEY
    from ist_cli.models.theory import DYNAMICS

    assert tuple(DYNAMICS) == ALGORITHMS["quadratic"]
    for algorithm, rule in DYNAMICS.items():
        config = {"model": "quadratic", "algorithm": algorithm}
        assert OPTIONS_BY_KEY["sketch"].used_by(config) == (rule.fixed_sketch is None), algorithm
        assert OPTIONS_BY_KEY["server_update"].used_by(config) == rule.server_updates, algorithm
        assert OPTIONS_BY_KEY["local_steps"].used_by(config) == rule.local_steps, algorithm
    assert DYNAMICS["gd"].fixed_sketch == "identity"
    assert [name for name, rule in DYNAMICS.items() if rule.biased] == ["ist"]  # the report's bias overlay
