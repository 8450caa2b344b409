"""Exact bytes per worker per round, read back from real runs, against closed forms."""

from __future__ import annotations

import numpy as np
import pytest

from ist_cli.comm import NetworkModel, allreduce_traffic, server_traffic
from ist_cli.io.runfile import read_run
from ist_cli.runner import run_experiment

N, D, ROUNDS = 4, 16, 5
F8, I4 = 8, 4


@pytest.mark.parametrize(
    "settings,up,down",
    [
        # IST Perm-q, q = d/n = 4: block values + int32 indices down, block values up
        ({"algorithm": "ist", "sketch": "perm"}, 4 * F8, 4 * (F8 + I4)),
        ({"algorithm": "ist", "sketch": "rand", "sketch_q": 3}, 3 * F8, 3 * (F8 + I4)),
        ({"algorithm": "ist", "sketch": "identity"}, D * F8, D * F8),
        ({"algorithm": "gd"}, D * F8, D * F8),
        # ring all-reduce: 2(n-1)/n of the vector each way
        ({"algorithm": "gd", "topology": "ring"}, 2 * 3 / 4 * D * F8, 2 * 3 / 4 * D * F8),
        ({"algorithm": "dcgd", "sketch": "rand", "sketch_q": 2}, 2 * (F8 + I4), D * F8),
    ],
)
def test_bytes_per_worker_per_round(tmp_path, settings, up, down):
    config = {"model": "quadratic", "workers": N, "dim": D, "rounds": ROUNDS, "lr": 0.01, **settings}
    run_experiment(config, out_dir=tmp_path, name="run")
    metrics = read_run(tmp_path / "run.h5").metrics
    rounds = metrics["round"]
    np.testing.assert_allclose(metrics["bytes_up"], rounds * N * up)
    np.testing.assert_allclose(metrics["bytes_down"], rounds * N * down)


def test_parameter_server_time_is_latency_plus_all_bytes_over_one_link():
    model = NetworkModel(latency=1e-3, bandwidth=1e6, topology="ps")
    traffic = server_traffic([100, 200], [300, 400])
    assert model.round_time(traffic) == pytest.approx(2e-3 + 1000 / 1e6)


def test_ring_allreduce_time_matches_textbook_formula():
    n, payload, alpha, beta = 8, 8e6, 5e-5, 1.25e9
    model = NetworkModel(latency=alpha, bandwidth=beta, topology="ring")
    expected = 2 * (n - 1) * (alpha + payload / n / beta)
    assert model.round_time(allreduce_traffic(n, payload)) == pytest.approx(expected)


def test_comm_time_model_is_logged_cumulatively(tmp_path):
    config = {"model": "quadratic", "workers": N, "dim": D, "rounds": ROUNDS, "lr": 0.01,
              "algorithm": "gd", "latency": "1ms", "bandwidth": "1MB"}
    run_experiment(config, out_dir=tmp_path, name="run")
    metrics = read_run(tmp_path / "run.h5").metrics
    per_round = 2e-3 + (2 * N * D * F8) / 1e6
    np.testing.assert_allclose(metrics["comm_time_model"], metrics["round"] * per_round)
    np.testing.assert_allclose(metrics["sim_time"], metrics["compute_time"] + metrics["comm_time_model"])
