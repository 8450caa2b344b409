"""The fully connected network of Yuan et al.: widths, flat parameter layout, initialisation.

Every network (the full model, a worker's subnet, a replica) is one flat vector with a
layout given by its widths ``(d_0, d_1, ..., d_L)``: per layer ``l`` the weights
``W_l`` (d_l x d_{l+1}, row-major, so a layer computes ``A @ W_l + b_l``), the bias
``b_l`` and, for hidden layers under batch norm, ``gamma_l`` and ``beta_l``. One flat
vector per network means one numba kernel can train any depth, and one copy / one
average covers the whole model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ist_cli.kernels.layout import BETA, GAMMA, B, W
from ist_cli.seeding import stream

__all__ = ["B", "BETA", "GAMMA", "W", "NetLayout", "initial_params", "net_layout"]



@dataclass(frozen=True)
class NetLayout:
    """Offsets of every parameter of a network with ``widths`` inside its flat vector."""

    widths: np.ndarray  # int64 (L+1,)
    offsets: np.ndarray  # int64 (L, 4): start of W, b, gamma, beta (-1 when absent)
    size: int
    batch_norm: bool

    @property
    def n_layers(self) -> int:
        return int(self.widths.shape[0] - 1)

    def weight(self, flat: np.ndarray, layer: int) -> np.ndarray:
        """View of ``W_layer`` inside ``flat``."""
        start = int(self.offsets[layer, W])
        rows, cols = int(self.widths[layer]), int(self.widths[layer + 1])
        return flat[start : start + rows * cols].reshape(rows, cols)

    def vector(self, flat: np.ndarray, layer: int, kind: int) -> np.ndarray:
        """View of ``b``/``gamma``/``beta`` of ``layer`` inside ``flat``."""
        start = int(self.offsets[layer, kind])
        if start < 0:
            raise KeyError(f"layer {layer} has no parameter of kind {kind}")
        return flat[start : start + int(self.widths[layer + 1])]

    def named(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """``W0, b0, gamma0, beta0, W1, ...`` as views (the names ``/final`` uses)."""
        out: dict[str, np.ndarray] = {}
        for layer in range(self.n_layers):
            out[f"W{layer}"] = self.weight(flat, layer)
            out[f"b{layer}"] = self.vector(flat, layer, B)
            if self.offsets[layer, GAMMA] >= 0:
                out[f"gamma{layer}"] = self.vector(flat, layer, GAMMA)
                out[f"beta{layer}"] = self.vector(flat, layer, BETA)
        return out


def net_layout(widths: Sequence[int], batch_norm: bool) -> NetLayout:
    """The flat layout of a network; batch norm adds gamma/beta to hidden layers only."""
    widths_arr = np.asarray(widths, dtype=np.int64)
    n_layers = widths_arr.shape[0] - 1
    offsets = np.full((n_layers, 4), -1, dtype=np.int64)
    position = 0
    for layer in range(n_layers):
        fan_in, fan_out = int(widths_arr[layer]), int(widths_arr[layer + 1])
        offsets[layer, W] = position
        position += fan_in * fan_out
        offsets[layer, B] = position
        position += fan_out
        if batch_norm and layer < n_layers - 1:
            offsets[layer, GAMMA] = position
            position += fan_out
            offsets[layer, BETA] = position
            position += fan_out
    return NetLayout(widths_arr, offsets, position, batch_norm)


def initial_params(layout: NetLayout, seed: int, dtype: np.dtype) -> np.ndarray:
    """PyTorch's default Linear init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for W and b, as in the
    original IST code; batch-norm gamma = 1, beta = 0."""
    rng = stream(seed, "init")
    flat = np.zeros(layout.size, dtype=dtype)
    for layer in range(layout.n_layers):
        bound = 1.0 / np.sqrt(float(layout.widths[layer]))
        weight = layout.weight(flat, layer)
        weight[...] = rng.uniform(-bound, bound, size=weight.shape)
        bias = layout.vector(flat, layer, B)
        bias[...] = rng.uniform(-bound, bound, size=bias.shape)
        if layout.offsets[layer, GAMMA] >= 0:
            layout.vector(flat, layer, GAMMA)[...] = 1.0
    return flat
