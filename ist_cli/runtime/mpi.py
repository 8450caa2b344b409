"""The MPI transport: rank 0 is the coordinator, ranks 1..N the workers, nothing shared.

It implements ``runtime.transport.Transport`` as ``runtime.inprocess`` does, but each
worker is a rank with its own zeroed copy of the arena's arrays. Start-up (once, counted
apart): rank 0 pickles each worker its program and the arena's shapes, then sends its
resident regions as numpy buffers. Each round only numpy buffers move: a 16-byte header
(the round), the worker's down regions (after ``pack_down`` on rank 0; a masked region as
its kept entries only), its up regions back (then ``unpack_up`` on rank 0) and a 40-byte
trailer (the step's thread CPU and wall seconds, its result, and the bytes it sent and
received in a ring all-reduce).
On ``--topology ring`` data parallelism averages among the worker ranks instead
(``runtime.ring``): the model goes down once, at start, each worker updates its own copy, and
rank 0 receives only worker 0's averaged gradient (counted apart) to keep its copy for the
evaluations.
Region bytes are counted at every send and receive: they are the algorithm's
``round_traffic``; headers, trailers and start-up are counted separately.

Waiting is a poll (``Iprobe`` with a short sleep), never a blocking receive: MPICH's
blocking calls spin a core, which on a shared machine slows the rank being waited for.
A worker that raises sends its traceback (tag ERROR) and the coordinator fails the run;
a worker that dies is the launcher's business: MPICH's Hydra kills every rank at once, unless
the job was launched to survive it (the partitioned server: ``mpi_peers``, ``rank_loss``).
"""

from __future__ import annotations

import atexit
import copy
import os
import pickle
import re
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ist_cli.errors import UserError
from ist_cli.runtime import rank_loss
from ist_cli.runtime.arena import SHM_DIR
from ist_cli.runtime.budget import peak_resident_bytes
from ist_cli.runtime.pool import RemoteTraceback, WorkerFailed
from ist_cli.runtime.ring import ring_allreduce
from ist_cli.runtime.signals import signals_deferred
from ist_cli.runtime.transport import (
    StepClock,
    StepTime,
    TransportBase,
    WorkerProgram,
    receive_down,
)

TAG_SETUP, TAG_HEADER, TAG_DATA, TAG_ERROR, TAG_STOP = range(1, 6)
STOP_AFTER_LOSS = 1  # the STOP message's value when a rank was lost (0: the run ended)
_POLL_SLEEP = 0.0002  # seconds between probes once a wait is no longer short


_WATCH_EVERY = 200  # polls between two calls of a wait's ``watch`` (tens of milliseconds once sleeping)


class Released(Exception):
    """Rank 0 ended the job after losing a rank: this worker leaves without MPI_Finalize,
    which would wait for the dead peer (``rank_loss.exit_without_finalize``)."""


def _wait(comm: Any, MPI: Any, source: int, tag: int, watch: Callable[[], None] | None = None) -> Any:
    """Poll until a message from ``source`` with ``tag`` is pending; return its status.
    ``watch`` (which may raise) is called every few polls: a peer that died sends nothing."""
    status = MPI.Status()
    spins = 0
    while not comm.Iprobe(source=source, tag=tag, status=status):
        spins += 1
        if spins > 50:
            time.sleep(_POLL_SLEEP)
        if watch is not None and spins % _WATCH_EVERY == 0:
            watch()
    return status


def _stop_is_next(comm: Any, MPI: Any) -> bool:
    """Wait for rank 0's next message; if it is STOP, receive it and say so (``Released``
    when rank 0 stops the job because a rank was lost)."""
    if _wait(comm, MPI, 0, MPI.ANY_TAG, orphan_watch).Get_tag() != TAG_STOP:
        return False
    stop = np.zeros(1, dtype=np.int64)
    comm.Recv(stop, source=0, tag=TAG_STOP)
    if stop[0] == STOP_AFTER_LOSS:
        raise Released
    return True


def released(comm: Any) -> None:
    """Raise ``Released`` when rank 0's stop is pending (a worker waiting for a peer that may be dead)."""
    if comm.Iprobe(source=0, tag=TAG_STOP):
        raise Released
    orphan_watch()


def orphan_watch() -> None:
    """Raise ``Released`` in a worker rank whose rank 0 died (``rank_loss.orphaned``)."""
    if rank_loss.orphaned():
        raise Released


def _receive(comm: Any, status: Any, dtype: np.dtype) -> np.ndarray:
    """Receive the message ``status`` describes into a fresh array of ``dtype``."""
    count = status.Get_count(_MPI().BYTE)
    buffer = np.empty(count, dtype=np.uint8)
    comm.Recv(buffer, source=status.Get_source(), tag=status.Get_tag())
    return buffer.view(dtype)


def _MPI() -> Any:
    from mpi4py import MPI  # noqa: PLC0415

    return MPI


@dataclass
class ByteCounts:
    """Bytes the transport moved, by kind; ``round_up``/``round_down`` are per worker."""

    n_workers: int
    round_up: np.ndarray = field(init=False)
    round_down: np.ndarray = field(init=False)
    startup: int = 0
    control: int = 0
    to_coordinator: int = 0  # all-reduce mode: what rank 0 receives to keep its model (not round traffic)

    def __post_init__(self) -> None:
        self.round_up = np.zeros(self.n_workers)
        self.round_down = np.zeros(self.n_workers)


def world() -> Any:
    """``COMM_WORLD``, once every rank has removed the names of MPICH's shared memory.

    MPICH leaves its intra-node segment (``/dev/shm/mpich_shm_*``) named until finalize,
    so a job killed by SIGKILL leaks it. Once every rank has attached (the barrier), the
    name is no longer needed: each rank unlinks the ones it maps, like an arena's owner.
    The first call is collective: every rank must make it.
    """
    comm = _MPI().COMM_WORLD
    if not getattr(world, "cleaned", False):
        comm.Barrier()
        unlink_mapped_segments("mpich_shm_")
        world.cleaned = True  # type: ignore[attr-defined]
    return comm


def unlink_mapped_segments(prefix: str) -> None:
    """Unlink the /dev/shm files with ``prefix`` that this process has mapped."""
    try:
        with open("/proc/self/maps") as maps:
            names = set(re.findall(re.escape(SHM_DIR) + r"/(\S+)", maps.read()))
    except OSError:
        return
    for name in names:
        if name.startswith(prefix):
            try:
                os.unlink(os.path.join(SHM_DIR, name))
            except OSError:
                pass


def release_workers(comm: Any, lost: Iterable[int] | None = None) -> None:
    """Tell every worker rank to exit (idempotent); rank 0 calls it on every way out.
    After a loss (``lost``: the dead ranks known, skipped) the survivors leave without finalizing."""
    if getattr(release_workers, "done", False):
        return
    release_workers.done = True  # type: ignore[attr-defined]
    stop = np.full(1, 0 if lost is None else STOP_AFTER_LOSS, dtype=np.int64)
    dead = set(lost or ())
    for rank in range(1, comm.Get_size()):
        if rank not in dead:
            comm.Send(stop, dest=rank, tag=TAG_STOP)


def check_launcher_size(comm: Any, n_workers: int) -> None:
    """The job must have one rank per worker plus the coordinator: a one-line error otherwise."""
    size = comm.Get_size()
    if size - 1 != n_workers:
        raise UserError(f"--workers: the run needs {n_workers} worker rank(s) but the MPI launcher started "
                        f"{size - 1} (mpiexec -n {size}); expected mpiexec -n {n_workers + 1}")


ABORT_GRACE_SECONDS = 0.3  # for the launcher to forward this rank's last stderr line before MPI_Abort


def abort_at_exit(comm: Any, code: int) -> None:
    """End the whole job with ``code`` once this process has said why (at interpreter exit).

    After a failed or interrupted round a worker may be blocked for good in a large send
    that rank 0 will never receive (MPI's rendezvous protocol), and MPI_Finalize would wait
    for it: ``MPI_Abort`` makes the launcher kill every rank instead. Its own banner goes
    to a silenced stderr, so the user still reads one line. That line travels from this rank's
    stderr through Hydra's proxy to the launcher's; the abort tears that path down, so the rank
    gives it ``ABORT_GRACE_SECONDS`` first (without them the line was lost in about 1 job of 25).
    """

    def abort() -> None:
        sys.stderr.flush()
        time.sleep(ABORT_GRACE_SECONDS)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        comm.Abort(code)

    atexit.register(abort)


class MPITransport(TransportBase):
    """The coordinator's side of the ``Transport`` protocol, over MPI ranks.

    Per worker a copy of the program set up on the coordinator's arrays runs ``pack_down``
    and ``unpack_up`` (as ``runtime.inprocess`` does); the regions of ``exchange`` are what
    crosses MPI.
    """

    def __init__(self, program: WorkerProgram, arrays: dict[str, np.ndarray], layout: Any, n_workers: int,
                 comm: Any | None = None) -> None:
        self.MPI = _MPI()
        self.comm = comm or world()
        self.program, self.arrays, self.n_workers = program, arrays, n_workers
        self.shm_bytes = int(layout.size) if getattr(layout, "segment", "") else 0  # what rank 0 reserved in /dev/shm
        self.bytes = ByteCounts(n_workers)
        self.pids: list[int] = []
        self.hosts: list[int] = []  # ``rank_loss.host_id`` of each worker rank
        self.watch: Callable[[str], None] | None = None  # called while waiting in a phase (may raise)
        self.comm_seconds = 0.0  # the last round's time in messages (see ``run_round``)
        self.comm_seconds_total = 0.0
        self._servers: list[WorkerProgram] = []
        self.allreducing = bool(program.can_allreduce)
        if self.allreducing:
            program.use_allreduce()

    # -- start-up -----------------------------------------------------------------
    def start(self) -> None:
        """Send each worker its program, the arena's shapes and its resident regions; wait until ready."""
        spec = {name: (array.shape, array.dtype.str) for name, array in self.arrays.items()}
        for worker in range(self.n_workers):
            server = copy.deepcopy(self.program)
            with signals_deferred():  # loads kernels: see runner.run_experiment's first evaluation
                server.setup(self.arrays, worker)
            self._servers.append(server)
            resident = tuple(self.program.resident(worker))
            header = pickle.dumps((self.program, spec, resident))
            self.bytes.startup += len(header)
            self.comm.send(header, dest=worker + 1, tag=TAG_SETUP)
            for region in resident:
                content = np.ascontiguousarray(region.view(self.arrays))
                self.bytes.startup += content.nbytes
                self.comm.Send(content, dest=worker + 1, tag=TAG_DATA)
        replies = self._collect("start-up", [()] * self.n_workers)
        # a rank's ready trailer carries its pid and its host
        self.pids = [int(seconds.cpu) for seconds, _ in replies]
        self.hosts = [int(seconds.wall) for seconds, _ in replies]

    # -- rounds -------------------------------------------------------------------
    def run_round(self, round_index: int, payloads: Sequence[Any] | None = None) -> list[tuple[StepTime, Any]]:
        """Send every worker its down regions, receive its up regions; (``StepTime``, result) each.

        ``comm_seconds`` becomes the round's wall time on this rank minus packing/unpacking
        and minus the slowest worker's compute (wall): the time the round spent in messages.
        """
        if payloads is not None and any(p is not None for p in payloads):
            raise ValueError("the MPI transport moves arena regions, not per-round payloads")
        started = time.perf_counter()
        packing = 0.0
        header = np.array([round_index, 0], dtype=np.int64)
        ups = []
        for worker, server in enumerate(self._servers):
            exchange = server.exchange(round_index)
            ups.append(exchange.up)
            tick = time.perf_counter()
            server.pack_down(round_index)
            packing += time.perf_counter() - tick
            self.comm.Send(header, dest=worker + 1, tag=TAG_HEADER)
            self.bytes.control += header.nbytes
            for region in exchange.down:
                part = region.pack(self.arrays)
                self.bytes.round_down[worker] += part.nbytes
                self.comm.Send(part, dest=worker + 1, tag=TAG_DATA)
        replies = self._collect(f"round {round_index}", ups)
        tick = time.perf_counter()
        for server in self._servers:
            server.unpack_up(round_index)
        packing += time.perf_counter() - tick
        slowest = max(seconds.wall for seconds, _ in replies)
        self.comm_seconds = max(0.0, time.perf_counter() - started - packing - slowest)
        self.comm_seconds_total += self.comm_seconds
        return replies

    def metrics(self) -> dict[str, float]:
        """Cumulative: time in messages, and the region bytes counted at MPI's sends and receives."""
        return {"comm_time_measured": self.comm_seconds_total,
                "bytes_up_measured": float(self.bytes.round_up.sum()),
                "bytes_down_measured": float(self.bytes.round_down.sum())}

    def attrs(self) -> dict[str, Any]:
        """Root attributes of the run file: what moved outside the rounds' regions."""
        attrs = {"transport": "mpi", "bytes_startup_measured": int(self.bytes.startup),
                 "bytes_control_measured": int(self.bytes.control),
                 "peak_rss_bytes_rank0": int(peak_resident_bytes()),  # read when the run file is closed
                 "shm_bytes_rank0": self.shm_bytes}
        if self.allreducing:
            attrs["bytes_to_coordinator_measured"] = int(self.bytes.to_coordinator)
        return attrs

    def _collect(self, phase: str, ups: Sequence[Sequence[Any]]) -> list[tuple[StepTime, Any]]:
        """Receive every worker's up regions straight into the arena, then its trailer."""
        received = [0] * self.n_workers
        replies: dict[int, tuple[StepTime, Any]] = {}
        MPI = self.MPI
        watch = None if self.watch is None else (lambda: self.watch(phase))
        while len(replies) < self.n_workers:
            status = _wait(self.comm, MPI, MPI.ANY_SOURCE, MPI.ANY_TAG, watch)
            rank, tag = status.Get_source(), status.Get_tag()
            worker = rank - 1
            if tag == TAG_ERROR:
                text = _receive(self.comm, status, np.dtype(np.uint8)).tobytes().decode(errors="replace")
                last = text.strip().splitlines()[-1] if text.strip() else "unknown error"
                raise WorkerFailed(f"worker {worker} (rank {rank}) raised during {phase}: {last}") from RemoteTraceback(
                    f'\n"""\n{text}"""')
            if tag == TAG_DATA and received[worker] < len(ups[worker]):
                region = ups[worker][received[worker]]
                target = region.buffer(self.arrays)
                self.comm.Recv(target, source=rank, tag=TAG_DATA)
                region.unpack(self.arrays, target)
                if self.allreducing:
                    self.bytes.to_coordinator += target.nbytes
                else:
                    self.bytes.round_up[worker] += target.nbytes
                received[worker] += 1
            elif tag == TAG_HEADER:
                trailer = _receive(self.comm, status, np.dtype(np.float64))
                self.bytes.control += trailer.nbytes
                cpu, wall, result, ring_sent, ring_received = trailer
                self.bytes.round_up[worker] += ring_sent
                self.bytes.round_down[worker] += ring_received
                replies[worker] = (StepTime(float(cpu), float(wall)), None if np.isnan(result) else float(result))
            else:
                raise WorkerFailed(f"worker {worker} (rank {rank}) sent an unexpected message (tag {tag}) during {phase}")
        return [replies[w] for w in range(self.n_workers)]

    def close(self) -> None:
        release_workers(self.comm)
        self._servers = []


def serve_worker(comm: Any | None = None) -> None:
    """A worker rank: wait for its program, then run rounds until told to stop."""
    MPI = _MPI()
    comm = comm or world()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's to handle
    rank_loss.listen()  # the launcher's notice of a dead rank: rank 0 stops this one, or is the dead one
    worker = comm.Get_rank() - 1
    try:
        if _stop_is_next(comm, MPI):
            return
        program, spec, resident = pickle.loads(comm.recv(source=0, tag=TAG_SETUP))
        # zeroed pages cost no memory until written: only this worker's rows ever are
        private = {name: np.zeros(tuple(shape), dtype=np.dtype(dtype)) for name, (shape, dtype) in spec.items()}
        for region in resident:
            if _stop_is_next(comm, MPI):  # rank 0 stopped (e.g. Ctrl-C) between two of these
                return
            comm.Recv(region.view(private), source=0, tag=TAG_DATA)
        program.setup(private, worker)
        workers = comm.Create_group(comm.Get_group().Excl([0])) if program.allreducing else None
        comm.Send(np.array([os.getpid(), rank_loss.host_id(), np.nan, 0.0, 0.0]), dest=0,
                  tag=TAG_HEADER)  # ready: its pid and host
        if program.peers:  # its workers trade pieces among themselves (partitioned IST)
            program.mpi_peers().serve_peer(comm, MPI, program, worker)
            return
        header = np.zeros(2, dtype=np.int64)
        while True:
            if _stop_is_next(comm, MPI):
                return
            comm.Recv(header, source=0, tag=TAG_HEADER)
            round_index = int(header[0])
            def receive(buffer: np.ndarray) -> None:
                _wait(comm, MPI, 0, TAG_DATA, orphan_watch)
                comm.Recv(buffer, source=0, tag=TAG_DATA)

            receive_down(program, round_index, private, receive)
            clock = StepClock()  # this thread's CPU time: the work, not the wait for a core
            result = program.step(round_index, None)
            seconds = clock.stop()
            ring_sent = ring_received = 0
            if workers is not None:
                for region in program.allreduce(round_index):
                    buffer = np.ascontiguousarray(region.pack(private))
                    sent, received = ring_allreduce(workers, MPI, buffer)
                    if region.mask is None and not np.shares_memory(buffer, region.view(private)):
                        region.view(private)[...] = buffer
                    region.unpack(private, buffer)
                    ring_sent, ring_received = ring_sent + sent, ring_received + received
                clock = StepClock()
                program.after_allreduce(round_index)
                update = clock.stop()
                seconds = StepTime(seconds.cpu + update.cpu, seconds.wall + update.wall)
            for region in program.exchange(round_index).up:
                comm.Send(region.pack(private), dest=0, tag=TAG_DATA)
            comm.Send(np.array([seconds.cpu, seconds.wall, np.nan if result is None else float(result), ring_sent,
                                ring_received]), dest=0, tag=TAG_HEADER)
    except Released:
        rank_loss.exit_without_finalize(1)
    except BaseException:
        comm.Send(np.frombuffer(traceback.format_exc().encode(), dtype=np.uint8), dest=0, tag=TAG_ERROR)
        # wait (bounded) for the coordinator's stop so MPI finalises cleanly
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            if comm.Iprobe(source=0, tag=TAG_STOP):
                comm.Recv(np.zeros(1, dtype=np.int64), source=0, tag=TAG_STOP)
                return
            time.sleep(0.01)


def mpi_transport(program: WorkerProgram, arrays: dict[str, np.ndarray], layout: Any, n_workers: int) -> MPITransport:
    """The ``TransportFactory`` of ``--transport mpi`` (on rank 0 of a job with ``n_workers + 1`` ranks).

    No other process attaches to rank 0's arena: the runner makes it private (no segment). A
    segment's name, if one is given, is removed at once: MPICH kills every rank when one dies,
    resource tracker included, and the segment would leak.
    """
    if layout.segment:
        unlink_name(layout.segment)
    if program.peers:
        return program.mpi_peers().PeerTransport(program, arrays, layout, n_workers)
    return MPITransport(program, arrays, layout, n_workers)


# no rank attaches to rank 0's arrays: the runner keeps them in rank 0's private memory, where
# only the pages rank 0 writes cost anything (``Arena.create(shared=False)``)
mpi_transport.shares_memory = False  # type: ignore[attr-defined]


def unlink_name(segment: str) -> None:
    """Remove a shared-memory name this process keeps mapped (and its resource-tracker entry)."""
    from multiprocessing import resource_tracker  # noqa: PLC0415

    try:
        os.unlink(os.path.join(SHM_DIR, segment))
    except OSError:
        return
    resource_tracker.unregister(f"/{segment}", "shared_memory")
