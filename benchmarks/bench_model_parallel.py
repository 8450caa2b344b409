"""--server central vs partitioned over MPI on localhost, for docs/performance.md.

``rounds``: the speech-sized shape 4096-4096-4096-35 (synthetic data), n = 2, 4, 8, both
servers; per round the wall time between the start and the end of the round loop over the
rounds (one evaluation, at the end) and the busiest process's bytes (the accounting's).

``memory``: MLPs of growing size (256 features, 512 samples, hidden W,W), n = 4 and 8, ``--server partitioned``; per rank the peak
resident memory and the parameter bytes the run file records, and the least-squares slope
of each rank's peak against the model's bytes (bytes of memory per byte of model).

    python benchmarks/bench_model_parallel.py rounds [--rounds 5] [--workers 2,4,8]
    python benchmarks/bench_model_parallel.py memory [--widths 1024,2048,4096] [--workers 4,8]

Prints one JSON object per line, and the load (``uptime``) before and after: on a shared
machine every time is an upper bound.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import numpy as np

from ist_cli.io.runfile import read_run


def ist(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "ist_cli", *args, "--json", "--quiet"], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def synthetic(features: int, hidden: str, classes: int, samples: int) -> list[str]:
    return ["--model", "mlp", "--algorithm", "ist", "--dataset", "synthetic", "--synthetic-features", str(features),
            "--synthetic-classes", str(classes), "--synthetic-samples", str(samples), "--hidden", hidden,
            "--local-steps", "1"]


def loop_seconds(attrs: dict) -> float:
    began, ended = (datetime.fromisoformat(str(attrs[key]).replace("Z", "+00:00")) for key in ("rounds_began", "rounds_ended"))
    return (ended - began).total_seconds()


def rounds(args: argparse.Namespace, out: Path) -> None:
    shape = synthetic(4096, "4096,4096", 35, 2000)
    for workers in args.workers:
        for server in ("central", "partitioned"):
            name = f"speech-{server}-n{workers}"
            summary = ist("run", *shape, "--workers", str(workers), "--server", server, "--transport", "mpi",
                          "--rounds", str(args.rounds), "--eval-every", str(args.rounds), "--out", str(out),
                          "--name", name)
            attrs = read_run(out / f"{name}.h5").attrs
            print(json.dumps({"case": name, "round_seconds": loop_seconds(attrs) / args.rounds,
                              "busiest_rank_bytes_per_round": summary["busiest_rank_bytes_per_round"]}), flush=True)


def memory(args: argparse.Namespace, out: Path) -> None:
    for workers in args.workers:
        sizes, peaks = [], []
        for width in args.widths:
            name = f"memory-w{width}-n{workers}"
            ist("run", *synthetic(256, f"{width},{width}", 10, 512), "--workers", str(workers), "--server",
                "partitioned", "--transport", "mpi", "--rounds", "2", "--eval-every", "2", "--out", str(out),
                "--name", name)
            run = read_run(out / f"{name}.h5")
            model = sum(array.nbytes for array in run.final.values())
            peak = np.asarray(run.attrs["peak_rss_bytes_per_rank"])
            sizes.append(model)
            peaks.append(peak)
            print(json.dumps({"case": name, "model_bytes": model, "peak_rss_bytes_per_rank": peak.tolist(),
                              "param_bytes_per_rank": np.asarray(run.attrs["param_bytes_per_rank"]).tolist()}),
                  flush=True)
        slopes = np.polyfit(np.asarray(sizes, dtype=float), np.asarray(peaks), 1)[0]
        print(json.dumps({"workers": workers, "peak_bytes_per_model_byte_per_rank": slopes.tolist()}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("rounds", "memory"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=lambda text: [int(v) for v in text.split(",")], default=None)
    parser.add_argument("--widths", type=lambda text: [int(v) for v in text.split(",")], default=[1024, 2048, 4096])
    args = parser.parse_args()
    args.workers = args.workers or ([2, 4, 8] if args.what == "rounds" else [4, 8])
    print(json.dumps({"uptime_before": uptime()}), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        (rounds if args.what == "rounds" else memory)(args, Path(tmp))
    print(json.dumps({"uptime_after": uptime()}), flush=True)


if __name__ == "__main__":
    main()
