"""Closed-form values and bytes per round of the subnetwork methods on a layer-spec network.

Pure functions of the spec, the worker count and (for ResIST) the round's block assignment;
no training. The formulas are in docs/algorithms.md ("Communication"):

- **ResIST**: worker i holds the shared parameters (everything outside the partitioned,
  ``droppable`` blocks) and its blocks A_i: P_i = |shared| + Σ_{j ∈ A_i} |block_j| values;
  down v·P_i plus the 4-byte ids of its blocks, up v·P_i.
- **Local SGD** (server topology): 2·n·v·|model| per round.
- **Channel-wise IST**: worker i holds, per weight layer, the kernel slice [its in-channels,
  its out-channels] (its bias entries, its batch-norm γ, β); inputs of the first layer and the
  classifier's outputs are never partitioned. Tensors joined by a residual addition share one
  partition of their channels (``channel_groups``), so a tensor of C channels is always split
  in the sizes ``block_sizes(C, n)``.
"""

from __future__ import annotations

import math

import numpy as np

from ist_cli.comm import INDEX_BYTES, Traffic, server_traffic
from ist_cli.models.network import WEIGHTED, BatchNorm, Conv2D, Dense, Flatten, Network, Residual
from ist_cli.models.resist_assignment import blocks_per_worker
from ist_cli.models.resist_subnet import BlockSplit
from ist_cli.models.subnet import block_sizes


# ----------------------------------------------------------------------------- ResIST
def resist_split(net: Network) -> tuple[int, np.ndarray]:
    """(|shared|, per-block parameter counts of the droppable blocks, in order)."""
    split = BlockSplit.of(net)
    return split.shared, np.array(split.sizes, dtype=np.int64)


def resist_values(net: Network, assignment: tuple[np.ndarray, ...]) -> np.ndarray:
    """Values in each worker's sub-ResNet: P_i = |shared| + Σ_{j ∈ A_i} |block_j|."""
    shared, blocks = resist_split(net)
    return np.array([shared + int(blocks[np.asarray(a, dtype=np.int64)].sum()) for a in assignment], dtype=np.int64)


def resist_traffic(net: Network, assignment: tuple[np.ndarray, ...], value_bytes: int,
                   values: np.ndarray | None = None) -> Traffic:
    """Down: v·P_i and the int32 ids of its blocks; up: v·P_i (the server knows the ids).
    ``values``: what each worker's messages carry instead of P_i (a pruned run: its kept values)."""
    values = (resist_values(net, assignment) if values is None else np.asarray(values)).astype(np.float64) * value_bytes
    ids = np.array([len(a) for a in assignment], dtype=np.float64) * INDEX_BYTES
    return server_traffic(values, values + ids)


def resist_round_bytes(net: Network, n_workers: int, min_blocks: int, value_bytes: int = 4) -> float:
    """Expected value bytes of a round, up plus down, under the assignment law:

        2·v·(n·|shared| + (Σ_i n_i / m)·Σ_j |block_j|),  Σ_i n_i = max(m, n·b) block slots,

    exact every round when the blocks are of one size (then only which blocks move is random).
    """
    shared, blocks = resist_split(net)
    slots = int(blocks_per_worker(blocks.size, n_workers, min_blocks).sum())
    return 2.0 * value_bytes * (n_workers * shared + slots / blocks.size * float(blocks.sum()))


def local_sgd_round_bytes(net: Network, n_workers: int, value_bytes: int = 4) -> float:
    """Every replica up to the server and the average back: 2·n·v·|model|."""
    return 2.0 * n_workers * value_bytes * net.n_params


# ----------------------------------------------------------------------------- channel-wise IST
def channel_groups(net: Network) -> tuple[list[int | None], dict[int, tuple[int, int | None]]]:
    """Which partition each weight layer's output channels (neurons) follow.

    Returns (group of every weight layer in layout order, None for the classifier) and
    group -> (channels, parent). A residual's identity shortcut ties the body's last weight
    layer to the block input's group; a projection shortcut shares one new group with the body's
    last weight layer; a pool-and-pad shortcut makes the body's output group extend the input's
    (parent): its first C_in channels are split as the input's, the appended ones added on top
    so that worker i holds ``block_sizes(C_out, n)[i]`` of them. Group -1 is the network input.
    """
    groups: dict[int, tuple[int, int | None]] = {-1: (int(net.input_shape[0]), None)}
    layer_groups: list[int | None] = []
    n_weight = len(net.weight_layers())

    def new_group(channels: int, parent: int | None = None) -> int:
        groups[len(groups) - 1] = (channels, parent)
        return len(groups) - 2

    def run(layers, group: int, tie: int | None = None) -> int:
        last = max((k for k, layer in enumerate(layers) if isinstance(layer, WEIGHTED)), default=None)
        for k, layer in enumerate(layers):
            if isinstance(layer, WEIGHTED):
                if len(layer_groups) == n_weight - 1:
                    layer_groups.append(None)  # the classifier: outputs never partitioned
                    continue
                units = layer.channels if isinstance(layer, Conv2D) else layer.units
                group = tie if (k == last and tie is not None) else new_group(units)
                layer_groups.append(group)
            elif isinstance(layer, Residual):
                group = residual(layer, group)
        return group

    def residual(layer: Residual, group: int) -> int:
        if isinstance(layer.shortcut, Conv2D):
            out = new_group(layer.shortcut.channels)
            run(layer.body, group, tie=out)
            layer_groups.append(out)  # the projection follows the body in the layout
            return out
        if layer.shortcut == "identity":
            return run(layer.body, group, tie=group)
        last = [x for x in layer.body if isinstance(x, WEIGHTED)][-1]
        out = new_group(last.channels if isinstance(last, Conv2D) else last.units, group if group >= 0 else None)
        return run(layer.body, group, tie=out)

    run(net.layers, -1)
    return layer_groups, groups


def _held(groups: dict[int, tuple[int, int | None]], group: int, n_workers: int) -> np.ndarray:
    return block_sizes(groups[group][0], n_workers) if group >= 0 else np.full(n_workers, groups[-1][0])


def channel_subnet_sizes(net: Network, n_workers: int) -> tuple[np.ndarray, np.ndarray]:
    """Per worker: values in its channel-wise subnet and the channel/neuron ids it must be told.

    values_i = Σ_conv kh·kw·c_in^i·c_out^i + Σ_dense f_in^i·f_out^i + biases and γ, β of its
    channels (+ the whole classifier bias), with c^i = ``block_sizes(C, n)[i]`` for a
    partitioned tensor of C channels, the full count for the input and the classifier output,
    and f_in^i = c^i·H·W after a flatten. ids_i = Σ over groups of its share (an extending
    group adds only its appended channels).
    """
    layer_groups, groups = channel_groups(net)
    values = np.zeros(n_workers, dtype=np.int64)
    weights = iter(layer_groups)

    def run(layers, shape, held: np.ndarray) -> np.ndarray:
        nonlocal values
        for layer in layers:
            if isinstance(layer, WEIGHTED):
                group = next(weights)
                if group is None:
                    out = np.full(n_workers, layer.units if isinstance(layer, Dense) else layer.channels)
                else:
                    out = _held(groups, group, n_workers)
                kernel = math.prod(layer.params(shape)[0][1][:-2]) if isinstance(layer, Conv2D) else 1
                values += kernel * held * out + (out if getattr(layer, "bias", True) else 0)
                held = out
            elif isinstance(layer, BatchNorm):
                values += 2 * held
            elif isinstance(layer, Flatten) and len(shape) == 3:
                held = held * shape[1] * shape[2]
            elif isinstance(layer, Residual):
                body_held = run(layer.body, shape, held)
                if isinstance(layer.shortcut, Conv2D):
                    run((layer.shortcut,), shape, held)
                held = body_held
            shape = layer.out_shape(shape)
        return held

    run(net.layers, tuple(net.input_shape), np.full(n_workers, int(net.input_shape[0]), dtype=np.int64))
    ids = np.zeros(n_workers, dtype=np.int64)
    for group, (channels, parent) in groups.items():
        if group >= 0:
            inherited = block_sizes(groups[parent][0], n_workers) if parent is not None else 0
            ids += block_sizes(channels, n_workers) - inherited
    return values, ids


def channel_ist_traffic(net: Network, n_workers: int, value_bytes: int) -> Traffic:
    """Down: v·values_i and 4·ids_i; up: v·values_i."""
    values, ids = channel_subnet_sizes(net, n_workers)
    up = values.astype(np.float64) * value_bytes
    return server_traffic(up, up + ids * INDEX_BYTES)
