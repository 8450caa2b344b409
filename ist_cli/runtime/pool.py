"""The shared-memory transport: persistent worker processes computing in place on the arena.

Per round the coordinator sends each worker a small picklable payload over a pipe and gets
back its measured seconds and a small result; all bulk data stays in the arena, so a
worker runs all three phases of its ``WorkerProgram`` (pack_down, step, unpack_up) itself
and nothing is copied (``runtime.transport`` has the contract).

Faults fail fast: the coordinator waits on the pipes *and* the process sentinels, so a
worker that dies (even by SIGKILL) is noticed at once, never waited for.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
import traceback
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

import numpy as np

from ist_cli.errors import RunFailed
from ist_cli.runtime.arena import Arena, ArenaLayout
from ist_cli.runtime.threads import SINGLE_THREAD_ENV
from ist_cli.runtime.transport import WorkerProgram


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


def _worker_main(program: WorkerProgram, layout: ArenaLayout, worker: int, conn: Connection) -> None:
    # Ctrl-C reaches the whole process group; only the coordinator decides what it means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    arena = None
    try:
        arena = Arena.attach(layout)
        program.setup(arena.arrays, worker)
        conn.send(("ready", 0.0, None))
        while True:
            message = conn.recv()
            if message[0] == "stop":
                break
            _, round_index, payload = message
            start = time.perf_counter()
            program.pack_down(round_index)
            result = program.step(round_index, payload)
            program.unpack_up(round_index)
            conn.send(("done", time.perf_counter() - start, result))
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


class WorkerPool:
    """N persistent worker processes attached to one arena, started once per run."""

    def __init__(
        self,
        program: WorkerProgram,
        layout: ArenaLayout,
        n_workers: int,
        *,
        start_method: str = "spawn",
    ) -> None:
        self.program = program
        self.layout = layout
        self.n_workers = n_workers
        self._context = mp.get_context(start_method)
        self._processes: list[mp.process.BaseProcess] = []
        self._conns: list[Connection] = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes if p.pid is not None]

    def start(self) -> None:
        """Start every worker and wait until each has attached to the arena."""
        saved = {key: os.environ.get(key) for key in SINGLE_THREAD_ENV}
        os.environ.update(SINGLE_THREAD_ENV)  # inherited by spawned children at start
        try:
            for worker in range(self.n_workers):
                parent_end, child_end = self._context.Pipe(duplex=True)
                process = self._context.Process(
                    target=_worker_main,
                    args=(self.program, self.layout, worker, child_end),
                    name=f"ist-worker-{worker}",
                    daemon=True,
                )
                process.start()
                child_end.close()
                self._processes.append(process)
                self._conns.append(parent_end)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        self._collect("start-up")

    def run_round(self, round_index: int, payloads: Sequence[Any] | None = None) -> list[tuple[float, Any]]:
        """Run one round on every worker; return each worker's (compute seconds, result)."""
        for worker, conn in enumerate(self._conns):
            payload = payloads[worker] if payloads is not None else None
            try:
                conn.send(("round", round_index, payload))
            except (BrokenPipeError, OSError):
                self._raise_dead(worker, f"round {round_index}")
        return self._collect(f"round {round_index}")

    def _collect(self, phase: str) -> list[tuple[float, Any]]:
        replies: dict[int, tuple[float, Any]] = {}
        by_conn = {conn: worker for worker, conn in enumerate(self._conns)}
        by_sentinel = {p.sentinel: worker for worker, p in enumerate(self._processes)}
        while len(replies) < self.n_workers:
            pending = [c for c, w in by_conn.items() if w not in replies]
            ready = wait(pending + [s for s, w in by_sentinel.items() if w not in replies])
            for item in ready:
                if item in by_conn:
                    worker = by_conn[item]
                    try:
                        kind, seconds, result = item.recv()
                    except (EOFError, OSError):
                        self._raise_dead(worker, phase)
                    if kind == "error":
                        last = result.strip().splitlines()[-1] if result else "unknown error"
                        raise WorkerFailed(f"worker {worker} raised during {phase}: {last}") from RemoteTraceback(
                            f'\n"""\n{result}"""')
                    replies[worker] = (seconds, result)
            for item in ready:
                if item in by_sentinel and by_sentinel[item] not in replies:
                    worker = by_sentinel[item]
                    if not self._conns[worker].poll():
                        self._raise_dead(worker, phase)
        return [replies[w] for w in range(self.n_workers)]

    def _raise_dead(self, worker: int, phase: str) -> None:
        process = self._processes[worker]
        process.join(timeout=1.0)
        raise WorkerFailed(f"worker {worker} (pid {process.pid}) {_describe_exit(process)} during {phase}")

    def close(self, timeout: float = 5.0) -> None:
        """Stop workers politely, then by force; never leaves a process behind."""
        for conn in self._conns:
            try:
                conn.send(("stop", None, None))
            except (BrokenPipeError, OSError):
                pass
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
                            n_workers: int) -> WorkerPool:
    """The default ``TransportFactory``: workers attach to the coordinator's arena."""
    return WorkerPool(program, layout, n_workers)
