"""ResIST on a residual convnet (Dun et al.; docs/algorithms.md, "ResIST").

Each round the coordinator assigns the partitioned residual blocks to workers
(``models.resist_assignment``). Worker i receives its sub-ResNet (the shared layers and its
blocks, ``models.resist_subnet``) and the ids of its blocks, trains it for R local steps and
sends it back. The coordinator then averages every shared parameter over all workers and
every block over the workers that held it. Evaluation runs the whole network with each
partitioned branch scaled by c = max(1/n, b/m).

Local SGD's coordinator and replica worker with three changes: what crosses (a sub-ResNet,
not a replica), the averaging (per piece, over its holders) and the evaluation's scaling.
A worker keeps a momentum buffer for every parameter of the full model (its ``velocity``
row): a parameter's buffer moves in the rounds the worker trains it, so one worker holding
every block is single-worker SGD, bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from ist_cli.algorithms.convnet import ConvLocalSGD, ConvReplicaWorker, ConvTraining
from ist_cli.algorithms.plans import ConvNetResISTPlan
from ist_cli.comm import Traffic
from ist_cli.errors import UserError
from ist_cli.models.network_driver import NetworkDriver
from ist_cli.models.resist_assignment import blocks_per_worker, draw_assignment
from ist_cli.models.resist_subnet import BlockSplit
from ist_cli.models.subnet_bytes import resist_traffic
from ist_cli.runtime.arena import ArraySpec
from ist_cli.runtime.transport import Exchange, Region


@dataclass(frozen=True)
class ResISTTraining(ConvTraining):
    """A convnet worker's training settings and the minimum blocks per worker (b)."""

    min_blocks: int = 0


def eval_scale(n_workers: int, min_blocks: int, n_blocks: int) -> float:
    """c = max(1/n, b/m): about the share of the partitioned blocks a worker trained with."""
    return max(1.0 / n_workers, min_blocks / n_blocks)


def uniform_values(split: BlockSplit, n_workers: int, min_blocks: int) -> np.ndarray:
    """Per worker the values of its sub-ResNet, the same every round: |shared| + s_i·|block|.

    A worker must know how many values arrive before it is told its block ids, so the
    partitioned blocks must all have one size (true of every spec whose partitioned blocks
    lie in one stage, as ``preact_resnet``'s do)."""
    if len(set(split.sizes)) != 1:
        raise UserError(f"--arch: the partitioned blocks have {len(set(split.sizes))} different sizes; "
                        "expected blocks of one size (one stage) for ResIST")
    held = blocks_per_worker(split.n_blocks, n_workers, min_blocks)
    return split.shared + held * split.sizes[0]


class ResISTWorker(ConvReplicaWorker):
    """Down: its block ids (``ids``) and its sub-ResNet (``sub``); up: the trained sub-ResNet."""

    training: ResISTTraining

    def setup(self, arrays: dict[str, np.ndarray], worker: int) -> None:
        super().setup(arrays, worker)
        t = self.training
        self.split = BlockSplit.of(t.net)
        self.held_count = int(blocks_per_worker(self.split.n_blocks, t.n_workers, t.min_blocks)[worker])
        self.values = int(uniform_values(self.split, t.n_workers, t.min_blocks)[worker])
        self.ids = arrays["ids"][worker]
        self.submask = arrays["submask"][worker] if "submask" in arrays else self.mask
        self._drivers: dict[tuple[int, ...], NetworkDriver] = {}

    def held(self) -> np.ndarray:
        return self.ids[: self.held_count].astype(np.int64)

    def exchange(self, round_index: int) -> Exchange:
        values = self.pruned(Region("sub", self.worker, self.values), Region("submask", self.worker, self.values))
        # the ids first: a worker derives its values' mask from them (``derive_masks``)
        ids = (Region("ids", self.worker, self.held_count),) if self.held_count else ()
        return Exchange(down=(*ids, values), up=(values,))

    def pack_down(self, round_index: int) -> None:
        # ``ids`` was written by the coordinator's ``plan_round``
        self.split.gather(self.model, self.held(), self.sub)
        if self.mask.size:
            self.derive_masks(round_index)

    def derive_masks(self, round_index: int) -> None:
        """The sub-ResNet's share of the fixed pruning mask, gathered like its values."""
        self.split.gather(self.mask, self.held(), self.submask)

    def driver(self, held: np.ndarray) -> NetworkDriver:
        key = tuple(int(j) for j in held)
        if key not in self._drivers:
            self._drivers[key] = NetworkDriver(self.split.subnet(held))
        return self._drivers[key]

    def step(self, round_index: int, payload: Any) -> float:
        held = self.held()
        driver = self.driver(held)
        size = driver.size
        velocity = np.empty(size, dtype=self.velocity.dtype)
        self.split.gather(self.velocity, held, velocity)
        mask = self.submask[:size] if self.mask.size else self.mask
        loss = self.train(driver, self.sub[:size], self.grad[:size], velocity, round_index, mask)
        self.split.scatter(velocity, held, self.velocity)
        return loss

    def unpack_up(self, round_index: int) -> None:
        """Nothing: the coordinator averages the sub-ResNets (``ResIST.aggregate``)."""


class ResIST(ConvLocalSGD):
    worker_class = ResISTWorker
    plan = ConvNetResISTPlan

    def build_model(self) -> None:
        super().build_model()
        try:
            self.split = BlockSplit.of(self.net)
        except ValueError as exc:
            raise UserError(f"--arch: {self.settings.arch}: {exc}; expected --arch preact-resnet") from None
        s = self.settings
        self.values = uniform_values(self.split, s.workers, s.min_blocks)
        self.scale = eval_scale(s.workers, s.min_blocks, self.split.n_blocks)
        self.branch_ends = self.split.branch_ends()
        self.assignment: tuple[np.ndarray, ...] = ()

    def training(self) -> ResISTTraining:
        base = super().training()
        return ResISTTraining(**{f.name: getattr(base, f.name) for f in fields(base)},
                              min_blocks=self.settings.min_blocks)

    def row_size(self) -> int:
        """The largest sub-ResNet's values."""
        return int(self.values.max())

    def buffers(self) -> ArraySpec:
        n, dt = self.n_workers, self.dtype.str
        held = blocks_per_worker(self.split.n_blocks, n, self.settings.min_blocks)
        return {**super().buffers(),
                "velocity": ((n, self.layout.size), dt),  # a momentum buffer per parameter of the full model
                "ids": ((n, max(int(held.max()), 1)), "i4")}  # int32: INDEX_BYTES each

    def plan_round(self, arrays: dict[str, np.ndarray], round_index: int) -> None:
        super().plan_round(arrays, round_index)
        s = self.settings
        self.assignment = draw_assignment(self.split.n_blocks, self.n_workers, s.min_blocks, s.seed, round_index)
        for worker, held in enumerate(self.assignment):
            arrays["ids"][worker, : held.size] = held

    def aggregate(self, arrays: dict[str, np.ndarray], round_index: int, results: Sequence[Any]) -> None:
        """Each piece of the model <- the mean of the copies of the workers that held it, added
        in worker order in float64: shared pieces over all n, block j over its holders."""
        total = np.zeros(self.layout.size)
        holders = np.zeros(self.layout.size)
        for worker, held in enumerate(self.assignment):
            sub = arrays["sub"][worker]
            for piece in self.split.pieces(held):
                total[piece.start : piece.stop] += sub[piece.sub_start : piece.sub_start + piece.stop - piece.start]
                holders[piece.start : piece.stop] += 1.0
        model = arrays["model"]
        held_now = holders > 0  # every entry, as every block has a holder; kept general
        model[held_now] = total[held_now] / holders[held_now]

    def round_traffic(self, round_index: int) -> Traffic:
        """Worker i receives its P_i values and the int32 ids of its blocks, and returns the P_i
        values; a pruned run sends only the kept values (the mask is known to all)."""
        kept = None
        if self.keep is not None:
            kept = np.array([self._kept(held) for held in self.assignment], dtype=np.float64)
        return resist_traffic(self.net, self.assignment, self.dtype.itemsize, values=kept)

    def _kept(self, held: np.ndarray) -> float:
        keep = self.keep
        return float(sum(int(keep[p.start : p.stop].sum()) for p in self.split.pieces(held)))

    def logits(self, model: np.ndarray, X: np.ndarray) -> np.ndarray:
        """The whole network with every partitioned branch scaled by c (its last layer's
        parameters multiplied by c: the same function)."""
        if self.scale != 1.0:
            model = model.copy()
            for start, stop in self.branch_ends:
                model[start:stop] *= model.dtype.type(self.scale)
        return self.driver.logits(model, X)

    def summary_extras(self) -> dict[str, Any]:
        return {**super().summary_extras(), "resist_eval_scale": self.scale, "partitioned_blocks": self.split.n_blocks}

