"""Start-up, teardown and per-round coordination of the shared-memory runtime (docs/performance.md).

    python benchmarks/bench_startup.py [--repeats 5] [--rounds 2000]
    python benchmarks/bench_startup.py --start-methods [--repeats 5]

Prints one markdown table. Each repetition measures, in this order (interleaved, so a change
of machine load hits every figure alike), with the 1-minute load average read just before:

- ``run``: the whole ``ist run --workers 8 --model mlp`` (defaults) as a subprocess, split by the
  run file's ``rounds_began`` / ``rounds_ended`` attributes into start-up (process launch to
  round 1: Python, imports, data, kernels, workers), rounds (200 rounds and their
  evaluations) and teardown (stopping workers, ``/final``, closing the file, interpreter exit);
- ``empty n=2`` and ``empty n=8``: one round of a worker program that does nothing, on the
  shared-memory pool (``runtime.pool.WorkerPool``): the cost of coordinating a round alone.
  Median over ``--rounds`` rounds after 200 warm-up rounds; n = 2 also with the spin forced
  on and off (``runtime.spin``: the pool spins only when workers fit the free cores).

``--start-methods`` instead compares starting and stopping the default run's 8 MLP workers
spawned, forked from the fork server (cold, as a run starts it) and forked from this process.

Before measuring it writes the bytecode of every ``ist_cli`` module (``compile_package``): a
run then imports what a user's second run imports, even where ``PYTHONDONTWRITEBYTECODE`` is set.

The table gives the median over repetitions (and the range), the median load, and the
targets the runtime is held to. It also says whether every repetition's ``/final`` and ``/metrics``
(timings aside) were bitwise identical and the final test accuracy.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import h5py
import numpy as np

from ist_cli.io.metric_info import TIMING_METRICS
from ist_cli.runtime.arena import Arena
from ist_cli.runtime.pool import WorkerPool
from ist_cli.runtime.spin import should_spin
from ist_cli.runtime.transport import WorkerProgram

TIMING = set(TIMING_METRICS)


class Nothing(WorkerProgram):
    """A worker that does nothing: a round is pure coordination."""

    def step(self, round_index: int, payload: object) -> None:
        return None


def load() -> float:
    return os.getloadavg()[0]


def seconds_since(earlier: str, later: str) -> float:
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


def compile_package() -> str:
    """Write the bytecode of every ``ist_cli`` module, as a user's first run does, and say so.

    A run started with ``PYTHONDONTWRITEBYTECODE`` set (some sandboxes and CI images set it)
    and no bytecode on disk compiles every module from source at every start: about 0.1 s
    more, growing with the package, which is not what a user's second run pays.
    ``py_compile`` writes the files whatever that variable says; imports then read them.
    """
    import compileall

    import ist_cli

    package = Path(ist_cli.__file__).parent
    compileall.compile_dir(str(package), quiet=1)
    return f"bytecode of {package} compiled before measuring (as after a first run)"


def whole_run() -> dict[str, object]:
    """One ``ist run --workers 8 --model mlp``: wall, start-up, rounds, teardown, accuracy, digest."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "ist_cli", "run", "--workers", "8", "--model", "mlp",
                   "--out", out, "--name", "r", "--quiet"]
        launched = datetime.now().astimezone()
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        digest = hashlib.sha256()
        with h5py.File(Path(out) / "r.h5", "r") as handle:
            began, ended = handle.attrs["rounds_began"], handle.attrs["rounds_ended"]
            for group in ("final", "metrics"):
                for key in sorted(handle[group]):
                    if key not in TIMING:
                        digest.update(key.encode() + np.ascontiguousarray(handle[group][key][()]).tobytes())
            accuracy = float(handle["metrics/test_accuracy"][-1])
    startup = seconds_since(launched.isoformat(), began)
    rounds = seconds_since(began, ended)
    return {"wall": wall, "startup": startup, "rounds": rounds, "teardown": wall - startup - rounds,
            "accuracy": accuracy, "digest": digest.hexdigest()}


def empty_round(workers: int, rounds: int, spin: bool | None = None) -> float:
    """Median seconds of one round of ``Nothing`` on ``workers`` pool workers (``spin`` None:
    as the pool decides from the free cores; True/False: forced)."""
    with Arena.create({"x": ((workers,), "float64")}) as arena:
        pool = WorkerPool(Nothing(), arena.layout, workers, spin=spin)
        pool.start()
        try:
            for round_index in range(1, 201):
                pool.run_round(round_index)
            times = []
            for round_index in range(201, 201 + rounds):
                started = time.perf_counter()
                pool.run_round(round_index)
                times.append(time.perf_counter() - started)
        finally:
            pool.close()
    return statistics.median(times)


def stop_fork_server() -> None:
    """Stop this process's fork server. It removes its socket's directory (this process's
    multiprocessing temp dir, ``runtime.worker_preload``) as it ends: the directory is made
    again for the next server's socket."""
    from multiprocessing import forkserver, util

    server = forkserver._forkserver  # noqa: SLF001 - multiprocessing has no public stop
    try:
        server._stop()  # noqa: SLF001
    except FileNotFoundError:  # the socket went with its directory
        server._forkserver_address = None  # noqa: SLF001
    os.makedirs(util.get_temp_dir(), exist_ok=True)


def start_and_stop(method: str) -> tuple[float, float]:
    """Seconds to start the default run's 8 MLP workers with ``method`` (to every worker
    ready, kernels loaded) and to stop them, in this warm process. "forkserver" includes the
    server's own start-up and preload (a new server each time), as a run pays it."""
    from ist_cli.algorithms import build_algorithm, worker_preload
    from ist_cli.config import resolve_config

    algorithm = build_algorithm(resolve_config({"model": "mlp", "workers": 8}))
    with Arena.create(algorithm.arena_spec()) as arena:
        algorithm.initialize(arena.arrays)
        algorithm.warm_up()
        stop_fork_server()  # a cold server, as a new run starts one
        pool = WorkerPool(algorithm.worker_program(), arena.layout, 8, start_method=method,
                          preload=worker_preload(algorithm.settings))
        started = time.perf_counter()
        pool.start()
        ready = time.perf_counter() - started  # every worker has set up: its kernels are loaded
        started = time.perf_counter()
        pool.close()
        return ready, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2000, help="rounds timed per empty-round measurement")
    parser.add_argument("--start-methods", action="store_true",
                        help="only compare how 8 MLP workers start and stop: spawn, fork server, fork")
    args = parser.parse_args()
    if args.start_methods:
        compare_start_methods(args.repeats)
        return

    cached = compile_package()
    samples: dict[str, list[float]] = {}
    loads: list[float] = []
    digests, accuracies = set(), set()
    spins: list[bool] = []
    for _ in range(args.repeats):
        loads.append(load())
        run = whole_run()
        digests.add(run["digest"])
        accuracies.add(run["accuracy"])
        for key in ("wall", "startup", "rounds", "teardown"):
            samples.setdefault(key, []).append(float(run[key]))
        samples.setdefault("startup+teardown", []).append(float(run["startup"]) + float(run["teardown"]))
        for workers in (2, 8):
            loads.append(load())
            spins.append(should_spin(workers))
            samples.setdefault(f"empty{workers}", []).append(empty_round(workers, args.rounds) * 1e3)
        for forced in (True, False):
            samples.setdefault(f"empty2{forced}", []).append(empty_round(2, args.rounds, forced) * 1e3)
        loads.append(load())

    rows = [
        ("`ist run --workers 8 --model mlp`, wall", "wall", "s", "≤ 4"),
        ("  start-up (launch to round 1)", "startup", "s", ""),
        ("  200 rounds with evaluations", "rounds", "s", ""),
        ("  teardown (after the last round to exit)", "teardown", "s", ""),
        ("  start-up + teardown", "startup+teardown", "s", "≤ 1.5"),
        ("empty-round coordination, n = 2", "empty2", "ms", "≤ 0.1"),
        ("empty-round coordination, n = 8", "empty8", "ms", "≤ 0.4"),
        ("  n = 2, spin forced on", "empty2True", "ms", ""),
        ("  n = 2, spin forced off", "empty2False", "ms", ""),
    ]
    print(f"{datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; {platform.processor() or platform.machine()}, "
          f"{len(os.sched_getaffinity(0))} usable cores; python {platform.python_version()}; "
          f"{args.repeats} interleaved repetitions; 1-minute load average {min(loads):.1f}–{max(loads):.1f} "
          f"(median {statistics.median(loads):.1f}); {cached}\n")
    print("| figure | median | range | unit | target |")
    print("|---|---:|---:|---|---|")
    for label, key, unit, target in rows:
        values = samples[key]
        digits = 3 if unit == "ms" else 2
        print(f"| {label} | {statistics.median(values):.{digits}f} | {min(values):.{digits}f}–{max(values):.{digits}f} "
              f"| {unit} | {target} |")
    print(f"\nfinal test accuracy: {', '.join(f'{a:.4f}' for a in sorted(accuracies))}; "
          f"/final and /metrics (timings aside) bitwise identical across repetitions: "
          f"{'yes' if len(digests) == 1 else f'NO ({len(digests)} different)'}; the pool chose to spin in "
          f"{sum(spins)} of {len(spins)} empty-round measurements (it never spins for n = 8 on 2 cores)")


def compare_start_methods(repeats: int) -> None:
    methods = ("spawn", "forkserver", "fork")
    times: dict[str, list[tuple[float, float]]] = {m: [] for m in methods}
    loads = []
    for _ in range(repeats):
        for method in methods:
            loads.append(load())
            times[method].append(start_and_stop(method))
    print(f"{datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; {repeats} interleaved repetitions; 1-minute load "
          f"average {min(loads):.1f}–{max(loads):.1f}\n")
    print("| start method | start 8 workers (s) | stop 8 workers (s) |")
    print("|---|---:|---:|")
    for method in methods:
        print(f"| {method} | {statistics.median(t[0] for t in times[method]):.3f} "
              f"| {statistics.median(t[1] for t in times[method]):.3f} |")


if __name__ == "__main__":
    main()
