"""The shared-memory transport: persistent worker processes computing in place on the arena.

Per round the coordinator sends each worker a small picklable payload over a pipe and gets
back its measured seconds and a small result; all bulk data stays in the arena, so a
worker runs all three phases of its ``WorkerProgram`` (pack_down, step, unpack_up) itself
and nothing is copied (``runtime.transport`` has the contract).

Faults fail fast: the coordinator waits on the pipes *and* the process sentinels, so a
worker that dies (even by SIGKILL) is noticed at once, never waited for.

Workers are forked from a warm server (``runtime.forkserver``): they start and stop in
milliseconds. When cores are free, both sides spin briefly on shared flags before blocking
(``runtime.spin``); the pipes and sentinels still decide everything else.
"""

from __future__ import annotations

import multiprocessing as mp
import select
import signal
import time
import traceback
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from ist_cli.errors import RunFailed
from ist_cli.runtime.arena import Arena, ArenaLayout
from ist_cli.runtime.forkserver import environment, start_server
from ist_cli.runtime.processes import set_process_name
from ist_cli.runtime.spin import RoundFlags, should_spin
from ist_cli.runtime.threads import SINGLE_THREAD_ENV
from ist_cli.runtime.transport import StepTime, TransportBase, WorkerProgram, step_clock, step_time
from ist_cli.runtime.watchdog import RoundWatchdog


class WorkerFailed(RunFailed):
    """A worker raised or died; the message (one line) names it and how."""


class RemoteTraceback(Exception):
    """A worker's own traceback, chained as the cause of ``WorkerFailed`` (as
    ``concurrent.futures.process`` does), so the full story is in the chained traceback."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


def _worker_main(program: WorkerProgram, layout: ArenaLayout, worker: int, conn: Connection,
                 flags: RoundFlags) -> None:
    # Ctrl-C reaches the whole process group; only the coordinator decides what it means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    set_process_name(f"ist-worker-{worker}")
    arena = None
    try:
        arena = Arena.attach(layout)
        program.setup(arena.arrays, worker)
        conn.send(("ready", 0.0, None))
        number = 0
        while True:
            flags.await_message(worker, number)
            kind, round_index, payload, number = conn.recv()
            if kind == "stop":
                break
            cpu, wall = step_clock()  # this thread's CPU time: the work, not the wait for a core
            program.pack_down(round_index)
            result = program.step(round_index, payload)
            program.unpack_up(round_index)
            cpu_now, wall_now = step_clock()
            conn.send(("done", (cpu_now - cpu, wall_now - wall), result))  # plain floats: no class to pickle
            flags.answered(worker, number)
    except (EOFError, BrokenPipeError):
        pass  # the coordinator is gone; nothing left to report to
    except BaseException:
        try:
            conn.send(("error", 0.0, traceback.format_exc()))
        except (OSError, BrokenPipeError):
            pass
    finally:
        if arena is not None:
            arena.close()


def _describe_exit(process: mp.process.BaseProcess) -> str:
    code = process.exitcode
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class WorkerPool(TransportBase):
    """N persistent worker processes attached to one arena, started once per run.

    Workers are forked from a warm server (``runtime.forkserver``; ``preload`` says what it
    imports and warms); ``start_method`` "spawn" starts cold interpreters instead (for
    comparison in benchmarks). ``spin`` None decides from the free cores (``runtime.spin``).
    """

    def __init__(
        self,
        program: WorkerProgram,
        layout: ArenaLayout,
        n_workers: int,
        *,
        start_method: str = "forkserver",
        round_timeout: float | None = None,
        preload: Sequence[str] = (),
        spin: bool | None = None,
    ) -> None:
        """``round_timeout``: seconds a round may take (``--round-timeout``), None to learn it."""
        self.program = program
        self.layout = layout
        self.n_workers = n_workers
        self.start_method = start_method
        self.preload = tuple(preload)
        self.spin = should_spin(n_workers) if spin is None else spin
        self._processes: list[mp.process.BaseProcess] = []
        self._conns: list[Connection] = []
        self._flags: RoundFlags | None = None
        self._number = 0  # of the latest message to every worker (``RoundFlags``)
        self._watchdog = RoundWatchdog(round_timeout)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes if p.pid is not None]

    def start(self) -> None:
        """Start every worker and wait until each has attached to the arena."""
        if self.start_method == "forkserver":
            context = start_server(self.preload)
        else:
            context = mp.get_context(self.start_method)
        self._flags = RoundFlags.create(context, self.n_workers, self.spin)
        with environment(SINGLE_THREAD_ENV):  # inherited by spawned children at start
            for worker in range(self.n_workers):
                parent_end, child_end = context.Pipe(duplex=True)
                process = context.Process(
                    target=_worker_main,
                    args=(self.program, self.layout, worker, child_end, self._flags),
                    name=f"ist-worker-{worker}",
                    daemon=True,
                )
                process.start()
                child_end.close()
                self._processes.append(process)
                self._conns.append(parent_end)
        self._collect("start-up", RoundWatchdog())  # a worker that never attaches fails the start

    def _send_all(self, kind: str, round_index: int | None, payloads: Sequence[Any] | None) -> int:
        """Send every worker message ``kind`` and ring its flag; returns the message number."""
        self._number += 1
        for worker, conn in enumerate(self._conns):
            payload = payloads[worker] if payloads is not None else None
            try:
                conn.send((kind, round_index, payload, self._number))
            except (BrokenPipeError, OSError):
                if kind == "stop":
                    continue
                self._raise_dead(worker, f"round {round_index}")
            self._flags.ring(worker, self._number)
        return self._number

    def run_round(self, round_index: int, payloads: Sequence[Any] | None = None) -> list[tuple[StepTime, Any]]:
        """Run one round on every worker; return each worker's (``StepTime``, result).

        Workers that have not answered by the round watchdog's deadline fail the round.
        """
        started = time.monotonic()
        number = self._send_all("round", round_index, payloads)
        replies = self._collect(f"round {round_index}", self._watchdog, number)
        self._watchdog.record(time.monotonic() - started)
        return replies

    def _receive(self, worker: int, phase: str) -> tuple[float, Any]:
        try:
            kind, seconds, result = self._conns[worker].recv()
        except (EOFError, OSError):
            self._raise_dead(worker, phase)
        if kind == "error":
            last = result.strip().splitlines()[-1] if result else "unknown error"
            raise WorkerFailed(f"worker {worker} raised during {phase}: {last}") from RemoteTraceback(
                f'\n"""\n{result}"""')
        return (step_time(seconds) if kind == "done" else seconds), result

    def _collect(self, phase: str, watchdog: RoundWatchdog | None = None,
                 number: int | None = None) -> list[tuple[float, Any]]:
        if number is not None and self._flags.await_answers(self.n_workers, number):
            return [self._receive(worker, phase) for worker in range(self.n_workers)]  # all in the pipes
        replies: dict[int, tuple[float, Any]] = {}
        deadline = time.monotonic() + watchdog.timeout() if watchdog is not None else None
        while len(replies) < self.n_workers:
            pending = [w for w in range(self.n_workers) if w not in replies]
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready_conns, ready_sentinels = self._wait(pending, remaining)
            if not ready_conns and not ready_sentinels and deadline is not None and time.monotonic() >= deadline:
                names = ", ".join(f"{w} (pid {self._processes[w].pid})" for w in pending)
                raise WorkerFailed(f"worker{'s' if len(pending) > 1 else ''} {names} did not answer during {phase} "
                                   f"within {watchdog.describe()}")
            for worker in ready_conns:
                replies[worker] = self._receive(worker, phase)
            for worker in ready_sentinels:
                if worker not in replies and not self._conns[worker].poll():
                    self._raise_dead(worker, phase)
        return [replies[w] for w in range(self.n_workers)]

    def _wait(self, workers: list[int], timeout: float | None) -> tuple[list[int], list[int]]:
        """Block until a pipe or a process sentinel of ``workers`` is ready (or ``timeout``
        seconds pass); returns (workers with a readable pipe, workers whose sentinel fired)."""
        poller = select.poll()
        owners = {}
        for worker in workers:
            for fd, kind in ((self._conns[worker].fileno(), 0), (self._processes[worker].sentinel, 1)):
                poller.register(fd, select.POLLIN)
                owners[fd] = (worker, kind)
        ready: tuple[list[int], list[int]] = ([], [])
        for fd, _ in poller.poll(None if timeout is None else timeout * 1e3):
            worker, kind = owners[fd]
            ready[kind].append(worker)
        return ready

    def _raise_dead(self, worker: int, phase: str) -> None:
        process = self._processes[worker]
        process.join(timeout=1.0)
        raise WorkerFailed(f"worker {worker} (pid {process.pid}) {_describe_exit(process)} during {phase}"
                           f"{self.program.lost_with(worker)}")

    def close(self, timeout: float = 5.0) -> None:
        """Stop workers politely, then by force; never leaves a process behind."""
        if self._conns:
            self._send_all("stop", None, None)
        deadline = time.monotonic() + timeout
        for process in self._processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
        for process in self._processes:
            if process.is_alive():
                process.terminate()
                process.join(timeout=1.0)
            if process.is_alive():
                process.kill()
                process.join(timeout=1.0)
        for conn in self._conns:
            conn.close()
        self._processes, self._conns = [], []

    def __enter__(self) -> WorkerPool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def shared_memory_transport(program: WorkerProgram, arrays: dict[str, np.ndarray], layout: ArenaLayout,
                            n_workers: int, *, round_timeout: float | None = None,
                            preload: Sequence[str] = ()) -> WorkerPool:
    """The default ``TransportFactory``: workers attach to the coordinator's arena; a round that
    takes longer than ``round_timeout`` seconds (None: learned, see ``runtime.watchdog``) fails.
    ``preload``: what the fork server imports and warms for workers (``runtime.forkserver``)."""
    return WorkerPool(program, layout, n_workers, round_timeout=round_timeout, preload=preload)
