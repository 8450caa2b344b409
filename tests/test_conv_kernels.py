"""The conv/pool numba kernels against a plain-numpy reference (``tests/conv_reference.py``):
every kernel in float32 within 1e-5 of the float64 reference, and the reference's backward
passes against central finite differences (float64), so a mistake shared by both cannot pass.
Cases cover strides 1-3, zero padding (symmetric and TF's asymmetric SAME), odd and
non-square sizes, non-square kernels, 1x1 convolutions and dense layers. The reference is
written in NHWC; the kernels take NCHW activations (both use HWIO weights): the tests
transpose activations at the boundary."""

from __future__ import annotations

import numpy as np
import pytest

from ist_cli.kernels import conv
from ist_cli.kernels.sgd import sgd_update, softmax_xent
from tests import conv_reference as ref

TOL = 1e-5

# (N, H, W, C_in, kh, kw, C_out, stride, pad_h, pad_w, out_h, out_w)
CONV_CASES = {
    "valid-odd": (3, 7, 9, 3, 3, 5, 4, 1, 0, 0, 5, 5),
    "stride2-same": (2, 9, 8, 2, 3, 3, 5, 2, 1, 0, 5, 4),  # TF SAME: pad 2 = 1 top + 1 bottom, 1 = 0 left + 1 right
    "pad1-stride1": (2, 5, 6, 4, 3, 3, 3, 1, 1, 1, 5, 6),
    "stride3-gaps": (2, 8, 7, 2, 2, 2, 3, 3, 0, 0, 3, 2),  # rows/columns no window reaches
    "pointwise": (4, 1, 1, 6, 1, 1, 5, 1, 0, 0, 1, 1),  # a dense layer
    "pointwise-image": (2, 3, 5, 4, 1, 1, 3, 1, 0, 0, 3, 5),
    "large-image": (3, 40, 40, 8, 5, 5, 4, 1, 0, 0, 36, 36),
    # stride 1, output as wide as the input: patch rows are shifted copies of whole channels
    "same-5x3": (2, 6, 7, 3, 5, 3, 4, 1, 2, 1, 6, 7),
    "same-even-kernel": (2, 5, 6, 2, 2, 2, 3, 1, 0, 0, 5, 6),  # TF SAME: the zero row/column at the end
    "same-width-valid-height": (2, 7, 6, 3, 3, 3, 4, 1, 0, 1, 5, 6),
    "same-wide-channels": (2, 8, 8, 16, 3, 3, 24, 1, 1, 1, 8, 8),
    # stride 2 onto half the (even) width: the image is read as four parity planes
    "stride2-pad1": (2, 8, 8, 3, 3, 3, 4, 2, 1, 1, 4, 4),
    "stride2-odd-width": (2, 7, 9, 2, 3, 3, 3, 2, 1, 1, 4, 5),
}


def rand(rng, shape, scale=1.0, dtype=np.float32):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def conv_inputs(case, seed=0, dtype=np.float32):
    N, H, W, C, kh, kw, Co, stride, ph, pw, oh, ow = CONV_CASES[case]
    rng = np.random.default_rng(seed)
    x = rand(rng, (N, H, W, C), dtype=dtype)
    w = rand(rng, (kh, kw, C, Co), 1.0 / np.sqrt(kh * kw * C), dtype)
    b = rand(rng, (Co,), 0.5, dtype)
    dy = rand(rng, (N, oh, ow, Co), 1.0 / np.sqrt(N * oh * ow), dtype)  # a mean loss's scale
    return x, w, b, dy, dict(stride=stride, pad_h=ph, pad_w=pw), (oh, ow)


def close(got, want, tol=TOL):
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=tol, atol=tol)


def finite_difference(f, x, entries, h=1e-6):
    """Central differences of the scalar ``f`` at the flat ``entries`` of ``x`` (float64)."""
    out = []
    for k in entries:
        old = x.flat[k]
        x.flat[k] = old + h
        up = f()
        x.flat[k] = old - h
        down = f()
        x.flat[k] = old
        out.append((up - down) / (2 * h))
    return np.array(out)


def some(array, rng, count=12):
    return rng.choice(array.size, size=min(count, array.size), replace=False)


# ----------------------------------------------------------------------------- the reference itself
@pytest.mark.parametrize("case", [c for c in CONV_CASES if c != "large-image"])
def test_reference_conv_backward_matches_finite_differences(case):
    x, w, b, dy, geo, (oh, ow) = conv_inputs(case, seed=1, dtype=np.float64)
    rng = np.random.default_rng(2)

    def loss():
        return float(np.sum(ref.conv(x, w, b, out_h=oh, out_w=ow, **geo) * dy))

    dx, dw, db = ref.conv_backward(x, w, dy, **geo)
    for array, grad in ((x, dx), (w, dw), (b, db)):
        entries = some(array, rng)
        np.testing.assert_allclose(finite_difference(loss, array, entries), grad.flat[entries], rtol=1e-6, atol=1e-7)


POOL_CASES = {  # (N, H, W, C, pool_h, pool_w, stride, pad_h, pad_w, out_h, out_w)
    "2x2-valid": (2, 8, 6, 3, 2, 2, 2, 0, 0, 4, 3),
    "2x2-valid-odd": (2, 7, 5, 3, 2, 2, 2, 0, 0, 3, 2),  # last row/column in no window
    "2x2-same-odd": (2, 7, 5, 3, 2, 2, 2, 0, 0, 4, 3),  # TF SAME: one padded row/column at the end
    "3x3-overlap-pad": (2, 7, 6, 2, 3, 3, 2, 1, 1, 4, 3),
}


def pool_inputs(case, seed=0, dtype=np.float32):
    N, H, W, C, ph, pw, stride, pad_h, pad_w, oh, ow = POOL_CASES[case]
    rng = np.random.default_rng(seed)
    x = rand(rng, (N, H, W, C), dtype=dtype)
    dy = rand(rng, (N, oh, ow, C), dtype=dtype)
    return x, dy, dict(pool_h=ph, pool_w=pw, stride=stride, pad_h=pad_h, pad_w=pad_w), (oh, ow)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("case", list(POOL_CASES))
def test_reference_pools_match_finite_differences(case, relu):
    x, dy, geo, (oh, ow) = pool_inputs(case, seed=3, dtype=np.float64)
    entries = np.arange(x.size)

    def max_loss():
        return float(np.sum(ref.maxpool(x, out_h=oh, out_w=ow, relu=relu, **geo) * dy))

    def avg_loss():
        return float(np.sum(ref.avgpool(x, out_h=oh, out_w=ow, **geo) * dy))

    np.testing.assert_allclose(finite_difference(max_loss, x, entries),
                               ref.maxpool_backward(x, dy, relu=relu, **geo).ravel(), rtol=1e-6, atol=1e-7)
    if not relu:
        np.testing.assert_allclose(finite_difference(avg_loss, x, entries),
                                   ref.avgpool_backward(x.shape, dy, **geo).ravel(), rtol=1e-6, atol=1e-7)


def test_reference_softmax_matches_finite_differences():
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((5, 7))
    y = rng.integers(0, 7, 5)
    _, grad = ref.softmax_xent(logits, y)
    fd = finite_difference(lambda: ref.softmax_xent(logits, y)[0], logits, np.arange(logits.size))
    np.testing.assert_allclose(fd, grad.ravel(), rtol=1e-6, atol=1e-8)


def test_reference_conv_is_a_known_convolution():
    """A sanity anchor independent of einsum: a 2x2 all-ones kernel sums each window."""
    x = np.arange(12.0).reshape(1, 3, 4, 1)
    y = ref.conv(x, np.ones((2, 2, 1, 1)), np.zeros(1), stride=1, pad_h=0, pad_w=0, out_h=2, out_w=3)
    assert y[0, :, :, 0].tolist() == [[10.0, 14.0, 18.0], [26.0, 30.0, 34.0]]


# ----------------------------------------------------------------------------- kernels vs reference
def nchw(a):
    """A C-contiguous copy of an NHWC array in the kernels' NCHW (never a view, even where the
    transpose is already contiguous)."""
    return a.transpose(0, 3, 1, 2).copy()


def nhwc(a):
    """A kernel's NCHW result in the reference's layout."""
    return a.transpose(0, 2, 3, 1)


def none(dtype=np.float32):
    """The size-0 array that switches an optional kernel argument off."""
    return np.empty((0, 0, 0, 0), dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv_forward_and_backward_match_reference(case, dtype):
    x, w, b, dy, geo, (oh, ow) = conv_inputs(case, seed=5, dtype=dtype)
    tol = TOL if dtype == np.float32 else 1e-10
    out = np.full((x.shape[0], w.shape[3], oh, ow), np.nan, dtype=dtype)
    conv.conv2d_forward(x=nchw(x), weight=w, bias=b, out=out, residual=none(dtype), relu_out=none(dtype),
                        **geo)
    close(nhwc(out), ref.conv(x, w, b, out_h=oh, out_w=ow, **geo), tol)

    dx_want, dw_want, db_want = ref.conv_backward(x, w, dy, **geo)
    dw = np.full(w.shape, np.nan, dtype=dtype)  # beta = 0 must not read it
    db = np.full_like(b, np.nan)
    dx = np.full(nchw(x).shape, np.nan, dtype=dtype)
    conv.conv2d_backward(x=nchw(x), weight=w, dout=nchw(dy), dweight=dw, dbias=db, dx=dx, beta=0.0,
                         accumulate_dx=False, relu_mask=none(dtype), **geo)
    close(nhwc(dx), dx_want, tol)
    close(dw, dw_want, tol)
    close(db, db_want, tol)


@pytest.mark.parametrize("case", ["valid-odd", "stride2-same", "pointwise", "pointwise-image", "large-image"])
def test_conv_forward_fuses_residual_and_relu(case):
    x, w, b, _, geo, (oh, ow) = conv_inputs(case, seed=20)
    want = ref.conv(x, w, b, out_h=oh, out_w=ow, **geo)
    shortcut = rand(np.random.default_rng(21), want.shape)
    out = nchw(shortcut)  # the shortcut already in out: residual = out
    relu = np.full_like(out, np.nan)
    conv.conv2d_forward(x=nchw(x), weight=w, bias=b, out=out, residual=out, relu_out=relu, **geo)
    close(nhwc(out), want + shortcut)
    close(nhwc(relu), np.maximum(want + shortcut, 0.0))
    out2 = np.full_like(out, np.nan)
    conv.conv2d_forward(x=nchw(x), weight=w, bias=b, out=out2, residual=nchw(shortcut), relu_out=out2,
                        **geo)  # ReLU in place
    close(nhwc(out2), np.maximum(want + shortcut, 0.0))


@pytest.mark.parametrize("case", ["valid-odd", "stride2-same", "pointwise", "pointwise-image", "large-image",
                                  "pad1-stride1", "same-5x3", "same-width-valid-height", "stride2-pad1"])
def test_conv_backward_accumulates_and_masks_dx(case):
    """dx <- relu'(mask) * (dx + dL/dx): the shortcut's gradient already in dx, then the ReLU
    that produced x; weights accumulate with beta (a heavy-ball velocity)."""
    x, w, b, dy, geo, _ = conv_inputs(case, seed=6)
    dx_want, dw_want, db_want = ref.conv_backward(x, w, dy, **geo)
    rng = np.random.default_rng(7)
    dw0, db0, dx0 = rand(rng, w.shape), rand(rng, b.shape), rand(rng, x.shape)
    mask = rand(rng, x.shape)
    dw, db, dx = dw0.copy(), db0.copy(), nchw(dx0)
    conv.conv2d_backward(x=nchw(x), weight=w, dout=nchw(dy), dweight=dw, dbias=db, dx=dx, beta=0.9,
                         accumulate_dx=True, relu_mask=nchw(mask), **geo)
    close(dw, 0.9 * dw0.astype(np.float64) + dw_want)
    close(db, 0.9 * db0.astype(np.float64) + db_want)
    close(nhwc(dx), np.where(mask > 0, dx0 + dx_want, 0.0))
    dw[...] = np.nan
    conv.conv2d_backward(x=nchw(x), weight=w, dout=nchw(dy), dweight=dw, dbias=db, dx=none(), beta=0.0,
                         accumulate_dx=False, relu_mask=none(), **geo)
    close(dw, dw_want)


@pytest.mark.parametrize("case", ["valid-odd", "stride2-same", "pad1-stride1", "stride3-gaps", "same-5x3",
                                  "same-even-kernel", "same-width-valid-height", "stride2-pad1",
                                  "stride2-odd-width"])
def test_im2col_is_the_patch_matrix_and_col2im_its_transpose(case):
    x, w, _, _, geo, (oh, ow) = conv_inputs(case, seed=8)
    kh, kw = w.shape[:2]
    N, C = x.shape[0], x.shape[3]
    cols = np.full((N, kh * kw * C, oh * ow), np.nan, dtype=np.float32)
    conv.im2col(x=nchw(x), kh=kh, kw=kw, out_h=oh, out_w=ow, cols=cols, **geo)
    xp = ref.padded(x, kh, kw, geo["stride"], geo["pad_h"], geo["pad_w"], oh, ow)
    s = geo["stride"]
    want = np.stack([np.stack([xp[n, i * s:i * s + kh, j * s:j * s + kw].ravel()
                               for i in range(oh) for j in range(ow)], axis=1) for n in range(N)])
    assert np.array_equal(cols, want.astype(np.float32))
    # col2im is the adjoint: <im2col(x), G> = <x, col2im(G)>, and it adds into dx
    G = rand(np.random.default_rng(9), cols.shape)
    G_given = G.copy()
    start = rand(np.random.default_rng(10), nchw(x).shape)
    dx = start.copy()
    conv.col2im(cols=G, kh=kh, kw=kw, out_h=oh, out_w=ow, dx=dx, **geo)
    assert np.array_equal(G, G_given)  # the caller's patch gradient is read, never overwritten
    lhs = np.sum(cols.astype(np.float64) * G)
    rhs = np.sum(nchw(x).astype(np.float64) * (dx.astype(np.float64) - start))
    assert abs(lhs - rhs) <= 1e-4 * max(1.0, abs(lhs))


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("case", list(POOL_CASES))
def test_maxpool_matches_reference(case, relu):
    x, dy, geo, (oh, ow) = pool_inputs(case, seed=11)
    out = np.full(nchw(dy).shape, np.nan, dtype=np.float32)
    argmax = np.full(out.shape, -7, dtype=np.int64)
    conv.maxpool_forward(x=nchw(x), out=out, argmax=argmax, relu=relu, **geo)
    close(nhwc(out), ref.maxpool(x, out_h=oh, out_w=ow, relu=relu, **geo))
    dx = np.full(nchw(x).shape, np.nan, dtype=np.float32)
    conv.maxpool_backward(dout=nchw(dy), argmax=argmax, dx=dx)
    close(nhwc(dx), ref.maxpool_backward(x, dy, relu=relu, **geo))


@pytest.mark.parametrize("case", list(POOL_CASES))
def test_avgpool_matches_reference(case):
    x, dy, geo, (oh, ow) = pool_inputs(case, seed=12)
    out = np.full(nchw(dy).shape, np.nan, dtype=np.float32)
    conv.avgpool_forward(x=nchw(x), out=out, accumulate=False, **geo)
    close(nhwc(out), ref.avgpool(x, out_h=oh, out_w=ow, **geo))
    dx = np.full(nchw(x).shape, np.nan, dtype=np.float32)
    conv.avgpool_backward(dout=nchw(dy), dx=dx, accumulate=False, **geo)
    close(nhwc(dx), ref.avgpool_backward(x.shape, dy, **geo))


def test_avgpool_zero_padded_shortcut_into_wider_output():
    """Lee et al.'s shortcut: avg-pool into the first C channels of a wider tensor, zeros (or the
    residual branch, accumulated) in the rest; backward reads those first C channels only."""
    x, _, geo, (oh, ow) = pool_inputs("2x2-same-odd", seed=13)
    rng = np.random.default_rng(14)
    C = x.shape[3]
    branch = rand(rng, (x.shape[0], oh, ow, 2 * C))
    pooled = ref.avgpool(x, out_h=oh, out_w=ow, **geo)
    padded_pool = np.concatenate([pooled, np.zeros_like(pooled)], axis=3)
    out = np.full(nchw(branch).shape, np.nan, dtype=np.float32)
    conv.avgpool_forward(x=nchw(x), out=out, accumulate=False, **geo)
    close(nhwc(out), padded_pool)
    summed = nchw(branch)
    conv.avgpool_forward(x=nchw(x), out=summed, accumulate=True, **geo)
    close(nhwc(summed), branch + padded_pool)
    dy = rand(rng, branch.shape)
    dx0 = rand(rng, x.shape)
    dx = nchw(dx0)
    conv.avgpool_backward(dout=nchw(dy), dx=dx, accumulate=True, **geo)
    close(nhwc(dx), dx0 + ref.avgpool_backward(x.shape, dy[..., :C], **geo))


def test_global_avgpool_matches_reference():
    rng = np.random.default_rng(15)
    x = rand(rng, (3, 5, 7, 4))
    out = np.full((3, 4), np.nan, dtype=np.float32)
    conv.global_avgpool_forward(x=nchw(x), out=out)
    pool = dict(pool_h=5, pool_w=7, stride=1, pad_h=0, pad_w=0)  # one window: the whole image
    close(out, ref.avgpool(x, out_h=1, out_w=1, **pool)[:, 0, 0])
    dy = rand(rng, (3, 4))
    dx = np.full(nchw(x).shape, np.nan, dtype=np.float32)
    conv.global_avgpool_backward(dout=dy, dx=dx, accumulate=False)
    want = ref.avgpool_backward(x.shape, dy[:, None, None, :], **pool)
    close(nhwc(dx), want)
    conv.global_avgpool_backward(dout=dy, dx=dx, accumulate=True)
    close(nhwc(dx), 2 * want)


def test_relu_and_bias_kernels():
    rng = np.random.default_rng(16)
    z_ref = rand(rng, (2, 3, 5, 4))
    bias = rand(rng, (4,))
    want = z_ref.astype(np.float64) + bias
    z = nchw(z_ref)
    conv.bias_add(z=z, bias=bias)
    close(nhwc(z), want)
    out = np.full_like(z, np.nan)
    conv.relu_forward(x=z, out=out)
    close(nhwc(out), np.maximum(want, 0.0))
    dy = rand(rng, z_ref.shape)
    dx = np.full_like(z, np.nan)
    conv.relu_backward(y=out, dout=nchw(dy), dx=dx, accumulate=False)
    close(nhwc(dx), np.where(want > 0, dy, 0.0))
    conv.relu_backward(y=z, dout=nchw(dy), dx=dx, accumulate=True)
    close(nhwc(dx), 2 * np.where(want > 0, dy, 0.0))
    db = np.ones(4, dtype=np.float32)
    conv.bias_grad(dz=nchw(dy), dbias=db, beta=0.5)
    close(db, 0.5 + dy.astype(np.float64).sum(axis=(0, 1, 2)))


def test_softmax_xent_matches_reference():
    rng = np.random.default_rng(17)
    logits = rand(rng, (6, 10), 3.0)
    y = rng.integers(0, 10, 6).astype(np.int64)
    grad = np.full_like(logits, np.nan)
    loss = softmax_xent(logits=logits, y=y, dlogits=grad)
    want_loss, want_grad = ref.softmax_xent(logits.astype(np.float64), y)
    assert abs(loss - want_loss) <= TOL
    close(grad, want_grad)


@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_masked_update_of_a_conv_layer_keeps_pruned_weights_zero(momentum, nesterov):
    """A conv layer's gradient through ``sgd_update`` with a mask: pruned weights stay exactly 0
    over several steps, kept ones follow the numpy update."""
    x, w, b, dy, geo, _ = conv_inputs("pad1-stride1", seed=18)
    rng = np.random.default_rng(19)
    shape = w.shape
    mask_w = (rng.random(shape) < 0.3).astype(np.float32)
    params = np.concatenate([(w * mask_w).ravel(), np.zeros_like(b)])
    mask = np.concatenate([mask_w.ravel(), np.zeros_like(b)])  # biases pruned too, as SNIP does
    velocity = np.zeros_like(params)
    want_p, want_v = params.astype(np.float64), np.zeros(params.size)
    lr = 0.1
    for _ in range(3):
        grad = np.empty_like(params)
        conv.conv2d_backward(x=nchw(x), weight=params[:w.size].reshape(shape), dout=nchw(dy),
                             dweight=grad[:w.size].reshape(shape), dbias=grad[w.size:], dx=none(), beta=0.0,
                             accumulate_dx=False, relu_mask=none(), **geo)
        _, g_w, g_b = ref.conv_backward(x, want_p[:w.size].reshape(shape), dy, **geo)
        g = np.concatenate([g_w.ravel(), g_b]) * mask
        want_v = (momentum * want_v + g) * mask
        want_p -= lr * ((g + momentum * want_v) if nesterov else (want_v if momentum else g))
        sgd_update(params=params, grad=grad, velocity=velocity, mask=mask, size=params.size, lr=lr,
                   momentum=momentum, nesterov=nesterov)
    assert np.all(params[mask == 0] == 0.0)
    close(params, want_p)


def test_warm_up_compiles_every_public_kernel():
    """A worker warms the kernels before its first step: every public kernel must have a
    float32 compilation afterwards."""
    conv.warm_up("float32")
    public = [name for name, obj in vars(conv).items() if hasattr(obj, "py_func") and not name.startswith("_")]
    assert len(public) >= 14
    missing = [name for name in public
               if not any("float32" in str(sig) for sig in getattr(conv, name).signatures)]
    assert missing == []
