"""MPI transport vs shared memory on localhost, for docs/performance.md.

1. ``ist calibrate --transport mpi`` fits alpha and beta on this machine.
2. The default IST run (digits, hidden 512,512, 8 workers) and the speech-sized shape
   4096-4096-4096-35 (synthetic data, n = 2 and 4) run on both transports with the
   calibrated ``--latency/--bandwidth``; every round is logged and each per-round number is
   the median over rounds 2.. of the increments (round 1's row also holds the start-up).
3. Per MPI run: ``comm_time_measured`` beside ``comm_time_model``, per round.

    python benchmarks/bench_mpi.py [--rounds 10] [--speech-rounds 4]

Prints one JSON object per line and the machine's load (``uptime``) before and after.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ist_cli.io.runfile import read_run


def ist(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "ist_cli", *args], check=True, capture_output=True, text=True).stdout


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def per_round(cumulative) -> float:
    """Median increment per round, round 1 (which carries the start-up) left out."""
    return float(np.median(np.diff(np.asarray(cumulative))[1:]))


def measure(name: str, args: list[str], rounds: int, flags: list[str], out: Path) -> None:
    for transport in ("shm", "mpi"):
        run = f"{name}-{transport}"
        ist("run", *args, *flags, "--rounds", str(rounds), "--eval-every", "1", "--out", str(out),
            "--name", run, "--transport", transport, "--quiet")
        m = read_run(out / f"{run}.h5").metrics
        row = {"case": name, "transport": transport, "round_seconds": per_round(m["wall_time"]),
               "compute_seconds": per_round(m["compute_time"]), "comm_time_model": per_round(m["comm_time_model"])}
        if transport == "mpi":
            row["comm_time_measured"] = per_round(m["comm_time_measured"])
            row["bytes_per_round"] = per_round(m["bytes_up_measured"]) + per_round(m["bytes_down_measured"])
        print(json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--speech-rounds", type=int, default=4)
    args = parser.parse_args()
    print(json.dumps({"uptime_before": uptime()}), flush=True)
    fit = json.loads(ist("calibrate", "--transport", "mpi", "--workers", "2", "--json"))
    print(json.dumps({"calibration": fit["flags"], "residual": fit["residual"]}), flush=True)
    flags = fit["flags"].split()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        measure("default-ist-n8", ["--model", "mlp", "--workers", "8"], args.rounds, flags, out)
        speech = ["--model", "mlp", "--dataset", "synthetic", "--synthetic-features", "4096",
                  "--synthetic-classes", "35", "--synthetic-samples", "2000", "--hidden", "4096,4096",
                  "--local-steps", "1"]
        for workers in (2, 4):
            measure(f"speech-ist-n{workers}", [*speech, "--workers", str(workers)], args.speech_rounds, flags, out)
    print(json.dumps({"uptime_after": uptime()}), flush=True)


if __name__ == "__main__":
    main()
