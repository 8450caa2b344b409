"""Owners' shards and the pieces of a subnet against the central gather/scatter kernels."""

from __future__ import annotations

import numpy as np
import pytest

from ist_cli.kernels import mlp as kernels
from ist_cli.models.mlp import net_layout
from ist_cli.models.shards import Piece, draw_stratified, owner_bounds, shard_layout, shard_sizes
from ist_cli.models.subnet import block_sizes, draw_partition, neuron_index, subnet_layout


@pytest.mark.parametrize(("widths", "n", "bn"), [((7, 9, 5, 3), 2, True), ((6, 13, 11, 4), 3, False), ((5, 8, 2), 4, True)])
def test_shards_tile_the_model_and_pieces_tile_each_subnet(widths, n, bn):
    full = net_layout(widths, bn)
    model = np.random.default_rng(1).standard_normal(full.size)
    shards = [shard_layout(widths, n, k, bn) for k in range(n)]
    rows = [np.zeros(s.size) for s in shards]
    for s, row in zip(shards, rows, strict=True):
        s.split(model, full, row)
    # every entry but the output bias belongs to exactly one owner
    classes = widths[-1]
    assert shard_sizes(widths, n, bn).sum() == full.size - classes
    rebuilt = np.full(full.size, np.nan)
    rebuilt[full.offsets[-1, 1] : full.offsets[-1, 1] + classes] = model[full.offsets[-1, 1] : full.offsets[-1, 1] + classes]
    for s, row in zip(shards, rows, strict=True):
        s.join(row, full, rebuilt)
    assert np.array_equal(rebuilt, model)
    plans = draw_partition(widths[1:-1], n, 0, 3)
    for worker in range(n):
        layout = subnet_layout(widths, n, worker, bn)
        neurons, starts = neuron_index(widths, plans, worker)
        expected = np.empty(layout.size)
        kernels.gather_subnet(full=model, full_offsets=full.offsets, full_widths=full.widths, sub=expected,
                              sub_offsets=layout.offsets, sub_widths=layout.widths, neurons=neurons, starts=starts)
        sub = np.full(layout.size, np.nan)
        out_bias = layout.offsets[-1, 1]
        sub[out_bias : out_bias + classes] = expected[out_bias : out_bias + classes]
        for k in range(n):
            piece = Piece(shards[k], layout, neurons, starts)
            values = piece.from_shard(rows[k])
            piece.to_sub(values, sub)
            assert np.array_equal(piece.from_sub(sub), values)
        assert np.array_equal(sub, expected)
        # and back: a changed subnet lands in the owners' shards where scatter puts it in the model
        changed = sub + 1.0
        target = model.copy()
        kernels.scatter_subnet(full=target, full_offsets=full.offsets, full_widths=full.widths, sub=changed,
                               sub_offsets=layout.offsets, sub_widths=layout.widths, neurons=neurons, starts=starts,
                               skip_output_bias=True)
        for k in range(n):
            piece = Piece(shards[k], layout, neurons, starts)
            piece.to_shard(piece.from_sub(changed), rows[k])
        joined = model.copy()
        for s, row in zip(shards, rows, strict=True):
            s.join(row, full, joined)
        assert np.array_equal(joined, target)
        model = target


def test_stratified_blocks_take_an_even_share_of_every_owner():
    n, width = 4, 64
    seen = np.zeros(width)
    for round_index in range(1, 41):
        (plan,) = draw_stratified([width], n, 7, round_index)
        bounds = owner_bounds(width, n)
        assert sorted(plan.ravel().tolist()) == list(range(width))  # a partition
        for worker in range(n):
            owners = np.searchsorted(bounds, plan[worker], side="right") - 1
            assert np.array_equal(np.bincount(owners, minlength=n), np.full(n, width // n // n))
        seen[plan[0]] += 1
    assert plan.shape == (n, block_sizes(width, n).max())
    assert seen.min() > 0  # worker 0 is not stuck with a fixed subset
