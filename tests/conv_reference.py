"""Plain-numpy reference of convolution, pooling and the softmax loss (NHWC, HWIO weights).

Written from the definitions, one output pixel at a time over a zero-padded copy of the input
(no patch matrix), forward and backward, so it shares no code or shortcut with
``ist_cli.kernels.conv``; ``tests/test_conv_kernels.py`` checks its backward passes against
finite differences. Padding: ``pad_h``/``pad_w`` zeros on top/left; the output size is given.
"""

from __future__ import annotations

import numpy as np


def padded(x: np.ndarray, kh: int, kw: int, stride: int, pad_h: int, pad_w: int, out_h: int, out_w: int,
           fill: float = 0.0) -> np.ndarray:
    """``x`` (N, H, W, C) with ``pad_h``/``pad_w`` rows/columns of ``fill`` on top/left and as many
    on the bottom/right as the last window needs (or rows cut off that no window reaches)."""
    N, H, W, C = x.shape
    need_h = (out_h - 1) * stride + kh
    need_w = (out_w - 1) * stride + kw
    out = np.full((N, max(need_h, pad_h + H), max(need_w, pad_w + W), C), fill, dtype=np.float64)
    out[:, pad_h:pad_h + H, pad_w:pad_w + W] = x
    return out


def conv(x, weight, bias, stride, pad_h, pad_w, out_h, out_w):
    """y[n, i, j, o] = b[o] + sum_{a, b, c} xpad[n, i*s + a, j*s + b, c] w[a, b, c, o]."""
    kh, kw, _, co = weight.shape
    xp = padded(x, kh, kw, stride, pad_h, pad_w, out_h, out_w)
    y = np.empty((x.shape[0], out_h, out_w, co))
    for i in range(out_h):
        for j in range(out_w):
            window = xp[:, i * stride:i * stride + kh, j * stride:j * stride + kw]
            y[:, i, j] = np.einsum("nabc,abco->no", window, weight) + bias
    return y


def conv_backward(x, weight, dy, stride, pad_h, pad_w):
    """(dx, dw, db) of ``conv`` for the output gradient ``dy``."""
    N, H, W, C = x.shape
    kh, kw, _, _ = weight.shape
    out_h, out_w = dy.shape[1:3]
    xp = padded(x, kh, kw, stride, pad_h, pad_w, out_h, out_w)
    dxp = np.zeros_like(xp)
    dw = np.zeros(weight.shape)
    for i in range(out_h):
        for j in range(out_w):
            rows, cols = slice(i * stride, i * stride + kh), slice(j * stride, j * stride + kw)
            dw += np.einsum("nabc,no->abco", xp[:, rows, cols], dy[:, i, j])
            dxp[:, rows, cols] += np.einsum("abco,no->nabc", weight, dy[:, i, j])
    return dxp[:, pad_h:pad_h + H, pad_w:pad_w + W], dw, dy.sum(axis=(0, 1, 2))


def maxpool(x, pool_h, pool_w, stride, pad_h, pad_w, out_h, out_w, relu):
    """Max over each window (padding never wins); of relu(x) when ``relu``."""
    xp = padded(np.maximum(x, 0.0) if relu else x, pool_h, pool_w, stride, pad_h, pad_w, out_h, out_w,
                fill=-np.inf)
    y = np.empty((x.shape[0], out_h, out_w, x.shape[3]))
    for i in range(out_h):
        for j in range(out_w):
            y[:, i, j] = xp[:, i * stride:i * stride + pool_h, j * stride:j * stride + pool_w].max(axis=(1, 2))
    return y


def maxpool_backward(x, dy, pool_h, pool_w, stride, pad_h, pad_w, relu):
    """The gradient goes to each window's (first, row-major) maximum; with ``relu``, nowhere when
    that maximum is <= 0."""
    N, H, W, C = x.shape
    out_h, out_w = dy.shape[1:3]
    xp = padded(x, pool_h, pool_w, stride, pad_h, pad_w, out_h, out_w, fill=-np.inf)
    dxp = np.zeros_like(xp)
    for n in range(N):
        for i in range(out_h):
            for j in range(out_w):
                for c in range(C):
                    window = xp[n, i * stride:i * stride + pool_h, j * stride:j * stride + pool_w, c]
                    a, b = np.unravel_index(np.argmax(window), window.shape)
                    if relu and not window[a, b] > 0.0:
                        continue
                    dxp[n, i * stride + a, j * stride + b, c] += dy[n, i, j, c]
    return dxp[:, pad_h:pad_h + H, pad_w:pad_w + W]


def _counts(shape, pool_h, pool_w, stride, pad_h, pad_w, out_h, out_w):
    """How many positions of each window are inside the image."""
    ones = padded(np.ones(shape[:3] + (1,)), pool_h, pool_w, stride, pad_h, pad_w, out_h, out_w)
    count = np.empty((out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            count[i, j] = ones[0, i * stride:i * stride + pool_h, j * stride:j * stride + pool_w].sum()
    return count


def avgpool(x, pool_h, pool_w, stride, pad_h, pad_w, out_h, out_w):
    """Mean over each window's positions inside the image."""
    xp = padded(x, pool_h, pool_w, stride, pad_h, pad_w, out_h, out_w)
    count = _counts(x.shape, pool_h, pool_w, stride, pad_h, pad_w, out_h, out_w)
    y = np.empty((x.shape[0], out_h, out_w, x.shape[3]))
    for i in range(out_h):
        for j in range(out_w):
            window = xp[:, i * stride:i * stride + pool_h, j * stride:j * stride + pool_w]
            y[:, i, j] = window.sum(axis=(1, 2)) / count[i, j]
    return y


def avgpool_backward(x_shape, dy, pool_h, pool_w, stride, pad_h, pad_w):
    N, H, W, C = x_shape
    out_h, out_w = dy.shape[1:3]
    count = _counts(x_shape, pool_h, pool_w, stride, pad_h, pad_w, out_h, out_w)
    dxp = np.zeros(padded(np.zeros(x_shape), pool_h, pool_w, stride, pad_h, pad_w, out_h, out_w).shape)
    for i in range(out_h):
        for j in range(out_w):
            dxp[:, i * stride:i * stride + pool_h, j * stride:j * stride + pool_w] += \
                dy[:, i, j][:, None, None, :] / count[i, j]
    return dxp[:, pad_h:pad_h + H, pad_w:pad_w + W]


def softmax_xent(logits, y):
    """Mean cross-entropy and its gradient w.r.t. the logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    n = len(y)
    grad = np.exp(logp)
    grad[np.arange(n), y] -= 1.0
    return -logp[np.arange(n), y].mean(), grad / n
