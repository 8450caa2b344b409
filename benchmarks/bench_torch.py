"""ist's numba MLP kernels against the same computation in PyTorch, single thread.

    pip install torch==2.13.0          # dev only: ist never imports torch
    python benchmarks/bench_torch.py   # prints a markdown table

Per local SGD step (minibatch rows taken from X, forward, softmax cross-entropy backward,
plain SGD update) of (a) the full network 64-512-512-10 as DP / local-SGD workers run it and
(b) worker 0's IST subnet with 8 workers (64-64-64-10, hidden activations scaled by 8 as
``--subnet-scale width`` does), batch 32 and 256, with and without batch norm (batch
statistics). Numba: ``kernels.mlp.train_steps``. PyTorch: the idiomatic version of the
original IST code (``nn.Linear``, ``nn.BatchNorm1d(track_running_stats=False)``, ReLU,
``F.cross_entropy``, ``optim.SGD``). Also one worker's IST gather + scatter: numba
``gather_subnet``/``scatter_subnet`` against torch fancy indexing and ``index_put_``.

Before any timing, one step from the same weights and batch is run in float64 by both and
must give the same loss and updated weights (1e-10); the gather and scatter must agree exactly.
"""

from __future__ import annotations

import argparse
import os
import platform
import string
import sys
import time
from collections.abc import Callable

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import numba  # noqa: E402
import numpy as np  # noqa: E402

from ist_cli.kernels import mlp as kernels  # noqa: E402
from ist_cli.models.mlp import BETA, GAMMA, B, NetLayout, initial_params, net_layout  # noqa: E402
from ist_cli.models.subnet import draw_partition, neuron_index, subnet_layout  # noqa: E402
from ist_cli.seeding import stream  # noqa: E402

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError:
    print("bench_torch: PyTorch is not installed; install it into the dev venv with "
          "`pip install torch==2.13.0` (CPU wheel)", file=sys.stderr)
    sys.exit(2)

WIDTHS = [64, 512, 512, 10]
N_WORKERS = 8
LR = 0.1
SAMPLES = 2048
TOLERANCE = 1e-10


class Scale(nn.Module):
    """IST's subnet scaling: hidden activations times n (no-op module when the factor is 1)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def torch_model(layout: NetLayout, flat: np.ndarray, scale: float) -> nn.Sequential:
    """The network of ``layout`` as torch modules, holding a copy of the weights in ``flat``."""
    dtype = torch.float64 if flat.dtype == np.float64 else torch.float32
    named = layout.named(flat)
    modules: list[nn.Module] = []
    for layer in range(layout.n_layers):
        fan_in, fan_out = int(layout.widths[layer]), int(layout.widths[layer + 1])
        linear = nn.Linear(fan_in, fan_out, dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(named[f"W{layer}"].T.copy()))
            linear.bias.copy_(torch.from_numpy(named[f"b{layer}"].copy()))
        modules.append(linear)
        if layer == layout.n_layers - 1:
            break
        if layout.batch_norm:
            norm = nn.BatchNorm1d(fan_out, eps=kernels.BN_EPS, track_running_stats=False, dtype=dtype)
            with torch.no_grad():
                norm.weight.copy_(torch.from_numpy(named[f"gamma{layer}"].copy()))
                norm.bias.copy_(torch.from_numpy(named[f"beta{layer}"].copy()))
            modules.append(norm)
        modules.append(nn.ReLU())
        if scale != 1.0:
            modules.append(Scale(scale))
    return nn.Sequential(*modules)


def flatten(layout: NetLayout, model: nn.Sequential, dtype: np.dtype) -> np.ndarray:
    """The torch model's weights back in ist's flat layout."""
    flat = np.zeros(layout.size, dtype=dtype)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    norms = [m for m in model if isinstance(m, nn.BatchNorm1d)]
    for layer, linear in enumerate(linears):
        layout.weight(flat, layer)[...] = linear.weight.detach().numpy().T
        layout.vector(flat, layer, B)[...] = linear.bias.detach().numpy()
    for layer, norm in enumerate(norms):
        layout.vector(flat, layer, GAMMA)[...] = norm.weight.detach().numpy()
        layout.vector(flat, layer, BETA)[...] = norm.bias.detach().numpy()
    return flat


class Case:
    """One network + batch size + norm, with the data, batches and both implementations' state."""

    def __init__(self, widths: list[int], batch: int, batch_norm: bool, scale: float, dtype: type) -> None:
        self.layout = net_layout(widths, batch_norm)
        self.batch, self.scale, self.dtype = batch, scale, np.dtype(dtype)
        rng = stream(0, "bench-torch", batch, int(batch_norm), int(widths[1]))
        self.X = rng.standard_normal((SAMPLES, widths[0])).astype(self.dtype)
        self.y = rng.integers(0, widths[-1], SAMPLES).astype(np.int64)
        self.rng = rng
        self.params = initial_params(self.layout, 0, self.dtype)
        self.grad = np.zeros_like(self.params)
        self.velocity = self.params[:0]
        self.model = torch_model(self.layout, self.params, scale)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LR)
        self.X_t, self.y_t = torch.from_numpy(self.X), torch.from_numpy(self.y)

    def batches(self, steps: int) -> np.ndarray:
        return self.rng.integers(0, SAMPLES, (steps, self.batch)).astype(np.int64)

    def numba_steps(self, batches: np.ndarray) -> float:
        lay = self.layout
        return kernels.train_steps(
            X=self.X, y=self.y, batches=batches, params=self.params, offsets=lay.offsets, widths=lay.widths,
            batch_norm=lay.batch_norm, scale=self.scale, lrs=np.full(len(batches), LR), momentum=0.0,
            nesterov=False, mask=self.params[:0], grad=self.grad, velocity=self.velocity, size=lay.size
        )

    def torch_steps(self, batches: torch.Tensor) -> float:
        total = 0.0
        for rows in batches:
            self.optimizer.zero_grad()
            loss = F.cross_entropy(self.model(self.X_t[rows]), self.y_t[rows])
            loss.backward()
            self.optimizer.step()
            total += loss.item()
        return total / max(len(batches), 1)


def check_step(widths: list[int], batch: int, batch_norm: bool, scale: float) -> float:
    """One float64 step by both from the same weights and batch; max abs difference, or abort."""
    case = Case(widths, batch, batch_norm, scale, np.float64)
    rows = case.batches(1)
    loss_t = case.torch_steps(torch.from_numpy(rows))
    loss_n = case.numba_steps(rows)
    after_t = flatten(case.layout, case.model, np.float64)
    diff = max(abs(loss_t - loss_n), float(np.max(np.abs(after_t - case.params))))
    if not diff <= TOLERANCE:
        sys.exit(f"bench_torch: numba and torch disagree after one step (widths {widths}, batch {batch}, "
                 f"batch_norm {batch_norm}): max abs difference {diff:.3g} > {TOLERANCE:g}; not timing")
    return diff


def median_time(fn: Callable[[], object], calls: int, repeats: int) -> float:
    """Median over ``repeats`` of the time of ``calls`` calls of ``fn``, per call, in µs."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) / calls)
    return float(np.median(samples)) * 1e6


def calls_for(fn: Callable[[], object], target: float) -> int:
    """How many calls of ``fn`` take about ``target`` seconds (after a warm-up call)."""
    fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    return max(1, int(target / once))


def time_steps(case: Case, steps: int, repeats: int, target: float) -> tuple[float, float]:
    """µs per SGD step: numba ``train_steps`` over ``steps`` batches vs the torch loop over the same."""
    rows = case.batches(steps)
    rows_t = torch.from_numpy(rows)
    calls = calls_for(lambda: case.numba_steps(rows), target)
    numba_us = median_time(lambda: case.numba_steps(rows), calls, repeats) / steps
    calls = calls_for(lambda: case.torch_steps(rows_t), target)
    torch_us = median_time(lambda: case.torch_steps(rows_t), calls, repeats) / steps
    return numba_us, torch_us


class GatherScatter:
    """Worker 0's IST subnet of the full float32 model: numba kernels vs torch indexing."""

    def __init__(self, batch_norm: bool) -> None:
        self.full = net_layout(WIDTHS, batch_norm)
        self.sub_layout = subnet_layout(WIDTHS, N_WORKERS, 0, batch_norm)
        self.model = initial_params(self.full, 0, np.dtype(np.float32))
        self.sub = np.zeros(self.sub_layout.size, dtype=np.float32)
        plans = draw_partition(WIDTHS[1:-1], N_WORKERS, 0, 0)
        self.neurons, self.starts = neuron_index(WIDTHS, plans, 0)
        # torch: what a torch IST keeps, nn.Linear orientation (out, in) plus per-neuron vectors
        self.tensors = {k: torch.from_numpy(v.T.copy() if k.startswith("W") else v.copy())
                        for k, v in self.full.named(self.model).items()}
        self.layer_of = {k: int(k.lstrip(string.ascii_letters)) for k in self.tensors}
        self.ids = [torch.from_numpy(self.neurons[self.starts[i]:self.starts[i + 1]])
                    for i in range(len(WIDTHS))]
        self.sub_t: dict[str, torch.Tensor] = {}

    def numba_gather(self) -> None:
        f, s = self.full, self.sub_layout
        kernels.gather_subnet(
            full=self.model, full_offsets=f.offsets, full_widths=f.widths, sub=self.sub,
            sub_offsets=s.offsets, sub_widths=s.widths, neurons=self.neurons, starts=self.starts
        )

    def numba_scatter(self) -> None:
        f, s = self.full, self.sub_layout
        kernels.scatter_subnet(
            full=self.model, full_offsets=f.offsets, full_widths=f.widths, sub=self.sub,
            sub_offsets=s.offsets, sub_widths=s.widths, neurons=self.neurons, starts=self.starts,
            skip_output_bias=True
        )

    def torch_gather(self) -> None:
        for name, full in self.tensors.items():
            layer = self.layer_of[name]
            rows, cols = self.ids[layer + 1], self.ids[layer]
            self.sub_t[name] = full[rows][:, cols] if name.startswith("W") else full[rows]

    def torch_scatter(self) -> None:
        last = self.full.n_layers - 1
        for name, full in self.tensors.items():
            layer = self.layer_of[name]
            rows, cols = self.ids[layer + 1], self.ids[layer]
            if name.startswith("W"):
                full.index_put_((rows[:, None], cols[None, :]), self.sub_t[name])
            elif name != f"b{last}":  # the output bias is averaged by the coordinator
                full.index_put_((rows,), self.sub_t[name])

    def check(self) -> None:
        """Both gather the same values; after changing the subnet, both scatter to the same model."""
        self.numba_gather()
        self.torch_gather()
        for name, value in self.sub_layout.named(self.sub).items():
            expect = value.T if name.startswith("W") else value
            if not np.array_equal(self.sub_t[name].numpy(), expect):
                sys.exit(f"bench_torch: numba and torch gather disagree on {name}; not timing")
        self.sub += 1.0
        for name, value in self.sub_layout.named(self.sub).items():
            self.sub_t[name] = torch.from_numpy((value.T if name.startswith("W") else value).copy())
        self.numba_scatter()
        self.torch_scatter()
        for name, value in self.full.named(self.model).items():
            got = self.tensors[name].numpy()
            if not np.array_equal(got.T if name.startswith("W") else got, value):
                sys.exit(f"bench_torch: numba and torch scatter disagree on {name}; not timing")

    def time(self, repeats: int, target: float) -> tuple[float, float]:
        def numba_round() -> None:
            self.numba_gather()
            self.numba_scatter()

        def torch_round() -> None:
            self.torch_gather()
            self.torch_scatter()

        numba_us = median_time(numba_round, calls_for(numba_round, target), repeats)
        torch_us = median_time(torch_round, calls_for(torch_round, target), repeats)
        return numba_us, torch_us


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats; the median is reported")
    parser.add_argument("--steps", type=int, default=20, help="SGD steps per timed call (IST's R)")
    parser.add_argument("--target", type=float, default=0.05, help="seconds per repeat (sets calls per repeat)")
    args = parser.parse_args()

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    kernels.warm_up("float32")
    kernels.warm_up("float64")

    subnet = [int(w) for w in subnet_layout(WIDTHS, N_WORKERS, 0, False).widths]
    nets = [("full " + "-".join(map(str, WIDTHS)), WIDTHS, 1.0),
            (f"IST subnet, {N_WORKERS} workers: " + "-".join(map(str, subnet)), subnet, float(N_WORKERS))]
    configs = [(label, widths, scale, batch, bn) for label, widths, scale in nets
               for bn in (False, True) for batch in (32, 256)]

    worst = 0.0
    for _, widths, scale, batch, bn in configs:
        worst = max(worst, check_step(widths, batch, bn, scale))
    for bn in (False, True):
        GatherScatter(bn).check()

    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; python {platform.python_version()}, "
          f"torch {torch.__version__}, numba {numba.__version__}, numpy {np.__version__}; "
          f"threads: torch {torch.get_num_threads()}, numba/BLAS 1; float32")
    print(f"check: one float64 step agrees in every case (max abs difference of loss and weights "
          f"{worst:.1e} <= {TOLERANCE:g}); gather and scatter agree exactly\n")
    print(f"Per SGD step (median of {args.repeats} repeats; each call runs R = {args.steps} steps):\n")
    print("| network | batch norm | batch | numba µs/step | torch µs/step | torch / numba |")
    print("|---|---|---:|---:|---:|---:|")
    for label, widths, scale, batch, bn in configs:
        case = Case(widths, batch, bn, scale, np.float32)
        numba_us, torch_us = time_steps(case, args.steps, args.repeats, args.target)
        print(f"| {label} | {'yes' if bn else 'no'} | {batch} | {numba_us:.1f} | {torch_us:.1f} | "
              f"{torch_us / numba_us:.2f} |", flush=True)

    print(f"\nIST gather + scatter of one worker's subnet of {'-'.join(map(str, WIDTHS))} "
          f"({N_WORKERS} workers), median of {args.repeats}:\n")
    print("| batch norm | numba µs | torch µs (`W[rows][:, cols]`, `index_put_`) | torch / numba |")
    print("|---|---:|---:|---:|")
    for bn in (False, True):
        numba_us, torch_us = GatherScatter(bn).time(args.repeats, args.target)
        print(f"| {'yes' if bn else 'no'} | {numba_us:.1f} | {torch_us:.1f} | {torch_us / numba_us:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
