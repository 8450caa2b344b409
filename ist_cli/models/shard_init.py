"""An owner's shard of the initial model, built without the whole model (docs/algorithms.md).

``models.mlp.initial_params`` draws every value of the flat model from one stream,
``stream(seed, "init")``, in layout order (per layer W row-major, then b): value t of the
model is ``lo + (hi - lo) * u_t`` with u_t the t-th double of that PCG64 stream, which
consumes exactly one 64-bit draw per value. So an owner can jump over the values it does not
own (``PCG64.advance``) and draw only its own: per hidden layer it draws its columns of each
row of W (one jump and one draw per row) and its slice of b, for the last layer its rows of
W. The values are bit for bit those of ``initial_params``; the cost is the owner's own values
plus one jump per row of each layer, never the whole model in memory.
"""

from __future__ import annotations

import numpy as np

from ist_cli.kernels.layout import BETA, GAMMA, B
from ist_cli.models.shards import ShardLayout
from ist_cli.seeding import stream


class _Cursor:
    """A position in the init stream: draw values at given positions, moving forward only."""

    def __init__(self, seed: int) -> None:
        self.rng = stream(seed, "init")
        self.at = 0

    def draw(self, position: int, count: int, bound: float) -> np.ndarray:
        """Values ``position .. position + count`` of the stream, drawn as ``initial_params`` draws them."""
        if position < self.at:
            raise ValueError(f"the init stream is at {self.at}; position {position} is behind it")
        if position > self.at:
            self.rng.bit_generator.advance(position - self.at)
        self.at = position + count
        return self.rng.uniform(-bound, bound, size=count)


def _layer_starts(widths: np.ndarray) -> list[int]:
    """Where each layer's values (W then b) start in the init stream."""
    starts, position = [], 0
    for layer in range(widths.shape[0] - 1):
        starts.append(position)
        position += int(widths[layer]) * int(widths[layer + 1]) + int(widths[layer + 1])
    return starts


def initial_shard(shard: ShardLayout, seed: int, dtype: np.dtype, out: np.ndarray) -> None:
    """out[:shard.size] <- the owner's entries of ``initial_params(net_layout(widths), seed, dtype)``.

    out: 1-D array of ``dtype`` with at least ``shard.size`` entries (the owner's flat shard).
    """
    widths = shard.widths
    starts = _layer_starts(widths)
    cursor = _Cursor(seed)
    last = shard.n_layers - 1
    for layer in range(shard.n_layers):
        fan_in, fan_out = int(widths[layer]), int(widths[layer + 1])
        bound = 1.0 / np.sqrt(float(fan_in))
        weight = shard.weight(out, layer)
        if layer < last:
            lo, hi = shard.range_of(layer + 1)
            for row in range(fan_in):
                weight[row] = cursor.draw(starts[layer] + row * fan_out + lo, hi - lo, bound)
            shard.vector(out, layer, B)[...] = cursor.draw(starts[layer] + fan_in * fan_out + lo, hi - lo, bound)
            if shard.offsets[layer, GAMMA] >= 0:
                shard.vector(out, layer, GAMMA)[...] = 1.0
                shard.vector(out, layer, BETA)[...] = 0.0
        else:
            lo, hi = shard.range_of(layer)
            weight[...] = cursor.draw(starts[layer] + lo * fan_out, (hi - lo) * fan_out, bound).reshape(hi - lo, fan_out)


def initial_output_bias(widths: np.ndarray, seed: int, dtype: np.dtype) -> np.ndarray:
    """(classes,) of ``dtype``: the output bias of ``initial_params``, drawn alone (no neuron owns it)."""
    widths = np.asarray(widths, dtype=np.int64)
    layer = widths.shape[0] - 2
    fan_in, classes = int(widths[layer]), int(widths[layer + 1])
    start = _layer_starts(widths)[layer] + fan_in * classes
    return _Cursor(seed).draw(start, classes, 1.0 / np.sqrt(float(fan_in))).astype(dtype)
