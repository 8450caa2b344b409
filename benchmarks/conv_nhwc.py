"""The NHWC alternative to ``ist_cli.kernels.conv``'s NCHW layout, kept for
``bench_conv.py --layout`` (the measurement behind the choice; docs/performance.md).

NHWC activations, HWIO weights; im2col rows are output pixels with (kh, kw, C_in) columns,
so a kernel row's kw*C_in values are one contiguous copy; groups of images whose patch matrix
fits ``CHUNK_BYTES`` share one GEMM, out = cols W. Forward and backward (input gradient
optional), without bias or fused elementwise work, on both sides of the comparison.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ist_cli.kernels.mlp import _gemm

CHUNK_BYTES = 1 << 20


@njit(cache=True, nogil=True)
def _nhwc_im2col(xf: np.ndarray, first: int, count: int, H: int, W: int, C: int, kh: int, kw: int, stride: int,
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
def _nhwc_col2im(cf: np.ndarray, first: int, count: int, H: int, W: int, C: int, kh: int, kw: int, stride: int,
            pad_h: int, pad_w: int, Ho: int, Wo: int, xf: np.ndarray) -> None:
    """xf += the transpose of ``_nhwc_im2col`` (same arguments): each patch entry added back
    to the input position it came from; padding positions dropped."""
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
def nhwc_step(x: np.ndarray, weight: np.ndarray, out: np.ndarray, dweight: np.ndarray, dx: np.ndarray,
              stride: int, pad: int) -> None:
    """Forward and backward of one convolution: x (N, H, W, C), weight (kh, kw, C, C_out), out
    (N, Ho, Wo, C_out) (its values reused as dY), dx of size 0 to skip the input gradient."""
    N, H, W, C = x.shape
    kh, kw, _, Co = weight.shape
    Ho, Wo = out.shape[1], out.shape[2]
    K = kh * kw * C
    P = Ho * Wo
    wm = weight.reshape((K, Co))
    dwm = dweight.reshape((K, Co))
    of = out.reshape((N * P, Co))
    chunk = max(1, min(N, CHUNK_BYTES // (P * K * 4)))
    cols = np.empty((chunk * P, K), dtype=x.dtype)
    dcols = np.empty((chunk * P, K), dtype=x.dtype)
    xf = x.reshape(-1)
    dxf = dx.reshape(-1)
    for s in range(0, N, chunk):
        n = min(chunk, N - s)
        c = cols[:n * P]
        _nhwc_im2col(xf, s, n, H, W, C, kh, kw, stride, pad, pad, Ho, Wo, c.reshape(-1))
        _gemm(a=c, a_t=False, b=wm, b_t=False, c=of[s * P:(s + n) * P], alpha=1.0, beta=0.0)
    for s in range(0, N, chunk):
        n = min(chunk, N - s)
        c = cols[:n * P]
        d = of[s * P:(s + n) * P]
        _nhwc_im2col(xf, s, n, H, W, C, kh, kw, stride, pad, pad, Ho, Wo, c.reshape(-1))
        _gemm(a=c, a_t=True, b=d, b_t=False, c=dwm, alpha=1.0, beta=0.0 if s == 0 else 1.0)
        if dx.size > 0:
            dc = dcols[:n * P]
            _gemm(a=d, a_t=False, b=wm, b_t=True, c=dc, alpha=1.0, beta=0.0)
            dxf[s * H * W * C:(s + n) * H * W * C] = 0.0
            _nhwc_col2im(dc.reshape(-1), s, n, H, W, C, kh, kw, stride, pad, pad, Ho, Wo, dxf)
