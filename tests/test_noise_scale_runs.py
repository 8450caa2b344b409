"""The noise scale inside the MLP methods: data-parallel SGD reads it off the gradients its
workers already computed (no extra gradient evaluation); the others pay micro-batches at
evaluation time."""

from __future__ import annotations

import numpy as np
import pytest

from ist_cli.algorithms import build_algorithm
from ist_cli.algorithms.mlp import MLPMethod
from ist_cli.config import resolve_config
from ist_cli.kernels import mlp as kernels


def build(algorithm: str) -> tuple[MLPMethod, dict[str, np.ndarray]]:
    config = resolve_config({"model": "mlp", "algorithm": algorithm, "workers": 4, "hidden": [16],
                             "batch_size": 8, "noise_scale_every": 1, "dtype": "float64"})
    method = build_algorithm(config)
    arrays = {name: np.zeros(shape, dtype=dtype) for name, (shape, dtype) in method.arena_spec().items()}
    method.initialize(arrays)
    return method, arrays


@pytest.fixture
def count_gradients(monkeypatch):
    calls = []
    real = kernels.loss_and_grad

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(kernels, "loss_and_grad", counted)
    return calls


def test_dp_noise_scale_costs_no_gradient_evaluation_and_is_the_two_batch_formula(count_gradients):
    method, arrays = build("dp")
    size = method.layout.size
    rng = np.random.default_rng(0)
    rounds = []
    for round_index in (1, 2):  # stand-ins for the workers' gradients: the estimator only reads them
        grads = rng.standard_normal((4, size))
        arrays["grad"][:, :size] = grads
        method.plan_round(arrays, round_index)
        method.aggregate(arrays, round_index, [0.0] * 4)
        rounds.append(grads)
    metrics = method.evaluate(arrays)
    assert count_gradients == []  # neither aggregate nor evaluate computed a gradient

    b, B = 8, 32
    beta, terms = 0.99, []
    for grads in rounds:
        small = float(np.mean([g @ g for g in grads]))
        mean = grads.mean(axis=0)
        big = float(mean @ mean)
        terms.append(((B * big - b * small) / (B - b), (small - big) / (1 / b - 1 / B)))
    weights = np.array([beta * (1 - beta), 1 - beta])
    g2 = float(weights @ [t[0] for t in terms] / weights.sum())
    trace = float(weights @ [t[1] for t in terms] / weights.sum())
    assert metrics["grad_norm_sq_est"] == pytest.approx(g2, rel=1e-12)
    assert metrics["trace_cov_est"] == pytest.approx(trace, rel=1e-12)
    assert metrics["noise_scale"] == pytest.approx(trace / g2, rel=1e-12)


def test_other_methods_pay_micro_batch_gradients_at_evaluation(count_gradients):
    method, arrays = build("local-sgd")
    metrics = method.evaluate(arrays)
    assert len(count_gradients) == 8  # NOISE_MICRO_BATCHES
    assert np.isfinite(metrics["noise_scale"]) and metrics["noise_scale"] > 0
