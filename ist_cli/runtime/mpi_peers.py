"""MPI for a program whose workers exchange pieces directly (``WorkerProgram.peers``: partitioned IST).

Rank 0 (the coordinator) holds no piece of the model. Each round it sends every worker
rank a 16-byte header and the output bias; the worker ranks then trade their pieces among
themselves (owner k -> worker i before the step, worker i -> owner k after it: nonblocking
sends, then polled receives in rank order, so no pair of ranks waits on the other), and
each sends rank 0 its trained output bias, on evaluation rounds its shard, and a trailer:
its compute seconds, its result, its peak resident memory and parameter bytes, and the
bytes it sent to and received from every rank in both phases. Rank 0 counts its own sends and receives, so ``pairs_sent`` and
``pairs_received`` (phase, source, destination) are counted at every send and receive;
they equal the method's per-pair accounting (``ISTPartitioned.round_pairs``).

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

TAG_PIECE_DOWN, TAG_PIECE_UP = 11, 12
DOWN, UP = 0, 1


class PeerTransport(MPITransport):
    """The coordinator's side: plans nothing it sends but the header and the output bias."""

    def __init__(self, program: Any, arrays: dict[str, np.ndarray], layout: Any, n_workers: int,
                 comm: Any | None = None) -> None:
        super().__init__(program, arrays, layout, n_workers, comm)
        ranks = n_workers + 1
        self.pairs_sent = np.zeros((2, ranks, ranks))
        self.pairs_received = np.zeros((2, ranks, ranks))
        self.peak_rss = np.zeros(ranks)  # bytes, per rank (VmHWM)
        self.param_bytes = np.zeros(ranks)  # bytes of parameters each rank holds
        self.collected_at_close = 0
        self._clean = False  # the last round ended normally: the ranks can still be asked for their shards
        self._fresh = True  # the coordinator's copies of the shards are current (the last round collected them)
        self._ranks: rank_loss.RankWatch | None = None  # set once the ranks' pids are known
        self._notices = rank_loss.notices()
        self.lost: list[int] = []  # workers whose rank died
        self.watch = self._check_ranks

    def start(self) -> None:
        super().start()
        self._ranks = rank_loss.RankWatch(self.pids, self.hosts)
        self._clean = True
        self.param_bytes[0] = self.arrays["model"].nbytes  # the model it joins to evaluate and to write

    def run_round(self, round_index: int, payloads: Sequence[Any] | None = None) -> list[tuple[StepTime, Any]]:
        if payloads is not None and any(p is not None for p in payloads):
            raise ValueError("the MPI transport moves arena regions, not per-round payloads")
        started = time.perf_counter()
        self._clean = False
        header = np.array([round_index, 0], dtype=np.int64)
        for worker, server in enumerate(self._servers):
            self.comm.Send(header, dest=worker + 1, tag=TAG_HEADER)
            self.bytes.control += header.nbytes
            bias = np.ascontiguousarray(server.bias_down())
            self.comm.Send(bias, dest=worker + 1, tag=TAG_DATA)
            self.pairs_sent[DOWN, 0, worker + 1] += bias.nbytes
        replies = self._collect_peers(round_index)
        slowest = max(seconds.wall for seconds, _ in replies)
        self.comm_seconds = max(0.0, time.perf_counter() - started - slowest)
        self.comm_seconds_total += self.comm_seconds
        self._clean, self._fresh = True, self._servers[0].collects(round_index)
        return replies

    def close(self) -> None:
        """Before the ranks stop: when the last round did not send the shards (an interrupted
        run), ask every owner for its shard, so ``/final`` is the model the rounds made."""
        if self._clean and not self._fresh and self._servers:
            self._collect_shards()
        self.peak_rss[0] = peak_resident_bytes()
        if self.lost:
            release_workers(self.comm, lost=[worker + 1 for worker in self.lost if worker >= 0])
        super().close()

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

    def _collect_shards(self) -> None:
        header = np.array([-1, 0], dtype=np.int64)  # round -1: send your shard
        for worker in range(self.n_workers):
            self.comm.Send(header, dest=worker + 1, tag=TAG_HEADER)
        deadline = time.monotonic() + 10.0
        for worker, server in enumerate(self._servers):
            while not self.comm.Iprobe(source=worker + 1, tag=TAG_DATA):
                if time.monotonic() > deadline:
                    return
                time.sleep(0.0002)
            target = server.own_shard()
            self.comm.Recv(target, source=worker + 1, tag=TAG_DATA)
            self.collected_at_close += target.nbytes

    def _collect_peers(self, round_index: int) -> list[tuple[StepTime, Any]]:
        """Every worker's output bias (into its ``sub`` row), its shard when due, then its trailer."""
        n, MPI = self.n_workers, self.MPI
        ups = [[server.bias(), *((server.own_shard(),) if server.collects(round_index) else ())]
               for server in self._servers]
        received = [0] * n
        replies: dict[int, tuple[float, Any]] = {}
        phase = f"round {round_index}"
        while len(replies) < n:
            status = _wait(self.comm, MPI, MPI.ANY_SOURCE, MPI.ANY_TAG, lambda: self._check_ranks(phase))
            rank, tag = status.Get_source(), status.Get_tag()
            worker = rank - 1
            if tag == TAG_ERROR:
                text = _receive(self.comm, status, np.dtype(np.uint8)).tobytes().decode(errors="replace")
                if self._ranks is not None:  # a survivor that failed because its peer died: name the loss
                    self._fail_if_lost(self._ranks.wait_for_loss(1.0), phase)
                last = text.strip().splitlines()[-1] if text.strip() else "unknown error"
                raise WorkerFailed(f"worker {worker} (rank {rank}, owner of shard {worker}) raised during round "
                                   f"{round_index}: {last}") from RemoteTraceback(f'\n"""\n{text}"""')
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
        return {**super().attrs(), "server": "partitioned",
                "bytes_pairs_sent_measured": self.pairs_sent.sum(axis=0).tolist(),
                "bytes_pairs_received_measured": self.pairs_received.sum(axis=0).tolist(),
                "bytes_final_collect_measured": int(self.collected_at_close),
                "peak_rss_bytes_per_rank": self.peak_rss.tolist(), "param_bytes_per_rank": self.param_bytes.tolist()}


def serve_peer(comm: Any, MPI: Any, program: Any, worker: int) -> None:
    """A worker rank of a ``peers`` program, after start-up: rounds until rank 0 says stop."""
    n = program.training.n_workers
    ranks = n + 1
    header = np.zeros(2, dtype=np.int64)
    while True:
        if _stop_is_next(comm, MPI):
            return
        comm.Recv(header, source=0, tag=TAG_HEADER)
        round_index = int(header[0])
        if round_index < 0:  # the run ends between evaluations: rank 0 wants the shard for /final
            comm.Send(np.ascontiguousarray(program.own_shard()), dest=0, tag=TAG_DATA)
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
        outgoing = [np.ascontiguousarray(program.bias())]
        if program.collects(round_index):
            outgoing.append(np.ascontiguousarray(program.own_shard()))
        for part in outgoing:
            comm.Send(part, dest=0, tag=TAG_DATA)
            counts[0, UP, 0] += part.nbytes
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
    take(round_index, worker, send(round_index, worker))  # its own piece never leaves the process
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

