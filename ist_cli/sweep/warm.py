"""Warm trial execution: each run forked from a process that has imported and warmed everything.

``python -m ist_cli run`` pays for its interpreter, its imports, numba's cache load and its
teardown before and after every run: most of a small trial. ``--isolation warm`` (the
default) keeps one warm process per slot (``cli/trial_server.py``) and forks each run from
it, so a run starts with all of that done, and still runs in a process of its own: a run that
segfaults, is killed or hangs ends as a crashed ``ist run`` would (same exit status, same
files), and its server forks the next one. ``--isolation process`` keeps one subprocess per
run (``executors.LocalExecutor``; ``executors.WarmExecutor`` forks from the servers here), the reference the tests compare against.

A dask worker runs its tasks the same way (``run_warm_here``: one warm server per worker
process, started on its first task).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from ist_cli.runtime.threads import SINGLE_THREAD_ENV

ISOLATIONS = ("warm", "process")


class TrialEnd(NamedTuple):
    """How one run forked from a warm server ended."""

    returncode: int
    stdout: str
    stderr: str
    pid: int
    cpu_seconds: float  # the run's own user + system time (nan if unknown)
    minor_faults: int = -1  # the run's page faults (-1 if unknown)


class TrialServer:
    """One warm process (``cli/trial_server.py``), started at once, warming in the background.

    It and the runs it forks compute with one BLAS thread, as the workers of a run do: a
    sweep runs ``cores // workers`` runs at once, so every core is busy already, and a
    threaded BLAS on a busy core mostly waits (a zero-step trial took 2.5x the CPU with
    OpenBLAS's threads at load 20). OpenBLAS splits a product's rows and columns among its
    threads, never a sum, so the numbers do not change (``tests/test_warm_trials.py``).
    """

    def __init__(self) -> None:
        self._proc = self._start()

    @staticmethod
    def _start() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "ist_cli.cli.trial_server"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1,
                                env={**os.environ, **SINGLE_THREAD_ENV})

    def run(self, argv: list[str], on_pid: Callable[[int], None]) -> TrialEnd:
        """``ist run ARGV`` in a child forked from the server."""
        if self._proc.poll() is not None:  # the server died (killed): a new one serves from now on
            self._proc = self._start()
        with tempfile.TemporaryDirectory(prefix="ist-trial-") as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            try:
                self._proc.stdin.write(json.dumps({"argv": argv, "stdout": str(out), "stderr": str(err)}) + "\n")
                self._proc.stdin.flush()
            except (BrokenPipeError, OSError):
                return TrialEnd(-1, "", "ist: error: the warm trial process is gone; the run did not start", 0,
                                math.nan)
            pid = _reply(self._proc).get("pid", 0)
            if pid:
                on_pid(pid)
            end = _reply(self._proc)
            stdout = out.read_text(errors="replace") if out.exists() else ""
            stderr = err.read_text(errors="replace") if err.exists() else ""
        if end.get("returncode") is None:
            return TrialEnd(-1, stdout, stderr + "\nist: error: the warm trial process died during the run", pid,
                            math.nan)
        return TrialEnd(end["returncode"], stdout, stderr, pid, end.get("cpu_seconds", math.nan),
                        end.get("minor_faults", -1))

    def close(self) -> None:
        """Close stdin: the server ends once its current run (if any) has ended."""
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def _reply(proc: subprocess.Popen) -> dict:
    line = proc.stdout.readline()
    return json.loads(line) if line.strip() else {}


_dask_server: TrialServer | None = None
_dask_lock = threading.Lock()


def run_warm_here(argv: list[str]) -> tuple[int, str, str]:
    """``ist run ARGV`` forked from this process's own warm server (a dask worker's), started on
    first use and kept for the worker's lifetime; one run at a time."""
    global _dask_server
    with _dask_lock:
        if _dask_server is None:
            _dask_server = TrialServer()
        end = _dask_server.run(argv, lambda pid: None)
    return end.returncode, end.stdout, end.stderr
