"""The quadratic model's math, checked on real runs (real workers, real HDF5 files)."""

from __future__ import annotations

import numpy as np
import pytest

from ist_cli.io.runfile import read_run
from ist_cli.models.sketches import perm_scales
from ist_cli.models.theory import ist_limit
from ist_cli.runner import run_experiment

BASE = {"model": "quadratic", "workers": 4, "dim": 16, "seed": 3}


def run(tmp_path, name, **settings):
    summary = run_experiment({**BASE, **settings}, out_dir=tmp_path, name=name)
    assert summary.status == "completed"
    return read_run(tmp_path / f"{name}.h5")


def gd_reference(L, b, x0, lr, rounds):
    x, xs = x0.copy(), [x0.copy()]
    for _ in range(rounds):
        x = x - lr * (L.mean(axis=0) @ x - b.mean(axis=0))
        xs.append(x.copy())
    return np.array(xs)


def test_gd_reaches_the_optimum(tmp_path, shm_guard):
    data = run(tmp_path, "gd", algorithm="gd", l2=1.0, lr=0.4, rounds=200)
    x, x_star = data.final["x"], data.problem["x_star"]
    assert np.allclose(x_star, np.linalg.solve(data.problem["L"].mean(0), data.problem["b"].mean(0)))
    assert np.sum((x - x_star) ** 2) < 1e-10
    assert data.metrics["dist_to_opt_sq"][-1] < 1e-10
    assert data.metrics["dist_to_opt_sq"][0] > 1e-2  # it started away from x*


def test_ist_identity_sketch_equals_gd_iterate_for_iterate(tmp_path):
    common = {"lr": 0.05, "rounds": 30, "save_params_every": 1}
    ist_run = run(tmp_path, "ist", algorithm="ist", sketch="identity", local_steps=1, **common)
    gd_run = run(tmp_path, "gd", algorithm="gd", **common)
    assert np.array_equal(ist_run.params["x"], gd_run.params["x"])
    reference = gd_reference(gd_run.problem["L"], gd_run.problem["b"], gd_run.params["x"][0], 0.05, 30)
    np.testing.assert_allclose(gd_run.params["x"], reference, rtol=1e-12, atol=1e-12)
    assert not np.allclose(gd_run.params["x"][0], gd_run.params["x"][-1])


@pytest.mark.parametrize("n,q", [(4, 4), (8, 2), (3, 5)])
def test_perm_sketches_sum_to_n_identity(n, q):
    rng = np.random.default_rng(0)
    for _ in range(5):
        scales = perm_scales(n, n * q, rng)
        np.testing.assert_array_equal(scales.sum(axis=0), np.full(n * q, float(n)))
        np.testing.assert_array_equal(np.count_nonzero(scales, axis=0), np.ones(n * q))  # disjoint blocks
        np.testing.assert_array_equal(np.count_nonzero(scales, axis=1), np.full(n, q))


def test_ist_converges_to_optimum_on_homogeneous_interpolation(tmp_path):
    data = run(tmp_path, "ist", algorithm="ist", sketch="perm", heterogeneity="homogeneous",
               interpolation=True, lr=0.05, rounds=600)
    L, b = data.problem["L"], data.problem["b"]
    assert np.allclose(L, L[0]) and np.allclose(b, b[0])
    for i in range(L.shape[0]):  # interpolation: every client is optimal at x*
        np.testing.assert_allclose(L[i] @ data.problem["x_star"] - b[i], 0, atol=1e-12)
    assert data.metrics["dist_to_opt_sq"][0] > 1.0
    assert data.metrics["dist_to_opt_sq"][-1] < 1e-10


def tail_mean(data, fraction=0.5):
    xs = data.params["x"]
    return xs[int(len(xs) * (1 - fraction)):].mean(axis=0)


def test_ist_settles_at_the_predicted_biased_point_on_heterogeneous_problem(tmp_path):
    data = run(tmp_path, "ist", algorithm="ist", sketch="perm", heterogeneity="heterogeneous",
               interpolation=False, lr=0.01, rounds=6000, save_params_every=2, eval_every=50)
    L, b, x_star = data.problem["L"], data.problem["b"], data.problem["x_star"]
    x_inf = ist_limit(L, b, L.shape[0], "perm")
    x_tail = tail_mean(data)
    bias = np.linalg.norm(x_inf - x_star)
    assert bias > 0.1 * np.linalg.norm(x_star)  # the irreducible bias is real here
    assert np.linalg.norm(x_tail - x_inf) < 0.05 * np.linalg.norm(x_inf)
    assert np.linalg.norm(x_tail - x_star) > 0.5 * bias


def test_dcgd_with_rand_q_converges_to_the_optimum_with_a_small_step(tmp_path):
    data = run(tmp_path, "dcgd", algorithm="dcgd", sketch="rand", sketch_q=4, lr=0.003, rounds=6000,
               save_params_every=2, eval_every=50, l2=0.5)
    x_star = data.problem["x_star"]
    x_tail = tail_mean(data)
    assert np.linalg.norm(x_tail - x_star) < 0.04 * np.linalg.norm(x_star)
    assert data.metrics["dist_to_opt_sq"][-1] < 1e-2 * data.metrics["dist_to_opt_sq"][0]
