"""Plain-numpy forward pass of a layer spec, written from the layers' definitions (loops over
kernel offsets, no im2col): the oracle that kernels for the same specs are compared with.

Batches are NCHW (images) or (N, features); parameters come from ``Layout.named``."""

from __future__ import annotations

import numpy as np

from ist_cli.kernels.mlp import BN_EPS
from ist_cli.models import network as nw


def padded(x: np.ndarray, pads: tuple[int, int, int, int], value: float = 0.0) -> np.ndarray:
    top, bottom, left, right = pads
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def windows(x: np.ndarray, size: tuple[int, int], stride: int, out_hw: tuple[int, int]):
    """Yield (p, q, x[:, :, p::stride, q::stride] cut to the output size) per window offset."""
    ho, wo = out_hw
    for p in range(size[0]):
        for q in range(size[1]):
            yield p, q, x[:, :, p : p + stride * (ho - 1) + 1 : stride, q : q + stride * (wo - 1) + 1 : stride]


def conv2d(x: np.ndarray, W: np.ndarray, b: np.ndarray, layer: nw.Conv2D) -> np.ndarray:
    """out[n, o, i, j] = b[o] + sum_{p, q, c} xpad[n, c, i*s + p, j*s + q] W[p, q, c, o]."""
    _, ho, wo = layer.out_shape(x.shape[1:])
    xp = padded(x, layer.pads(x.shape[1:]))
    out = np.zeros((x.shape[0], W.shape[3], ho, wo))
    for p, q, patch in windows(xp, W.shape[:2], layer.stride, (ho, wo)):
        out += np.einsum("nchw,co->nohw", patch, W[p, q])
    return out + b[None, :, None, None]


def pool(x: np.ndarray, layer: nw.Pool, kind: str) -> np.ndarray:
    """Max over the window, or mean over its real pixels (padding excluded from the count)."""
    _, ho, wo = layer.out_shape(x.shape[1:])
    h_pads = nw.window_pads(x.shape[2], layer.size, layer.step, layer.padding)[1:]
    w_pads = nw.window_pads(x.shape[3], layer.size, layer.step, layer.padding)[1:]
    pads = (*h_pads, *w_pads)
    size = (layer.size, layer.size)
    if kind == "max":
        xp = padded(x, pads, -np.inf)
        out = np.full((x.shape[0], x.shape[1], ho, wo), -np.inf)
        for _, _, patch in windows(xp, size, layer.step, (ho, wo)):
            out = np.maximum(out, patch)
        return out
    total = np.zeros((x.shape[0], x.shape[1], ho, wo))
    count = np.zeros((1, 1, ho, wo))
    ones = padded(np.ones((1, 1, *x.shape[2:])), pads)
    for (_, _, patch), (_, _, real) in zip(windows(padded(x, pads), size, layer.step, (ho, wo)),
                                           windows(ones, size, layer.step, (ho, wo)), strict=True):
        total += patch
        count += real
    return total / count


def forward(net: nw.Network, params: dict[str, np.ndarray], X: np.ndarray) -> np.ndarray:
    """Logits of ``X`` (float64), batch norm with the batch's statistics."""
    counter = iter(range(10**9))
    state = {"weight": -1}

    def run(layers, x):
        for layer in layers:
            x = apply(layer, x)
        return x

    def apply(layer, x):
        if isinstance(layer, nw.Dense | nw.Conv2D):
            state["weight"] = k = next(counter)
            W = params[f"W{k}"]
            b = params.get(f"b{k}", np.zeros(W.shape[-1]))  # convs before batch norm have none
            return x @ W + b if isinstance(layer, nw.Dense) else conv2d(x, W, b, layer)
        if isinstance(layer, nw.ReLU):
            return np.maximum(x, 0.0)
        if isinstance(layer, nw.MaxPool):
            return pool(x, layer, "max")
        if isinstance(layer, nw.AvgPool):
            return pool(x, layer, "mean")
        if isinstance(layer, nw.GlobalAvgPool):
            return x.mean(axis=(2, 3))
        if isinstance(layer, nw.Flatten):
            return x.reshape(x.shape[0], -1)
        if isinstance(layer, nw.BatchNorm):
            k = state["weight"]
            axes = (0,) if x.ndim == 2 else (0, 2, 3)
            shape = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)
            xhat = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + BN_EPS)
            return params[f"gamma{k}"].reshape(shape) * xhat + params[f"beta{k}"].reshape(shape)
        if isinstance(layer, nw.Residual):
            pre = np.maximum(x, 0.0) if layer.preact else x
            out = run(layer.body, pre)
            if isinstance(layer.shortcut, nw.Conv2D):  # a projection, numbered after the body
                return out + apply(layer.shortcut, pre)
            if layer.shortcut == "identity":
                return out + x
            short = pool(pre, nw.AvgPool(layer.stride, layer.stride, "same"), "mean")
            extra = np.zeros((short.shape[0], out.shape[1] - short.shape[1], *short.shape[2:]))
            return out + np.concatenate([short, extra], axis=1)
        raise TypeError(layer)

    return run(net.layers, np.asarray(X, dtype=np.float64))


def layer_outputs(net: nw.Network, params: dict[str, np.ndarray], X: np.ndarray) -> list[tuple[int, ...]]:
    """Per-sample output shape of every top-level layer, as the reference computes it."""
    shapes = []
    for i in range(1, len(net.layers) + 1):
        prefix = nw.Network(net.input_shape, net.layers[:i])
        shapes.append(forward(prefix, params, X).shape[1:])
    return shapes
