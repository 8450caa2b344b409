"""The MLP's forward pass with the model split among its owners (model-parallel evaluation).

Owner k holds the incoming weights, bias and batch-norm gamma/beta of its contiguous block of
neurons in every hidden layer, and the outgoing weights of its block of the last hidden layer
(``models.shards``). A hidden layer's activations for a batch are computed block by block:
owner k computes ``relu(bn(A @ W[:, lo:hi] + b[lo:hi]))`` from the full previous activations A
(batch-norm statistics are per neuron, so owning a neuron is enough). Before the next hidden
layer the owners exchange their blocks (an all-gather: the blocks concatenated in owner order
are the layer in neuron order). The last hidden layer is never exchanged: owner k's partial
logits are its block times its rows of the output weights, and the logits are the sum of the
partials in owner order plus the output bias. ``owner_partial`` is one owner's part (the
exchange a callable: MPI ranks pass their all-gather), ``local_partials`` all owners' in one
process; both do the same arithmetic in the same order, so they give the same bits.

The sum over owners is ordered differently from the full model's one matrix product, so the
logits agree with ``kernels.mlp.forward_logits`` to rounding, not bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ist_cli.kernels.layout import BETA, GAMMA, B
from ist_cli.kernels.mlp import batch_norm_relu
from ist_cli.models.shards import ShardLayout

#: (own block of hidden layer ``layer``: (batch, owned)) -> the whole layer (batch, width)
Gather = Callable[[np.ndarray, int], np.ndarray]


def hidden_block(shard: ShardLayout, values: np.ndarray, layer: int, inputs: np.ndarray) -> np.ndarray:
    """(batch, owned) activations of the owner's neurons of hidden layer ``layer + 1``, of the
    model's dtype, from ``inputs`` (batch, widths[layer]); batch norm uses the batch's statistics."""
    z = inputs @ shard.weight(values, layer)
    z += shard.vector(values, layer, B)
    if shard.offsets[layer, GAMMA] >= 0:
        batch_norm_relu(z=z, gamma=shard.vector(values, layer, GAMMA), beta=shard.vector(values, layer, BETA))
        return z
    return np.maximum(z, 0, out=z)


def partial_logits(shard: ShardLayout, values: np.ndarray, last_hidden: np.ndarray) -> np.ndarray:
    """(batch, classes): the owner's block of the last hidden layer times its rows of the output weights."""
    return last_hidden @ shard.weight(values, shard.n_layers - 1)


def owner_partial(shard: ShardLayout, values: np.ndarray, X: np.ndarray, gather: Gather) -> np.ndarray:
    """Owner ``shard.owner``'s partial logits of the batch ``X`` (batch, d_0); ``gather`` exchanges
    a hidden layer's blocks with the other owners (called once per hidden layer but the last)."""
    inputs, last = X, shard.n_layers - 1
    for layer in range(last):
        block = hidden_block(shard, values, layer, inputs)
        inputs = gather(block, layer + 1) if layer < last - 1 else block
    return partial_logits(shard, values, inputs)


def local_partials(shards: Sequence[ShardLayout], values: Sequence[np.ndarray], X: np.ndarray) -> list[np.ndarray]:
    """Every owner's partial logits of ``X``, computed here one owner after another."""
    inputs, last = X, shards[0].n_layers - 1
    blocks: list[np.ndarray] = []
    for layer in range(last):
        blocks = [hidden_block(shard, part, layer, inputs) for shard, part in zip(shards, values, strict=True)]
        if layer < last - 1:
            inputs = np.concatenate(blocks, axis=1)
    return [partial_logits(shard, part, block) for shard, part, block in zip(shards, values, blocks, strict=True)]


def combine(partials: Sequence[np.ndarray], output_bias: np.ndarray) -> np.ndarray:
    """(batch, classes) float64 logits: the owners' partials summed in owner order, plus the output bias."""
    total = partials[0].astype(np.float64)
    for part in partials[1:]:
        total += part
    total += output_bias
    return total
