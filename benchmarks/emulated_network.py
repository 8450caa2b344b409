"""An emulated network on one machine: MPI ranks over TCP through a bandwidth-shaped loopback.

Inside a private network namespace (``unshare -n``, root), the loopback gets an Ethernet MTU
and a token-bucket filter (``tc qdisc ... tbf``); MPICH is told to use its OFI/TCP netmod even
between ranks of one node (``MPIR_CVAR_NOLOCAL=1``; without it, ranks on one node talk through
shared memory and bypass the shaping). Only bandwidth is shaped: adding delay needs the
``netem`` qdisc, which this machine's kernel lacks (``tc qdisc add ... netem`` fails), so the
latency stays loopback's (tens of microseconds).

``python benchmarks/emulated_network.py [--rate 200mbit]`` calibrates the shaped link with
``ist calibrate``, then runs IST and DP over it and prints comm_time_measured against
comm_time_model (docs/cluster.md, docs/performance.md). ``tests/test_emulated_network.py``
uses the same functions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py

MPI_OVER_TCP = {"MPIR_CVAR_CH4_NETMOD": "ofi", "MPIR_CVAR_NOLOCAL": "1", "FI_PROVIDER": "tcp"}
BURST = "256kb"  # must exceed the MTU, or every packet is dropped


def shaping_script(rate: str) -> str:
    return (f"set -e; ip link set lo mtu 1500 up; "
            f"tc qdisc add dev lo root tbf rate {rate} burst {BURST} latency 100ms; exec \"$@\"")


def why_not_available() -> str | None:
    """None when a shaped namespace can be made here; otherwise the reason."""
    if os.geteuid() != 0:
        return "needs root (unshare -n and tc)"
    for tool in ("unshare", "tc", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (apt-get install iproute2 util-linux)"
    probe = subprocess.run(["unshare", "-n", "bash", "-c", shaping_script("200mbit"), "shaped", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot shape a private loopback: {probe.stderr.strip().splitlines()[-1:]}"
    return None


def shaped(rate: str, *command: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``command`` in a new network namespace whose loopback is shaped to ``rate``, MPI over TCP."""
    return subprocess.run(["unshare", "-n", "bash", "-c", shaping_script(rate), "shaped", *command],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **MPI_OVER_TCP},
                          check=True)


def ist_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "ist_cli", *args]


def calibrate(rate: str) -> dict:
    result = shaped(rate, *ist_cmd("calibrate", "--workers", "1", "--sizes", "1048576,4194304", "--repeats", "5",
                                   "--json"))
    return json.loads(result.stdout)


def run_pair(rate: str, out: Path, bandwidth: str, latency: str, rounds: int = 5,
             hidden: str = "1024,1024") -> dict[str, dict[str, float]]:
    """IST and DP over the shaped link, priced on ``bandwidth``/``latency``: their final times.
    The default model sends megabytes a round (about 0.3 s of IST and 1.2 s of DP on 200
    Mbit/s), so the link, not a rank waiting for a core of a loaded machine, decides the time.
    IST takes one local step a round: ``comm_time_measured`` subtracts the slowest worker's
    compute from the round, but a worker computes while rank 0 still sends to the next one, so
    long local compute overlaps the link and makes the measured time smaller than the link's."""
    found = {}
    for algorithm in ("ist", "dp"):
        shaped(rate, *ist_cmd("run", "--transport", "mpi", "--model", "mlp", "--algorithm", algorithm,
                              "--workers", "2", "--hidden", hidden, "--rounds", str(rounds), "--eval-every", str(rounds),
                              *(("--local-steps", "1") if algorithm == "ist" else ()),
                              "--bandwidth", bandwidth, "--latency", latency, "--out", str(out), "--name",
                              algorithm, "--quiet"))
        with h5py.File(out / f"{algorithm}.h5", "r") as handle:
            metrics = handle["metrics"]
            found[algorithm] = {key: float(metrics[key][-1]) for key in
                                ("comm_time_measured", "comm_time_model", "bytes_up", "bytes_down")}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", default="200mbit", help="tbf rate (tc syntax)")
    args = parser.parse_args()
    reason = why_not_available()
    if reason:
        sys.exit(f"emulated_network: {reason}")
    fit = calibrate(args.rate)
    print(f"calibrated: {fit['bandwidth'] * 8 / 1e6:.1f} Mbit/s, latency {fit['latency'] * 1e6:.1f} us, "
          f"residual {fit['residual']:.1%}")
    with tempfile.TemporaryDirectory() as out:
        runs = run_pair(args.rate, Path(out), f"{fit['bandwidth']}B", f"{fit['latency']}s")
    for algorithm, m in runs.items():
        print(f"{algorithm}: comm_time_measured {m['comm_time_measured']:.4f} s, comm_time_model "
              f"{m['comm_time_model']:.4f} s, ratio {m['comm_time_measured'] / m['comm_time_model']:.3f}, "
              f"{m['bytes_up'] + m['bytes_down']:.0f} bytes")


if __name__ == "__main__":
    main()
