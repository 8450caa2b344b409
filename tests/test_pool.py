"""The pool's workers: forked from the warm server with one thread each; spinning on shared
flags (when cores are free) changes no result and hides no fault."""

from __future__ import annotations

import os
import signal

import numpy as np
import psutil
import pytest

from ist_cli.runtime import spin
from ist_cli.runtime.arena import Arena
from ist_cli.runtime.pool import WorkerFailed, WorkerPool
from tests.programs import EchoProgram


def test_workers_are_forked_from_the_server_named_and_single_threaded(shm_guard):
    with Arena.create({"x": ((2,), "f8")}) as arena:
        with WorkerPool(EchoProgram(), arena.layout, 2) as pool:
            pool.run_round(1, [1.0, 2.0])
            workers = [psutil.Process(pid) for pid in pool.pids]
            assert [w.name() for w in workers] == ["ist-worker-0", "ist-worker-1"]
            assert all(w.ppid() != os.getpid() for w in workers)  # children of the fork server
            assert all(w.num_threads() == 1 for w in workers)  # no BLAS or numba thread pool


@pytest.mark.parametrize("spinning", [True, False])
def test_spinning_or_not_every_round_sees_every_reply(shm_guard, spinning):
    with Arena.create({"x": ((3,), "f8")}) as arena:
        with WorkerPool(EchoProgram(), arena.layout, 3, spin=spinning) as pool:
            for round_index in range(1, 301):
                replies = pool.run_round(round_index, [float(round_index)] * 3)
                assert len(replies) == 3  # every worker answered this very round:
                np.testing.assert_array_equal(arena["x"], round_index + np.arange(3.0))
                # each saw at least its own write of this round and nothing of a later one
                assert all(round_index * 3 - 3 < result <= round_index * 3 + 3 for _, result in replies)


def test_a_worker_killed_while_the_coordinator_spins_fails_the_round(shm_guard):
    with Arena.create({"x": ((2,), "f8")}) as arena:
        pool = WorkerPool(EchoProgram(), arena.layout, 2, spin=True)
        try:
            pool.start()
            pool.run_round(1, [0.0, 0.0])
            os.kill(pool.pids[1], signal.SIGKILL)
            with pytest.raises(WorkerFailed, match="worker 1 .* was killed by SIGKILL"):
                for round_index in range(2, 100):
                    pool.run_round(round_index, [0.0, 0.0])
        finally:
            pool.close()


def test_nobody_spins_when_workers_outnumber_the_free_cores(monkeypatch):
    monkeypatch.setattr(spin, "usable_cores", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    assert spin.should_spin(2) and not spin.should_spin(8)  # 8 workers on 2 cores
    monkeypatch.setattr(os, "getloadavg", lambda: (1.6, 1.0, 1.0))  # another job holds both cores
    assert not spin.should_spin(1)
