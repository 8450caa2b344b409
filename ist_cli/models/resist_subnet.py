"""A ResIST sub-ResNet: the shared layers and some of the partitioned (``droppable``) blocks.

A worker holding blocks A trains the network with every other partitioned block removed;
such a block has an identity shortcut, so removing it is skipping it (the identity). The
sub-ResNet is itself a layer spec (``subnet``), and because the flat layout walks the layers
in order, its flat vector is the full vector's pieces for the layers it keeps, in order:
the shared pieces between the blocks and the held blocks (``pieces``). ``gather`` and
``scatter`` move values between the two vectors; nothing else about a subnet is stored.

At evaluation a partitioned block's residual branch is scaled by c (docs/algorithms.md):
the branch ends in a linear layer (a bias-free conv in the pre-activation ResNet), so
scaling that layer's parameters by c (``branch_ends``) is scaling the branch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ist_cli.models.network import WEIGHTED, Network

SHARED = -1  # the owner of a piece of the shared parameters


class Piece(NamedTuple):
    """A contiguous run of the full vector, ``[start, stop)``, at ``sub_start`` in a subnet's vector;
    ``owner``: the partitioned block it belongs to (0 .. m-1), or ``SHARED``."""

    start: int
    stop: int
    sub_start: int
    owner: int


@dataclass(frozen=True)
class BlockSplit:
    """Where the partitioned blocks of ``net`` sit in its flat vector."""

    net: Network
    layers: tuple[int, ...]  # top-level layer index of each partitioned block, in order
    starts: tuple[int, ...]  # offset of each block's parameters in the full vector
    sizes: tuple[int, ...]  # parameter count of each block
    size: int  # the full vector's length

    @classmethod
    def of(cls, net: Network) -> BlockSplit:
        """The split of ``net``; ValueError when it has no droppable block."""
        layers = tuple(net.droppable_blocks())
        if not layers:
            raise ValueError("the network has no droppable residual blocks for ResIST to partition")
        layout = net.layout()
        starts, sizes = [], []
        for layer in layers:
            params = [p for p in layout.params if p.path[0] == layer]
            start, stop = params[0].offset, params[-1].offset + params[-1].size
            if stop - start != sum(p.size for p in params):  # the layout walks a block's tensors in one run
                raise ValueError(f"block {layer}'s parameters are not contiguous in the layout")
            starts.append(start)
            sizes.append(stop - start)
        return cls(net, layers, tuple(starts), tuple(sizes), layout.size)

    @property
    def n_blocks(self) -> int:
        return len(self.layers)

    @property
    def shared(self) -> int:
        """Parameters outside the partitioned blocks (every worker holds them)."""
        return self.size - sum(self.sizes)

    def subnet(self, held: np.ndarray) -> Network:
        """The sub-ResNet as a layer spec: every block not in ``held`` (ids 0 .. m-1) removed."""
        dropped = {self.layers[j] for j in range(self.n_blocks)} - {self.layers[int(j)] for j in held}
        return Network(self.net.input_shape, tuple(layer for i, layer in enumerate(self.net.layers) if i not in dropped))

    def pieces(self, held: np.ndarray) -> list[Piece]:
        """The full vector's runs that make up the sub-ResNet's vector, in its order."""
        keep = {int(j) for j in held}
        out: list[Piece] = []
        position = sub = 0
        for j, (start, size) in enumerate(zip(self.starts, self.sizes, strict=True)):
            if start > position:
                out.append(Piece(position, start, sub, SHARED))
                sub += start - position
            if j in keep:
                out.append(Piece(start, start + size, sub, j))
                sub += size
            position = start + size
        if self.size > position:
            out.append(Piece(position, self.size, sub, SHARED))
        return out

    def gather(self, full: np.ndarray, held: np.ndarray, sub: np.ndarray) -> None:
        """The first |shared| + Σ_{j ∈ held} |block_j| entries of ``sub`` <- the sub-ResNet's entries of ``full``."""
        for piece in self.pieces(held):
            sub[piece.sub_start : piece.sub_start + piece.stop - piece.start] = full[piece.start : piece.stop]

    def scatter(self, sub: np.ndarray, held: np.ndarray, full: np.ndarray) -> None:
        """The inverse of ``gather``: the sub-ResNet's entries of ``full`` <- ``sub``."""
        for piece in self.pieces(held):
            full[piece.start : piece.stop] = sub[piece.sub_start : piece.sub_start + piece.stop - piece.start]

    def branch_ends(self) -> list[tuple[int, int]]:
        """Per partitioned block, the ``[start, stop)`` of its branch's last layer's parameters
        (weight, and bias if it has one): scaling them by c scales the branch by c."""
        layout = self.net.layout()
        ends = []
        for layer in self.layers:
            body = self.net.layers[layer].body
            if not body or not isinstance(body[-1], WEIGHTED):
                raise ValueError(f"block {layer}'s branch does not end in a dense or conv layer")
            params = [p for p in layout.params if p.path == (layer, len(body) - 1)]
            ends.append((params[0].offset, params[-1].offset + params[-1].size))
        return ends
