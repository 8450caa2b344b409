"""Quadratic model: per-round cost of the runtime and of the numba kernel.

    python benchmarks/bench_quadratic.py            # prints a markdown table

Measures (1) wall time per round of `ist run --model quadratic` for several worker counts
and dimensions (the runtime's round trip: plan, pipes, kernels, aggregation), and
(2) the kernel alone against the same update written in plain numpy.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from ist_cli.io.runfile import read_run  # noqa: E402
from ist_cli.kernels.quadratic import sketched_local_steps  # noqa: E402
from ist_cli.runner import run_experiment  # noqa: E402


def round_cost(workers: int, dim: int, rounds: int = 400) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as out:
        config = {"model": "quadratic", "workers": workers, "dim": dim, "rounds": rounds,
                  "eval_every": rounds, "lr": 0.001}
        summary = run_experiment(config, out_dir=out, name="bench")
        metrics = read_run(summary.file).metrics
    # wall time from round 0's row (after start-up) to the end
    wall = (metrics["wall_time"][-1] - metrics["wall_time"][0]) / rounds
    compute = metrics["compute_time"][-1] / rounds
    return wall * 1e3, compute * 1e3


def kernel_vs_numpy(dim: int, steps: int = 10, repeats: int = 200) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    A = rng.standard_normal((2 * dim, dim))
    L = A.T @ A / (2 * dim)
    b, x = rng.standard_normal(dim), rng.standard_normal(dim)
    scales = np.zeros(dim)
    scales[: dim // 4] = 4.0
    out = np.empty(dim)
    sketched_local_steps(L=L, b=b, start=x, scales=scales, lr=0.01, steps=steps, out=out)

    def numpy_version():
        z = x.copy()
        for _ in range(steps):
            z -= 0.01 * scales * (L @ z - b)
        return z

    np.testing.assert_allclose(numpy_version(), out, rtol=1e-12)
    timings = []
    def kernel_version():
        sketched_local_steps(L=L, b=b, start=x, scales=scales, lr=0.01, steps=steps, out=out)

    for fn in (kernel_version, numpy_version):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        timings.append((time.perf_counter() - start) / repeats * 1e6)
    return timings[0], timings[1]


def main() -> None:
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}\n")
    print("| workers | d | wall ms/round | compute ms/round (slowest worker + coordinator) |")
    print("|---|---|---|---|")
    for dim in (64, 1024):
        for workers in (1, 2, 4, 8):
            wall, compute = round_cost(workers, dim)
            print(f"| {workers} | {dim} | {wall:.3f} | {compute:.3f} |")
    print("\n| d | numba kernel µs (R=10) | numpy µs (R=10) |")
    print("|---|---|---|")
    for dim in (64, 256, 1024):
        kernel, reference = kernel_vs_numpy(dim)
        print(f"| {dim} | {kernel:.1f} | {reference:.1f} |")


if __name__ == "__main__":
    main()
