"""MPI transport vs shared memory on localhost, for docs/performance.md.

1. ``ist calibrate --transport mpi`` fits alpha and beta on this machine.
2. The default IST run (digits, hidden 512,512, 8 workers) and the speech-sized shape
   4096-4096-4096-35 (synthetic data, n = 2 and 4) run on both transports with the
   calibrated ``--latency/--bandwidth``; round time = (wall time of the last row - wall time
   of row 0) / rounds, evaluation only at the end.
3. Per MPI run: ``comm_time_measured`` beside ``comm_time_model``, per round.

    python benchmarks/bench_mpi.py [--rounds 10] [--speech-rounds 3]

Prints one JSON object per line and the machine's load (``uptime``) before and after.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from ist_cli.io.runfile import read_run


def ist(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "ist_cli", *args], check=True, capture_output=True, text=True).stdout


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def measure(name: str, args: list[str], rounds: int, flags: list[str], out: Path) -> None:
    for transport in ("shm", "mpi"):
        run = f"{name}-{transport}"
        ist("run", *args, *flags, "--rounds", str(rounds), "--eval-every", str(rounds), "--out", str(out),
            "--name", run, "--transport", transport, "--quiet")
        data = read_run(out / f"{run}.h5")
        wall = data.metrics["wall_time"]
        row = {"case": name, "transport": transport, "round_seconds": float(wall[-1] - wall[0]) / rounds,
               "compute_seconds_per_round": float(data.metrics["compute_time"][-1]) / rounds,
               "comm_time_model_per_round": float(data.metrics["comm_time_model"][-1]) / rounds}
        if transport == "mpi":
            row["comm_time_measured_per_round"] = float(data.metrics["comm_time_measured"][-1]) / rounds
            row["bytes_per_round"] = float(data.metrics["bytes_up_measured"][-1]
                                           + data.metrics["bytes_down_measured"][-1]) / rounds
        print(json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--speech-rounds", type=int, default=3)
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
