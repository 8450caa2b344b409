"""Numba kernels of convolutional layers: convolution, pooling, ReLU, bias.

Layout: **NCHW** activations and **HWIO** weights, float32 (float64 works too, for tests):
an image batch ``x`` is (N, C, H, W) C-contiguous and a convolution's ``weight`` (kh, kw,
C_in, C_out), the convention of ``models.network`` (Lee et al.'s TensorFlow weights), so the
weight *is* the (kh*kw*C_in, C_out) matrix of the lowered product, and an image's output
(C_out, H_out*W_out) is W^T times its patch matrix (BLAS transposes at no cost). NCHW was chosen over NHWC by measurement
(docs/performance.md): with per-image patch matrices, the copies of im2col and col2im run
along image rows, which is what made the first layers (1 or 3 input channels) and the
16-channel layers faster. A dense layer is a 1x1 convolution of an (N, C, 1, 1) batch with
weight (1, 1, in, out), i.e. the (in, out) matrix of ``A @ W + b``: one GEMM over the whole
batch, no im2col.

Convolution is, image by image, im2col + one BLAS ?gemm (``kernels.mlp._gemm``, the MLP's
binding): forward Y = W^T cols (+ bias and an optional residual, added by BLAS: the output is
pre-filled with them and beta = 1), then an optional ReLU copy; backward dW += cols dY^T
(patches recomputed, not stored) and dX = col2im(W dY), a scatter-add, optionally masked
by the ReLU that made X. An image's patches and outputs are in cache while its elementwise
work is done, instead of passes over whole activations (the bias gradient too: per image,
in float64, eight running sums). Two geometries copy a whole patch row at once instead of
one run per output row (runs of 8-32 floats are too short for the vectorised loops): a
stride-1 convolution as wide as its input (a patch row is its channel shifted by a constant
flat offset, the wrapped-around pixels zeroed) and a stride-2 one half as wide as its even
input (the same, on the image's four row/column parity planes).

Padding is given as the zeros added on top and left (``pad_h``, ``pad_w``); the output size
is the output array's, so VALID, TF's SAME (asymmetric at stride 2) and symmetric padding are
one code path: any input position outside the image reads as 0.

Gradients are written as ``g <- beta g + new`` (``beta`` 0: overwrite, never read; 1:
accumulate; the momentum: straight into a heavy-ball velocity). The softmax cross-entropy
loss, pruning masks and the SGD / momentum / Nesterov update on the flat parameter vector are
``kernels.sgd``'s (the same loss and update for any network: pruned entries stay exactly 0).
An optional array argument is switched off by passing one of size 0 (e.g.
``np.empty((0, 0, 0, 0), np.float32)``).

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
    warm_up(dtype)                        # plain Python: compiles all of the above
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ist_cli.kernels.mlp import _gemm


# ----------------------------------------------------------------------------- im2col / col2im
@njit(cache=True, nogil=True)
def _column_range(Wo: int, stride: int, pad_w: int, b: int, W: int) -> tuple[int, int]:
    """Output columns (or rows) [lo, hi) whose input column j*stride - pad_w + b is inside [0, W)."""
    lo = 0
    while lo < Wo and lo * stride - pad_w + b < 0:
        lo += 1
    hi = Wo
    while hi > lo and (hi - 1) * stride - pad_w + b >= W:
        hi -= 1
    return lo, hi


@njit(cache=True, nogil=True)
def _full_width(stride: int, W: int, Wo: int) -> bool:
    """A stride-1 convolution whose output is as wide as its input ("same" padding along W):
    output pixel k = i*W + j then reads input pixel k + const in every patch row, so a patch
    row is one shifted copy of the whole channel (``_shifted_span``), not one run per output row."""
    return stride == 1 and Wo == W


@njit(cache=True, nogil=True)
def _shifted_span(kh_a: int, kw_b: int, pad_h: int, pad_w: int, H: int, W: int, Ho: int):
    """For patch row (a, b) = (``kh_a``, ``kw_b``) of a ``_full_width`` convolution: the output
    rows [i0, i1) and columns [lo, hi) that read inside the image, the flat output range
    [start, stop) from the first to the last such pixel, and the shift from an output pixel's
    flat index to its input pixel's (start = stop = 0 when no pixel reads inside)."""
    i0, i1 = _column_range(Ho, 1, pad_h, kh_a, H)
    lo, hi = _column_range(W, 1, pad_w, kw_b, W)
    if i1 <= i0 or hi <= lo:
        return i0, i0, lo, lo, 0, 0, 0
    return i0, i1, lo, hi, i0 * W + lo, (i1 - 1) * W + hi, (kh_a - pad_h) * W + (kw_b - pad_w)


@njit(cache=True, nogil=True)
def _zero_wrapped(row: np.ndarray, i0: int, i1: int, lo: int, hi: int, W: int) -> None:
    """row (Ho*W,) <- 0 at output rows [i0, i1)'s columns outside [lo, hi): the pixels a shifted
    flat copy reaches by wrapping around into the next or previous image row."""
    for i in range(i0, i1):
        base = i * W
        for j in range(lo):
            row[base + j] = 0.0
        for j in range(hi, W):
            row[base + j] = 0.0


@njit(cache=True, nogil=True)
def _half_width(stride: int, W: int, Wo: int) -> bool:
    """A stride-2 convolution whose output is half as wide as its (even-width) input: split into
    its four (row, column) parity planes, each Wo wide, it reads every plane at stride 1, so a
    patch row is again one shifted flat copy, of a plane (``_split_parities``)."""
    return stride == 2 and W % 2 == 0 and 2 * Wo == W


@njit(cache=True, nogil=True)
def _split_parities(img: np.ndarray, planes: np.ndarray) -> None:
    """planes (C, 2, 2, Hq, Wq) <- img (C, H, W): planes[c, r, s, u, v] = img[c, 2u + r, 2v + s],
    0 where 2u + r >= H (an odd height's missing last row)."""
    C, H, _ = img.shape
    Hq, Wq = planes.shape[3], planes.shape[4]
    for c in range(C):
        for r in range(2):
            for u in range(Hq):
                even = planes[c, r, 0, u]
                odd = planes[c, r, 1, u]
                if 2 * u + r < H:
                    src = img[c, 2 * u + r]
                    for v in range(Wq):
                        even[v] = src[2 * v]
                        odd[v] = src[2 * v + 1]
                else:
                    even[:] = 0.0
                    odd[:] = 0.0


@njit(cache=True, nogil=True)
def _merge_parities(planes: np.ndarray, img: np.ndarray) -> None:
    """img (C, H, W) += planes (C, 2, 2, Hq, Wq) put back in place (the transpose of
    ``_split_parities``; rows past the image dropped)."""
    C, H, _ = img.shape
    Hq, Wq = planes.shape[3], planes.shape[4]
    for c in range(C):
        for r in range(2):
            for u in range(Hq):
                if 2 * u + r < H:
                    dst = img[c, 2 * u + r]
                    even = planes[c, r, 0, u]
                    odd = planes[c, r, 1, u]
                    for v in range(Wq):
                        dst[2 * v] += even[v]
                        dst[2 * v + 1] += odd[v]


@njit(cache=True, nogil=True)
def _parity_tap(a: int, pad: int) -> tuple[int, int]:
    """Input offset a - pad (a tap of a stride-2 window) as (parity plane, plane offset): a - pad = 2 offset + parity."""
    parity = (a - pad) % 2
    return parity, (a - pad - parity) // 2


@njit(cache=True, nogil=True)
def _im2col(img: np.ndarray, kh: int, kw: int, stride: int, pad_h: int, pad_w: int, Ho: int, Wo: int,
            cols: np.ndarray) -> None:
    """cols (kh*kw*C, Ho*Wo) <- the patches of one image ``img`` (C, H, W). Row (a, b, c) holds,
    for each output row i, a run along input row i*stride - pad_h + a: a contiguous copy at
    stride 1, which has its own loop (measured: with the stride unknown inside it, the copy
    ran several times slower). A ``_full_width`` convolution copies the whole row at once
    (runs of one image row, 8-32 floats, are too short for the vectorised copy loop)."""
    C, H, W = img.shape
    if _full_width(stride, W, Wo):
        flat = img.reshape((C, H * W))
        for a in range(kh):
            for b in range(kw):
                i0, i1, lo, hi, start, stop, shift = _shifted_span(a, b, pad_h, pad_w, H, W, Ho)
                for c in range(C):
                    row = cols[(a * kw + b) * C + c]
                    row[:start] = 0.0
                    _copy_run(flat[c, start + shift:stop + shift], row[start:stop])
                    row[stop:] = 0.0
                    _zero_wrapped(row, i0, i1, lo, hi, W)
        return
    if _half_width(stride, W, Wo):
        Hq, Wq = (H + 1) // 2, W // 2
        planes = np.empty((C, 2, 2, Hq, Wq), dtype=img.dtype)
        _split_parities(img, planes)
        pf = planes.reshape((C, 2, 2, Hq * Wq))
        for a in range(kh):
            r, du = _parity_tap(a, pad_h)
            for b in range(kw):
                q, dv = _parity_tap(b, pad_w)
                i0, i1, lo, hi, start, stop, shift = _shifted_span(du, dv, 0, 0, Hq, Wq, Ho)
                for c in range(C):
                    row = cols[(a * kw + b) * C + c]
                    row[:start] = 0.0
                    _copy_run(pf[c, r, q, start + shift:stop + shift], row[start:stop])
                    row[stop:] = 0.0
                    _zero_wrapped(row, i0, i1, lo, hi, Wq)
        return
    for a in range(kh):
        for b in range(kw):
            lo, hi = _column_range(Wo, stride, pad_w, b, W)
            w0 = lo * stride - pad_w + b
            for c in range(C):
                row = cols[(a * kw + b) * C + c]
                if lo > 0 or hi < Wo or a - pad_h < 0 or (Ho - 1) * stride - pad_h + a >= H:
                    row[:] = 0.0  # some of this row is padding
                for i in range(Ho):
                    h = i * stride - pad_h + a
                    if 0 <= h < H:
                        if stride == 1:
                            _copy_run(img[c, h, w0:w0 + hi - lo], row[i * Wo + lo:i * Wo + hi])
                        else:
                            _copy_strided(img[c, h, w0:], stride, row[i * Wo + lo:i * Wo + hi])


@njit(cache=True, nogil=True)
def _copy_run(src: np.ndarray, dst: np.ndarray) -> None:
    for j in range(dst.shape[0]):
        dst[j] = src[j]


@njit(cache=True, nogil=True)
def _copy_strided(src: np.ndarray, stride: int, dst: np.ndarray) -> None:
    for j in range(dst.shape[0]):
        dst[j] = src[j * stride]


@njit(cache=True, nogil=True)
def _add_run(src: np.ndarray, dst: np.ndarray) -> None:
    for j in range(src.shape[0]):
        dst[j] += src[j]


@njit(cache=True, nogil=True)
def _add_strided(src: np.ndarray, stride: int, dst: np.ndarray) -> None:
    for j in range(src.shape[0]):
        dst[j * stride] += src[j]


@njit(cache=True, nogil=True)
def _col2im(cols: np.ndarray, kh: int, kw: int, stride: int, pad_h: int, pad_w: int, Ho: int, Wo: int,
            img: np.ndarray, scratch: bool) -> None:
    """img (C, H, W) += the transpose of ``_im2col`` (same arguments): each patch entry added
    back to the input position it came from; padding positions dropped. ``scratch``: ``cols``
    may be overwritten, which a ``_full_width`` convolution uses to add each patch row in one
    flat pass (its wrapped entries set to 0 first; adding 0 changes no sum)."""
    C, H, W = img.shape
    if scratch and _full_width(stride, W, Wo):
        flat = img.reshape((C, H * W))
        for a in range(kh):
            for b in range(kw):
                i0, i1, lo, hi, start, stop, shift = _shifted_span(a, b, pad_h, pad_w, H, W, Ho)
                for c in range(C):
                    row = cols[(a * kw + b) * C + c]
                    _zero_wrapped(row, i0, i1, lo, hi, W)
                    _add_run(row[start:stop], flat[c, start + shift:stop + shift])
        return
    if scratch and _half_width(stride, W, Wo):
        Hq, Wq = (H + 1) // 2, W // 2
        planes = np.zeros((C, 2, 2, Hq, Wq), dtype=img.dtype)
        pf = planes.reshape((C, 2, 2, Hq * Wq))
        for a in range(kh):
            r, du = _parity_tap(a, pad_h)
            for b in range(kw):
                q, dv = _parity_tap(b, pad_w)
                i0, i1, lo, hi, start, stop, shift = _shifted_span(du, dv, 0, 0, Hq, Wq, Ho)
                for c in range(C):
                    row = cols[(a * kw + b) * C + c]
                    _zero_wrapped(row, i0, i1, lo, hi, Wq)
                    _add_run(row[start:stop], pf[c, r, q, start + shift:stop + shift])
        _merge_parities(planes, img)
        return
    for a in range(kh):
        for b in range(kw):
            lo, hi = _column_range(Wo, stride, pad_w, b, W)
            w0 = lo * stride - pad_w + b
            for c in range(C):
                row = cols[(a * kw + b) * C + c]
                for i in range(Ho):
                    h = i * stride - pad_h + a
                    if 0 <= h < H:
                        if stride == 1:
                            _add_run(row[i * Wo + lo:i * Wo + hi], img[c, h, w0:w0 + hi - lo])
                        else:
                            _add_strided(row[i * Wo + lo:i * Wo + hi], stride, img[c, h, w0:])


@njit(cache=True, nogil=True)
def im2col(x: np.ndarray, kh: int, kw: int, stride: int, pad_h: int, pad_w: int, out_h: int, out_w: int,
           cols: np.ndarray) -> None:
    """cols <- the patches of ``x`` (N, C, H, W): cols (N, kh*kw*C, out_h*out_w); entry
    (n, (a, b, c), (i, j)) (C order) is x[n, c, i*stride - pad_h + a, j*stride - pad_w + b], 0
    outside the image. One dtype, C-contiguous."""
    N, C, H, W = x.shape
    if cols.shape[0] != N or cols.shape[1] != C * kh * kw or cols.shape[2] != out_h * out_w:
        raise ValueError("im2col: cols must be (N, kh*kw*C, out_h*out_w)")
    for n in range(N):
        _im2col(x[n], kh, kw, stride, pad_h, pad_w, out_h, out_w, cols[n])


@njit(cache=True, nogil=True)
def col2im(cols: np.ndarray, kh: int, kw: int, stride: int, pad_h: int, pad_w: int, out_h: int, out_w: int,
           dx: np.ndarray) -> None:
    """dx += the transpose of ``im2col``: each entry of ``cols`` (N, kh*kw*C, out_h*out_w) added
    to the input position it was copied from (padding positions dropped); dx (N, C, H, W)."""
    N, C, H, W = dx.shape
    if cols.shape[0] != N or cols.shape[1] != C * kh * kw or cols.shape[2] != out_h * out_w:
        raise ValueError("col2im: cols must be (N, kh*kw*C, out_h*out_w)")
    for n in range(N):
        _col2im(cols[n], kh, kw, stride, pad_h, pad_w, out_h, out_w, dx[n], False)


# ----------------------------------------------------------------------------- bias
@njit(cache=True, nogil=True)
def bias_add(z: np.ndarray, bias: np.ndarray) -> None:
    """z += bias along axis 1 (the channels), in place; z (N, C, ...) C-contiguous, bias (C,)."""
    N, C = z.shape[0], bias.shape[0]
    zf = z.reshape(-1)
    P = zf.shape[0] // max(N * C, 1)
    for n in range(N):
        for c in range(C):
            base = (n * C + c) * P
            for p in range(P):
                zf[base + p] += bias[c]


@njit(cache=True, nogil=True)
def _sum64(v: np.ndarray) -> float:
    """The sum of ``v`` (1-D float) in float64, as eight running sums (entry k goes to sum
    k mod 8, the tail to sum 0) added pairwise at the end: a fixed order, whatever the machine,
    and eight independent additions per step instead of one chain of dependent ones."""
    n = v.shape[0]
    n8 = n - n % 8
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    for k in range(0, n8, 8):
        s0 += v[k]
        s1 += v[k + 1]
        s2 += v[k + 2]
        s3 += v[k + 3]
        s4 += v[k + 4]
        s5 += v[k + 5]
        s6 += v[k + 6]
        s7 += v[k + 7]
    for k in range(n8, n):
        s0 += v[k]
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@njit(cache=True, nogil=True)
def _add_row_sums(d: np.ndarray, total: np.ndarray) -> None:
    """total (C,) float64 += the sums of the rows of ``d`` (C, P) (one image's channels)."""
    for c in range(d.shape[0]):
        total[c] += _sum64(d[c])


@njit(cache=True, nogil=True)
def _store_bias_grad(total: np.ndarray, dbias: np.ndarray, beta: float) -> None:
    """dbias (C,) <- beta dbias + total (float64 sums); dbias is not read when beta is 0."""
    for c in range(dbias.shape[0]):
        dbias[c] = beta * dbias[c] + total[c] if beta != 0.0 else total[c]


@njit(cache=True, nogil=True)
def bias_grad(dz: np.ndarray, dbias: np.ndarray, beta: float) -> None:
    """dbias (C,) <- beta dbias + the sum of ``dz`` (N, C, ...) over every axis but axis 1.
    Sums in float64, image by image (``_sum64`` within an image's channel)."""
    N, C = dz.shape[0], dbias.shape[0]
    P = dz.size // max(N * C, 1)
    d3 = dz.reshape((N, C, P))
    total = np.zeros(C)
    for n in range(N):
        _add_row_sums(d3[n], total)
    _store_bias_grad(total, dbias, beta)


# ----------------------------------------------------------------------------- convolution
@njit(cache=True, nogil=True)
def _pointwise(kh: int, kw: int, stride: int, pad_h: int, pad_w: int, H: int, W: int, Ho: int, Wo: int) -> bool:
    """A 1x1, stride-1, unpadded convolution: the image is its own patch matrix."""
    return kh == 1 and kw == 1 and stride == 1 and pad_h == 0 and pad_w == 0 and Ho == H and Wo == W


@njit(cache=True, nogil=True)
def _prefill(o: np.ndarray, bias: np.ndarray, r: np.ndarray, residual: bool) -> None:
    """o (C_out, P) <- bias per row (+ r, same shape, when ``residual``; r may be o)."""
    Co, P = o.shape
    for c in range(Co):
        orow = o[c]
        bc = bias[c]
        if residual:
            rrow = r[c]
            for p in range(P):
                orow[p] = rrow[p] + bc
        else:
            for p in range(P):
                orow[p] = bc


@njit(cache=True, nogil=True)
def _relu_into(src: np.ndarray, dst: np.ndarray) -> None:
    for k in range(src.shape[0]):
        v = src[k]
        dst[k] = v if v > 0.0 else 0.0


@njit(cache=True, nogil=True)
def _mask_into(xf: np.ndarray, mf: np.ndarray) -> None:
    for k in range(xf.shape[0]):
        xf[k] = xf[k] if mf[k] > 0.0 else 0.0


@njit(cache=True, nogil=True)
def conv2d_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, out: np.ndarray, stride: int,
                   pad_h: int, pad_w: int, residual: np.ndarray, relu_out: np.ndarray) -> None:
    """out <- conv(x, weight) + bias (+ residual); relu_out <- max(out, 0).

    ``x`` (N, C_in, H, W), ``weight`` (kh, kw, C_in, C_out), ``bias`` (C_out,), ``out``
    (N, C_out, H_out, W_out): one float dtype, C-contiguous. Output pixel (i, j) sees input
    rows i*stride - pad_h + [0, kh) and columns j*stride - pad_w + [0, kw) (0 outside the
    image). ``residual`` (shape of out; may be ``out`` itself: a shortcut already written
    there) is added and ``relu_out`` (shape of out; may be ``out``: in place) gets the ReLU,
    image by image while the output is in cache; either may have size 0 to skip it.
    """
    N, C, H, W = x.shape
    kh, kw, _, Co = weight.shape
    Ho, Wo = out.shape[2], out.shape[3]
    add, relu = residual.size > 0, relu_out.size > 0
    if (weight.shape[2] != C or out.shape[0] != N or out.shape[1] != Co or bias.shape[0] != Co
            or (add and residual.shape != out.shape) or (relu and relu_out.shape != out.shape)):
        raise ValueError("conv2d_forward: shapes of x, weight, bias, out, residual and relu_out disagree")
    K = C * kh * kw
    P = Ho * Wo
    wm = weight.reshape((K, Co))
    o3 = out.reshape((N, Co, P))
    r3 = residual.reshape((residual.shape[0], Co if add else 0, P))
    a3 = relu_out.reshape((relu_out.shape[0], Co if relu else 0, P))
    if _pointwise(kh, kw, stride, pad_h, pad_w, H, W, Ho, Wo) and P == 1:  # dense: one GEMM for the batch
        o2 = out.reshape((N, Co))
        for n in range(N):
            _prefill(o3[n], bias, r3[n] if add else o3[n], add)
        _gemm(x.reshape((N, C)), False, wm, False, o2, 1.0, 1.0)
        if relu:
            _relu_into(out.reshape(-1), relu_out.reshape(-1))
        return
    pointwise = _pointwise(kh, kw, stride, pad_h, pad_w, H, W, Ho, Wo)
    cols = np.empty((0 if pointwise else K, P), dtype=x.dtype)
    for n in range(N):
        o = o3[n]
        _prefill(o, bias, r3[n] if add else o, add)  # the bias (and shortcut) ride in the product
        if pointwise:
            _gemm(wm, True, x[n].reshape((C, P)), False, o, 1.0, 1.0)
        else:
            _im2col(x[n], kh, kw, stride, pad_h, pad_w, Ho, Wo, cols)
            _gemm(wm, True, cols, False, o, 1.0, 1.0)
        if relu:
            _relu_into(o.reshape(-1), a3[n].reshape(-1))


@njit(cache=True, nogil=True)
def conv2d_backward(x: np.ndarray, weight: np.ndarray, dout: np.ndarray, dweight: np.ndarray,
                    dbias: np.ndarray, dx: np.ndarray, stride: int, pad_h: int, pad_w: int, beta: float,
                    accumulate_dx: bool, relu_mask: np.ndarray) -> None:
    """Gradients of ``conv2d_forward`` given dL/d(out) ``dout`` (N, C_out, H_out, W_out).

    dweight (kh, kw, C_in, C_out) <- beta dweight + cols dout^T; dbias (C_out,) <- beta dbias +
    the sum of dout; dx (N, C_in, H, W) <- dL/dx, or dx + dL/dx (``accumulate_dx``), then set to
    0 where ``relu_mask`` (shape of x) is not > 0: the ReLU that produced x, fused; ``relu_mask``
    of size 0 skips that, and ``dx`` of size 0 skips the input gradient (a first layer needs
    none). Other shapes and rules as in ``conv2d_forward``.
    """
    N, C, H, W = x.shape
    kh, kw, _, Co = weight.shape
    Ho, Wo = dout.shape[2], dout.shape[3]
    want_dx = dx.size > 0
    masked = relu_mask.size > 0
    if (weight.shape[2] != C or dout.shape[0] != N or dout.shape[1] != Co or dweight.shape != weight.shape
            or dbias.shape[0] != Co or (want_dx and dx.shape != x.shape)
            or (masked and relu_mask.shape != x.shape)):
        raise ValueError("conv2d_backward: shapes of x, weight, dout, dweight, dbias, dx and relu_mask disagree")
    K = C * kh * kw
    P = Ho * Wo
    wm = weight.reshape((K, Co))
    dwm = dweight.reshape((K, Co))
    d3 = dout.reshape((N, Co, P))
    if _pointwise(kh, kw, stride, pad_h, pad_w, H, W, Ho, Wo) and P == 1:  # dense: one GEMM for the batch
        bias_grad(dout, dbias, beta)
        d2 = dout.reshape((N, Co))
        _gemm(x.reshape((N, C)), True, d2, False, dwm, 1.0, beta)
        if want_dx:
            _gemm(d2, False, wm, True, dx.reshape((N, C)), 1.0, 1.0 if accumulate_dx else 0.0)
            if masked:
                _mask_into(dx.reshape(-1), relu_mask.reshape(-1))
        return
    pointwise = _pointwise(kh, kw, stride, pad_h, pad_w, H, W, Ho, Wo)
    cols = np.empty((0 if pointwise else K, P), dtype=x.dtype)
    dcols = np.empty((K if want_dx and not pointwise else 0, P), dtype=x.dtype)
    total = np.zeros(Co)
    for n in range(N):
        d = d3[n]
        _add_row_sums(d, total)  # the bias gradient, while the image's dout is in cache
        if pointwise:
            xm = x[n].reshape((C, P))
            _gemm(xm, False, d, True, dwm, 1.0, beta if n == 0 else 1.0)
            if want_dx:
                _gemm(wm, False, d, False, dx[n].reshape((C, P)), 1.0, 1.0 if accumulate_dx else 0.0)
        else:
            _im2col(x[n], kh, kw, stride, pad_h, pad_w, Ho, Wo, cols)
            _gemm(cols, False, d, True, dwm, 1.0, beta if n == 0 else 1.0)
            if want_dx:
                _gemm(wm, False, d, False, dcols, 1.0, 0.0)
                if not accumulate_dx:
                    dx[n] = 0.0
                _col2im(dcols, kh, kw, stride, pad_h, pad_w, Ho, Wo, dx[n], True)
        if want_dx and masked:
            _mask_into(dx[n].reshape(-1), relu_mask[n].reshape(-1))
    _store_bias_grad(total, dbias, beta)


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
def _window(start: int, size: int, limit: int) -> tuple[int, int]:
    """The part [lo, hi) of the window [start, start + size) inside [0, limit)."""
    return max(start, 0), min(start + size, limit)


@njit(cache=True, nogil=True)
def maxpool_forward(x: np.ndarray, out: np.ndarray, argmax: np.ndarray, pool_h: int, pool_w: int, stride: int,
                    pad_h: int, pad_w: int, relu: bool) -> None:
    """out <- the max of each pool window of ``x`` (N, C, H, W) into ``out`` (N, C, H_out, W_out);
    ``argmax`` int64 (shape of out) <- the flat index in ``x`` of the maximum (the first one on
    ties, rows then columns). Positions outside the image (padding) never win.

    ``relu``: the window's max of relu(x) instead (ReLU then pool, fused: max(0, max x)); where
    it is 0 because every entry is <= 0, argmax is -1 and no gradient flows back.
    """
    N, C, H, W = x.shape
    Ho, Wo = out.shape[2], out.shape[3]
    if out.shape[0] != N or out.shape[1] != C or argmax.shape != out.shape:
        raise ValueError("maxpool_forward: shapes of x, out and argmax disagree")
    xf = x.reshape(-1)
    of = out.reshape(-1)
    af = argmax.reshape(-1)
    for plane in range(N * C):
        src = plane * H * W
        dst = plane * Ho * Wo
        for i in range(Ho):
            h0, h1 = _window(i * stride - pad_h, pool_h, H)
            for j in range(Wo):
                w0, w1 = _window(j * stride - pad_w, pool_w, W)
                best = -np.inf
                arg = -1
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        k = src + h * W + w
                        v = xf[k]
                        if v > best:
                            best = v
                            arg = k
                if relu and not best > 0.0:
                    best = 0.0
                    arg = -1
                of[dst + i * Wo + j] = best
                af[dst + i * Wo + j] = arg


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
def _column_counts(Wo: int, pool_w: int, stride: int, pad_w: int, W: int) -> np.ndarray:
    """How many columns of each output column's window are inside the image (Wo,)."""
    counts = np.zeros(Wo)
    for b in range(pool_w):
        lo, hi = _column_range(Wo, stride, pad_w, b, W)
        for j in range(lo, hi):
            counts[j] += 1.0
    return counts


@njit(cache=True, nogil=True)
def avgpool_forward(x: np.ndarray, out: np.ndarray, pool_h: int, pool_w: int, stride: int, pad_h: int,
                    pad_w: int, accumulate: bool) -> None:
    """The mean of each pool window of ``x`` (N, C, H, W) over its positions inside the image
    (padding is not counted, as TF's SAME average pool), into the first C channels of ``out``
    (N, C_out >= C, H_out, W_out): written, the other channels set to 0 (a zero-padded
    shortcut), or added (``accumulate``: a residual sum; the other channels untouched).
    Row by row: a window column's contribution is one strided run, summed in float64."""
    N, C, H, W = x.shape
    Co, Ho, Wo = out.shape[1], out.shape[2], out.shape[3]
    if out.shape[0] != N or Co < C:
        raise ValueError("avgpool_forward: out must be (N, C_out >= C, H_out, W_out)")
    counts = _column_counts(Wo, pool_w, stride, pad_w, W)
    acc = np.empty(Wo)
    for n in range(N):
        for c in range(C):
            for i in range(Ho):
                h0, h1 = _window(i * stride - pad_h, pool_h, H)
                acc[:] = 0.0
                for h in range(h0, h1):
                    line = x[n, c, h]
                    for b in range(pool_w):
                        lo, hi = _column_range(Wo, stride, pad_w, b, W)
                        src = line[lo * stride - pad_w + b:]
                        dst = acc[lo:hi]
                        for j in range(hi - lo):
                            dst[j] += src[j * stride]
                target = out[n, c, i]
                for j in range(Wo):
                    mean = acc[j] / max((h1 - h0) * counts[j], 1.0)
                    if accumulate:
                        target[j] += mean
                    else:
                        target[j] = mean
        if not accumulate:
            out[n, C:] = 0.0


@njit(cache=True, nogil=True)
def avgpool_backward(dout: np.ndarray, dx: np.ndarray, pool_h: int, pool_w: int, stride: int, pad_h: int,
                     pad_w: int, accumulate: bool) -> None:
    """Gradient of ``avgpool_forward``: the first C channels of ``dout`` (N, C_out >= C, H_out,
    W_out), each divided by its window's count, spread over the window into ``dx`` (N, C, H, W):
    overwritten, or added to (``accumulate``)."""
    N, C, H, W = dx.shape
    Co, Ho, Wo = dout.shape[1], dout.shape[2], dout.shape[3]
    if dout.shape[0] != N or Co < C:
        raise ValueError("avgpool_backward: dout must be (N, C_out >= C, H_out, W_out)")
    if not accumulate:
        dx[...] = 0.0
    counts = _column_counts(Wo, pool_w, stride, pad_w, W)
    g = np.empty(Wo, dtype=dx.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(Ho):
                h0, h1 = _window(i * stride - pad_h, pool_h, H)
                grad = dout[n, c, i]
                for j in range(Wo):
                    g[j] = grad[j] / max((h1 - h0) * counts[j], 1.0)
                for h in range(h0, h1):
                    line = dx[n, c, h]
                    for b in range(pool_w):
                        lo, hi = _column_range(Wo, stride, pad_w, b, W)
                        dst = line[lo * stride - pad_w + b:]
                        src = g[lo:hi]
                        for j in range(hi - lo):
                            dst[j * stride] += src[j]


@njit(cache=True, nogil=True)
def global_avgpool_forward(x: np.ndarray, out: np.ndarray) -> None:
    """out (N, C) <- the mean of ``x`` (N, C, H, W) over H and W (float64 sums)."""
    N, C, H, W = x.shape
    xf = x.reshape(-1)
    P = H * W
    for n in range(N):
        for c in range(C):
            base = (n * C + c) * P
            acc = 0.0
            for p in range(P):
                acc += xf[base + p]
            out[n, c] = acc / P


@njit(cache=True, nogil=True)
def global_avgpool_backward(dout: np.ndarray, dx: np.ndarray, accumulate: bool) -> None:
    """dx (N, C, H, W) <- (or += with ``accumulate``) dout (N, C) / (H*W) at every pixel."""
    N, C, H, W = dx.shape
    xf = dx.reshape(-1)
    P = H * W
    for n in range(N):
        for c in range(C):
            base = (n * C + c) * P
            g = dout[n, c] / P
            if accumulate:
                for p in range(P):
                    xf[base + p] += g
            else:
                for p in range(P):
                    xf[base + p] = g


def warm_up(dtype: str = "float32") -> None:
    """Compile (or load from the cache) every public kernel for ``dtype``, with and without
    the optional arguments, on a tiny batch (a worker can do this before its first step)."""
    np_dtype = np.dtype(dtype)
    none = np.empty((0, 0, 0, 0), dtype=np_dtype)
    x = np.ones((2, 2, 5, 5), dtype=np_dtype)
    w = np.ones((3, 3, 2, 3), dtype=np_dtype)
    b = np.zeros(3, dtype=np_dtype)
    out = np.empty((2, 3, 3, 3), dtype=np_dtype)
    dw, db, dx = np.empty_like(w), np.empty_like(b), np.empty_like(x)
    geo = dict(stride=1, pad_h=0, pad_w=0)
    for residual, relu_out in ((none, none), (out, out)):
        conv2d_forward(x=x, weight=w, bias=b, out=out, residual=residual, relu_out=relu_out, **geo)
    for grad_x, mask in ((none, none), (dx, x)):
        conv2d_backward(x=x, weight=w, dout=out, dweight=dw, dbias=db, dx=grad_x, beta=0.0, accumulate_dx=False,
                        relu_mask=mask, **geo)
    cols = np.empty((2, 18, 9), dtype=np_dtype)
    im2col(x=x, kh=3, kw=3, out_h=3, out_w=3, cols=cols, **geo)
    col2im(cols=cols, kh=3, kw=3, out_h=3, out_w=3, dx=dx, **geo)
    bias_add(z=out, bias=b)
    bias_grad(dz=out, dbias=db, beta=0.0)
    relu_forward(x=out, out=out)
    relu_backward(y=out, dout=out, dx=out, accumulate=False)
    pooled = np.empty((2, 2, 2, 2), dtype=np_dtype)
    argmax = np.empty(pooled.shape, dtype=np.int64)
    pool = dict(pool_h=2, pool_w=2, stride=2, pad_h=0, pad_w=0)
    maxpool_forward(x=x, out=pooled, argmax=argmax, relu=True, **pool)
    maxpool_backward(dout=pooled, argmax=argmax, dx=dx)
    avgpool_forward(x=x, out=pooled, accumulate=False, **pool)
    avgpool_backward(dout=pooled, dx=dx, accumulate=False, **pool)
    means = np.empty((2, 2), dtype=np_dtype)
    global_avgpool_forward(x=x, out=means)
    global_avgpool_backward(dout=means, dx=dx, accumulate=False)
