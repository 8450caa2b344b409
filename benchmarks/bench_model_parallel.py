"""--server central vs partitioned over MPI on localhost, for docs/performance.md.

``rounds``: the speech shape 4096-4096-4096-35 (synthetic data; docs/performance.md), n = 2, 4, 8,
both servers, interleaved (central then partitioned, each n, then again ``--repeats`` times),
so a change of the machine's load hits both alike; per run the wall time of the round loop
over the rounds (one evaluation, at the end, included) and the busiest process's bytes (the
accounting's); per n the median of each server and their ratio.

``memory``: MLPs of growing size (256 features, 512 samples, hidden W,W, 10 classes), n = 4 and
8, each ``--server`` in ``--servers``; per rank the peak resident memory (VmHWM) and the
parameter bytes the run file records, the shared memory rank 0 reserved (``shm_bytes_rank0``),
and the least-squares slope of each rank's peak against the model's bytes (bytes of memory per
byte of model). One run at a time: a model under the central server needs about three times
its size on rank 0 (``--central-up-to`` caps it).

    python benchmarks/bench_model_parallel.py rounds [--rounds 5] [--workers 2,4,8] [--repeats 3]
    python benchmarks/bench_model_parallel.py memory [--widths 5000,10000,16384,23170,32768] [--workers 4,8]
        [--servers partitioned,central] [--central-up-to BYTES]

Prints one JSON object per line, and the load (``uptime``) before and after: on a shared
machine every time is an upper bound (memory figures are not). n = 8 is 9 ranks, more than 4
per core on 2 cores: ``IST_MAX_RANKS`` is raised for the benchmark's runs unless set.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import h5py
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
    seconds: dict[tuple[int, str], list[float]] = {}
    for repeat in range(args.repeats):
        for workers in args.workers:
            for server in ("central", "partitioned"):
                name = f"speech-{server}-n{workers}-{repeat}"
                summary = ist("run", *shape, "--workers", str(workers), "--server", server, "--transport", "mpi",
                              "--rounds", str(args.rounds), "--eval-every", str(args.rounds), "--out", str(out),
                              "--name", name)
                attrs = read_run(out / f"{name}.h5").attrs
                (out / f"{name}.h5").unlink()
                per_round = loop_seconds(attrs) / args.rounds
                seconds.setdefault((workers, server), []).append(per_round)
                print(json.dumps({"case": name, "round_seconds": per_round, "uptime": uptime(),
                                  "busiest_rank_bytes_per_round": summary["busiest_rank_bytes_per_round"],
                                  "bytes_busiest_link": summary.get("bytes_busiest_link")}), flush=True)
    for workers in args.workers:
        central, partitioned = (float(np.median(seconds[workers, s])) for s in ("central", "partitioned"))
        print(json.dumps({"workers": workers, "central_median_s": central, "partitioned_median_s": partitioned,
                          "ratio": partitioned / central, "central_s": seconds[workers, "central"],
                          "partitioned_s": seconds[workers, "partitioned"]}), flush=True)


def memory(args: argparse.Namespace, out: Path) -> None:
    for server in args.servers:
        for workers in args.workers:
            sizes, peaks = [], []
            for width in args.widths:
                params = 256 * width + width * width + 10 * width  # weights (float32 below)
                if server == "central" and params * 4 > args.central_up_to:
                    continue
                name = f"memory-{server}-w{width}-n{workers}"
                try:
                    ist("run", *synthetic(256, f"{width},{width}", 10, 512), "--workers", str(workers), "--server",
                        server, "--transport", "mpi", "--rounds", "2", "--eval-every", "2", "--out", str(out),
                        "--name", name)
                except subprocess.CalledProcessError as exc:  # e.g. the memory check, with other jobs running
                    print(json.dumps({"case": name, "refused": exc.stderr.strip().splitlines()[-1:]}), flush=True)
                    continue
                with h5py.File(out / f"{name}.h5", "r") as run:  # /final's sizes without reading it
                    model = sum(run["final"][key].nbytes for key in run["final"])
                    if "peak_rss_bytes_per_rank" in run.attrs:
                        peak = np.asarray(run.attrs["peak_rss_bytes_per_rank"], dtype=float)
                    else:  # central: rank 0's alone (the workers hold a subnet each)
                        peak = np.asarray([run.attrs["peak_rss_bytes_rank0"]], dtype=float)
                    held = np.asarray(run.attrs.get("param_bytes_per_rank", np.full(peak.shape, np.nan)))
                    shm = int(run.attrs.get("shm_bytes_rank0", -1))  # -1: a run file from before the record
                (out / f"{name}.h5").unlink()
                sizes.append(model)
                peaks.append(peak)
                print(json.dumps({"case": name, "model_bytes": model, "peak_rss_bytes_per_rank": peak.tolist(),
                                  "param_bytes_per_rank": held.tolist(), "shm_bytes_rank0": shm,
                                  "uptime": uptime()}), flush=True)
            if len(sizes) > 1:
                slopes = np.polyfit(np.asarray(sizes, dtype=float), np.asarray(peaks), 1)[0]
                print(json.dumps({"server": server, "workers": workers,
                                  "peak_bytes_per_model_byte_per_rank": slopes.tolist(),
                                  "busiest_rank_slope": float(np.polyfit(np.asarray(sizes, dtype=float),
                                                                         np.asarray(peaks).max(axis=1), 1)[0])}),
                      flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("rounds", "memory"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=lambda text: [int(v) for v in text.split(",")], default=None)
    parser.add_argument("--widths", type=lambda text: [int(v) for v in text.split(",")],
                        default=[5000, 10000, 16384, 23170, 32768])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--servers", type=lambda text: text.split(","), default=["partitioned", "central"])
    parser.add_argument("--central-up-to", type=float, default=2.5e9, help="largest model (bytes) run centrally")
    args = parser.parse_args()
    args.workers = args.workers or ([2, 4, 8] if args.what == "rounds" else [4, 8])
    os.environ.setdefault("IST_MAX_RANKS", str(max(args.workers) + 1))  # n = 8 is 9 ranks, over 4 per core on 2 cores
    print(json.dumps({"uptime_before": uptime()}), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        (rounds if args.what == "rounds" else memory)(args, Path(tmp))
    print(json.dumps({"uptime_after": uptime()}), flush=True)


if __name__ == "__main__":
    main()
