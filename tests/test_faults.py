"""Faults end a run fast and cleanly: status written, file renamed, no shared memory left."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import psutil
import pytest

from ist_cli.io.runfile import read_run
from ist_cli.runtime.signals import interrupts_raised, raise_if_interrupted, signals_deferred
from tests.helpers import assert_no_new_segments, files_in, shm_entries, worker_processes

LONG_RUN = ["run", "--model", "quadratic", "--workers", "4", "--dim", "64", "--rounds", "1000000",
            "--eval-every", "50", "--name", "long"]


class Run:
    """A long ``ist run`` in the background whose stderr is collected by a thread."""

    def __init__(self, tmp_path, args: list[str], env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "ist_cli", *args, "--out", str(tmp_path)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)

    @property
    def pid(self) -> int:
        return self.process.pid

    def send_signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def poll(self):
        return self.process.poll()

    def rounds_reported(self) -> bool:
        return any(": round " in line for line in self.lines)


def start_long_run(tmp_path, args: list[str] = LONG_RUN, env: dict[str, str] | None = None) -> Run:
    """Start a run named ``long`` and return once its 4 workers exist and it has logged rounds."""
    process = Run(tmp_path, args, env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if len(worker_processes(process.pid)) == 4 and process.rounds_reported():
            return process
        if process.poll() is not None:
            raise AssertionError(f"run ended early: {''.join(process.lines)}")
        time.sleep(0.1)
    process.process.kill()
    raise AssertionError("workers did not start within 60 s")


def wait_end(process: Run, limit: float) -> tuple[int, str, float]:
    start = time.monotonic()
    code = process.process.wait(timeout=limit)
    seconds = time.monotonic() - start
    process.reader.join(timeout=5)
    return code, "".join(process.lines), seconds


def assert_failed_file(tmp_path, reason: str) -> None:
    assert files_in(tmp_path) == ["long.h5"]  # renamed, no .tmp left
    data = read_run(tmp_path / "long.h5")
    assert data.status == "failed"
    assert reason in data.attrs["error"]
    assert data.metrics["round"][-1] >= 50  # it had been running rounds


def test_four_worker_processes_exist_during_a_run(tmp_path):
    before = shm_entries()
    process = start_long_run(tmp_path)
    try:
        workers = worker_processes(process.pid)
        assert len(workers) == 4
        assert all(w.num_threads() <= 3 for w in workers)  # one compute thread (+ runtime helpers)
    finally:
        process.send_signal(signal.SIGINT)
        wait_end(process, 30)
    assert_no_new_segments(before, process.pid)


def test_a_running_file_can_be_read_live_with_swmr(tmp_path):
    """While the rounds run, ``long.h5.tmp`` opens with ``swmr=True`` and grows by whole rows."""
    before = shm_entries()
    process = start_long_run(tmp_path, [*LONG_RUN, "--save-params-every", "50"])
    try:
        with h5py.File(tmp_path / "long.h5.tmp", "r", libver="latest", swmr=True) as live:
            def visible_rows() -> int:
                for dataset in [*live["metrics"].values(), *live["params"].values()]:
                    dataset.refresh()
                return min(d.shape[0] for d in [*live["metrics"].values(), *live["params"].values()])
            seen = visible_rows()
            deadline = time.monotonic() + 20
            while visible_rows() <= seen + 2:
                assert time.monotonic() < deadline, "the live file did not grow"
                time.sleep(0.2)
            rows = visible_rows()
            live_rounds = live["metrics/round"][:rows]
            live_loss = live["metrics/loss"][:rows]
            live_params = live["params/x"][:rows]
            assert json.loads(live["config"][()])["rounds"] == 1000000
    finally:
        process.send_signal(signal.SIGINT)
        wait_end(process, 30)
    np.testing.assert_array_equal(live_rounds, 50 * np.arange(rows))
    data = read_run(tmp_path / "long.h5")
    assert data.status == "failed" and len(data.metrics["round"]) >= rows
    np.testing.assert_array_equal(data.metrics["loss"][:rows], live_loss)
    np.testing.assert_array_equal(data.params["x"][:rows], live_params)
    assert_no_new_segments(before, process.pid)


def test_sigkill_of_a_worker_fails_the_run_fast(tmp_path):
    before = shm_entries()
    process = start_long_run(tmp_path)
    workers = worker_processes(process.pid)
    victim, others = workers[1], [w for w in workers if w.pid != workers[1].pid]
    victim.send_signal(signal.SIGKILL)
    code, stderr, seconds = wait_end(process, 30)
    assert seconds < 10
    assert code == 1
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("ist: error: worker") and "SIGKILL" in lines[-1]
    assert "Traceback" not in stderr
    assert_failed_file(tmp_path, "SIGKILL")
    assert_no_new_segments(before, process.pid)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in [victim])
    assert len(others) == 3
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in others)  # the pool closed them


def test_a_sigkilled_coordinator_leaves_no_temporary_directory(tmp_path):
    """multiprocessing puts the fork server's socket in a ``pymp-*`` directory that the
    coordinator removes at exit; killed outright it cannot, so the server removes it as it ends."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    process = start_long_run(tmp_path / "out", env={**os.environ, "TMPDIR": str(temp)})
    workers = worker_processes(process.pid)
    assert [p.name for p in temp.iterdir() if p.name.startswith("pymp-")]  # the socket's directory exists
    os.kill(process.pid, signal.SIGKILL)
    process.process.wait(timeout=10)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (list(temp.glob("pymp-*")) or any(w.is_running() for w in workers)):
        time.sleep(0.1)
    assert not list(temp.glob("pymp-*")), [p.name for p in temp.iterdir()]
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)


def test_ctrl_c_fails_the_run_cleanly(tmp_path):
    before = shm_entries()
    process = start_long_run(tmp_path)
    workers = worker_processes(process.pid)
    process.send_signal(signal.SIGINT)
    code, stderr, seconds = wait_end(process, 30)
    assert seconds < 10
    assert code == 130
    assert "Traceback" not in stderr
    assert "ist: interrupted" in stderr and "error" not in stderr  # the user's choice, not an error
    assert_failed_file(tmp_path, "interrupted")
    assert_no_new_segments(before, process.pid)
    time.sleep(0.5)
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)


def test_sigterm_is_handled_like_ctrl_c(tmp_path):
    before = shm_entries()
    process = start_long_run(tmp_path)
    process.send_signal(signal.SIGTERM)
    code, _, _ = wait_end(process, 30)
    assert code == 130
    assert_failed_file(tmp_path, "interrupted")
    assert_no_new_segments(before, process.pid)


def test_nan_loss_ends_the_run_as_diverged(tmp_path):
    before = shm_entries()
    process = subprocess.Popen(
        [sys.executable, "-m", "ist_cli", "run", "--model", "quadratic", "--workers", "2", "--dim", "8",
         "--lr", "50", "--rounds", "5000", "--out", str(tmp_path), "--name", "boom", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 3
    assert "diverged" in stderr and "Traceback" not in stderr
    data = read_run(tmp_path / "boom.h5")
    assert data.status == "diverged"
    assert data.metrics["round"][-1] < 5000
    assert not os.path.exists(tmp_path / "boom.h5.tmp")
    assert_no_new_segments(before, process.pid)


def test_a_worker_that_raises_fails_the_run_with_its_message(shm_guard):
    from ist_cli.runtime.arena import Arena
    from ist_cli.runtime.pool import WorkerFailed, WorkerPool
    from tests.programs import RaisingProgram

    with Arena.create({"x": ((4,), "f8")}) as arena:
        pool = WorkerPool(RaisingProgram(fail_round=2), arena.layout, 2)
        try:
            pool.start()
            pool.run_round(1)
            with pytest.raises(WorkerFailed, match="worker 1 raised during round 2: ValueError: planned failure") as info:
                pool.run_round(2)
        finally:
            pool.close()
    remote = str(info.value.__cause__)  # the worker's whole traceback, chained as concurrent.futures does
    assert "Traceback (most recent call last)" in remote and "programs.py" in remote and "in step" in remote
    assert "\n" not in str(info.value)  # the message itself stays one line


def test_a_raising_worker_stores_its_traceback_and_the_cli_prints_one_line(tmp_path):
    """``ist run`` whose worker 1 raises in round 3 (the real CLI, with a test transport that wraps
    the method's program): exit 1, one line on stderr, the whole traceback in the file's error."""
    code = ("import functools, sys; import ist_cli.cli.run as run_cli; from ist_cli.runner import run_experiment; "
            "from tests.programs import failing_transport; "
            "run_cli.run_experiment = functools.partial(run_experiment, transport=failing_transport(3)); "
            "from ist_cli.cli import main; main(sys.argv[1:])")
    before = shm_entries()
    process = subprocess.Popen(
        [sys.executable, "-c", code, "run", "--model", "quadratic", "--workers", "2", "--dim", "8", "--rounds", "10",
         "--out", str(tmp_path), "--name", "boom", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent,
    )
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines == ["ist: error: worker 1 raised during round 3: ValueError: planned failure in step"]
    data = read_run(tmp_path / "boom.h5")
    assert data.status == "failed" and data.attrs["rounds_completed"] == 3
    error = data.attrs["error"]
    assert error.splitlines()[0] == "worker 1 raised during round 3: ValueError: planned failure in step"
    assert "Traceback (most recent call last)" in error and "programs.py" in error and "in step" in error
    assert "The above exception was the direct cause" in error  # the remote traceback is chained
    assert_no_new_segments(before, process.pid)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_inside_a_deferred_write_lands_after_the_write(signum):
    """A metrics row is written whole: Ctrl-C (or SIGTERM) mid-row interrupts after it, not inside it."""
    written = []
    handlers = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    with pytest.raises(KeyboardInterrupt), interrupts_raised():
        with signals_deferred():
            os.kill(os.getpid(), signum)
            time.sleep(0.05)  # the signal has arrived; the write goes on
            written.append("row")
        written.append("after the block")  # never reached: the interrupt is delivered on exit
    assert written == ["row"]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_a_ctypes_callback_swallows_is_raised_at_the_next_check_without_a_traceback(signum, monkeypatch):
    """numba loads cached kernels partly inside a ctypes callback, which drops a KeyboardInterrupt
    raised there and prints a traceback: the interrupt must still end the run, quietly."""
    callback = ctypes.CFUNCTYPE(None)(lambda: signal.raise_signal(signum))
    printed: list = []
    hook = printed.append  # stands in for the default hook, which prints the traceback
    monkeypatch.setattr(sys, "unraisablehook", hook)
    after_callback = []
    with pytest.raises(KeyboardInterrupt), interrupts_raised():
        callback()  # the handler raises inside the callback; ctypes drops it
        after_callback.append(True)
        raise_if_interrupted()
    assert after_callback == [True]  # it was dropped, so the check is what raised
    assert printed == []
    assert sys.unraisablehook is hook
    raise_if_interrupted()  # outside the block nothing is pending


def test_a_block_inside_one_that_was_interrupted_starts_with_no_interrupt_pending():
    """Cleanup after an interrupt may run a whole run (a library caller's loop): it is not cut short."""
    inner_ran_whole = []
    with pytest.raises(KeyboardInterrupt), interrupts_raised():
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            with interrupts_raised():
                raise_if_interrupted()  # nothing of its own: does not raise
                inner_ran_whole.append(True)
            raise_if_interrupted()  # the outer block's: raises
    assert inner_ran_whole == [True]


def test_an_ignored_sigint_stays_ignored_inside_interrupts_raised():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupts_raised():
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            signal.raise_signal(signal.SIGINT)
            raise_if_interrupted()
    finally:
        signal.signal(signal.SIGINT, previous)
