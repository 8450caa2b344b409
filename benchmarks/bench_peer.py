"""ist against the authors' IST design re-implemented in PyTorch + torch.distributed (gloo).

    pip install torch==2.13.0               # dev only (CPU wheel): ist never imports torch
    python benchmarks/bench_peer.py         # all parts; prints markdown tables
    python benchmarks/bench_peer.py step    # or one part: step | round | coordination | floor

The peer is our own re-implementation of the centralised parameter-server version of Yuan et
al.'s code (``distributed_*layer_subnet_centralized_ps_gloo.py``): rank 0 is the parameter
server *and* worker 0; each round it shuffles every hidden layer's neurons, splits them into
one block per rank and sends every rank its piece of each tensor with one ``dist.scatter``
per tensor (fc1 rows, the fc2 block, fc3 columns, biases, BN gamma/beta); each rank takes R
steps of ``optim.SGD`` on its subnet (``nn.Linear``, ``nn.BatchNorm1d`` with batch
statistics, ReLU, activations times n as ist's ``--subnet-scale width``); one
``dist.gather`` per tensor brings the pieces back and rank 0 writes them into the full model
with ``index_copy_`` (the output bias, which every rank holds, is averaged). One process and
one thread per rank, on this machine.

Parts:

``step``   one full-network fwd + bwd + SGD step at the speech shape 4096-4096-4096-35 (the IST paper's
           Google Speech Commands network: 4096 inputs, 35 classes; synthetic data here), batch
           128, batch norm, float32, one thread: ist's ``train_steps`` against numpy doing the
           same eight matrix products only (into preallocated outputs: the BLAS roofline of
           this step) and against PyTorch's step. GFLOP/s count the matrix products only.
``round``  wall time per IST round: digits 64-512-512-10, n = 8, R = 20, batch 32; speech
           shape, batch 128, R = 20, n = 2, 4, 8. ist: ``ist run`` as a user runs it (real
           worker processes over shared memory; synthetic data at the speech shape), the
           median ``wall_time`` between evaluations after the first, per round (each
           interval also holds one evaluation, charged to ist: at the speech shape the runs
           evaluate every ``SPEECH_EVAL_EVERY`` rounds, so each round carries a quarter of
           one); the peer: the median of its rounds after the first, timed on rank 0.
``coordination``  the same with R = 1 and a tiny network (64-16-16-10, batch 8): the cost of
           a round's communication and synchronisation alone, n = 2 and 8.
``floor``  the lowest speech-round time any implementation calling this machine's BLAS can
           reach: one worker's matrix products in numpy alone, times the workers that share
           a core, against the peer's round (``bench_floor``).

Every figure is the median over ``--repeats`` repetitions in which ist and the peer
alternate; the machine's load (``uptime``) is printed before and after each part.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_torch  # noqa: E402  (first: it exits with a message if torch is missing)
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as torch_mp  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from ist_cli.io.runfile import read_run  # noqa: E402
from ist_cli.kernels import mlp as kernels  # noqa: E402

SPEECH = [4096, 4096, 4096, 35]
DIGITS = [64, 512, 512, 10]
TINY = [64, 16, 16, 10]
LR = 0.01
PEER_SAMPLES = 1024  # rows of random data each peer rank holds
# ist's speech runs evaluate (a forward pass of the full model on the train and test rows)
# every this many rounds; each round is charged its share. The peer never evaluates.
SPEECH_EVAL_EVERY = 4


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def matmul_flops(widths: list[int], batch: int) -> int:
    """FLOPs of a step's matrix products: forward and weight gradient of every layer, the
    error through every layer but the first."""
    products = [fan_in * fan_out for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True)]
    return 2 * batch * (3 * sum(products) - products[0])


# ----------------------------------------------------------------------------- step
class NumpyMatmuls:
    """The step's matrix products in numpy, outputs preallocated: what BLAS alone costs.

    ``neuron_major`` False is ist's arrangement: activations (batch, width), weights (in, out).
    True is the other one: weights (out, in) as ``nn.Linear`` stores them and activations
    (width, batch), which suits OpenBLAS better at some of these shapes (``floor`` takes the
    faster of the two)."""

    def __init__(self, widths: list[int], batch: int, neuron_major: bool = False) -> None:
        rng = np.random.default_rng(0)
        f32 = np.float32
        self.neuron_major = neuron_major
        shape = (lambda w: (w, batch)) if neuron_major else (lambda w: (batch, w))
        self.a = [rng.standard_normal(shape(widths[0])).astype(f32)]
        self.a += [np.empty(shape(w), dtype=f32) for w in widths[1:]]
        pairs = list(zip(widths[:-1], widths[1:], strict=True))
        self.W = [(rng.standard_normal((o, i) if neuron_major else (i, o)) / np.sqrt(i)).astype(f32)
                  for i, o in pairs]
        self.G = [np.empty_like(w) for w in self.W]
        self.d = [np.empty(shape(w), dtype=f32) for w in widths]

        assert all(x.dtype == f32 for x in (*self.a, *self.W, *self.G, *self.d))

    def step(self) -> None:
        a, W, G, d = self.a, self.W, self.G, self.d
        layers = len(W)
        for layer in range(layers):
            if self.neuron_major:
                np.matmul(W[layer], a[layer], out=a[layer + 1])
            else:
                np.matmul(a[layer], W[layer], out=a[layer + 1])
        d[layers][...] = a[layers]
        for layer in range(layers - 1, -1, -1):
            if self.neuron_major:
                np.matmul(d[layer + 1], a[layer].T, out=G[layer])
                if layer:
                    np.matmul(W[layer].T, d[layer + 1], out=d[layer])
            else:
                np.matmul(a[layer].T, d[layer + 1], out=G[layer])
                if layer:
                    np.matmul(d[layer + 1], W[layer].T, out=d[layer])


def bench_step(repeats: int) -> None:
    batch = 128
    flops = matmul_flops(SPEECH, batch)
    case = bench_torch.Case(SPEECH, batch, True, 1.0, np.float32)
    numpy_step = NumpyMatmuls(SPEECH, batch)
    rows = case.batches(1)
    rows_t = torch.from_numpy(rows)
    runs = {"ist train_steps": lambda: case.numba_steps(rows), "numpy, matrix products only": numpy_step.step,
            "PyTorch (nn + optim.SGD)": lambda: case.torch_steps(rows_t)}
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for fn in runs.values():
        fn()  # warm-up
    print(f"load before: {uptime()}")
    for _ in range(repeats):  # interleaved
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    print(f"load after: {uptime()}\n")
    print(f"Full-network step, {'-'.join(map(str, SPEECH))}, batch {batch}, batch norm, float32, 1 thread; "
          f"{flops / 1e9:.2f} GFLOP of matrix products per step; median of {repeats} interleaved repeats:\n")
    print("| implementation | ms/step | GFLOP/s | ist GFLOP/s ÷ this row's |")
    print("|---|---:|---:|---:|")
    ist = float(np.median(samples["ist train_steps"]))
    for name, times in samples.items():
        t = float(np.median(times))
        print(f"| {name} | {t * 1e3:.1f} | {flops / t / 1e9:.1f} | {t / ist:.2f} |", flush=True)


# ----------------------------------------------------------------------------- the peer
def subnet(widths: list[int], n: int) -> nn.Sequential:
    """A rank's subnet: hidden widths / n, BN with batch statistics, activations times n."""
    w = [widths[0], widths[1] // n, widths[2] // n, widths[3]]
    layers: list[nn.Module] = []
    for i in range(3):
        layers.append(nn.Linear(w[i], w[i + 1]))
        if i < 2:
            layers += [nn.BatchNorm1d(w[i + 1], track_running_stats=False), nn.ReLU(), bench_torch.Scale(float(n))]
    return nn.Sequential(*layers)


def split(full: dict[str, torch.Tensor], name: str, idx1: torch.Tensor, idx2: torch.Tensor) -> torch.Tensor:
    """A rank's piece of one full tensor (nn.Linear weights are (out, in))."""
    t = full[name]
    if name == "0.weight":
        return t.index_select(0, idx1)
    if name == "4.weight":
        return t.index_select(0, idx2).index_select(1, idx1)
    if name == "8.weight":
        return t.index_select(1, idx2)
    if name == "8.bias":
        return t.clone()
    return t.index_select(0, idx2 if name.startswith(("4.", "5.")) else idx1)


def write_back(full: dict[str, torch.Tensor], name: str, pieces: list[torch.Tensor], blocks1: torch.Tensor,
               blocks2: torch.Tensor) -> None:
    """``index_copy_`` every rank's piece into the full tensor; the shared output bias is averaged."""
    t = full[name]
    if name == "8.bias":
        t.copy_(torch.stack(pieces).mean(0))
        return
    for piece, idx1, idx2 in zip(pieces, blocks1, blocks2, strict=True):
        if name == "0.weight":
            t.index_copy_(0, idx1, piece)
        elif name == "4.weight":
            rows = t.index_select(0, idx2)
            rows.index_copy_(1, idx1, piece)
            t.index_copy_(0, idx2, rows)
        elif name == "8.weight":
            t.index_copy_(1, idx2, piece)
        else:
            t.index_copy_(0, idx2 if name.startswith(("4.", "5.")) else idx1, piece)


def peer_rank(rank: int, n: int, widths: list[int], batch: int, steps: int, rounds: int, port: int,
              out: str) -> None:
    """One rank of the parameter-server IST; rank 0 writes its per-round times to ``out``."""
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=n)
    gen = torch.Generator().manual_seed(rank)
    X = torch.randn(PEER_SAMPLES, widths[0], generator=gen)
    y = torch.randint(0, widths[-1], (PEER_SAMPLES,), generator=gen)
    model = subnet(widths, n)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    params = dict(model.named_parameters())
    full: dict[str, torch.Tensor] = {}
    if rank == 0:
        whole = subnet(widths, 1)
        full = {k: v.detach().clone() for k, v in whole.named_parameters()}
    times = []
    for _ in range(rounds):
        dist.barrier()
        start = time.perf_counter()
        if rank == 0:
            blocks1 = torch.randperm(widths[1]).view(n, -1)
            blocks2 = torch.randperm(widths[2]).view(n, -1)
        with torch.no_grad():
            for name, p in params.items():
                pieces = [split(full, name, blocks1[i], blocks2[i]) for i in range(n)] if rank == 0 else None
                dist.scatter(p.data, scatter_list=pieces, src=0)
        for _ in range(steps):
            rows = torch.randint(0, PEER_SAMPLES, (batch,), generator=gen)
            optimizer.zero_grad()
            F.cross_entropy(model(X[rows]), y[rows]).backward()
            optimizer.step()
        with torch.no_grad():
            for name, p in params.items():
                gathered = [torch.empty_like(p) for _ in range(n)] if rank == 0 else None
                dist.gather(p.data, gather_list=gathered, dst=0)
                if rank == 0:
                    write_back(full, name, gathered, blocks1, blocks2)
        times.append(time.perf_counter() - start)
    if rank == 0:
        Path(out).write_text(json.dumps(times))
    dist.barrier()  # no rank tears gloo down while another still talks to it (std::terminate)
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peer_round(n: int, widths: list[int], batch: int, steps: int, rounds: int) -> float:
    """Seconds per round of the peer: median of its rounds after the first."""
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "times.json")
        torch_mp.spawn(peer_rank, args=(n, widths, batch, steps, rounds + 1, free_port(), out), nprocs=n, join=True)
        return float(np.median(json.loads(Path(out).read_text())[1:]))


# ----------------------------------------------------------------------------- ist
def ist_round(args: list[str], every: int, logged: int) -> float:
    """Seconds per round of ``ist run`` as a user runs it, evaluated every ``every`` rounds for
    ``logged`` evaluations: the median increment of ``wall_time`` between evaluations after
    the first (which also holds the workers' start-up), over ``every``. Each increment holds
    one evaluation, which the peer does not do: ist is charged for it."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "ist_cli", "run", *args, "--rounds", str(every * logged),
                        "--eval-every", str(every), "--out", tmp, "--name", "bench", "--quiet"], check=True)
        wall = read_run(Path(tmp) / "bench.h5").metrics["wall_time"]
        return float(np.median(np.diff(wall)[1:])) / every


def ist_args(widths: list[int], n: int, batch: int, steps: int) -> list[str]:
    args = ["--model", "mlp", "--workers", str(n), "--batch-size", str(batch), "--local-steps", str(steps),
            "--hidden", f"{widths[1]},{widths[2]}", "--lr", str(LR)]
    if widths[0] != 64:
        args += ["--dataset", "synthetic", "--synthetic-features", str(widths[0]), "--synthetic-classes",
                 str(widths[-1]), "--synthetic-samples", str(batch)]  # a cheap evaluation (one batch: no larger)
    return args


def compare(title: str, cases: list[tuple[str, list[int], int, int, int, int, int, int]], repeats: int,
            unit: float, unit_name: str) -> None:
    """Interleaved ist / peer repetitions per case; a table of medians."""
    print(f"load before: {uptime()}", flush=True)
    rows = []
    for label, widths, n, batch, steps, every, logged, peer_rounds in cases:
        ist_s, peer_s = [], []
        for _ in range(repeats):
            ist_s.append(ist_round(ist_args(widths, n, batch, steps), every, logged))
            peer_s.append(peer_round(n, widths, batch, steps, peer_rounds))
        rows.append((label, float(np.median(ist_s)), float(np.median(peer_s))))
        print(f"  {label}: ist {[round(v / unit, 3) for v in ist_s]}, peer {[round(v / unit, 3) for v in peer_s]} "
              f"{unit_name}; load {uptime().split('load average:')[1].strip()}", flush=True)
    print(f"load after: {uptime()}\n")
    print(f"{title} (median of {repeats} interleaved repeats):\n")
    print(f"| case | ist {unit_name}/round | PyTorch + gloo {unit_name}/round | ist ÷ PyTorch |")
    print("|---|---:|---:|---:|")
    for label, ist, peer in rows:
        print(f"| {label} | {ist / unit:.3g} | {peer / unit:.3g} | {ist / peer:.2f} |", flush=True)


def bench_round(repeats: int) -> None:
    every = SPEECH_EVAL_EVERY
    speech = [(f"speech {'-'.join(map(str, SPEECH))}, bs 128, R 20, n {n}", SPEECH, n, 128, 20, every, 3, 3)
              for n in (2, 4, 8)]
    compare("IST round", [("digits 64-512-512-10, bs 32, R 20, n 8", DIGITS, 8, 32, 20, 50, 3, 30), *speech],
            repeats, 1.0, "s")


def bench_coordination(repeats: int) -> None:
    cases = [(f"tiny 64-16-16-10, bs 8, R 1, n {n}", TINY, n, 8, 1, 300, 3, 300) for n in (2, 8)]
    compare("Coordination only", cases, repeats, 1e-3, "ms")


def bench_floor(repeats: int) -> None:
    """How low an ist speech round can go on this machine, against the peer's round.

    An IST round at n workers is n independent jobs of R steps on a subnet (hidden widths
    4096/n), one per worker process, on ``os.cpu_count()`` cores. Whatever else it does, it
    performs each worker's matrix products: timed here in numpy alone (no elementwise work, no
    gather or scatter, no coordination), in the faster of the two arrangements, single thread.
    ceil(n / cores) workers share a core, so no ist round can take less than that many
    workers' products. Divided by the peer's measured round this is the lowest ist ÷ PyTorch
    any implementation calling this BLAS can reach."""
    batch, steps, cores = 128, 20, os.cpu_count() or 1
    print(f"load before: {uptime()}", flush=True)
    rows = []
    for n in (2, 4, 8):
        widths = [SPEECH[0], SPEECH[1] // n, SPEECH[2] // n, SPEECH[3]]
        arrangements = {False: NumpyMatmuls(widths, batch), True: NumpyMatmuls(widths, batch, neuron_major=True)}
        samples: dict[bool, list[float]] = {key: [] for key in arrangements}
        peer_s = []
        for _ in range(repeats):  # interleaved: both arrangements, then the peer
            for key, products in arrangements.items():
                products.step()  # warm-up
                start = time.perf_counter()
                for _ in range(steps):
                    products.step()
                samples[key].append(time.perf_counter() - start)
            peer_s.append(peer_round(n, SPEECH, batch, steps, 3))
        per_worker = {key: float(np.median(v)) for key, v in samples.items()}
        best = min(per_worker.values())
        per_core = -(-n // cores)
        peer = float(np.median(peer_s))
        flops = steps * matmul_flops(widths, batch)
        rows.append((n, per_worker[False], per_worker[True], flops / best / 1e9, per_core, best * per_core, peer))
        print(f"  n {n}: products {[round(v, 3) for v in samples[False]]} / {[round(v, 3) for v in samples[True]]} s,"
              f" peer {[round(v, 3) for v in peer_s]} s; load {uptime().split('load average:')[1].strip()}", flush=True)
    print(f"load after: {uptime()}\n")
    print(f"Floor of a speech-shape IST round ({'-'.join(map(str, SPEECH))}, batch {batch}, R {steps}) on {cores} "
          f"cores: one worker's matrix products in numpy, median of {repeats} interleaved repeats:\n")
    print("| n | one worker's products, ist arrangement (s) | same, (out, in) weights (s) | best GFLOP/s | "
          "workers per core | floor of a round (s) | PyTorch + gloo round (s) | floor ÷ PyTorch |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for n, ist_arr, other_arr, gflops, per_core, floor, peer in rows:
        print(f"| {n} | {ist_arr:.3f} | {other_arr:.3f} | {gflops:.1f} | {per_core} | {floor:.3f} | {peer:.3f} | "
              f"{floor / peer:.2f} |", flush=True)


PARTS = {"step": bench_step, "round": bench_round, "coordination": bench_coordination, "floor": bench_floor}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="*", metavar="PART", help="step, round, coordination, floor (default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions; medians are reported")
    args = parser.parse_args()
    parts = args.parts or list(PARTS)
    if not set(parts) <= set(PARTS):
        parser.error(f"unknown part(s) {sorted(set(parts) - set(PARTS))}; expected some of {list(PARTS)}")
    kernels.warm_up("float32")
    print(f"machine: {bench_torch.cpu_model()}, {os.cpu_count()} cores; python {sys.version.split()[0]}, torch {torch.__version__}, "
          f"numpy {np.__version__}; one thread per process; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    for part in parts:
        PARTS[part](
            args.repeats * (3 if part == "step" else 1))
        print()


if __name__ == "__main__":
    main()
