"""MPI for a program whose workers exchange pieces directly (``WorkerProgram.peers``: partitioned IST).

Rank 0 (the coordinator) holds no piece of the model but the output bias. Each worker rank
draws its own shard of the initial model when it starts (``build_shard``). Each round rank 0
sends every worker rank a 32-byte header and the output bias; the worker ranks then trade
their pieces among themselves (owner k -> worker i before the step, worker i -> owner k after
it: nonblocking sends, then polled receives in rank order, so no pair of ranks waits on the
other), and each sends rank 0 its trained output bias and a trailer: its compute seconds,
its result, its peak resident memory and parameter bytes, and the bytes it sent to and
received from every rank in both phases. Two more requests (header round -2 and -1):
evaluate (the ranks run the model-parallel forward pass, all-gathering each hidden layer's
activation blocks among themselves, and each sends rank 0 its partial logits and a trailer),
and send rows of one part of your shard (for ``/final``, one block at a time). Rank 0 counts
its own sends and receives, so ``pairs_sent`` and ``pairs_received`` (phase, source,
destination) are counted at every send and receive; they equal the method's per-pair
accounting (``ISTPartitioned.round_pairs``; an evaluation's traffic is in the up phase of its
round, the initial evaluation's apart).

Start-up, stop and a raising worker are ``runtime.mpi``'s. A worker rank that dies takes its
shard with it: the job is launched so that the other ranks survive
(``mpi_launch.relaunch_command``), rank 0 notices the loss while it waits (``rank_loss``: the
launcher's notice and the ranks' pids) and fails the run naming the lost shard, and the
survivors, which may be waiting for the dead rank's pieces, watch for rank 0's stop.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ist_cli.runtime import rank_loss
from ist_cli.runtime.budget import peak_resident_bytes
from ist_cli.runtime.mpi import (
    TAG_DATA,
    TAG_ERROR,
    TAG_HEADER,
    MPITransport,
    WorkerFailed,
    _receive,
    _stop_is_next,
    _wait,
    orphan_watch,
    release_workers,
    released,
)
from ist_cli.runtime.pool import RemoteTraceback
from ist_cli.runtime.transport import StepClock, StepTime

TAG_PIECE_DOWN, TAG_PIECE_UP, TAG_ACTIVATIONS = 11, 12, 13
DOWN, UP = 0, 1
EVALUATE, FINAL_PART = -2, -1  # header[0] of the two requests that are not rounds


class PeerTransport(MPITransport):
    """The coordinator's side: plans nothing it sends but the header and the output bias."""

    def __init__(self, program: Any, arrays: dict[str, np.ndarray], layout: Any, n_workers: int,
                 comm: Any | None = None) -> None:
        super().__init__(program, arrays, layout, n_workers, comm)
        ranks = n_workers + 1
        self.pairs_sent = np.zeros((2, ranks, ranks))
        self.pairs_received = np.zeros((2, ranks, ranks))
        self.initial_eval_received = np.zeros((ranks, ranks))  # the evaluation before round 1
        self.peak_rss = np.zeros(ranks)  # bytes, per rank (VmHWM)
        self.param_bytes = np.zeros(ranks)  # bytes of parameters each rank holds
        self.collected_at_close = 0
        self._started = False
        self._clean = False  # the last exchange ended normally: the ranks can still be asked for their shards
        self._ranks: rank_loss.RankWatch | None = None  # set once the ranks' pids are known
        self._notices = rank_loss.notices()
        self.lost: list[int] = []  # workers whose rank died
        self.watch = self._check_ranks

    def start(self) -> None:
        """Start the ranks (once: the initial evaluation may need them before the runner starts them)."""
        if self._started:
            return
        super().start()
        self._ranks = rank_loss.RankWatch(self.pids, self.hosts)
        self._started = self._clean = True
        program = self._servers[0]
        self.param_bytes[0] = program.classes * program.model.itemsize  # the output bias, all it keeps

    def _send_header(self, rank: int, *values: int) -> None:
        header = np.zeros(4, dtype=np.int64)
        header[: len(values)] = values
        self.comm.Send(header, dest=rank, tag=TAG_HEADER)
        self.bytes.control += header.nbytes

    def run_round(self, round_index: int, payloads: Sequence[Any] | None = None) -> list[tuple[StepTime, Any]]:
        if payloads is not None and any(p is not None for p in payloads):
            raise ValueError("the MPI transport moves arena regions, not per-round payloads")
        started = time.perf_counter()
        self._clean = False
        for worker, server in enumerate(self._servers):
            self._send_header(worker + 1, round_index)
            bias = np.ascontiguousarray(server.bias_down())
            self.comm.Send(bias, dest=worker + 1, tag=TAG_DATA)
            self.pairs_sent[DOWN, 0, worker + 1] += bias.nbytes
        replies = self._collect_peers(round_index)
        slowest = max(seconds.wall for seconds, _ in replies)
        self.comm_seconds = max(0.0, time.perf_counter() - started - slowest)
        self.comm_seconds_total += self.comm_seconds
        self._clean = True
        return replies

    def close(self) -> None:
        """The ranks stay while they hold a model that ``/final`` will ask for, slice by slice
        (``shard_part``); the CLI releases them once the run file is written. Otherwise they stop."""
        self.peak_rss[0] = max(self.peak_rss[0], peak_resident_bytes())
        if self.lost:  # the survivors leave without finalizing (the dead rank would never finalize)
            release_workers(self.comm, lost=[worker + 1 for worker in self.lost if worker >= 0])
        if not self.holds_shards():
            super().close()

    def holds_shards(self) -> bool:
        return self._started and self._clean

    # -- what the coordinator asks of the owners besides rounds --------------------------
    def partial_logits(self, round_index: int) -> list[np.ndarray]:
        """Every owner's partial logits of the evaluation rows: the ranks run the model-parallel
        forward pass among themselves; their traffic goes to the up phase (round 0: apart)."""
        self.start()
        self._clean = False
        n, MPI = self.n_workers, self.MPI
        for worker in range(n):
            self._send_header(worker + 1, EVALUATE)
        shape = (self._servers[0].eval_rows_total(), self._servers[0].classes)
        partials: list[np.ndarray | None] = [None] * n
        done = 0
        sent, received = np.zeros((n + 1, n + 1)), np.zeros((n + 1, n + 1))
        while done < n:
            status = _wait(self.comm, MPI, MPI.ANY_SOURCE, MPI.ANY_TAG, lambda: self._check_ranks("the evaluation"))
            rank, tag = status.Get_source(), status.Get_tag()
            self._raise_if_error(status, rank, tag, "the evaluation")
            if tag == TAG_DATA and partials[rank - 1] is None:
                partials[rank - 1] = np.empty(shape, dtype=self._servers[0].model.dtype)
                self.comm.Recv(partials[rank - 1], source=rank, tag=TAG_DATA)
                received[rank, 0] += partials[rank - 1].nbytes
            elif tag == TAG_HEADER:
                trailer = _receive(self.comm, status, np.dtype(np.float64))
                self.bytes.control += trailer.nbytes
                self.peak_rss[rank] = max(self.peak_rss[rank], trailer[0])
                counts = trailer[1:].reshape(2, n + 1)  # (sent, received) x other rank
                sent[rank, :] += counts[0]
                received[:, rank] += counts[1]
                done += 1
            else:
                raise WorkerFailed(f"worker {rank - 1} (rank {rank}) sent an unexpected message (tag {tag}) "
                                   "during the evaluation")
        if round_index > 0:
            self.pairs_sent[UP] += sent
            self.pairs_received[UP] += received
        else:
            self.initial_eval_received += received
        self._clean = True
        return [part for part in partials if part is not None]

    def shard_part(self, owner: int, part: int, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of part ``part`` of ``owner``'s shard, received here (for ``/final``)."""
        rank = owner + 1
        self._send_header(rank, FINAL_PART, part, start, stop)
        status = _wait(self.comm, self.MPI, rank, self.MPI.ANY_TAG, lambda: self._check_ranks("the writing of /final"))
        self._raise_if_error(status, rank, status.Get_tag(), "the writing of /final")
        values = _receive(self.comm, status, self._servers[0].model.dtype)
        self.collected_at_close += values.nbytes
        return values

    def _raise_if_error(self, status: Any, rank: int, tag: int, phase: str) -> None:
        if tag == TAG_ERROR:
            text = _receive(self.comm, status, np.dtype(np.uint8)).tobytes().decode(errors="replace")
            if self._ranks is not None:  # a survivor that failed because its peer died: name the loss
                self._fail_if_lost(self._ranks.wait_for_loss(1.0), phase)
            last = text.strip().splitlines()[-1] if text.strip() else "unknown error"
            raise WorkerFailed(f"worker {rank - 1} (rank {rank}, owner of shard {rank - 1}) raised during "
                               f"{phase}: {last}") from RemoteTraceback(f'\n"""\n{text}"""')

    def _check_ranks(self, phase: str) -> None:
        """While rank 0 waits: fail the run, naming the lost shard, once a worker rank has died."""
        if self._ranks is None:  # start-up: the pids are not known yet, the launcher's notice is
            if rank_loss.notices() != self._notices:
                self.lost = [-1]
                raise WorkerFailed(f"a worker rank died during {phase} (the launcher's notice); the shard it "
                                   "owned is lost with it, so the run cannot go on")
            return
        if self._ranks.due():
            self._fail_if_lost(self._ranks.lost(), phase)

    def _fail_if_lost(self, lost: list[int], phase: str) -> None:
        if not lost:
            return
        self.lost = lost
        if lost == [-1]:
            raise WorkerFailed(f"a worker rank on another host died during {phase} (the launcher's notice); "
                               "the shard it owned is lost with it, so the run cannot go on")
        ranks = " and ".join(f"worker {w} (rank {w + 1}, pid {self.pids[w]})" for w in lost)
        raise WorkerFailed(f"{ranks} died during {phase}{self.program.lost_with(lost[0])}")

    def _collect_peers(self, round_index: int) -> list[tuple[StepTime, Any]]:
        """Every worker's output bias (into its ``sub`` row), then its trailer."""
        n, MPI = self.n_workers, self.MPI
        ups = [[server.bias()] for server in self._servers]
        received = [0] * n
        replies: dict[int, tuple[float, Any]] = {}
        phase = f"round {round_index}"
        while len(replies) < n:
            status = _wait(self.comm, MPI, MPI.ANY_SOURCE, MPI.ANY_TAG, lambda: self._check_ranks(phase))
            rank, tag = status.Get_source(), status.Get_tag()
            worker = rank - 1
            self._raise_if_error(status, rank, tag, f"round {round_index}")
            if tag == TAG_DATA and received[worker] < len(ups[worker]):
                target = ups[worker][received[worker]]
                self.comm.Recv(target, source=rank, tag=TAG_DATA)
                self.pairs_received[UP, rank, 0] += target.nbytes
                received[worker] += 1
            elif tag == TAG_HEADER:
                trailer = _receive(self.comm, status, np.dtype(np.float64))
                self.bytes.control += trailer.nbytes
                ranks = n + 1
                counts = trailer[5:].reshape(2, 2, ranks)  # (sent, received) x (down, up) x other rank
                self.peak_rss[rank], self.param_bytes[rank] = trailer[3], trailer[4]
                self.pairs_sent[:, rank, :] += counts[0]
                self.pairs_received[:, :, rank] += counts[1]
                replies[worker] = (StepTime(float(trailer[0]), float(trailer[1])),
                                   None if np.isnan(trailer[2]) else float(trailer[2]))
            else:
                raise WorkerFailed(f"worker {worker} (rank {rank}, owner of shard {worker}) sent an unexpected "
                                   f"message (tag {tag}) during round {round_index}")
        return [replies[w] for w in range(n)]

    def metrics(self) -> dict[str, float]:
        """Cumulative: what the workers received going down and sent going up, as counted by the receivers."""
        return {"comm_time_measured": self.comm_seconds_total,
                "bytes_up_measured": float(self.pairs_received[UP, 1:, :].sum()),
                "bytes_down_measured": float(self.pairs_received[DOWN, :, 1:].sum())}

    def attrs(self) -> dict[str, Any]:
        """Root attributes: the per-pair bytes (row: from rank, column: to rank), counted by senders and receivers."""
        self.peak_rss[0] = max(self.peak_rss[0], peak_resident_bytes())  # read last: after /final is written
        return {**super().attrs(), "server": "partitioned",
                "bytes_pairs_sent_measured": self.pairs_sent.sum(axis=0).tolist(),
                "bytes_pairs_received_measured": self.pairs_received.sum(axis=0).tolist(),
                "bytes_pairs_initial_evaluation_measured": self.initial_eval_received.tolist(),
                "bytes_final_collect_measured": int(self.collected_at_close),
                "peak_rss_bytes_per_rank": self.peak_rss.tolist(), "param_bytes_per_rank": self.param_bytes.tolist()}


def serve_peer(comm: Any, MPI: Any, program: Any, worker: int) -> None:
    """A worker rank of a ``peers`` program, after start-up: rounds until rank 0 says stop."""
    n = program.training.n_workers
    ranks = n + 1
    header = np.zeros(4, dtype=np.int64)
    program.build_shard()
    while True:
        if _stop_is_next(comm, MPI):
            return
        comm.Recv(header, source=0, tag=TAG_HEADER)
        round_index = int(header[0])
        if round_index == FINAL_PART:  # rank 0 writes /final: rows of one part of the shard
            comm.Send(np.ascontiguousarray(program.final_part(*(int(v) for v in header[1:]))), dest=0, tag=TAG_DATA)
            continue
        if round_index == EVALUATE:
            _evaluate(comm, MPI, program, worker, n)
            continue
        counts = np.zeros((2, 2, ranks))  # (sent, received) x (down, up) x other rank
        _wait(comm, MPI, 0, TAG_DATA, orphan_watch)
        bias = program.bias()
        received_bias = np.empty_like(bias)
        comm.Recv(received_bias, source=0, tag=TAG_DATA)
        counts[1, DOWN, 0] += received_bias.nbytes
        program.begin(round_index)
        bias[...] = received_bias
        _trade(comm, MPI, program, round_index, worker, n, counts, DOWN)
        clock = StepClock()  # the step alone, in this thread's CPU time (and wall)
        result = program.step(round_index, None)
        seconds = clock.stop()
        _trade(comm, MPI, program, round_index, worker, n, counts, UP)
        bias = np.ascontiguousarray(program.bias())
        comm.Send(bias, dest=0, tag=TAG_DATA)
        counts[0, UP, 0] += bias.nbytes
        comm.Send(np.concatenate([[seconds.cpu, seconds.wall, np.nan if result is None else float(result),
                                   peak_resident_bytes(), program.param_bytes()], counts.ravel()]),
                  dest=0, tag=TAG_HEADER)


def _trade(comm: Any, MPI: Any, program: Any, round_index: int, worker: int, n: int, counts: np.ndarray,
           phase: int) -> None:
    """One phase of pieces: DOWN, this owner gives every worker its piece and accepts its own;
    UP, this worker hands every owner its piece back and keeps the ones returned to it."""
    send = program.give if phase == DOWN else program.hand_back
    buffer = program.piece_buffer if phase == DOWN else program.return_buffer
    take = program.accept if phase == DOWN else program.keep
    tag = TAG_PIECE_DOWN if phase == DOWN else TAG_PIECE_UP
    (program.accept_own if phase == DOWN else program.keep_own)(round_index)  # its own piece never leaves the process
    requests, outgoing = [], []
    for other in range(n):
        if other != worker:
            values = np.ascontiguousarray(send(round_index, other))
            outgoing.append(values)
            requests.append(comm.Isend(values, dest=other + 1, tag=tag))
            counts[0, phase, other + 1] += values.nbytes
    for other in range(n):
        if other != worker:
            target = buffer(round_index, other)
            _wait(comm, MPI, other + 1, tag, lambda: released(comm))  # the peer may be dead: rank 0 says so
            comm.Recv(target, source=other + 1, tag=tag)
            counts[1, phase, other + 1] += target.nbytes
            take(round_index, other, target)
    while not MPI.Request.Testall(requests):  # polled, as every wait here: blocking would spin a core
        released(comm)
        time.sleep(0.0002)



def _evaluate(comm: Any, MPI: Any, program: Any, worker: int, n: int) -> None:
    """This owner's part of the model-parallel evaluation: all-gather each hidden layer's
    activation blocks with the other owners, send rank 0 the partial logits and a trailer
    (peak resident memory, bytes sent to and received from every rank)."""
    counts = np.zeros((2, n + 1))  # (sent, received) x other rank

    def gather(block: np.ndarray, layer: int) -> np.ndarray:
        block = np.ascontiguousarray(block)
        requests = []
        for other in range(n):
            if other != worker:
                requests.append(comm.Isend(block, dest=other + 1, tag=TAG_ACTIVATIONS))
                counts[0, other + 1] += block.nbytes
        blocks = []
        for other, width in enumerate(program.block_widths(layer)):
            if other == worker:
                blocks.append(block)
                continue
            target = np.empty((block.shape[0], width), dtype=block.dtype)
            _wait(comm, MPI, other + 1, TAG_ACTIVATIONS, lambda: released(comm))
            comm.Recv(target, source=other + 1, tag=TAG_ACTIVATIONS)
            counts[1, other + 1] += target.nbytes
            blocks.append(target)
        while not MPI.Request.Testall(requests):
            released(comm)
            time.sleep(0.0002)
        return np.concatenate(blocks, axis=1)

    partials = np.ascontiguousarray(program.evaluate_partials(gather))
    comm.Send(partials, dest=0, tag=TAG_DATA)
    counts[0, 0] += partials.nbytes
    comm.Send(np.concatenate([[peak_resident_bytes()], counts.ravel()]), dest=0, tag=TAG_HEADER)
