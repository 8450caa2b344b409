"""Where runs execute: local subprocesses, or tasks on a dask.distributed cluster.

Both run each ``ist run`` in a process of its own, which keeps the sweep process light and
makes a killed run look exactly like a crashed one: forked from a warm process
(``--isolation warm``, ``sweep/warm.py``) or as a ``python -m ist_cli run`` subprocess
(``--isolation process``). Both hand back an ``Outcome``;
the dask executor also lands the run file (returned as bytes) in the client's ``OUT``.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ist_cli.config import show_value
from ist_cli.errors import UserError, install_hint
from ist_cli.io.atomic import create_exclusive
from ist_cli.io.names import run_file_name, run_file_path
from ist_cli.sweep.remote import run_command, run_in_tempdir
from ist_cli.sweep.spec import PlannedRun
from ist_cli.sweep.warm import TrialServer


@dataclass
class Outcome:
    """How one execution of ``ist run`` ended."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    where: str

    def error_line(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1].strip() if lines else f"ist run exited with code {self.returncode}"


def set_args(config: Mapping[str, Any]) -> list[str]:
    """``--set key=value`` for every setting: the run resolves to exactly ``config`` again."""
    args: list[str] = []
    for key, value in config.items():
        if value is None:
            continue
        args += ["--set", f"{key}={show_value(value)}"]
    return args


class LocalExecutor:
    """Up to ``jobs`` concurrent ``ist run`` subprocesses writing straight into ``out_dir``."""

    name = "local"

    def __init__(self, out_dir: Path, jobs: int) -> None:
        self.out_dir = out_dir
        self.slots = jobs
        self._pool = cf.ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="ist-sweep-run")
        self._procs: dict[str, subprocess.Popen] = {}
        self._guard = threading.Lock()
        self._futures: dict[cf.Future, str] = {}

    def submit(self, run: PlannedRun, on_pid: Callable[[int], None]) -> None:
        future = self._pool.submit(self._execute, run, on_pid)
        self._futures[future] = run.run_id

    def _execute(self, run: PlannedRun, on_pid: Callable[[int], None]) -> Outcome:
        started = time.perf_counter()
        command = run_command(set_args(run.config) + list(run.run_args), run.run_id, str(self.out_dir))
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with self._guard:
            self._procs[run.run_id] = proc
        try:
            on_pid(proc.pid)
            stdout, stderr = proc.communicate()
        finally:
            with self._guard:
                self._procs.pop(run.run_id, None)
        return Outcome(proc.returncode, stdout, stderr, time.perf_counter() - started,
                       f"{socket.gethostname()}:{proc.pid}")

    def in_flight(self) -> int:
        return len(self._futures)

    def wait(self, timeout: float) -> list[tuple[str, Outcome]]:
        """Outcomes of runs that ended within ``timeout`` seconds (possibly none)."""
        if not self._futures:
            time.sleep(timeout)
            return []
        done, _ = cf.wait(list(self._futures), timeout=timeout, return_when=cf.FIRST_COMPLETED)
        finished = []
        for future in done:
            run_id = self._futures.pop(future)
            try:
                finished.append((run_id, future.result()))
            except Exception as exc:  # could not even start the subprocess
                finished.append((run_id, Outcome(-1, "", f"{type(exc).__name__}: {exc}", 0.0, "local")))
        return finished

    def interrupt(self) -> None:
        """SIGTERM every running ``ist run``: each records a failed file and exits 130."""
        with self._guard:
            procs = list(self._procs.values())
        for proc in procs:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class DaskExecutor:
    """Each run is a dask task; the run file comes back as bytes and lands in ``out_dir``."""

    name = "dask"

    def __init__(self, out_dir: Path, jobs: int | None, scheduler: str | None, isolation: str = "warm") -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise UserError("--executor dask: dask.distributed is not installed; expected the cluster extra: "
                            f"{install_hint('cluster')}") from None
        self.out_dir = out_dir
        self.isolation = isolation
        self._cluster = None
        if scheduler:
            try:
                self._client = Client(scheduler, timeout=15)
            except (OSError, TimeoutError) as exc:
                raise UserError(f"--scheduler: cannot connect to {scheduler!r} ({exc}); "
                                "expected the address of a running dask scheduler, e.g. tcp://HOST:8786") from None
            threads = sum(self._client.nthreads().values())
            self.slots = jobs or max(1, threads)
        else:
            self.slots = jobs or 1
            self._cluster = LocalCluster(n_workers=self.slots, threads_per_worker=1, processes=True,
                                         dashboard_address=None, silence_logs=logging.ERROR)
            self._client = Client(self._cluster)
        self._futures: dict[Any, str] = {}

    def submit(self, run: PlannedRun, on_pid: Callable[[int], None]) -> None:
        future = self._client.submit(run_in_tempdir, run.run_id, set_args(run.config) + list(run.run_args),
                                     self.isolation, key=f"ist-run-{run.run_id}-{os.getpid()}-{time.monotonic_ns()}", pure=False)
        self._futures[future] = run.run_id

    def in_flight(self) -> int:
        return len(self._futures)

    def wait(self, timeout: float) -> list[tuple[str, Outcome]]:
        deadline = time.monotonic() + timeout
        while True:
            done = [future for future in self._futures if future.done()]
            if done or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        finished = []
        for future in done:
            run_id = self._futures.pop(future)
            finished.append((run_id, self._collect(run_id, future)))
        return finished

    def _collect(self, run_id: str, future: Any) -> Outcome:
        try:
            result = future.result()
        except Exception as exc:
            return Outcome(-1, "", f"dask task failed: {type(exc).__name__}: {exc}", 0.0, "dask")
        if result["file"] is not None:
            try:
                create_exclusive(run_file_path(self.out_dir, run_id), result["file"])
            except FileExistsError:
                return Outcome(-1, result["stdout"], f"{run_file_name(run_id)} appeared in --out while the run executed; "
                               "kept the existing file", result["seconds"], result["host"])
        return Outcome(result["returncode"], result["stdout"], result["stderr"], result["seconds"],
                       f"{result['host']}:{result['pid']}")

    def interrupt(self) -> None:
        for future in list(self._futures):
            future.cancel()
        self._futures.clear()

    def close(self) -> None:
        try:
            self._client.close()
        finally:
            if self._cluster is not None:
                self._cluster.close()


class WarmExecutor(LocalExecutor):
    """``LocalExecutor`` whose runs are forked from ``jobs`` warm servers, one run per server."""

    def __init__(self, out_dir: Path, jobs: int) -> None:
        super().__init__(out_dir, jobs)
        self._servers = [TrialServer() for _ in range(jobs)]  # they warm up while the sweep plans
        self._idle: queue.Queue[TrialServer] = queue.Queue()
        for server in self._servers:
            self._idle.put(server)
        self._pids: dict[str, int] = {}

    def _execute(self, run: PlannedRun, on_pid: Callable[[int], None]) -> Outcome:
        started = time.perf_counter()
        argv = run_command(set_args(run.config) + list(run.run_args), run.run_id, str(self.out_dir))[4:]
        server = self._idle.get()

        def started_pid(pid: int) -> None:
            with self._guard:
                self._pids[run.run_id] = pid
            on_pid(pid)

        try:
            end = server.run(argv, started_pid)
        finally:
            with self._guard:
                self._pids.pop(run.run_id, None)
            self._idle.put(server)
        return Outcome(end.returncode, end.stdout, end.stderr, time.perf_counter() - started,
                       f"{socket.gethostname()}:{end.pid}")

    def interrupt(self) -> None:
        """SIGTERM every running run: each records a failed file and exits 130."""
        with self._guard:
            pids = list(self._pids.values())
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        try:
            super().close()
        finally:
            for server in self._servers:
                server.close()


def make_executor(kind: str, out_dir: Path, jobs: int | None, scheduler: str | None, default_jobs: int,
                  isolation: str = "warm"):
    """The executor for ``--executor`` and ``--isolation`` (``sweep/warm.py``); ``--scheduler``
    only makes sense with dask."""
    if isolation not in ("warm", "process"):
        raise UserError(f"--isolation: {isolation!r} is not allowed; expected warm or process")
    if kind == "local":
        if scheduler:
            raise UserError("--scheduler: only used with --executor dask; expected --executor dask --scheduler ADDRESS")
        if isolation == "warm":
            return WarmExecutor(out_dir, jobs or default_jobs)
        return LocalExecutor(out_dir, jobs or default_jobs)
    if kind == "dask":
        return DaskExecutor(out_dir, jobs or (None if scheduler else default_jobs), scheduler, isolation)
    raise UserError(f"--executor: {kind!r} is not allowed; expected local or dask")
