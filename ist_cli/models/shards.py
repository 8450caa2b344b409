"""Model-parallel IST: which worker owns which parameters, and the pieces of a subnet (docs/algorithms.md).

Hidden neuron j of hidden layer h is owned by one worker: the owners split each hidden
layer into contiguous blocks of ``block_sizes`` neurons (owner k holds neurons
[lo_k, hi_k)). Owner k's *shard* holds everything attached to its neurons: their incoming
weights (the columns ``W_l[:, lo:hi]``), bias and batch-norm gamma/beta, and for the last
hidden layer their outgoing weights (the rows ``W_{L-1}[lo:hi, :]``). The output bias is no
neuron's: every subnet shares it and it stays with the coordinator.

A round's subnet of worker i splits by owner into *pieces*: the piece (k -> i) is the part
of subnet i owned by k. ``Piece`` moves it between owner k's shard and worker i's flat
subnet vector (``models.subnet.subnet_layout``) in one fixed order, so sender and receiver
agree without any index on the wire. Pure numpy: no numba, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ist_cli.kernels.layout import BETA, GAMMA, B, W
from ist_cli.models.mlp import NetLayout
from ist_cli.models.subnet import block_sizes, draw_partition
from ist_cli.seeding import stream

PARTITION_RULES = ("random", "stratified")


def owner_bounds(width: int, n_workers: int) -> np.ndarray:
    """(n+1,) int64: owner k holds neurons [bounds[k], bounds[k+1]) of a hidden layer of ``width``."""
    return np.concatenate([[0], np.cumsum(block_sizes(width, n_workers))]).astype(np.int64)


def owners_of(neurons: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """The owner of each neuron id (int64 array) of a layer with ``bounds``."""
    return np.searchsorted(bounds, neurons, side="right").astype(np.int64) - 1


def draw_stratified(hidden: Sequence[int], n_workers: int, seed: int, round_index: int) -> list[np.ndarray]:
    """The authors' partition: worker i's block takes about d_h/n^2 neurons from every owner.

    Per layer, each owner's neurons are permuted (one stream: ``stream(seed, "plan", round)``,
    owners in order), the permutations are concatenated owner after owner, and neuron t of
    that sequence is dealt to worker t mod n. Worker i thus gets ``block_sizes(d_h, n)[i]``
    neurons (the random rule's sizes), of which floor or ceil(o_k/n) come from owner k, a
    uniform draw without replacement among owner k's o_k neurons. Same layout as
    ``models.subnet.draw_partition``: (n, max_block) int64, padded with -1.
    """
    rng = stream(seed, "plan", round_index)
    plans = []
    for width in hidden:
        bounds = owner_bounds(width, n_workers)
        order = np.concatenate([bounds[k] + rng.permutation(bounds[k + 1] - bounds[k]) for k in range(n_workers)])
        sizes = block_sizes(width, n_workers)
        plan = np.full((n_workers, int(sizes.max())), -1, dtype=np.int64)
        for worker in range(n_workers):
            plan[worker, : sizes[worker]] = order[worker::n_workers]
        plans.append(plan)
    return plans


def draw_plans(rule: str, hidden: Sequence[int], n_workers: int, seed: int, round_index: int) -> list[np.ndarray]:
    """The round's partition under ``rule`` (``PARTITION_RULES``); any process gets the same from the same seed."""
    draw = draw_stratified if rule == "stratified" else draw_partition
    return draw(hidden, n_workers, seed, round_index)


@dataclass(frozen=True)
class ShardLayout:
    """Owner k's shard as one flat vector: per layer its weight part, then (hidden outputs) b, gamma, beta.

    ``offsets`` (L, 4) as ``NetLayout.offsets`` (-1: absent; the last layer has only W);
    ``rows``/``cols`` the shape of each layer's weight part.
    """

    widths: np.ndarray  # the full network's (L+1,)
    owner: int
    bounds: tuple[np.ndarray, ...]  # per hidden layer h (layer h+1): owner bounds
    offsets: np.ndarray
    shapes: np.ndarray  # (L, 2) int64: rows, cols of the weight part
    size: int

    @property
    def n_layers(self) -> int:
        return int(self.widths.shape[0] - 1)

    def range_of(self, layer: int) -> tuple[int, int]:
        """The owned neuron ids [lo, hi) of hidden layer ``layer`` (1..L-1)."""
        bounds = self.bounds[layer - 1]
        return int(bounds[self.owner]), int(bounds[self.owner + 1])

    def weight(self, shard: np.ndarray, layer: int) -> np.ndarray:
        start = int(self.offsets[layer, W])
        rows, cols = (int(v) for v in self.shapes[layer])
        return shard[start : start + rows * cols].reshape(rows, cols)

    def vector(self, shard: np.ndarray, layer: int, kind: int) -> np.ndarray:
        start = int(self.offsets[layer, kind])
        return shard[start : start + int(self.shapes[layer, 1])]

    def split(self, full: np.ndarray, layout: NetLayout, out: np.ndarray) -> None:
        """out[:size] <- this owner's entries of the flat full model ``full``."""
        self._move(full, layout, out, to_shard=True)

    def join(self, shard: np.ndarray, layout: NetLayout, full: np.ndarray) -> None:
        """Write this shard's entries into their places of the flat full model ``full``."""
        self._move(full, layout, shard, to_shard=False)

    def regions(self) -> list[tuple[int, int, tuple[slice, ...] | slice]]:
        """(kind, layer, where in the full model's array) of each part, in shard order."""
        out: list[tuple[int, int, tuple[slice, ...] | slice]] = []
        last = self.n_layers - 1
        for layer in range(self.n_layers):
            if layer < last:
                lo, hi = self.range_of(layer + 1)
                out.append((W, layer, np.s_[:, lo:hi]))
                for kind in (B, GAMMA, BETA):
                    if self.offsets[layer, kind] >= 0:
                        out.append((kind, layer, np.s_[lo:hi]))
            else:
                lo, hi = self.range_of(layer)
                out.append((W, layer, np.s_[lo:hi, :]))
        return out

    def _move(self, full: np.ndarray, layout: NetLayout, shard: np.ndarray, to_shard: bool) -> None:
        for kind, layer, where in self.regions():
            if kind == W:
                big, small = layout.weight(full, layer)[where], self.weight(shard, layer)
            else:
                big, small = layout.vector(full, layer, kind)[where], self.vector(shard, layer, kind)
            if to_shard:
                small[...] = big
            else:
                big[...] = small


def shard_layout(widths: Sequence[int], n_workers: int, owner: int, batch_norm: bool) -> ShardLayout:
    full = np.asarray(widths, dtype=np.int64)
    n_layers = full.shape[0] - 1
    bounds = tuple(owner_bounds(int(w), n_workers) for w in full[1:-1])
    offsets = np.full((n_layers, 4), -1, dtype=np.int64)
    shapes = np.zeros((n_layers, 2), dtype=np.int64)
    position = 0
    for layer in range(n_layers):
        if layer < n_layers - 1:
            owned = int(bounds[layer][owner + 1] - bounds[layer][owner])
            shapes[layer] = (full[layer], owned)
            offsets[layer, W] = position
            position += int(full[layer]) * owned
            kinds = (B, GAMMA, BETA) if batch_norm else (B,)
            for kind in kinds:
                offsets[layer, kind] = position
                position += owned
        else:
            owned = int(bounds[layer - 1][owner + 1] - bounds[layer - 1][owner])
            shapes[layer] = (owned, full[-1])
            offsets[layer, W] = position
            position += owned * int(full[-1])
    return ShardLayout(full, owner, bounds, offsets, shapes, position)


def shard_sizes(widths: Sequence[int], n_workers: int, batch_norm: bool) -> np.ndarray:
    """(n,) int64: values in each owner's shard."""
    return np.asarray([shard_layout(widths, n_workers, k, batch_norm).size for k in range(n_workers)], dtype=np.int64)


class Piece:
    """The part of worker i's subnet that owner k holds, for one round's neurons.

    ``neurons``/``starts`` are worker i's subnet neuron ids (``models.subnet.neuron_index``);
    ``sub`` is worker i's ``NetLayout``. The piece's values, in order: per layer its weight
    entries (row-major over the selected rows and columns), then b, gamma, beta.
    """

    def __init__(self, shard: ShardLayout, sub: NetLayout, neurons: np.ndarray, starts: np.ndarray) -> None:
        self.shard, self.sub = shard, sub
        last = shard.n_layers - 1
        self.parts: list[tuple[int, int, object, object]] = []
        size = 0
        for layer in range(shard.n_layers):
            rows_ids = neurons[starts[layer] : starts[layer + 1]]
            cols_ids = neurons[starts[layer + 1] : starts[layer + 2]]
            if layer < last:  # columns of neurons owned by k: all of the subnet's rows
                lo, hi = shard.range_of(layer + 1)
                picked = np.flatnonzero((cols_ids >= lo) & (cols_ids < hi))
                local_rows, local_cols = rows_ids, cols_ids[picked] - lo
                sub_rows, sub_cols = np.arange(rows_ids.size), picked
            else:  # rows of last-hidden neurons owned by k: every output
                lo, hi = shard.range_of(layer)
                picked = np.flatnonzero((rows_ids >= lo) & (rows_ids < hi))
                local_rows, local_cols = rows_ids[picked] - lo, np.arange(cols_ids.size)
                sub_rows, sub_cols = picked, np.arange(cols_ids.size)
            self.parts.append((layer, W, (local_rows, local_cols), (sub_rows, sub_cols)))
            size += local_rows.size * local_cols.size
            if layer < last:
                for kind in (B, GAMMA, BETA):
                    if shard.offsets[layer, kind] >= 0:
                        self.parts.append((layer, kind, local_cols, sub_cols))
                        size += local_cols.size
        self.size = size

    def from_shard(self, shard: np.ndarray) -> np.ndarray:
        """The piece's values read out of owner k's flat shard."""
        return self._read(self.shard, shard, 2)

    def to_shard(self, values: np.ndarray, shard: np.ndarray) -> None:
        self._write(self.shard, values, shard, 2)

    def from_sub(self, sub: np.ndarray) -> np.ndarray:
        """The piece's values read out of worker i's flat subnet (same order as ``from_shard``)."""
        return self._read(self.sub, sub, 3)

    def to_sub(self, values: np.ndarray, sub: np.ndarray) -> None:
        self._write(self.sub, values, sub, 3)

    def shard_to_sub(self, shard: np.ndarray, sub: np.ndarray) -> None:
        """``to_sub(from_shard(shard), sub)`` in one pass: a piece that does not leave its process."""
        self._copy(self.shard, shard, 2, self.sub, sub, 3)

    def sub_to_shard(self, sub: np.ndarray, shard: np.ndarray) -> None:
        """``to_shard(from_sub(sub), shard)`` in one pass."""
        self._copy(self.sub, sub, 3, self.shard, shard, 2)

    def _copy(self, src_layout: Any, src: np.ndarray, src_side: int, dst_layout: Any, dst: np.ndarray,
              dst_side: int) -> None:
        from ist_cli.kernels.mlp import copy_block

        for part in self.parts:
            layer, kind, src_index, dst_index = part[0], part[1], part[src_side], part[dst_side]
            if kind == W:
                copy_block(src=src_layout.weight(src, layer), src_rows=src_index[0], src_cols=src_index[1],
                           dst=dst_layout.weight(dst, layer), dst_rows=dst_index[0], dst_cols=dst_index[1])
            else:
                dst_layout.vector(dst, layer, kind)[dst_index] = src_layout.vector(src, layer, kind)[src_index]

    def _read(self, layout: Any, flat: np.ndarray, side: int) -> np.ndarray:
        """The piece's entries of ``flat`` (laid out by ``layout``; ``side`` picks the shard's
        (2) or the subnet's (3) indices of each part), in the parts' order."""
        # imported here: numba is loaded by the processes that move pieces, never by the CLI
        from ist_cli.kernels.mlp import take_block

        out = np.empty(self.size, dtype=flat.dtype)
        position = 0
        for part in self.parts:
            layer, kind, index = part[0], part[1], part[side]
            if kind == W:
                rows, cols = index
                count = rows.size * cols.size
                take_block(matrix=layout.weight(flat, layer), rows=rows, cols=cols, out=out[position : position + count])
            else:
                count = index.size
                out[position : position + count] = layout.vector(flat, layer, kind)[index]
            position += count
        return out

    def _write(self, layout: Any, values: np.ndarray, flat: np.ndarray, side: int) -> None:
        from ist_cli.kernels.mlp import put_block

        position = 0
        for part in self.parts:
            layer, kind, index = part[0], part[1], part[side]
            if kind == W:
                rows, cols = index
                count = rows.size * cols.size
                put_block(matrix=layout.weight(flat, layer), rows=rows, cols=cols,
                          values=np.ascontiguousarray(values[position : position + count]))
            else:
                count = index.size
                layout.vector(flat, layer, kind)[index] = values[position : position + count]
            position += count
