"""The layer-spec driver (``models.network_driver``): its forward equals the plain-numpy
reference of the specs, its gradient equals central finite differences of its loss, and its
SGD steps keep pruned weights at exactly 0."""

from __future__ import annotations

import numpy as np
import pytest

from ist_cli.models import network as nw
from ist_cli.models.network_driver import NetworkDriver
from tests.network_reference import forward as reference_forward

NETS = {
    "simple-cnn": lambda: nw.simple_cnn((1, 16, 16), 4),
    "resnet8": lambda: nw.resnet8((3, 8, 8), 3),
    "preact-resnet": lambda: nw.preact_resnet((2, 8, 8), 3, blocks=(1, 2), widths=(4, 6)),
    "mlp-bn": lambda: nw.mlp([6, 5, 4], batch_norm=True),
}


def batch(net: nw.Network, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, int(np.prod(net.input_shape))))
    y = rng.integers(0, net.output_shape[0], size=n).astype(np.int64)
    return X, y


def reference_loss(net, flat, X, y) -> float:
    logits = reference_forward(net, net.layout().named(flat), X.reshape(X.shape[0], *net.input_shape))
    top = logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
    return float((log_norm - logits[np.arange(y.size), y]).mean())


@pytest.mark.parametrize("name", NETS)
def test_forward_equals_the_numpy_reference(name):
    net = NETS[name]()
    params = nw.initial_params(net, seed=3, dtype="float64")
    params += 0.01 * np.random.default_rng(1).standard_normal(params.size)  # non-zero biases too
    X, _ = batch(net, 5)
    expected = reference_forward(net, net.layout().named(params), X.reshape(5, *net.input_shape))
    np.testing.assert_allclose(NetworkDriver(net).logits(params, X), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", NETS)
def test_gradient_equals_finite_differences_of_the_reference_loss(name):
    net = NETS[name]()
    driver = NetworkDriver(net)
    params = nw.initial_params(net, seed=4, dtype="float64")
    params += 0.05 * np.random.default_rng(2).standard_normal(params.size)
    X, y = batch(net, 6, seed=5)
    grad = np.full(params.size, np.nan)
    loss = driver.loss_and_grad(params, X, y, grad)
    assert loss == pytest.approx(reference_loss(net, params, X, y), rel=1e-10)
    assert np.isfinite(grad).all()  # every entry written, none left over from before
    rng = np.random.default_rng(7)
    eps = 1e-6
    for k in rng.choice(params.size, size=25, replace=False):
        up, down = params.copy(), params.copy()
        up[k] += eps
        down[k] -= eps
        numeric = (reference_loss(net, up, X, y) - reference_loss(net, down, X, y)) / (2 * eps)
        assert grad[k] == pytest.approx(numeric, rel=1e-4, abs=1e-7), k


def test_float32_gradient_is_close_to_float64():
    net = NETS["simple-cnn"]()
    driver = NetworkDriver(net)
    p64 = nw.initial_params(net, seed=0, dtype="float64")
    X, y = batch(net, 8)
    g64, g32 = np.empty(p64.size), np.empty(p64.size, dtype=np.float32)
    driver.loss_and_grad(p64, X, y, g64)
    driver.loss_and_grad(p64.astype(np.float32), X.astype(np.float32), y, g32)
    np.testing.assert_allclose(g32, g64, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_masked_steps_keep_pruned_weights_at_zero(momentum, nesterov):
    net = NETS["simple-cnn"]()
    driver = NetworkDriver(net)
    params = nw.initial_params(net, seed=1)
    mask = (np.random.default_rng(0).random(params.size) < 0.3).astype(np.float32)
    params *= mask
    X, y = batch(net, 40)
    X = X.astype(np.float32)
    grad, velocity = np.empty_like(params), np.zeros_like(params)
    batches = np.arange(40, dtype=np.int64).reshape(5, 8)
    before = params.copy()
    driver.train_steps(params=params, grad=grad, velocity=velocity, mask=mask, X=X, y=y, batches=batches,
                       lrs=np.full(5, 0.1), momentum=momentum, nesterov=nesterov)
    assert (params[mask == 0] == 0).all() and (velocity[mask == 0] == 0).all()
    assert (params[mask == 1] != before[mask == 1]).any()
