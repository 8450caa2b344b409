"""Shared memory: workers see and write the coordinator's arrays; nothing outlives the arena."""

from __future__ import annotations

import numpy as np

from ist_cli.runtime.arena import Arena, plan_layout
from ist_cli.runtime.pool import WorkerPool
from tests.helpers import shm_entries
from tests.programs import EchoProgram


def test_layout_is_aligned_and_disjoint():
    layout = plan_layout({"a": ((3,), "f8"), "b": ((5, 2), "f4"), "c": ((1,), "i8")}, "x")
    spans = [(f.offset, f.offset + f.nbytes) for f in layout.fields]
    assert all(f.offset % 64 == 0 for f in layout.fields)
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:], strict=False))
    assert layout.size >= spans[-1][1]


def test_workers_write_in_place_and_see_each_other(shm_guard):
    with Arena.create({"x": ((3,), "f8")}) as arena:
        name = arena.name
        assert name in shm_entries()
        pool = WorkerPool(EchoProgram(), arena.layout, 3)
        try:
            pool.start()
            assert len(set(pool.pids)) == 3
            replies = pool.run_round(1, [10.0, 20.0, 30.0])
        finally:
            pool.close()
        np.testing.assert_array_equal(arena["x"], [10.0, 21.0, 32.0])  # written by workers, seen here
        assert all(seconds.cpu >= 0 and seconds.wall >= 0 for seconds, _ in replies)
    assert name not in shm_entries()


def test_segments_of_dead_coordinators_are_reclaimed(tmp_path):
    import subprocess
    import sys

    from ist_cli.runtime.arena import reclaim_orphaned_segments, segment_owner

    # a coordinator that creates an arena and is then SIGKILLed with its resource tracker
    code = ("import os, signal; from ist_cli.runtime.arena import Arena; a = Arena.create({'x': ((8,), 'f8')}, tag='t');"
            "print(a.name, flush=True); os.killpg(0, signal.SIGKILL)")
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, start_new_session=True)
    name = process.stdout.strip()
    assert name and segment_owner(name) is not None
    assert name in shm_entries()  # leaked: nobody was left to unlink it
    with Arena.create({"y": ((1,), "f8")}) as mine:
        reclaimed = reclaim_orphaned_segments()
        assert name in reclaimed and name not in shm_entries()
        assert mine.name in shm_entries()  # a live coordinator's arena is left alone
