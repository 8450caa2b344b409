"""Numba kernels of convolutional layers: convolution, pooling, ReLU, bias, softmax loss.

Layout: **NHWC** activations and **HWIO** weights, float32 (float64 works too, for tests):
an image batch ``x`` is (N, H, W, C) C-contiguous, a convolution's ``weight`` is
(kh, kw, C_in, C_out), so the weight *is* the (kh*kw*C_in, C_out) matrix of the lowered
product and the product's output rows *are* NHWC pixels, with no transpose anywhere; a
pixel's channels are contiguous, which is what the pooling and elementwise loops run over.
NHWC was chosen by measurement against NCHW (docs/performance.md). A dense layer is a 1x1
convolution of an (N, 1, 1, C) batch; it takes a no-copy path (no im2col).

Convolution is im2col + one BLAS ?gemm per group of images (``CHUNK_BYTES`` of patches,
so the patch matrix stays in cache): forward Y = cols W (+ bias and an optional residual,
added by BLAS: the output is pre-filled with them and beta = 1), then an optional ReLU copy;
backward dW = cols^T dY (patches recomputed, not stored) and dX = col2im(dY W^T), a
scatter-add, optionally masked by the ReLU that made X. Each group's elementwise work is
done while it is in cache, instead of as passes over whole activations. Padding is given as the zeros added on top
and left (``pad_h``, ``pad_w``); the output size is the output array's, so VALID, TF's SAME
(asymmetric at stride 2) and symmetric padding are all one code path: any input position
outside the image reads as 0.

Gradients are written as ``g <- beta g + new`` (``beta`` 0: overwrite; 1: accumulate; the
momentum: straight into a heavy-ball velocity). Pruning masks and the SGD / momentum /
Nesterov update on the flat parameter vector are ``kernels.mlp.sgd_update`` (the same
update for any layer: pruned entries stay exactly 0).

Signatures (call by keyword from outside ``kernels/``):

    conv2d_forward(x, weight, bias, out, stride, pad_h, pad_w, residual, relu_out)
    conv2d_backward(x, weight, dout, dweight, dbias, dx, stride, pad_h, pad_w, beta, accumulate_dx,
                    relu_mask)
    im2col(x, kh, kw, stride, pad_h, pad_w, out_h, out_w, cols)
    col2im(cols, kh, kw, stride, pad_h, pad_w, out_h, out_w, dx)          # dx += ...
    bias_add(z, bias)                     bias_grad(dz, dbias, beta)
    relu_forward(x, out)                  relu_backward(y, dout, dx, accumulate)
    maxpool_forward(x, out, argmax, pool_h, pool_w, stride, pad_h, pad_w, relu)
    maxpool_backward(dout, argmax, dx)
    avgpool_forward(x, out, pool_h, pool_w, stride, pad_h, pad_w, accumulate)
    avgpool_backward(dout, dx, pool_h, pool_w, stride, pad_h, pad_w, accumulate)
    global_avgpool_forward(x, out)        global_avgpool_backward(dout, dx, accumulate)
    softmax_xent(logits, y, dlogits) -> mean loss
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ist_cli.kernels.mlp import _gemm

CHUNK_BYTES = 1 << 21  # patch matrix per GEMM: about one core's L2 (measured: docs/performance.md)


# ----------------------------------------------------------------------------- im2col / col2im
@njit(cache=True, nogil=True)
def _im2col(xf: np.ndarray, first: int, count: int, H: int, W: int, C: int, kh: int, kw: int, stride: int,
            pad_h: int, pad_w: int, Ho: int, Wo: int, cf: np.ndarray) -> None:
    """cf (flat count*Ho*Wo x kh*kw*C) <- the patches of images first..first+count-1 of the flat
    NHWC ``xf``. A kernel row's kw*C values are contiguous in NHWC: an interior one is one copy."""
    seg = kw * C
    K = kh * seg
    for n in range(count):
        img = (first + n) * H * W * C
        for i in range(Ho):
            for j in range(Wo):
                base = ((n * Ho + i) * Wo + j) * K
                w0 = j * stride - pad_w
                inside = w0 >= 0 and w0 + kw <= W
                for a in range(kh):
                    h = i * stride - pad_h + a
                    dst = base + a * seg
                    if h < 0 or h >= H:
                        for t in range(seg):
                            cf[dst + t] = 0.0
                        continue
                    src = img + (h * W + w0) * C
                    if inside:
                        for t in range(seg):
                            cf[dst + t] = xf[src + t]
                        continue
                    for b in range(kw):
                        w = w0 + b
                        if w < 0 or w >= W:
                            for c in range(C):
                                cf[dst + b * C + c] = 0.0
                        else:
                            for c in range(C):
                                cf[dst + b * C + c] = xf[src + b * C + c]


@njit(cache=True, nogil=True)
def _col2im(cf: np.ndarray, first: int, count: int, H: int, W: int, C: int, kh: int, kw: int, stride: int,
            pad_h: int, pad_w: int, Ho: int, Wo: int, xf: np.ndarray) -> None:
    """xf += the transpose of ``_im2col`` (same arguments): each patch entry added back to the
    input position it came from; padding positions dropped."""
    seg = kw * C
    K = kh * seg
    for n in range(count):
        img = (first + n) * H * W * C
        for i in range(Ho):
            for j in range(Wo):
                base = ((n * Ho + i) * Wo + j) * K
                w0 = j * stride - pad_w
                inside = w0 >= 0 and w0 + kw <= W
                for a in range(kh):
                    h = i * stride - pad_h + a
                    if h < 0 or h >= H:
                        continue
                    dst = base + a * seg
                    src = img + (h * W + w0) * C
                    if inside:
                        for t in range(seg):
                            xf[src + t] += cf[dst + t]
                        continue
                    for b in range(kw):
                        w = w0 + b
                        if 0 <= w < W:
                            for c in range(C):
                                xf[src + b * C + c] += cf[dst + b * C + c]


@njit(cache=True, nogil=True)
def im2col(x: np.ndarray, kh: int, kw: int, stride: int, pad_h: int, pad_w: int, out_h: int, out_w: int,
           cols: np.ndarray) -> None:
    """cols <- the patches of ``x`` (N, H, W, C): cols (N*out_h*out_w, kh*kw*C), row = output
    pixel (n, i, j) in C order, column = (a, b, c) in C order, the input at
    (i*stride - pad_h + a, j*stride - pad_w + b, c), 0 outside the image. One dtype, C-contiguous."""
    N, H, W, C = x.shape
    if cols.shape[0] != N * out_h * out_w or cols.shape[1] != kh * kw * C:
        raise ValueError("im2col: cols must be (N*out_h*out_w, kh*kw*C)")
    _im2col(x.reshape(-1), 0, N, H, W, C, kh, kw, stride, pad_h, pad_w, out_h, out_w, cols.reshape(-1))


@njit(cache=True, nogil=True)
def col2im(cols: np.ndarray, kh: int, kw: int, stride: int, pad_h: int, pad_w: int, out_h: int, out_w: int,
           dx: np.ndarray) -> None:
    """dx += the transpose of ``im2col``: each entry of ``cols`` (N*out_h*out_w, kh*kw*C) added to
    the input position it was copied from (padding positions dropped); dx (N, H, W, C)."""
    N, H, W, C = dx.shape
    if cols.shape[0] != N * out_h * out_w or cols.shape[1] != kh * kw * C:
        raise ValueError("col2im: cols must be (N*out_h*out_w, kh*kw*C)")
    _col2im(cols.reshape(-1), 0, N, H, W, C, kh, kw, stride, pad_h, pad_w, out_h, out_w, dx.reshape(-1))


# ----------------------------------------------------------------------------- bias
@njit(cache=True, nogil=True)
def bias_add(z: np.ndarray, bias: np.ndarray) -> None:
    """z += bias over the last axis, in place; z (..., C) C-contiguous, bias (C,), one dtype."""
    C = bias.shape[0]
    zf = z.reshape(-1)
    for r in range(zf.shape[0] // C):
        base = r * C
        for c in range(C):
            zf[base + c] += bias[c]


@njit(cache=True, nogil=True)
def bias_grad(dz: np.ndarray, dbias: np.ndarray, beta: float) -> None:
    """dbias <- beta dbias + the sum of ``dz`` (..., C) over every axis but the last; dbias (C,).
    Sums in float64, rows in order."""
    C = dbias.shape[0]
    zf = dz.reshape(-1)
    total = np.zeros(C)
    for r in range(zf.shape[0] // C):
        base = r * C
        for c in range(C):
            total[c] += zf[base + c]
    for c in range(C):
        dbias[c] = beta * dbias[c] + total[c] if beta != 0.0 else total[c]


# ----------------------------------------------------------------------------- convolution
@njit(cache=True, nogil=True)
def _chunk(rows_per_image: int, width: int, itemsize: int, n: int) -> int:
    """Images per GEMM: as many as keep their patch matrix within ``CHUNK_BYTES`` (at least 1)."""
    per = max(rows_per_image * width * itemsize, 1)
    return max(1, min(n, CHUNK_BYTES // per))


@njit(cache=True, nogil=True)
def _pointwise(kh: int, kw: int, stride: int, pad_h: int, pad_w: int, H: int, W: int, Ho: int, Wo: int) -> bool:
    """A 1x1, stride-1, unpadded convolution: the input is its own patch matrix."""
    return kh == 1 and kw == 1 and stride == 1 and pad_h == 0 and pad_w == 0 and Ho == H and Wo == W


@njit(cache=True, nogil=True)
def _prefill(of: np.ndarray, lo: int, hi: int, bias: np.ndarray, rf: np.ndarray) -> None:
    """Entries [lo, hi) of the flat output <- bias (+ the flat residual ``rf`` when it is not empty)."""
    C = bias.shape[0]
    if rf.shape[0] > 0:
        for base in range(lo, hi, C):
            for c in range(C):
                of[base + c] = rf[base + c] + bias[c]
    else:
        for base in range(lo, hi, C):
            for c in range(C):
                of[base + c] = bias[c]


@njit(cache=True, nogil=True)
def _relu_into(src: np.ndarray, dst: np.ndarray, lo: int, hi: int) -> None:
    for k in range(lo, hi):
        v = src[k]
        dst[k] = v if v > 0.0 else 0.0


@njit(cache=True, nogil=True)
def _mask_into(xf: np.ndarray, mf: np.ndarray, lo: int, hi: int) -> None:
    for k in range(lo, hi):
        xf[k] = xf[k] if mf[k] > 0.0 else 0.0


@njit(cache=True, nogil=True)
def conv2d_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, out: np.ndarray, stride: int,
                   pad_h: int, pad_w: int, residual: np.ndarray, relu_out: np.ndarray) -> None:
    """out <- conv(x, weight) + bias (+ residual); relu_out <- max(out, 0).

    ``x`` (N, H, W, C_in), ``weight`` (kh, kw, C_in, C_out), ``bias`` (C_out,), ``out``
    (N, H_out, W_out, C_out): one float dtype, C-contiguous. Output pixel (i, j) sees input rows
    i*stride - pad_h + [0, kh) and columns j*stride - pad_w + [0, kw) (0 outside the image).
    ``residual`` (shape of out; may be ``out`` itself: a shortcut already written there) is
    added, and ``relu_out`` (shape of out; may be ``out``: in place) gets the ReLU, both group
    by group while the output is in cache; either may have size 0 to skip it.
    """
    N, H, W, C = x.shape
    kh, kw, _, Co = weight.shape
    Ho, Wo = out.shape[1], out.shape[2]
    if (weight.shape[2] != C or out.shape[0] != N or out.shape[3] != Co or bias.shape[0] != Co
            or (residual.size > 0 and residual.shape != out.shape)
            or (relu_out.size > 0 and relu_out.shape != out.shape)):
        raise ValueError("conv2d_forward: shapes of x, weight, bias, out, residual and relu_out disagree")
    K = kh * kw * C
    P = Ho * Wo
    wm = weight.reshape((K, Co))
    of = out.reshape(-1)
    rf = residual.reshape(-1)
    af = relu_out.reshape(-1)
    pointwise = _pointwise(kh, kw, stride, pad_h, pad_w, H, W, Ho, Wo)
    chunk = _chunk(P, K, x.itemsize, N)
    cols = np.empty((0 if pointwise else chunk * P, K), dtype=x.dtype)
    xf = x.reshape(-1)
    for s in range(0, N, chunk):
        n = min(chunk, N - s)
        lo, hi = s * P * Co, (s + n) * P * Co
        o = of[lo:hi].reshape((n * P, Co))
        _prefill(of, lo, hi, bias, rf)  # the bias (and shortcut) ride in the product: beta = 1
        if pointwise:
            _gemm(xf[s * P * C:(s + n) * P * C].reshape((n * P, C)), False, wm, False, o, 1.0, 1.0)
        else:
            c = cols[:n * P]
            _im2col(xf, s, n, H, W, C, kh, kw, stride, pad_h, pad_w, Ho, Wo, c.reshape(-1))
            _gemm(c, False, wm, False, o, 1.0, 1.0)
        if af.shape[0] > 0:
            _relu_into(of, af, lo, hi)


@njit(cache=True, nogil=True)
def conv2d_backward(x: np.ndarray, weight: np.ndarray, dout: np.ndarray, dweight: np.ndarray,
                    dbias: np.ndarray, dx: np.ndarray, stride: int, pad_h: int, pad_w: int, beta: float,
                    accumulate_dx: bool, relu_mask: np.ndarray) -> None:
    """Gradients of ``conv2d_forward`` given dL/d(out) ``dout`` (N, H_out, W_out, C_out).

    dweight (kh, kw, C_in, C_out) <- beta dweight + cols^T dout; dbias (C_out,) <- beta dbias +
    the sum of dout; dx (N, H, W, C_in) <- dL/dx, or dx + dL/dx (``accumulate_dx``), then set to
    0 where ``relu_mask`` (shape of x) is not > 0: the ReLU that produced x, fused; ``relu_mask``
    of size 0 skips that, and ``dx`` of size 0 skips the input gradient (a first layer needs
    none). Other shapes and rules as in ``conv2d_forward``.
    """
    N, H, W, C = x.shape
    kh, kw, _, Co = weight.shape
    Ho, Wo = dout.shape[1], dout.shape[2]
    want_dx = dx.size > 0
    masked = relu_mask.size > 0
    if (weight.shape[2] != C or dout.shape[0] != N or dout.shape[3] != Co or dweight.shape != weight.shape
            or dbias.shape[0] != Co or (want_dx and dx.shape != x.shape)
            or (masked and relu_mask.shape != x.shape)):
        raise ValueError("conv2d_backward: shapes of x, weight, dout, dweight, dbias, dx and relu_mask disagree")
    K = kh * kw * C
    P = Ho * Wo
    wm = weight.reshape((K, Co))
    dwm = dweight.reshape((K, Co))
    df = dout.reshape(-1)
    bias_grad(dout, dbias, beta)
    pointwise = _pointwise(kh, kw, stride, pad_h, pad_w, H, W, Ho, Wo)
    chunk = _chunk(P, K, x.itemsize, N)
    cols = np.empty((0 if pointwise else chunk * P, K), dtype=x.dtype)
    dcols = np.empty((chunk * P if want_dx and not pointwise else 0, K), dtype=x.dtype)
    xf = x.reshape(-1)
    dxf = dx.reshape(-1)
    mf = relu_mask.reshape(-1)
    per_image = H * W * C
    for s in range(0, N, chunk):
        n = min(chunk, N - s)
        d = df[s * P * Co:(s + n) * P * Co].reshape((n * P, Co))
        lo, hi = s * per_image, (s + n) * per_image
        if pointwise:
            xm = xf[lo:hi].reshape((n * P, C))
            _gemm(xm, True, d, False, dwm, 1.0, beta if s == 0 else 1.0)
            if want_dx:
                _gemm(d, False, wm, True, dxf[lo:hi].reshape((n * P, C)), 1.0, 1.0 if accumulate_dx else 0.0)
        else:
            c = cols[:n * P]
            _im2col(xf, s, n, H, W, C, kh, kw, stride, pad_h, pad_w, Ho, Wo, c.reshape(-1))
            _gemm(c, True, d, False, dwm, 1.0, beta if s == 0 else 1.0)
            if want_dx:
                dc = dcols[:n * P]
                _gemm(d, False, wm, True, dc, 1.0, 0.0)
                if not accumulate_dx:
                    dxf[lo:hi] = 0.0
                _col2im(dc.reshape(-1), s, n, H, W, C, kh, kw, stride, pad_h, pad_w, Ho, Wo, dxf)
        if want_dx and masked:
            _mask_into(dxf, mf, lo, hi)


# ----------------------------------------------------------------------------- ReLU
@njit(cache=True, nogil=True)
def relu_forward(x: np.ndarray, out: np.ndarray) -> None:
    """out <- max(x, 0); any shape, one dtype, C-contiguous; ``out`` may be ``x``."""
    xf = x.reshape(-1)
    of = out.reshape(-1)
    for k in range(xf.shape[0]):
        v = xf[k]
        of[k] = v if v > 0.0 else 0.0


@njit(cache=True, nogil=True)
def relu_backward(y: np.ndarray, dout: np.ndarray, dx: np.ndarray, accumulate: bool) -> None:
    """dx <- dout where y > 0, else 0 (``accumulate``: dx += that, as a residual branch's input
    gradient adds to the shortcut's). ``y``: the ReLU's input or output (same sign pattern);
    all three one shape and dtype, C-contiguous; ``dx`` may be ``dout``."""
    yf = y.reshape(-1)
    df = dout.reshape(-1)
    xf = dx.reshape(-1)
    if accumulate:
        for k in range(yf.shape[0]):
            xf[k] += df[k] if yf[k] > 0.0 else 0.0
    else:
        for k in range(yf.shape[0]):
            xf[k] = df[k] if yf[k] > 0.0 else 0.0


# ----------------------------------------------------------------------------- pooling
@njit(cache=True, nogil=True)
def maxpool_forward(x: np.ndarray, out: np.ndarray, argmax: np.ndarray, pool_h: int, pool_w: int, stride: int,
                    pad_h: int, pad_w: int, relu: bool) -> None:
    """out <- the max of each pool window of ``x`` (N, H, W, C) into ``out`` (N, H_out, W_out, C);
    ``argmax`` int64 (same shape as out) <- the flat index in ``x`` of the maximum (the first
    one on ties, rows then columns). Positions outside the image (padding) never win.

    ``relu``: the window's max of relu(x) instead (ReLU then pool, fused: max(0, max x)); where
    it is 0 because every entry is <= 0, argmax is -1 and no gradient flows back.
    """
    N, H, W, C = x.shape
    Ho, Wo = out.shape[1], out.shape[2]
    if out.shape[0] != N or out.shape[3] != C or argmax.shape != out.shape:
        raise ValueError("maxpool_forward: shapes of x, out and argmax disagree")
    xf = x.reshape(-1)
    of = out.reshape(-1)
    af = argmax.reshape(-1)
    for n in range(N):
        for i in range(Ho):
            h0, h1 = _window(i * stride - pad_h, pool_h, H)
            for j in range(Wo):
                w0, w1 = _window(j * stride - pad_w, pool_w, W)
                o = ((n * Ho + i) * Wo + j) * C
                corner = ((n * H + h0) * W + w0) * C
                for c in range(C):  # one channel's window in registers: no stores in the search
                    best = -np.inf
                    arg = -1
                    for h in range(h1 - h0):
                        for w in range(w1 - w0):
                            k = corner + (h * W + w) * C + c
                            v = xf[k]
                            if v > best:
                                best = v
                                arg = k
                    if relu and not best > 0.0:
                        best = 0.0
                        arg = -1
                    of[o + c] = best
                    af[o + c] = arg


@njit(cache=True, nogil=True)
def maxpool_backward(dout: np.ndarray, argmax: np.ndarray, dx: np.ndarray) -> None:
    """dx <- 0, then dx.flat[argmax] += dout for every entry with argmax >= 0; ``dout`` and
    ``argmax`` (int64) as ``maxpool_forward``'s out, dx as its x (overwritten). Image by image,
    so the image's part of dx is zeroed and scattered into while it is in cache."""
    xf = dx.reshape(-1)
    df = dout.reshape(-1)
    af = argmax.reshape(-1)
    N = dx.shape[0]
    per_in = xf.shape[0] // max(N, 1)
    per_out = df.shape[0] // max(N, 1)
    for n in range(N):
        xf[n * per_in:(n + 1) * per_in] = 0.0
        for k in range(n * per_out, (n + 1) * per_out):
            t = af[k]
            if t >= 0:
                xf[t] += df[k]


@njit(cache=True, nogil=True)
def _window(start: int, size: int, limit: int) -> tuple[int, int]:
    """The part [lo, hi) of the window [start, start + size) inside [0, limit)."""
    return max(start, 0), min(start + size, limit)


@njit(cache=True, nogil=True)
def avgpool_forward(x: np.ndarray, out: np.ndarray, pool_h: int, pool_w: int, stride: int, pad_h: int,
                    pad_w: int, accumulate: bool) -> None:
    """The mean of each pool window of ``x`` (N, H, W, C) over its positions inside the image
    (padding is not counted, as TF's SAME average pool), into the first C channels of ``out``
    (N, H_out, W_out, C_out >= C): written, the other channels set to 0 (a zero-padded
    shortcut), or added (``accumulate``: a residual sum; the other channels untouched)."""
    N, H, W, C = x.shape
    Ho, Wo, Co = out.shape[1], out.shape[2], out.shape[3]
    if out.shape[0] != N or Co < C:
        raise ValueError("avgpool_forward: out must be (N, H_out, W_out, C_out >= C)")
    xf = x.reshape(-1)
    of = out.reshape(-1)
    acc = np.empty(C)
    for n in range(N):
        for i in range(Ho):
            h0, h1 = _window(i * stride - pad_h, pool_h, H)
            for j in range(Wo):
                w0, w1 = _window(j * stride - pad_w, pool_w, W)
                acc[:] = 0.0
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        src = ((n * H + h) * W + w) * C
                        for c in range(C):
                            acc[c] += xf[src + c]
                inv = 1.0 / max((h1 - h0) * (w1 - w0), 1)
                o = ((n * Ho + i) * Wo + j) * Co
                if accumulate:
                    for c in range(C):
                        of[o + c] += acc[c] * inv
                else:
                    for c in range(C):
                        of[o + c] = acc[c] * inv
                    for c in range(C, Co):
                        of[o + c] = 0.0


@njit(cache=True, nogil=True)
def avgpool_backward(dout: np.ndarray, dx: np.ndarray, pool_h: int, pool_w: int, stride: int, pad_h: int,
                     pad_w: int, accumulate: bool) -> None:
    """Gradient of ``avgpool_forward``: the first C channels of ``dout`` (N, H_out, W_out,
    C_out >= C), each divided by its window's count, spread over the window into ``dx``
    (N, H, W, C): overwritten, or added to (``accumulate``)."""
    N, H, W, C = dx.shape
    Ho, Wo, Co = dout.shape[1], dout.shape[2], dout.shape[3]
    if dout.shape[0] != N or Co < C:
        raise ValueError("avgpool_backward: dout must be (N, H_out, W_out, C_out >= C)")
    xf = dx.reshape(-1)
    df = dout.reshape(-1)
    if not accumulate:
        xf[:] = 0.0
    for n in range(N):
        for i in range(Ho):
            h0, h1 = _window(i * stride - pad_h, pool_h, H)
            for j in range(Wo):
                w0, w1 = _window(j * stride - pad_w, pool_w, W)
                inv = 1.0 / max((h1 - h0) * (w1 - w0), 1)
                o = ((n * Ho + i) * Wo + j) * Co
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        dst = ((n * H + h) * W + w) * C
                        for c in range(C):
                            xf[dst + c] += df[o + c] * inv


@njit(cache=True, nogil=True)
def global_avgpool_forward(x: np.ndarray, out: np.ndarray) -> None:
    """out (N, C) <- the mean of ``x`` (N, H, W, C) over H and W (float64 sums)."""
    N, H, W, C = x.shape
    xf = x.reshape(-1)
    acc = np.empty(C)
    for n in range(N):
        acc[:] = 0.0
        for p in range(H * W):
            src = (n * H * W + p) * C
            for c in range(C):
                acc[c] += xf[src + c]
        for c in range(C):
            out[n, c] = acc[c] / (H * W)


@njit(cache=True, nogil=True)
def global_avgpool_backward(dout: np.ndarray, dx: np.ndarray, accumulate: bool) -> None:
    """dx (N, H, W, C) <- (or += with ``accumulate``) dout (N, C) / (H*W) at every pixel."""
    N, H, W, C = dx.shape
    xf = dx.reshape(-1)
    scale = 1.0 / (H * W)
    for n in range(N):
        for p in range(H * W):
            dst = (n * H * W + p) * C
            if accumulate:
                for c in range(C):
                    xf[dst + c] += dout[n, c] * scale
            else:
                for c in range(C):
                    xf[dst + c] = dout[n, c] * scale


# ----------------------------------------------------------------------------- loss
@njit(cache=True, nogil=True)
def softmax_xent(logits: np.ndarray, y: np.ndarray, dlogits: np.ndarray) -> float:
    """Mean softmax cross-entropy of ``logits`` (N, K) against class ids ``y`` int64 (N,);
    dlogits (N, K) <- its gradient (softmax - one-hot) / N. Returns the loss (float)."""
    N, K = logits.shape
    loss = 0.0
    for r in range(N):
        top = logits[r, 0]
        for k in range(1, K):
            if logits[r, k] > top:
                top = logits[r, k]
        total = 0.0
        for k in range(K):
            total += np.exp(logits[r, k] - top)
        log_total = np.log(total)
        loss += log_total + top - logits[r, y[r]]
        for k in range(K):
            dlogits[r, k] = np.exp(logits[r, k] - top - log_total) / N
        dlogits[r, y[r]] -= 1.0 / N
    return loss / N
