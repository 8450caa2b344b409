"""The MLP numba kernels against a plain-numpy reference (float64, 1e-5), and the reference
itself against finite differences, so a shared mistake in both cannot pass."""

from __future__ import annotations

import numpy as np
import pytest

from ist_cli.kernels import mlp as kernels
from ist_cli.models.mlp import initial_params, net_layout
from ist_cli.models.subnet import draw_partition, neuron_index, subnet_layout

WIDTHS = [5, 7, 6, 3]
EPS = 1e-5


# ----------------------------------------------------------------------------- numpy reference
def ref_loss(named: dict, X: np.ndarray, y: np.ndarray, bn: bool, scale: float, n_layers: int):
    """Loss, logits and everything backward needs, written layer by layer in numpy."""
    a, cache = X, []
    for layer in range(n_layers):
        z = a @ named[f"W{layer}"] + named[f"b{layer}"]
        if layer == n_layers - 1:
            break
        entry = {"a_in": a, "z": z}
        if bn:
            mu, var = z.mean(axis=0), z.var(axis=0)
            xhat = (z - mu) / np.sqrt(var + EPS)
            entry.update(xhat=xhat, var=var)
            u = named[f"gamma{layer}"] * xhat + named[f"beta{layer}"]
        else:
            u = z
        entry["u"] = u
        a = scale * np.maximum(u, 0.0)
        cache.append(entry)
    logits = z
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -logp[np.arange(len(y)), y].mean()
    return loss, logits, cache, a


def ref_grad(named: dict, X: np.ndarray, y: np.ndarray, bn: bool, scale: float, n_layers: int) -> dict:
    loss, logits, cache, a_last = ref_loss(named, X, y, bn, scale, n_layers)
    m = X.shape[0]
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(m), y] -= 1.0
    dz = p / m
    grads = {}
    a_in = a_last
    for layer in range(n_layers - 1, -1, -1):
        a_in = X if layer == 0 else scale * np.maximum(cache[layer - 1]["u"], 0.0)
        grads[f"W{layer}"] = a_in.T @ dz
        grads[f"b{layer}"] = dz.sum(axis=0)
        if layer == 0:
            break
        entry = cache[layer - 1]
        du = (dz @ named[f"W{layer}"].T) * scale * (entry["u"] > 0)
        if bn:
            prev = layer - 1
            xhat, var = entry["xhat"], entry["var"]
            grads[f"gamma{prev}"] = (du * xhat).sum(axis=0)
            grads[f"beta{prev}"] = du.sum(axis=0)
            dxhat = du * named[f"gamma{prev}"]
            z_centered = entry["z"] - entry["z"].mean(axis=0)
            dvar = (dxhat * z_centered).sum(axis=0) * -0.5 * (var + EPS) ** -1.5
            dmu = -(dxhat / np.sqrt(var + EPS)).sum(axis=0) + dvar * (-2.0 * z_centered).mean(axis=0)
            dz = dxhat / np.sqrt(var + EPS) + dvar * 2.0 * z_centered / m + dmu / m
        else:
            dz = du
    return grads


def problem(bn: bool, seed: int = 0, batch: int = 9, widths=WIDTHS):
    layout = net_layout(widths, bn)
    rng = np.random.default_rng(seed)
    params = initial_params(layout, seed, np.dtype("float64"))
    if bn:  # move gamma/beta off their defaults so their gradients are exercised
        for layer in range(layout.n_layers - 1):
            layout.vector(params, layer, 2)[...] = rng.uniform(0.5, 1.5, widths[layer + 1])
            layout.vector(params, layer, 3)[...] = rng.normal(0, 0.3, widths[layer + 1])
    X = rng.standard_normal((batch, widths[0]))
    y = rng.integers(0, widths[-1], batch)
    return layout, params, X, y


# ----------------------------------------------------------------------------- tests
@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_reference_gradient_matches_finite_differences(bn, scale):
    layout, params, X, y = problem(bn)
    grads = ref_grad(layout.named(params), X, y, bn, scale, layout.n_layers)
    analytic = np.zeros_like(params)
    for name, view in layout.named(analytic).items():
        view[...] = grads[name]
    h = 1e-6
    numeric = np.zeros_like(params)
    for k in range(params.size):
        up, down = params.copy(), params.copy()
        up[k] += h
        down[k] -= h
        numeric[k] = (ref_loss(layout.named(up), X, y, bn, scale, layout.n_layers)[0]
                      - ref_loss(layout.named(down), X, y, bn, scale, layout.n_layers)[0]) / (2 * h)
    np.testing.assert_allclose(analytic, numeric, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_kernel_forward_loss_and_gradient_match_reference(bn, scale):
    layout, params, X, y = problem(bn, seed=3)
    named = layout.named(params)
    loss, logits, _, _ = ref_loss(named, X, y, bn, scale, layout.n_layers)
    np.testing.assert_allclose(
        kernels.forward_logits(
            params=params, offsets=layout.offsets, widths=layout.widths, batch_norm=bn, scale=scale, X=X
        ), logits, rtol=1e-5, atol=1e-5)
    grad = np.full(layout.size + 4, 7.0)  # longer than needed: the tail must stay untouched
    got = kernels.loss_and_grad(
        params=params, offsets=layout.offsets, widths=layout.widths, batch_norm=bn, scale=scale, X=X, y=y,
        grad=grad
    )
    assert got == pytest.approx(loss, rel=1e-5, abs=1e-5)
    grads = ref_grad(named, X, y, bn, scale, layout.n_layers)
    for name, view in layout.named(grad[: layout.size]).items():
        np.testing.assert_allclose(view, grads[name], rtol=1e-5, atol=1e-5, err_msg=name)
    assert (grad[layout.size :] == 7.0).all()


@pytest.mark.parametrize("bn", [False, True])
def test_gather_and_scatter_match_numpy_fancy_indexing(bn):
    full = net_layout(WIDTHS, bn)
    n_workers = 2
    model = np.random.default_rng(1).standard_normal(full.size)
    plans = draw_partition(WIDTHS[1:-1], n_workers, seed=4, round_index=2)
    for worker in range(n_workers):
        sub_layout = subnet_layout(WIDTHS, n_workers, worker, bn)
        neurons, starts = neuron_index(WIDTHS, plans, worker)
        sets = [neurons[starts[i] : starts[i + 1]] for i in range(len(WIDTHS))]
        sub = np.zeros(sub_layout.size + 3)
        kernels.gather_subnet(
            full=model, full_offsets=full.offsets, full_widths=full.widths, sub=sub,
            sub_offsets=sub_layout.offsets, sub_widths=sub_layout.widths, neurons=neurons, starts=starts
        )
        named_full, named_sub = full.named(model), sub_layout.named(sub)
        for layer in range(full.n_layers):
            np.testing.assert_array_equal(named_sub[f"W{layer}"], named_full[f"W{layer}"][np.ix_(sets[layer], sets[layer + 1])])
            np.testing.assert_array_equal(named_sub[f"b{layer}"], named_full[f"b{layer}"][sets[layer + 1]])
            if bn and layer < full.n_layers - 1:
                np.testing.assert_array_equal(named_sub[f"gamma{layer}"], named_full[f"gamma{layer}"][sets[layer + 1]])
        assert (sub[sub_layout.size :] == 0).all()

        # scatter new values back: exactly the subnet's entries change, the output bias does not
        sub[: sub_layout.size] = -np.arange(1, sub_layout.size + 1)
        target = model.copy()
        kernels.scatter_subnet(
            full=target, full_offsets=full.offsets, full_widths=full.widths, sub=sub,
            sub_offsets=sub_layout.offsets, sub_widths=sub_layout.widths, neurons=neurons, starts=starts,
            skip_output_bias=True
        )
        expected = model.copy()
        named_exp = full.named(expected)
        for layer in range(full.n_layers):
            named_exp[f"W{layer}"][np.ix_(sets[layer], sets[layer + 1])] = named_sub[f"W{layer}"]
            if layer < full.n_layers - 1:
                named_exp[f"b{layer}"][sets[layer + 1]] = named_sub[f"b{layer}"]
                if bn:
                    named_exp[f"gamma{layer}"][sets[layer + 1]] = named_sub[f"gamma{layer}"]
                    named_exp[f"beta{layer}"][sets[layer + 1]] = named_sub[f"beta{layer}"]
        np.testing.assert_array_equal(target, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_take_put_and_copy_block_match_numpy_ix(dtype):
    """The partitioned server's block copies equal np.ix_ on unsorted ids, touch nothing else,
    and write into a slice of a larger buffer without spilling past it."""
    rng = np.random.default_rng(7)
    matrix = rng.standard_normal((13, 17)).astype(dtype)
    rows = rng.permutation(13)[:5].astype(np.int64)
    cols = rng.permutation(17)[:9].astype(np.int64)
    buffer = np.full(5 * 9 + 4, -7.0, dtype=dtype)
    kernels.take_block(matrix=matrix, rows=rows, cols=cols, out=buffer[2 : 2 + 45])
    np.testing.assert_array_equal(buffer[2:47], matrix[np.ix_(rows, cols)].ravel())
    assert (buffer[:2] == -7).all() and (buffer[47:] == -7).all()

    values = rng.standard_normal(45).astype(dtype)
    target, expected = matrix.copy(), matrix.copy()
    kernels.put_block(matrix=target, rows=rows, cols=cols, values=values)
    expected[np.ix_(rows, cols)] = values.reshape(5, 9)
    np.testing.assert_array_equal(target, expected)

    other = rng.standard_normal((6, 11)).astype(dtype)
    to_rows = rng.permutation(6)[:5].astype(np.int64)
    to_cols = rng.permutation(11)[:9].astype(np.int64)
    target, expected = other.copy(), other.copy()
    kernels.copy_block(src=matrix, src_rows=rows, src_cols=cols, dst=target, dst_rows=to_rows, dst_cols=to_cols)
    expected[np.ix_(to_rows, to_cols)] = matrix[np.ix_(rows, cols)]
    np.testing.assert_array_equal(target, expected)


def test_batch_norm_relu_matches_numpy_batch_statistics():
    """An owner's hidden block at evaluation: batch norm over the batch's own statistics
    (biased variance, eps 1e-5), then ReLU, computed here in float64 with numpy."""
    rng = np.random.default_rng(3)
    z = (rng.standard_normal((37, 11)) * 3 + 1).astype(np.float32)
    gamma = rng.uniform(0.5, 1.5, 11).astype(np.float32)
    beta = rng.standard_normal(11).astype(np.float32)
    wide = z.astype(np.float64)
    expected = np.maximum(gamma * (wide - wide.mean(axis=0)) / np.sqrt(wide.var(axis=0) + 1e-5) + beta, 0)
    kernels.batch_norm_relu(z=z, gamma=gamma, beta=beta)
    np.testing.assert_allclose(z, expected, rtol=1e-6, atol=1e-6)
    assert (z >= 0).all() and (z == 0).any()


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_train_steps_equal_reference_sgd(momentum):
    layout, params, _, _ = problem(True, seed=5)
    rng = np.random.default_rng(6)
    X = rng.standard_normal((20, WIDTHS[0]))
    y = rng.integers(0, WIDTHS[-1], 20)
    batches = rng.integers(0, 20, (3, 4))
    lr = 0.05
    expected = params.copy()
    velocity_ref = np.zeros_like(params)
    for rows in batches:
        grads = ref_grad(layout.named(expected), X[rows], y[rows], True, 2.0, layout.n_layers)
        g = np.zeros_like(params)
        for name, view in layout.named(g).items():
            view[...] = grads[name]
        velocity_ref = momentum * velocity_ref + g
        expected -= lr * (velocity_ref if momentum else g)
    got = params.copy()
    grad, velocity = np.zeros_like(params), np.zeros_like(params)
    kernels.train_steps(
        X=X, y=y, batches=batches, params=got, offsets=layout.offsets, widths=layout.widths, batch_norm=True,
        scale=2.0, lrs=np.full(len(batches), lr), momentum=momentum, nesterov=False, mask=got[:0], grad=grad,
        velocity=velocity, size=layout.size
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    if momentum:
        np.testing.assert_allclose(velocity, velocity_ref, rtol=1e-5, atol=1e-7)


def test_float32_kernels_agree_with_float64():
    layout, params, X, y = problem(True, seed=8)
    grad64 = np.zeros(layout.size)
    grad32 = np.zeros(layout.size, dtype=np.float32)
    loss64 = kernels.loss_and_grad(
        params=params, offsets=layout.offsets, widths=layout.widths, batch_norm=True, scale=1.0, X=X, y=y,
        grad=grad64
    )
    loss32 = kernels.loss_and_grad(
        params=params.astype(np.float32), offsets=layout.offsets, widths=layout.widths, batch_norm=True,
        scale=1.0, X=X.astype(np.float32), y=y, grad=grad32
    )
    assert loss32 == pytest.approx(loss64, rel=1e-4)
    np.testing.assert_allclose(grad32, grad64, rtol=1e-3, atol=1e-4)


# ----------------------------------------------------------------------------- BLAS
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("a_t", [False, True])
@pytest.mark.parametrize("b_t", [False, True])
def test_gemm_computes_alpha_op_a_op_b_plus_beta_c(dtype, a_t, b_t):
    """``_gemm`` on row-major operands, through whichever BLAS ``kernels.blas`` bound, against
    numpy in float64 (non-square shapes, so a swapped dimension or leading size shows)."""
    from numba import njit

    gemm = njit(lambda a, at, b, bt, c, alpha, beta: kernels._gemm(a=a, a_t=at, b=b, b_t=bt, c=c, alpha=alpha,
                                                                     beta=beta))
    rng = np.random.default_rng(3)
    m, k, n = 7, 5, 3
    a = rng.standard_normal((k, m) if a_t else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if b_t else (k, n)).astype(dtype)
    c = rng.standard_normal((m, n)).astype(dtype)
    op_a = (a.T if a_t else a).astype(np.float64)
    op_b = (b.T if b_t else b).astype(np.float64)
    expected = -0.5 * op_a @ op_b + 2.0 * c.astype(np.float64)
    gemm(a, a_t, b, b_t, c, -0.5, 2.0)
    np.testing.assert_allclose(c, expected, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans", ["NN", "TN", "NT"])
def test_scipy_fallback_gemm_has_the_fortran_abi(dtype, trans):
    """The shim used when numpy ships no OpenBLAS, called as BLAS is called (column-major,
    every argument a pointer, 64-bit integers), against numpy."""
    import ctypes

    from ist_cli.kernels import blas

    single, double = blas.scipy_gemm()
    address = single if dtype == np.float32 else double
    fn = ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * 13))(address)
    rng = np.random.default_rng(4)
    m, n, k = 4, 3, 6  # column-major C (m, n) = op(A) (m, k) op(B) (k, n)
    A = np.asfortranarray(rng.standard_normal((k, m) if trans[0] == "T" else (m, k)).astype(dtype))
    B = np.asfortranarray(rng.standard_normal((n, k) if trans[1] == "T" else (k, n)).astype(dtype))
    C = np.asfortranarray(rng.standard_normal((m, n)).astype(dtype))
    expected = 1.5 * (A.T if trans[0] == "T" else A).astype(np.float64) @ (B.T if trans[1] == "T" else B) + 0.25 * C
    scalar = ctypes.c_float if dtype == np.float32 else ctypes.c_double
    values = [ctypes.c_char(trans[0].encode()), ctypes.c_char(trans[1].encode()), *map(ctypes.c_int64, (m, n, k)),
              scalar(1.5), ctypes.c_int64(A.shape[0]), ctypes.c_int64(B.shape[0]), scalar(0.25),
              ctypes.c_int64(C.shape[0])]
    ta, tb, cm, cn, ck, alpha, lda, ldb, beta, ldc = (ctypes.addressof(v) for v in values)
    fn(ta, tb, cm, cn, ck, alpha, A.ctypes.data, lda, B.ctypes.data, ldb, beta, C.ctypes.data, ldc)
    np.testing.assert_allclose(C, expected, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)
