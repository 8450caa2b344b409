"""Channel-wise IST's subnets of a layer spec: each worker's channels, its smaller spec, and
where each of its values sits in the full flat vector (docs/algorithms.md, "Channel-wise IST").

Every partitioned tensor follows one partition (``subnet_bytes.channel_groups``: residual
additions join the two sides' channels). Per round, group g of C channels is cut into the
sizes ``block_sizes(C, n)`` from one permutation drawn from ``stream(seed, "plan", round)``;
an extending group (a pool-and-pad shortcut, C_in -> C_out) deals only its appended channels
C_in .. C_out - 1, and a worker's channels of it are its parent's followed by its appended
ones, the order in which the shortcut adds them. What a worker is told is its ``ids`` row:
per group in order, its own channels (an extending group: the appended ones), each block in
ascending order. With one worker the subnet is the network itself, entry for entry.

A worker's subnet is the spec with each partitioned layer's channels (neurons) cut to its
share; ``subnet_index`` gives, for each entry of the subnet's flat vector, its position in the
full one, so gathering is ``full[index]`` and writing back ``full[index] = sub``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from ist_cli.models.network import WEIGHTED, BatchNorm, Conv2D, Dense, Flatten, Network, Residual
from ist_cli.models.subnet import block_sizes
from ist_cli.models.subnet_bytes import channel_groups
from ist_cli.seeding import stream

INPUT = -1  # the group of the network's input channels (never partitioned)


@dataclass(frozen=True)
class Role:
    """Which channels index a parameter tensor's axes: ``in_group`` its input channels (weights
    only; -1 the network input), ``out_group`` its channels (None: the classifier's outputs,
    never partitioned); ``spatial`` features per input channel (H·W after a flatten, else 1)."""

    kind: str
    in_group: int | None
    out_group: int | None
    spatial: int = 1


def tensor_roles(net: Network) -> list[Role]:
    """The role of every tensor of ``net.layout()``, in layout order."""
    layer_groups, _ = channel_groups(net)
    weights = iter(layer_groups)
    roles: list[Role] = []

    def run(layers: Sequence, shape: tuple[int, ...], group: int | None) -> int | None:
        spatial = 1
        for layer in layers:
            if isinstance(layer, WEIGHTED):
                out = next(weights)
                roles.append(Role("W", group, out, spatial))
                if isinstance(layer, Dense) or layer.bias:
                    roles.append(Role("b", None, out))
                group, spatial = out, 1
            elif isinstance(layer, BatchNorm):
                roles.extend((Role("gamma", None, group), Role("beta", None, group)))
            elif isinstance(layer, Flatten) and len(shape) == 3:
                spatial = shape[1] * shape[2]
            elif isinstance(layer, Residual):
                body = run(layer.body, shape, group)
                if isinstance(layer.shortcut, Conv2D):  # after the body, as in the layout
                    run((layer.shortcut,), shape, group)
                group = body
            shape = layer.out_shape(shape)
        return group

    run(net.layers, tuple(net.input_shape), INPUT)
    kinds = [param.kind for param in net.layout().params]
    if kinds != [role.kind for role in roles]:
        raise ValueError(f"tensor roles {[r.kind for r in roles]} do not follow the layout {kinds}")
    return roles


class ChannelSubnets:
    """The fixed facts of channel-wise IST on ``net`` with ``n_workers``: partitions, shares, specs."""

    def __init__(self, net: Network, n_workers: int) -> None:
        self.net, self.n_workers = net, int(n_workers)
        self.layer_groups, self.groups = channel_groups(net)
        self.roles = tensor_roles(net)
        self.layout = net.layout()
        n = self.n_workers
        #: group -> (n,) channels of it each worker holds
        self.shares = {g: block_sizes(c, n) for g, (c, _) in self.groups.items() if g != INPUT}
        #: group -> (n,) channels of it each worker is told (an extending group: its appended ones)
        self.own = {g: self.shares[g] - (self.shares[p] if p is not None else 0)
                    for g, (_, p) in self.groups.items() if g != INPUT}

    def narrowest(self) -> int:
        """Channels (neurons) of the narrowest partitioned tensor: IST needs n <= this."""
        return min((c for g, (c, _) in self.groups.items() if g != INPUT), default=0)

    def id_counts(self) -> np.ndarray:
        """(n,) ids each worker's ``ids`` row holds."""
        return sum((own for own in self.own.values()), np.zeros(self.n_workers, dtype=np.int64))

    def draw(self, seed: int, round_index: int) -> np.ndarray:
        """The round's partition as (n, max ids) int32 ``ids`` rows (padded with -1)."""
        rng = stream(seed, "plan", round_index)
        counts = self.id_counts()
        rows = np.full((self.n_workers, max(int(counts.max()), 1)), -1, dtype=np.int32)
        filled = np.zeros(self.n_workers, dtype=np.int64)
        for g in sorted(self.own):
            channels, parent = self.groups[g]
            first = self.groups[parent][0] if parent is not None else 0
            permutation = first + rng.permutation(channels - first)
            start = 0
            for worker, size in enumerate(self.own[g]):
                block = np.sort(permutation[start : start + size])
                rows[worker, filled[worker] : filled[worker] + size] = block
                filled[worker] += size
                start += size
        return rows

    def channels_of(self, ids: np.ndarray, worker: int) -> dict[int, np.ndarray]:
        """Group -> worker ``worker``'s channels of it (int64, in its subnet's order), from its ``ids`` row."""
        out: dict[int, np.ndarray] = {INPUT: np.arange(self.groups[INPUT][0], dtype=np.int64)}
        start = 0
        for g in sorted(self.own):
            size = int(self.own[g][worker])
            mine = np.asarray(ids[start : start + size], dtype=np.int64)
            parent = self.groups[g][1]
            out[g] = np.concatenate([out[parent], mine]) if parent is not None else mine
            start += size
        return out

    def network(self, worker: int) -> Network:
        """Worker ``worker``'s subnet: every partitioned layer cut to its share of channels."""
        groups = iter(self.layer_groups)

        def cut(layer):
            group = next(groups)
            if group is None:
                return layer
            share = int(self.shares[group][worker])
            return replace(layer, units=share) if isinstance(layer, Dense) else replace(layer, channels=share)

        def shrink(layers: Sequence) -> tuple:
            out = []
            for layer in layers:
                if isinstance(layer, WEIGHTED):
                    out.append(cut(layer))
                elif isinstance(layer, Residual):
                    body = shrink(layer.body)
                    shortcut = cut(layer.shortcut) if isinstance(layer.shortcut, Conv2D) else layer.shortcut
                    out.append(replace(layer, body=body, shortcut=shortcut))
                else:
                    out.append(layer)
            return tuple(out)

        return Network(tuple(self.net.input_shape), shrink(self.net.layers))

    def subnet_index(self, ids: np.ndarray, worker: int) -> np.ndarray:
        """(values,) int64: entry k of the worker's subnet vector is entry ``index[k]`` of the full one."""
        channels = self.channels_of(ids, worker)
        parts = []
        for param, role in zip(self.layout.params, self.roles, strict=True):
            count = param.shape[-1] if role.kind == "W" else param.shape[0]
            out = channels[role.out_group] if role.out_group is not None else np.arange(count, dtype=np.int64)
            if role.kind != "W":
                parts.append(param.offset + out)
                continue
            taps, fan_in = int(np.prod(param.shape[:-2], dtype=np.int64)), param.shape[-2]
            spatial = np.arange(role.spatial, dtype=np.int64)
            rows = (channels[role.in_group][:, None] * role.spatial + spatial[None, :]).ravel()
            flat = (np.arange(taps, dtype=np.int64)[:, None, None] * fan_in + rows[None, :, None]) * count \
                + out[None, None, :]
            parts.append(param.offset + flat.ravel())
        return np.concatenate(parts)

    def shared_span(self, worker: int) -> tuple[int, int]:
        """[start, stop) of the classifier bias in worker ``worker``'s subnet vector: the one
        tensor every worker holds whole (the coordinator averages it; the rest is disjoint)."""
        layout = self.network(worker).layout()
        last = layout.params[-1]
        if self.roles[-1] != Role("b", None, None):
            raise ValueError("the network does not end in a classifier with a bias")
        return last.offset, last.offset + last.size
