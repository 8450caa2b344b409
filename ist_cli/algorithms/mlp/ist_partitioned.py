"""IST with a partitioned server (``--server partitioned``): the model lives in the workers' shards.

Worker k owns the hidden neurons of block k of every layer (``models.shards``): its shard
holds their incoming weights, biases and batch-norm gamma/beta, and the last hidden layer's
outgoing weights. A round: every process draws the partition from ``stream(seed, "plan",
round)`` (nothing about it is sent); owner k sends worker i the piece of subnet i it owns;
worker i trains R local steps exactly as under the central server and sends each piece
back to its owner, which writes it into its shard. Weights between neurons of different
blocks are in no subnet and stay with their owner, untouched. The output bias, shared by
every subnet, stays with the coordinator, which averages it as the central server does.
Same subnets, same steps, same write-back: the same ``/final`` bit for bit.

With shared memory the shards are rows of the arena and worker i copies its pieces itself
(``pack_down``/``unpack_up``); over MPI the ranks exchange them directly
(``runtime.mpi_peers``). The coordinator assembles the model from the shards only on
evaluation rounds (over MPI the owners send their shards then) and for ``/final``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ist_cli.algorithms.mlp.ist import IST, ISTWorker
from ist_cli.comm import Traffic, pair_traffic
from ist_cli.models.mlp import B
from ist_cli.models.shards import Piece, draw_plans, shard_layout
from ist_cli.models.subnet import neuron_index, subnet_layout
from ist_cli.runtime.arena import ArraySpec
from ist_cli.runtime.transport import Region
from ist_cli.training.goal import EvalSchedule


class PartitionedISTWorker(ISTWorker):
    """Worker i, and owner i of shard i. Shared memory: ``pack_down``/``unpack_up`` move the
    pieces between the arena's shard rows and ``sub``. MPI (``peers``): ``give``/``accept``
    before the step and ``hand_back``/``keep`` after it, on the rank's private arrays."""

    peers = True

    def __init__(self, training: Any, rule: str, schedule: EvalSchedule) -> None:
        super().__init__(training)
        self.rule, self.schedule = rule, schedule

    def setup(self, arrays: dict[str, np.ndarray], worker: int) -> None:
        super().setup(arrays, worker)
        t = self.training
        self.shards = arrays["shard"]
        self.owners = [shard_layout(t.widths, t.n_workers, k, t.batch_norm) for k in range(t.n_workers)]
        self.subnets = [subnet_layout(t.widths, t.n_workers, w, t.batch_norm) for w in range(t.n_workers)]
        self.bias_at = int(self.layout.offsets[self.layout.n_layers - 1, B])
        self.full_bias_at = int(self.full.offsets[self.full.n_layers - 1, B])
        self.classes = int(t.widths[-1])
        self._round, self._plans, self._pieces = -1, [], {}
        self.shard_mask = np.zeros(0, dtype=self.model.dtype)
        if t.study.sparse:  # this owner's share of the resident pruning mask (MPI: only its own is used)
            self.shard_mask = np.zeros(self.owners[worker].size, dtype=self.model.dtype)
            self.owners[worker].split(self.mask, self.full, self.shard_mask)

    def mpi_peers(self) -> Any:
        from ist_cli.runtime import mpi_peers  # noqa: PLC0415 (MPI only: mpi4py is optional)

        return mpi_peers

    def lost_with(self, worker: int) -> str:
        return (f"; its shard {worker} (the parameters of hidden-neuron block {worker} of every layer) is lost "
                "with it, so the run cannot go on")

    def resident(self, worker: int) -> tuple[Region, ...]:
        # the owner's shard starts where the coordinator initialised it; from then on it lives there
        return (*super().resident(worker), Region("shard", worker))

    # -- the round's partition, drawn here -----------------------------------------
    def piece(self, round_index: int, owner: int, worker: int) -> Piece:
        """The piece (owner -> worker) of this round."""
        t = self.training
        if round_index != self._round:
            self._round, self._pieces = round_index, {}
            self._plans = draw_plans(self.rule, t.widths[1:-1], t.n_workers, t.seed, round_index)
        if (owner, worker) not in self._pieces:
            neurons, starts = neuron_index(t.widths, self._plans, worker)
            self._pieces[owner, worker] = Piece(self.owners[owner], self.subnets[worker], neurons, starts)
        return self._pieces[owner, worker]

    def begin(self, round_index: int) -> None:
        """Before any piece arrives: this worker's neuron ids (and from them its mask), a clean subnet."""
        self.piece(round_index, self.worker, self.worker)
        neurons, starts = neuron_index(self.training.widths, self._plans, self.worker)
        self.ids[: self.hidden] = neurons[starts[1] : starts[-2]]
        self.sub[: self.layout.size] = 0.0  # entries no piece carries are pruned ones: 0
        if self.mask.size:
            self.derive_masks(round_index)

    # -- shared memory (and the coordinator's copy under the in-process transport) ----
    def pack_down(self, round_index: int) -> None:
        self.begin(round_index)
        for owner in range(self.training.n_workers):
            piece = self.piece(round_index, owner, self.worker)
            piece.to_sub(piece.from_shard(self.shards[owner]), self.sub)
        self.bias()[...] = self.bias_down()

    def unpack_up(self, round_index: int) -> None:
        # safe in parallel: every entry of a shard is in at most one subnet
        for owner in range(self.training.n_workers):
            piece = self.piece(round_index, owner, self.worker)
            piece.to_shard(piece.from_sub(self.sub), self.shards[owner])

    # -- MPI: pieces between ranks -------------------------------------------------
    def _kept_by_owner(self, piece: Piece) -> np.ndarray | None:
        return piece.from_shard(self.shard_mask) != 0 if self.shard_mask.size else None

    def _kept_by_worker(self, piece: Piece) -> np.ndarray | None:
        return piece.from_sub(self.submask) != 0 if self.mask.size else None

    def give(self, round_index: int, worker: int) -> np.ndarray:
        """As owner: the values of ``worker``'s piece (a pruned run: the kept ones, packed)."""
        piece = self.piece(round_index, self.worker, worker)
        values, kept = piece.from_shard(self.shards[self.worker]), self._kept_by_owner(piece)
        return values if kept is None else values[kept]

    def accept(self, round_index: int, owner: int, values: np.ndarray) -> None:
        """As worker: write ``owner``'s piece (as ``give`` sent it) into the subnet."""
        piece = self.piece(round_index, owner, self.worker)
        piece.to_sub(_unpacked(values, self._kept_by_worker(piece), piece.size), self.sub)

    def piece_buffer(self, round_index: int, owner: int) -> np.ndarray:
        """As worker: where ``owner``'s piece is received."""
        return self._buffer(self._kept_by_worker(self.piece(round_index, owner, self.worker)),
                            self.piece(round_index, owner, self.worker).size)

    def hand_back(self, round_index: int, owner: int) -> np.ndarray:
        """As worker: the trained values of the piece ``owner`` holds."""
        piece = self.piece(round_index, owner, self.worker)
        values, kept = piece.from_sub(self.sub), self._kept_by_worker(piece)
        return values if kept is None else values[kept]

    def return_buffer(self, round_index: int, worker: int) -> np.ndarray:
        """As owner: where ``worker``'s trained piece is received."""
        piece = self.piece(round_index, self.worker, worker)
        return self._buffer(self._kept_by_owner(piece), piece.size)

    def keep(self, round_index: int, worker: int, values: np.ndarray) -> None:
        """As owner: write ``worker``'s trained piece back into the shard."""
        piece = self.piece(round_index, self.worker, worker)
        piece.to_shard(_unpacked(values, self._kept_by_owner(piece), piece.size), self.shards[self.worker])

    def _buffer(self, kept: np.ndarray | None, size: int) -> np.ndarray:
        return np.empty(size if kept is None else int(kept.sum()), dtype=self.model.dtype)

    # -- what crosses to and from the coordinator --------------------------------------
    def bias(self) -> np.ndarray:
        """This worker's copy of the output bias, in its subnet."""
        return self.sub[self.bias_at : self.bias_at + self.classes]

    def bias_down(self) -> np.ndarray:
        """The coordinator's output bias (in its ``model``)."""
        return self.model[self.full_bias_at : self.full_bias_at + self.classes]

    def own_shard(self) -> np.ndarray:
        return self.shards[self.worker][: self.owners[self.worker].size]

    def param_bytes(self) -> int:
        """Bytes of parameters this rank holds: its shard and the subnet it trains."""
        return (self.owners[self.worker].size + self.layout.size) * self.model.itemsize

    def collects(self, round_index: int) -> bool:
        """Do the owners send their shards to the coordinator after this round (it evaluates)?"""
        return self.schedule.due(round_index)


def _unpacked(values: np.ndarray, kept: np.ndarray | None, size: int) -> np.ndarray:
    if kept is None:
        return values
    full = np.zeros(size, dtype=values.dtype)
    full[kept] = values
    return full


class ISTPartitioned(IST):
    """The coordinator of ``--server partitioned``: plans nothing it sends, averages the output
    bias, and joins the shards into ``model`` when it evaluates and at the end."""

    worker_class = PartitionedISTWorker

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        n = self.n_workers
        self.owners = [shard_layout(self.widths, n, k, self.batch_norm) for k in range(n)]
        self._pairs_total = np.zeros((2, n + 1, n + 1))
        self._rounds_counted = 0
        self._mask_shards: list[np.ndarray] = []

    def buffers(self) -> ArraySpec:
        size = max(owner.size for owner in self.owners)
        return {**super().buffers(), "shard": ((self.n_workers, max(size, 1)), self.dtype.str)}

    def initialize(self, arrays: dict[str, np.ndarray]) -> None:
        super().initialize(arrays)
        for k, owner in enumerate(self.owners):
            owner.split(arrays["model"], self.layout, arrays["shard"][k])
            if self.keep is not None:
                part = np.zeros(owner.size)
                owner.split(self.keep.astype(np.float64), self.layout, part)
                self._mask_shards.append(part)

    def worker_program(self) -> PartitionedISTWorker:
        return PartitionedISTWorker(self.training(), self.settings.partition_rule, self.eval_schedule())

    def aggregate(self, arrays: dict[str, np.ndarray], round_index: int, results: Sequence[Any]) -> None:
        super().aggregate(arrays, round_index, results)  # the output bias, from each worker's copy
        if self.eval_schedule().due(round_index):
            self._join(arrays)

    def _join(self, arrays: dict[str, np.ndarray]) -> None:
        for k, owner in enumerate(self.owners):
            owner.join(arrays["shard"][k], self.layout, arrays["model"])

    def final_params(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._join(arrays)
        return dict(super().final_params(arrays))

    def round_pairs(self, round_index: int) -> np.ndarray:
        """(2, n+1, n+1) bytes per phase from rank to rank (rank 0 the coordinator, rank k+1 owner/worker k)."""
        n, value = self.n_workers, self.dtype.itemsize
        plans = draw_plans(self.settings.partition_rule, self.widths[1:-1], n, self.settings.seed, round_index)
        pairs = np.zeros((2, n + 1, n + 1))
        for worker in range(n):
            neurons, starts = neuron_index(self.widths, plans, worker)
            sub = subnet_layout(self.widths, n, worker, self.batch_norm)
            for owner in range(n):
                if owner == worker:
                    continue
                piece = Piece(self.owners[owner], sub, neurons, starts)
                count = piece.size if not self._mask_shards else int(np.count_nonzero(
                    piece.from_shard(self._mask_shards[owner])))
                pairs[0, owner + 1, worker + 1] = pairs[1, worker + 1, owner + 1] = count * value
            pairs[0, 0, worker + 1] = pairs[1, worker + 1, 0] = self.widths[-1] * value  # the output bias
            if self.eval_schedule().due(round_index):
                pairs[1, worker + 1, 0] += self.owners[worker].size * value  # the shard, for evaluation
        return pairs

    def round_traffic(self, round_index: int) -> Traffic:
        """Pieces between owners and workers, the output bias to and from the coordinator,
        and the shards on evaluation rounds (docs/algorithms.md, "The partitioned server")."""
        pairs = self.round_pairs(round_index)
        self._pairs_total += pairs
        self._rounds_counted += 1
        return pair_traffic(pairs)

    def summary_extras(self) -> dict[str, Any]:
        per_rank = self._pairs_total.sum(axis=(0, 2)) + self._pairs_total.sum(axis=(0, 1))  # sent + received
        return {**super().summary_extras(), "server": "partitioned",
                "busiest_rank_bytes_per_round": float(per_rank.max() / max(self._rounds_counted, 1)),
                "bytes_pairs": self._pairs_total.sum(axis=0).tolist()}

