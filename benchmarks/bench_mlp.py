"""MLP benchmarks for docs/performance.md.

``memory``: a synthetic dataset of >= 200 MB with 8 workers; samples every worker's RSS,
USS (private memory) and PSS with psutil while the run goes, to show no worker holds a
private copy of the dataset or the full model (shared-memory pages count in RSS, not USS).

``defaults``: wall time and final accuracy of ``ist run --workers 8 --model mlp`` and of
the same with ``--algorithm dp`` (the acceptance runs).

    python benchmarks/bench_mlp.py memory [--samples 420000 --features 128 --rounds 5]
    python benchmarks/bench_mlp.py defaults
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time

import psutil
from subcommands import run_subcommand

from ist_cli.io.runfile import read_run

MB = 2**20


class MemorySampler:
    """Peak RSS/USS/PSS per process, sampled every ``interval`` seconds in a thread."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.pids: dict[str, int] = {}
        self.peaks: dict[str, dict[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def watch(self, label: str, pid: int) -> None:
        self.pids[label] = pid
        self.peaks.setdefault(label, {"rss": 0.0, "uss": 0.0, "pss": 0.0})

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            for label, pid in list(self.pids.items()):
                try:
                    info = psutil.Process(pid).memory_full_info()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                peak = self.peaks[label]
                for key in ("rss", "uss", "pss"):
                    peak[key] = max(peak[key], getattr(info, key) / MB)
            self._stop.wait(self.interval)


def memory(args: argparse.Namespace) -> None:
    from ist_cli.runner import run_experiment

    config = {
        "model": "mlp", "dataset": "synthetic", "synthetic_samples": args.samples,
        "synthetic_features": args.features, "workers": args.workers, "rounds": args.rounds,
        "eval_every": args.rounds, "hidden": args.hidden, "local_steps": args.local_steps,
        "algorithm": args.algorithm,
    }
    dataset_mb = args.samples * (args.features * 4 + 8) / MB
    sampler = MemorySampler()
    sampler.watch("coordinator", psutil.Process().pid)
    sampler.start()

    def on_start(pids: list[int]) -> None:
        for worker, pid in enumerate(pids):
            sampler.watch(f"worker {worker}", pid)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        summary = run_experiment(config, out_dir=out, name="bench", quiet=True, on_start=on_start)
    sampler.stop()
    print(f"dataset (X and y, train+test) = {dataset_mb:.0f} MB; model params = {summary.extras['params']} "
          f"({summary.extras['params'] * 4 / MB:.1f} MB float32); algorithm {args.algorithm}, {args.workers} workers, "
          f"hidden {args.hidden}, {args.rounds} rounds x {args.local_steps} local steps; "
          f"wall {time.perf_counter() - started:.1f} s; test accuracy {summary.last_metrics['test_accuracy']:.3f}")
    print()
    print("| process | peak RSS (MB) | peak USS (MB) | peak PSS (MB) |")
    print("|---|---:|---:|---:|")
    for label, peak in sampler.peaks.items():
        print(f"| {label} | {peak['rss']:.0f} | {peak['uss']:.0f} | {peak['pss']:.0f} |")


def defaults(args: argparse.Namespace) -> None:
    print("| command | wall time (s) | final test accuracy | rounds |")
    print("|---|---:|---:|---:|")
    for extra in ([], ["--algorithm", "dp"]):
        with tempfile.TemporaryDirectory() as out:
            command = [sys.executable, "-m", "ist_cli", "run", "--workers", "8", "--model", "mlp", *extra,
                       "--out", out, "--name", "r", "--quiet", "--json"]
            started = time.perf_counter()
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            wall = time.perf_counter() - started
            summary = json.loads(result.stdout)
            data = read_run(f"{out}/r.h5")
        shown = " ".join(["ist run --workers 8 --model mlp", *extra])
        print(f"| `{shown}` | {wall:.1f} | {data.metrics['test_accuracy'][-1]:.4f} | {summary['rounds_completed']} |")


def main() -> None:
    run_subcommand(__doc__, {
        "memory": (memory, {
            "--samples": {"type": int, "default": 420000},
            "--features": {"type": int, "default": 128},
            "--workers": {"type": int, "default": 8},
            "--rounds": {"type": int, "default": 5},
            "--local-steps": {"type": int, "default": 20},
            "--hidden": {"default": "256,256"},
            "--algorithm": {"default": "ist"},
        }),
        "defaults": (defaults, {}),
    })


if __name__ == "__main__":
    main()
