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
(``runtime.mpi_peers``). No process assembles the model: each owner builds its shard from
the init stream (``models.shard_init``), evaluation is model parallel
(``models.sharded_forward``: the owners exchange activation blocks, the coordinator sums
their partial logits), and ``/final`` is written slice by slice from the shards. With shared
memory the coordinator does the owners' part itself, on the arena's shard rows, in the same
order, so both transports give the same numbers. A pruned run is the exception: its mask is
chosen on the whole initial model (SNIP), which the coordinator builds for that.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ist_cli.algorithms.mlp.common import EVAL_CHUNK, logit_scores
from ist_cli.algorithms.mlp.ist import IST, ISTWorker
from ist_cli.algorithms.plans import FINAL_BLOCK_BYTES
from ist_cli.comm import Traffic, pair_traffic
from ist_cli.io.sliced import SlicedArray
from ist_cli.kernels import mlp as kernels
from ist_cli.models.mlp import BETA, GAMMA, B, W
from ist_cli.models.shard_init import initial_output_bias, initial_shard
from ist_cli.models.sharded_forward import Gather, combine, local_partials, owner_partial
from ist_cli.models.shards import Piece, ShardLayout, draw_plans, shard_layout
from ist_cli.models.subnet import neuron_index, subnet_layout
from ist_cli.runtime.arena import ArraySpec
from ist_cli.runtime.transport import Region, Transport


@runtime_checkable
class ShardHost(Protocol):
    """A transport whose workers hold the shards themselves (MPI ranks): the coordinator asks it."""

    def partial_logits(self, round_index: int) -> list[np.ndarray]:
        """Every owner's partial logits of the evaluation rows (``PartitionedISTWorker.evaluate_partials``)."""

    def shard_part(self, owner: int, part: int, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of part ``part`` of ``owner``'s shard (``PartitionedISTWorker.final_part``)."""

    def holds_shards(self) -> bool:
        """Can the owners still be asked for their shards (the run did not break mid-round)?"""


class PartitionedISTWorker(ISTWorker):
    """Worker i, and owner i of shard i. Shared memory: ``pack_down``/``unpack_up`` move the
    pieces between the arena's shard rows and ``sub``. MPI (``peers``): ``give``/``accept``
    before the step and ``hand_back``/``keep`` after it, on the rank's private arrays."""

    peers = True

    def warm_kernels(self) -> None:
        super().warm_kernels()
        kernels.warm_up_pieces(self.training.dtype)

    def __init__(self, training: Any, rule: str, eval_sets: tuple[str, ...]) -> None:
        super().__init__(training)
        self.rule, self.eval_sets = rule, eval_sets

    def setup(self, arrays: dict[str, np.ndarray], worker: int) -> None:
        super().setup(arrays, worker)
        t = self.training
        self.shards = arrays["shard"]
        self.owners = [shard_layout(t.widths, t.n_workers, k, t.batch_norm) for k in range(t.n_workers)]
        self.subnets = [subnet_layout(t.widths, t.n_workers, w, t.batch_norm) for w in range(t.n_workers)]
        self.bias_at = int(self.layout.offsets[self.layout.n_layers - 1, B])
        self.full_bias_at = int(self.full.offsets[self.full.n_layers - 1, B])
        self.classes = int(t.widths[-1])
        self.eval_inputs = [(arrays["X_train"], arrays["eval_rows"]),
                            *((arrays[f"X_{name}"], None) for name in self.eval_sets if name != "train")]
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
        # no shard: the owner builds its own (``build_shard``); the evaluation rows, for the model-parallel pass
        sets = (Region(f"X_{name}") for name in self.eval_sets if name != "train")
        return (*super().resident(worker), Region("eval_rows"), *sets)

    def build_shard(self) -> None:
        """As an MPI rank: this owner's shard of the initial model, drawn here (never the whole
        model), pruned entries zeroed; it lives in this process from now on."""
        t, owner = self.training, self.owners[self.worker]
        shard = np.zeros(max(owner.size, 1), dtype=self.model.dtype)
        initial_shard(owner, t.seed, self.model.dtype, shard)
        if self.shard_mask.size:
            shard[: owner.size][self.shard_mask == 0] = 0.0
        self.shards = {self.worker: shard}  # only its own is ever read here

    # -- model-parallel evaluation and the shard's parts for /final (MPI ranks) -----------
    def evaluate_partials(self, gather: Gather) -> np.ndarray:
        """(eval rows, classes): this owner's partial logits of every evaluation set, in
        ``EVAL_CHUNK`` batches as the coordinator scores them; ``gather`` all-gathers a hidden layer."""
        owner, shard = self.owners[self.worker], self.shards[self.worker]
        out = []
        for X, rows in self.eval_inputs:
            total = rows.size if rows is not None else X.shape[0]
            for start in range(0, total, EVAL_CHUNK):
                stop = min(start + EVAL_CHUNK, total)
                part = X[rows[start:stop]] if rows is not None else X[start:stop]
                out.append(owner_partial(owner, shard, part, gather))
        return np.concatenate(out)

    def block_widths(self, layer: int) -> list[int]:
        """Every owner's neurons of hidden layer ``layer`` (what an all-gather receives from each)."""
        return [hi - lo for lo, hi in (owner.range_of(layer) for owner in self.owners)]

    def final_part(self, part: int, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of part ``part`` (``ShardLayout.regions`` order) of this owner's shard."""
        return shard_part(self.owners[self.worker], self.shards[self.worker], part, start, stop)

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
            self.piece(round_index, owner, self.worker).shard_to_sub(self.shards[owner], self.sub)
        self.bias()[...] = self.bias_down()

    def unpack_up(self, round_index: int) -> None:
        # safe in parallel: every entry of a shard is in at most one subnet
        for owner in range(self.training.n_workers):
            self.piece(round_index, owner, self.worker).sub_to_shard(self.sub, self.shards[owner])

    # -- MPI: pieces between ranks -------------------------------------------------
    def _kept_by_owner(self, piece: Piece) -> np.ndarray | None:
        return piece.from_shard(self.shard_mask) != 0 if self.shard_mask.size else None

    def _kept_by_worker(self, piece: Piece) -> np.ndarray | None:
        return piece.from_sub(self.submask) != 0 if self.mask.size else None

    def accept_own(self, round_index: int) -> None:
        """As owner and worker at once: the piece of this worker's subnet that it owns, into the
        subnet (a pruned entry is 0 in the shard, so copying it is what ``give`` then ``accept`` do)."""
        self.piece(round_index, self.worker, self.worker).shard_to_sub(self.shards[self.worker], self.sub)

    def keep_own(self, round_index: int) -> None:
        """The trained piece this worker owns, back into its shard (``hand_back`` then ``keep``)."""
        self.piece(round_index, self.worker, self.worker).sub_to_shard(self.sub, self.shards[self.worker])

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

    def param_bytes(self) -> int:
        """Bytes of parameters this rank holds: its shard and the subnet it trains."""
        return (self.owners[self.worker].size + self.layout.size) * self.model.itemsize

    def eval_rows_total(self) -> int:
        return sum(rows.size if rows is not None else X.shape[0] for X, rows in self.eval_inputs)


def shard_part(owner: ShardLayout, shard: np.ndarray, part: int, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of part ``part`` of ``owner``'s flat ``shard`` (a weight part's rows, a vector's entries)."""
    kind, layer, _ = owner.regions()[part]
    whole = owner.weight(shard, layer) if kind == W else owner.vector(shard, layer, kind)
    return whole[start:stop]


def _kind_and_layer(name: str) -> tuple[int, int]:
    """``W3`` -> (W, 3), ``gamma0`` -> (GAMMA, 0): a ``/final`` dataset's parameter kind and layer."""
    head = name.rstrip("0123456789")
    return {"W": W, "b": B, "gamma": GAMMA, "beta": BETA}[head], int(name[len(head):])


def _unpacked(values: np.ndarray, kept: np.ndarray | None, size: int) -> np.ndarray:
    if kept is None:
        return values
    full = np.zeros(size, dtype=values.dtype)
    full[kept] = values
    return full


class ISTPartitioned(IST):
    """The coordinator of ``--server partitioned``: plans nothing it sends, averages the output
    bias, sums the owners' partial logits when it evaluates and writes ``/final`` slice by slice."""

    worker_class = PartitionedISTWorker

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        n = self.n_workers
        self.owners = [shard_layout(self.widths, n, k, self.batch_norm) for k in range(n)]
        self._pairs_total = np.zeros((2, n + 1, n + 1))
        self._rounds_counted = 0
        self._mask_shards: list[np.ndarray] = []
        self._host: ShardHost | None = None
        self._arrays: dict[str, np.ndarray] = {}
        self._round = 0  # the last round aggregated
        self._logits: dict[str, np.ndarray] = {}  # per evaluation set, from the last evaluation
        self._n_val = self.data.n_val
        self._sets = ("train", "test", "val") if self._n_val else ("train", "test")

    def buffers(self) -> ArraySpec:
        size = max(owner.size for owner in self.owners)
        return {**super().buffers(), "shard": ((self.n_workers, max(size, 1)), self.dtype.str),
                "eval_rows": ((self._eval_rows.size,), "i8")}

    def initialize(self, arrays: dict[str, np.ndarray]) -> None:
        super().initialize(arrays)
        kernels.warm_up_pieces(self.dtype.name)  # this process evaluates with them over shared memory
        arrays["eval_rows"][...] = self._eval_rows
        self._arrays = arrays

    def initialize_model(self, arrays: dict[str, np.ndarray]) -> None:
        """Only the output bias (the owners draw their shards); a pruned run chooses its mask on
        the whole initial model, built here for that."""
        if self.study.sparse:
            super().initialize_model(arrays)
            for owner in self.owners:
                part = np.zeros(owner.size)
                owner.split(self.keep.astype(np.float64), self.layout, part)
                self._mask_shards.append(part)
        start = int(self.layout.offsets[self.layout.n_layers - 1, B])
        arrays["model"][start : start + self.widths[-1]] = initial_output_bias(self.layout.widths, self.settings.seed,
                                                                               self.dtype)

    def attach(self, workers: Transport | None) -> None:
        """Over MPI the owners hold their shards; otherwise the coordinator draws them into the
        arena's shard rows now, owner by owner, as each owner would."""
        self._host = workers if isinstance(workers, ShardHost) else None
        if self._host is None:
            for k, owner in enumerate(self.owners):
                row = self._arrays["shard"][k]
                initial_shard(owner, self.settings.seed, self.dtype, row)
                if self._mask_shards:
                    row[: owner.size][self._mask_shards[k] == 0] = 0.0

    def worker_program(self) -> PartitionedISTWorker:
        return PartitionedISTWorker(self.training(), self.settings.partition_rule, self._sets)

    def _eval_sets(self, arrays: dict[str, np.ndarray]) -> tuple[str, ...]:
        return self._sets

    def aggregate(self, arrays: dict[str, np.ndarray], round_index: int, results: Sequence[Any]) -> None:
        super().aggregate(arrays, round_index, results)  # the output bias, from each worker's copy
        self._round = round_index

    # -- evaluation: the owners' partial logits, summed here ---------------------------
    def evaluate(self, arrays: dict[str, np.ndarray]) -> dict[str, float]:
        """Every set's logits at once (model parallel), then the metrics as ``MLPMethod`` reports them."""
        partials = self._host.partial_logits(self._round) if self._host is not None else self._local_partials(arrays)
        start = int(self.layout.offsets[self.layout.n_layers - 1, B])
        logits = combine(partials, arrays["model"][start : start + self.widths[-1]])
        self._logits, at = {}, 0
        for name in self._eval_sets(arrays):
            rows = self._eval_rows.size if name == "train" else arrays[f"X_{name}"].shape[0]
            self._logits[name], at = logits[at : at + rows], at + rows
        return super().evaluate(arrays)

    def _local_partials(self, arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
        """What the owners compute over MPI, done here on the arena's shard rows (same order)."""
        shards = [arrays["shard"][k] for k in range(self.n_workers)]
        out: list[list[np.ndarray]] = [[] for _ in self.owners]
        for name in self._eval_sets(arrays):
            X = arrays["X_train"][self._eval_rows] if name == "train" else arrays[f"X_{name}"]
            for start in range(0, X.shape[0], EVAL_CHUNK):
                for k, part in enumerate(local_partials(self.owners, shards, X[start : start + EVAL_CHUNK])):
                    out[k].append(part)
        return [np.concatenate(parts) for parts in out]

    def _set_metrics(self, arrays: dict[str, np.ndarray], name: str) -> dict[str, float]:
        """Loss and accuracy from the last evaluation's logits, chunk by chunk as the central server sums them."""
        logits, labels = self._logits[name], arrays[f"y_{name}"]
        if name == "train":
            labels = labels[self._eval_rows]
        loss = correct = 0.0
        with np.errstate(all="ignore"):
            for start in range(0, labels.size, EVAL_CHUNK):
                chunk_loss, chunk_correct = logit_scores(logits[start : start + EVAL_CHUNK],
                                                         labels[start : start + EVAL_CHUNK])
                loss, correct = loss + chunk_loss, correct + chunk_correct
        accuracy = correct / labels.size
        return dict(zip(self._set_columns(name), (loss / labels.size, accuracy, 1.0 - accuracy), strict=False))

    # -- /final, slice by slice ---------------------------------------------------------
    def final_params(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray | SlicedArray]:
        """The full model's datasets, each filled owner by owner in blocks of at most
        ``FINAL_BLOCK_BYTES``; nothing if the owners' shards are lost (a run broken mid-round)."""
        if self._host is not None and not self._host.holds_shards():
            return {}
        parts = {(kind, layer): j for j, (kind, layer, _) in enumerate(self.owners[0].regions())}
        out: dict[str, np.ndarray | SlicedArray] = {}
        for name, view in self.layout.named(arrays["model"]).items():
            kind, layer = _kind_and_layer(name)
            if (kind, layer) in parts:
                out[name] = SlicedArray(view.shape, view.dtype, self._blocks(arrays, parts[kind, layer]))
            else:
                out[name] = view.copy()  # the output bias, kept here
        return out

    def _blocks(self, arrays: dict[str, np.ndarray], part: int) -> Any:
        def blocks() -> Iterator[tuple[Any, np.ndarray]]:
            hidden = self.layout.n_layers - 1
            for k, owner in enumerate(self.owners):
                kind, layer, _ = owner.regions()[part]
                lo, hi = owner.range_of(layer + 1 if layer < hidden else layer)
                rows, cols = (int(owner.shapes[layer, 0]), int(owner.shapes[layer, 1])) if kind == W else (hi - lo, 1)
                step = max(1, FINAL_BLOCK_BYTES // (cols * self.dtype.itemsize))
                for start in range(0, rows, step):
                    stop = min(start + step, rows)
                    values = (self._host.shard_part(k, part, start, stop) if self._host is not None
                              else shard_part(owner, arrays["shard"][k], part, start, stop))
                    if kind == W and layer < hidden:  # columns lo:hi of every row
                        yield np.s_[start:stop, lo:hi], values.reshape(stop - start, cols)
                    elif kind == W:  # rows lo:hi of the output weights
                        yield np.s_[lo + start : lo + stop, :], values.reshape(stop - start, cols)
                    else:
                        yield np.s_[lo + start : lo + stop], values

        return blocks

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
            pairs[1] += self.eval_pairs()
        return pairs

    def eval_pairs(self) -> np.ndarray:
        """(n+1, n+1) bytes of one model-parallel evaluation: each owner's activation block of every
        hidden layer but the last to every other owner, and its partial logits to the coordinator."""
        n, value, last = self.n_workers, self.dtype.itemsize, self.layout.n_layers - 1
        rows = self._eval_rows.size + self.sizes[1] + self._n_val
        pairs = np.zeros((n + 1, n + 1))
        for layer in range(1, last):  # hidden layers 1 .. L-2 feed another hidden layer
            for k, owner in enumerate(self.owners):
                lo, hi = owner.range_of(layer)
                pairs[k + 1, 1:] += rows * (hi - lo) * value
                pairs[k + 1, k + 1] = 0.0
        pairs[1:, 0] = rows * self.widths[-1] * value
        return pairs

    def round_traffic(self, round_index: int) -> Traffic:
        """Pieces between owners and workers, the output bias to and from the coordinator,
        and on evaluation rounds the evaluation's traffic (docs/algorithms.md, "The partitioned server")."""
        pairs = self.round_pairs(round_index)
        self._pairs_total += pairs
        self._rounds_counted += 1
        return pair_traffic(pairs)

    def summary_extras(self) -> dict[str, Any]:
        per_rank = self._pairs_total.sum(axis=(0, 2)) + self._pairs_total.sum(axis=(0, 1))  # sent + received
        return {**super().summary_extras(), "server": "partitioned",
                "busiest_rank_bytes_per_round": float(per_rank.max() / max(self._rounds_counted, 1)),
                "bytes_pairs": self._pairs_total.sum(axis=0).tolist()}

