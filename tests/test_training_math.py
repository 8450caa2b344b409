"""Optimizers, the learning-rate schedule, pruning scores and masks, the noise-scale and
Lipschitz estimators, each against plain numpy written here (float64)."""

from __future__ import annotations

import numpy as np
import pytest

from ist_cli.kernels import mlp as kernels
from ist_cli.models.mlp import B, W, initial_params, net_layout
from ist_cli.training.lipschitz import lipschitz_estimate
from ist_cli.training.noise_scale import NoiseScaleEMA, two_batch_estimates
from ist_cli.training.prune_at_init import kept_count, snip_scores, top_kappa_mask
from ist_cli.training.schedule import LRSchedule
from tests.test_mlp_kernels import WIDTHS, problem, ref_grad, ref_loss


def flat_grad(layout, params, X, y, bn, scale=1.0):
    grads = ref_grad(layout.named(params), X, y, bn, scale, layout.n_layers)
    g = np.zeros_like(params)
    for name, view in layout.named(g).items():
        view[...] = grads[name]
    return g


def ref_lr(lr, step, decay_steps, end_factor):
    """Linear decay written directly: a straight line from lr (step 0) to lr*F (step N), then flat."""
    if step >= decay_steps:
        return lr * end_factor
    return lr - (lr - lr * end_factor) * step / decay_steps


# ----------------------------------------------------------------------------- schedule
def test_linear_decay_schedule_matches_the_straight_line():
    schedule = LRSchedule(0.3, "linear-decay", decay_steps=7, end_factor=0.01)
    got = schedule.for_steps(0, 12)
    want = [ref_lr(0.3, t, 7, 0.01) for t in range(12)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
    assert got[0] == 0.3 and got[-1] == pytest.approx(0.003, abs=1e-15)
    np.testing.assert_array_equal(schedule.for_steps(5, 3), got[5:8])  # a round starting mid-way
    assert (LRSchedule(0.3).for_steps(40, 5) == 0.3).all()


# ----------------------------------------------------------------------------- optimizers
@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov"])
@pytest.mark.parametrize("schedule_kind", ["constant", "linear-decay"])
def test_optimizer_matches_numpy_step_by_step(bn, optimizer, schedule_kind):
    layout, params, _, _ = problem(bn, seed=5)
    rng = np.random.default_rng(6)
    X = rng.standard_normal((20, WIDTHS[0]))
    y = rng.integers(0, WIDTHS[-1], 20)
    steps, first = 6, 3
    batches = rng.integers(0, 20, (steps, 4))
    mu = 0.0 if optimizer == "sgd" else 0.9
    schedule = LRSchedule(0.05, schedule_kind, decay_steps=5, end_factor=0.1)

    ref, v = params.copy(), np.zeros_like(params)
    got, grad, velocity = params.copy(), np.zeros_like(params), np.zeros_like(params)
    for s, rows in enumerate(batches):
        lr = 0.05 if schedule_kind == "constant" else ref_lr(0.05, first + s, 5, 0.1)
        g = flat_grad(layout, ref, X[rows], y[rows], bn)
        v = mu * v + g
        ref = ref - lr * ((g + mu * v) if optimizer == "nesterov" else v)
        kernels.train_steps(X=X, y=y, batches=batches[s : s + 1], params=got, offsets=layout.offsets,
                            widths=layout.widths, batch_norm=bn, scale=1.0, lrs=schedule.for_steps(first + s, 1),
                            momentum=mu, nesterov=optimizer == "nesterov", mask=got[:0], grad=grad,
                            velocity=velocity, size=layout.size)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10, err_msg=f"step {s}")
        if mu:
            np.testing.assert_allclose(velocity, v, rtol=0, atol=1e-10)
    # one call for all steps is the same computation as the step-by-step calls
    again, grad2, velocity2 = params.copy(), np.zeros_like(params), np.zeros_like(params)
    kernels.train_steps(X=X, y=y, batches=batches, params=again, offsets=layout.offsets, widths=layout.widths,
                        batch_norm=bn, scale=1.0, lrs=schedule.for_steps(first, steps), momentum=mu,
                        nesterov=optimizer == "nesterov", mask=again[:0], grad=grad2, velocity=velocity2,
                        size=layout.size)
    np.testing.assert_array_equal(again, got)


@pytest.mark.parametrize("mu, nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_masked_update_keeps_pruned_weights_gradients_and_velocities_zero(mu, nesterov):
    layout, params, _, _ = problem(True, seed=2)
    rng = np.random.default_rng(3)
    X = rng.standard_normal((16, WIDTHS[0]))
    y = rng.integers(0, WIDTHS[-1], 16)
    mask = np.ones(layout.size)
    for layer in range(layout.n_layers):  # prune half of every weight matrix, as pruning does
        weights = layout.weight(mask, layer)
        weights[...] = rng.random(weights.shape) < 0.5
    params *= mask
    grad, velocity = np.full(layout.size, 5.0), np.full(layout.size, 5.0) * mask
    start = params.copy()
    kernels.train_steps(X=X, y=y, batches=rng.integers(0, 16, (4, 8)), params=params, offsets=layout.offsets,
                        widths=layout.widths, batch_norm=True, scale=1.0, lrs=np.full(4, 0.1), momentum=mu,
                        nesterov=nesterov, mask=mask, grad=grad, velocity=velocity, size=layout.size)
    pruned = mask == 0
    assert (params[pruned] == 0).all() and (grad[pruned] == 0).all() and (velocity[pruned] == 0).all()
    assert (params[~pruned] != start[~pruned]).mean() > 0.5  # kept entries train (bar a few behind dead ReLUs)


def test_masked_training_equals_dense_training_of_the_masked_function():
    """The masked kernel is SGD on f(w * m): gradients of kept entries equal the reference's."""
    layout, params, X, y = problem(False, seed=4)
    mask = (np.random.default_rng(1).random(layout.size) < 0.6).astype(np.float64)
    params *= mask
    ref = params.copy()
    for _ in range(3):
        ref = ref - 0.1 * flat_grad(layout, ref, X, y, False) * mask
    got, grad = params.copy(), np.zeros_like(params)
    kernels.train_steps(X=X, y=y, batches=np.tile(np.arange(X.shape[0]), (3, 1)), params=got,
                        offsets=layout.offsets, widths=layout.widths, batch_norm=False, scale=1.0,
                        lrs=np.full(3, 0.1), momentum=0.0, nesterov=False, mask=mask, grad=grad,
                        velocity=got[:0], size=layout.size)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10)


# ----------------------------------------------------------------------------- pruning
def test_top_kappa_keeps_exactly_kappa_highest_prunable_scores():
    rng = np.random.default_rng(0)
    scores = rng.random(50)
    prunable = rng.random(50) < 0.7
    kappa = kept_count(int(prunable.sum()), 0.6)
    keep = top_kappa_mask(scores, prunable, kappa)
    assert (keep[~prunable]).all()
    assert int(keep[prunable].sum()) == kappa
    assert scores[prunable & keep].min() > scores[prunable & ~keep].max()


def test_top_kappa_breaks_ties_by_lower_index():
    keep = top_kappa_mask(np.array([0.0, 1.0, 0.0, 0.0, 2.0]), np.ones(5, bool), 3)
    np.testing.assert_array_equal(keep, [True, True, False, False, True])


@pytest.mark.parametrize("n, s, kappa", [(10, 0.5, 5), (10, 0.95, 1), (10, 0.96, 0), (7, 0.5, 4), (1000, 0.9, 100)])
def test_kept_count_rounds_half_up(n, s, kappa):
    assert kept_count(n, s) == kappa


def test_snip_scores_use_a_finite_difference_checked_gradient():
    """|w * dL/dw| from the kernel gradient; the gradient itself checked by central differences."""
    layout, params, X, y = problem(False, seed=7)
    grad = np.zeros_like(params)
    kernels.loss_and_grad(params=params, offsets=layout.offsets, widths=layout.widths, batch_norm=False,
                          scale=1.0, X=X, y=y, grad=grad)
    h = 1e-6
    for k in np.random.default_rng(0).choice(layout.size, 25, replace=False):
        up, down = params.copy(), params.copy()
        up[k] += h
        down[k] -= h
        numeric = (ref_loss(layout.named(up), X, y, False, 1.0, layout.n_layers)[0]
                   - ref_loss(layout.named(down), X, y, False, 1.0, layout.n_layers)[0]) / (2 * h)
        assert grad[k] == pytest.approx(numeric, abs=1e-7, rel=1e-5)
    np.testing.assert_array_equal(snip_scores(params, grad), np.abs(params * grad))


# ----------------------------------------------------------------------------- noise scale
def softmax_regression(seed=0, n=60, d=4, classes=3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = rng.integers(0, classes, n)
    layout = net_layout([d, classes], False)
    params = initial_params(layout, seed, np.dtype("float64"))
    return layout, params, X, y


def per_example_gradients(layout, params, X, y):
    """Softmax regression: dL_i/dW = x_i (p_i - e_y)^T, dL_i/db = p_i - e_y, for every example."""
    Wm = layout.weight(params, 0)
    b = layout.vector(params, 0, B)
    logits = X @ Wm + b
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    out = np.zeros((len(y), layout.size))
    start_w, start_b = int(layout.offsets[0, W]), int(layout.offsets[0, B])
    out[:, start_w : start_w + Wm.size] = (X[:, :, None] * p[:, None, :]).reshape(len(y), -1)
    out[:, start_b : start_b + b.size] = p
    return out


def test_noise_scale_estimator_expectation_matches_the_enumerated_truth():
    layout, params, X, y = softmax_regression()
    per_example = per_example_gradients(layout, params, X, y)
    full = per_example.mean(axis=0)
    kernel_full = np.zeros_like(params)
    kernels.loss_and_grad(params=params, offsets=layout.offsets, widths=layout.widths, batch_norm=False,
                          scale=1.0, X=X, y=y, grad=kernel_full)
    np.testing.assert_allclose(kernel_full, full, atol=1e-12)  # the enumeration is the kernel's gradient
    trace = float(((per_example - full) ** 2).sum(axis=1).mean())  # tr(Sigma), population covariance
    truth = trace / float(full @ full)

    rng = np.random.default_rng(1)
    small, micro = 4, 8
    ema = NoiseScaleEMA()
    g2s, traces = [], []
    grad = np.zeros_like(params)
    for _ in range(3000):  # micro-batches drawn with replacement, as the estimator's model assumes
        grads = []
        for _ in range(micro):
            rows = rng.integers(0, X.shape[0], small)
            kernels.loss_and_grad(params=params, offsets=layout.offsets, widths=layout.widths,
                                  batch_norm=False, scale=1.0, X=X[rows], y=y[rows], grad=grad)
            grads.append(grad.copy())
        grads = np.array(grads)
        g2, tr = two_batch_estimates(float((grads**2).sum(axis=1).mean()), float((grads.mean(0) ** 2).sum()),
                                     small, small * micro)
        g2s.append(g2)
        traces.append(tr)
        ema.update(g2, tr)
    assert np.mean(traces) / np.mean(g2s) == pytest.approx(truth, rel=0.10)
    assert np.mean(g2s) == pytest.approx(float(full @ full), rel=0.10)
    assert np.mean(traces) == pytest.approx(trace, rel=0.10)
    smoothed_g2, smoothed_tr, ratio = ema.value()
    assert ratio == pytest.approx(smoothed_tr / smoothed_g2)
    assert ratio == pytest.approx(truth, rel=0.5)  # the EMA of the last ~100 draws: noisier, same target


def test_noise_scale_ema_is_bias_corrected():
    ema = NoiseScaleEMA(beta=0.9)
    assert np.isnan(ema.value()[2])
    ema.update(2.0, 6.0)
    assert ema.value() == pytest.approx((2.0, 6.0, 3.0))
    ema.update(4.0, 6.0)
    assert ema.value()[0] == pytest.approx((0.9 * 0.1 * 2 + 0.1 * 4) / (1 - 0.81))


# ----------------------------------------------------------------------------- Lipschitz
def test_lipschitz_on_a_quadratic_equals_the_curvature_along_the_step():
    """f(w) = |Aw - b|^2 / 2m (a linear model, squared error): the secant is exact, |H d|/|d| for every gamma."""
    rng = np.random.default_rng(0)
    m, d = 40, 6
    A, b = rng.standard_normal((m, d)), rng.standard_normal(m)
    H = A.T @ A / m

    def gradient(w):
        return A.T @ (A @ w - b) / m

    w_a = rng.standard_normal(d)
    w_b = w_a - 0.1 * gradient(w_a)
    step = w_b - w_a
    expected = np.linalg.norm(H @ step) / np.linalg.norm(step)
    assert lipschitz_estimate(gradient, w_a, w_b) == pytest.approx(expected, rel=0, abs=1e-6)
    eigen = np.linalg.eigvalsh(H)
    assert eigen[0] - 1e-12 <= expected <= eigen[-1] + 1e-12
    # along the top eigenvector the estimate is the largest curvature
    top = np.linalg.eigh(H)[1][:, -1]
    assert lipschitz_estimate(gradient, w_a, w_a + 0.3 * top) == pytest.approx(eigen[-1], abs=1e-6)
    # a mask restricts both the step and the gradient to the kept coordinates
    keep = np.array([True, False, True, True, False, True])
    sub = H[np.ix_(keep, keep)]
    masked = np.where(keep, step, 0.0)[keep]
    assert lipschitz_estimate(gradient, w_a, w_b, keep) == pytest.approx(
        np.linalg.norm(sub @ masked) / np.linalg.norm(masked), abs=1e-6)


# ----------------------------------------------------------------------------- evaluation schedule
def test_eval_schedule_rounds_steps_and_last_round():
    from ist_cli.training.goal import EvalSchedule

    schedule = EvalSchedule(every_rounds=10, every_steps=7, steps_per_round=3, rounds=12)
    due = [r for r in range(1, 13) if schedule.due(r)]
    # step counts 3,6,9,...: multiples of 7 are passed in rounds 3 (9), 5 (15), 7 (21), 10 (30), 12 (36)
    assert due == [3, 5, 7, 10, 12]
    assert [r for r in range(1, 13) if EvalSchedule(4, 0, 3, 12).due(r)] == [4, 8, 12]
