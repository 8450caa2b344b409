"""Sparse training and the study's measurements, for docs/performance.md.

``step``: µs per SGD step of ``train_steps`` at the default shape (digits, hidden 512,512,
batch norm, batch 32, float32), dense vs a 90% (or ``--sparsity``) SNIP mask, for each
optimizer. One thread, as a worker runs. Each call is one step on the same batch; dense and
sparse calls alternate and the minimum over ``--repeats`` is kept, so that on a shared,
loaded machine the number approaches an undisturbed step.

``measure``: what one noise-scale or Lipschitz measurement costs in the coordinator at the
default shape, next to one worker's round of R = 20 steps, and the SNIP mask at start-up.

    python benchmarks/bench_sparsity.py step [--sparsity 0.9 --repeats 30]
    python benchmarks/bench_sparsity.py measure
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from subcommands import run_subcommand  # noqa: E402

from ist_cli.algorithms.mlp.mask_and_measures import (  # noqa: E402
    MLPGradients,
    NoiseScaleMeter,
    StudySettings,
    lipschitz,
    norm_sq,
    pruning_mask,
)
from ist_cli.config import resolve_config, settings_from_config  # noqa: E402
from ist_cli.data import dataset_from_config  # noqa: E402
from ist_cli.kernels import mlp as kernels  # noqa: E402
from ist_cli.models.mlp import initial_params, net_layout  # noqa: E402
from ist_cli.seeding import stream  # noqa: E402
from ist_cli.training.batches import minibatches  # noqa: E402


def setup(sparsity: float):
    config = resolve_config({"model": "mlp", "algorithm": "single", "sparsity": sparsity})
    data = dataset_from_config(config)
    layout = net_layout([data.n_features, *config["hidden"], data.n_classes], True)
    params = initial_params(layout, 0, np.dtype("float32"))
    keep = None
    if sparsity > 0:
        keep = pruning_mask(StudySettings.from_settings(settings_from_config(config), 20), params, MLPGradients(layout, True), data.X_train, data.y_train,
                            32, 0)
        params[~keep] = 0
    return config, data, layout, params, keep


def best_of(repeats: int, function) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def step(args: argparse.Namespace) -> None:
    kernels.warm_up("float32")
    print(f"load before: {os.getloadavg()}")
    print("| optimizer | dense µs/step | sparse µs/step | sparse / dense |")
    print("|---|---:|---:|---:|")
    _, data, layout, dense_params, _ = setup(0.0)
    _, _, _, sparse_params, keep = setup(args.sparsity)
    mask = keep.astype(np.float32)
    R = 1
    rng = stream(0, "bench")
    batches = minibatches(np.arange(data.n_train, dtype=np.int64), R, 32, rng)
    for name, mu, nesterov in (("sgd", 0.0, False), ("momentum", 0.9, False), ("nesterov", 0.9, True)):
        runs = []
        for params, m in ((dense_params, dense_params[:0]), (sparse_params, mask)):
            work = params.copy()
            grad, velocity = np.zeros_like(work), np.zeros_like(work)

            def run(work=work, grad=grad, velocity=velocity, m=m, mu=mu, nesterov=nesterov):
                kernels.train_steps(X=data.X_train, y=data.y_train, batches=batches, params=work,
                                    offsets=layout.offsets, widths=layout.widths, batch_norm=True, scale=1.0,
                                    lrs=np.full(R, 0.01), momentum=mu, nesterov=nesterov, mask=m, grad=grad,
                                    velocity=velocity, size=layout.size)
            runs.append(run)
        # dense and sparse alternate, so a change in the machine's load hits both alike
        best = [float("inf"), float("inf")]
        for _ in range(args.repeats):
            for k, run in enumerate(runs):
                best[k] = min(best[k], best_of(1, run))
        dense, sparse = (seconds / R * 1e6 for seconds in best)
        print(f"| {name} | {dense:.0f} | {sparse:.0f} | {sparse / dense:.3f} |")
    print(f"load after: {os.getloadavg()}; kept {int(keep.sum())} of {layout.size} entries "
          f"(sparsity {args.sparsity} of the weights)")


def measure(args: argparse.Namespace) -> None:
    kernels.warm_up("float32")
    print(f"load before: {os.getloadavg()}")
    config, data, layout, params, _ = setup(0.0)
    X, y = data.X_train, data.y_train
    R = 20
    batches = minibatches(np.arange(data.n_train, dtype=np.int64), R, 32, stream(0, "bench"))
    work, grad, velocity = params.copy(), np.zeros_like(params), np.zeros_like(params)

    def round_of_steps():
        kernels.train_steps(X=X, y=y, batches=batches, params=work, offsets=layout.offsets, widths=layout.widths,
                            batch_norm=True, scale=1.0, lrs=np.full(R, 0.01), momentum=0.0, nesterov=False,
                            mask=work[:0], grad=grad, velocity=velocity, size=layout.size)

    meter = NoiseScaleMeter()
    grads = np.random.default_rng(0).standard_normal((8, layout.size)).astype(np.float32)

    def dp_free():
        mean = grads.sum(axis=0, dtype=np.float64) / 8
        meter.observe(sum(norm_sq(g) for g in grads) / 8, norm_sq(mean), 32, 256)

    rows = [
        ("one worker's round: 20 SGD steps (reference)", best_of(args.repeats, round_of_steps)),
        ("noise scale, dp (per round, n = 8 gradients already there)", best_of(args.repeats, dp_free)),
        ("noise scale, others (per measurement: 8 batch gradients)", best_of(args.repeats, lambda: meter.observe_micro_batches(
            params, MLPGradients(layout, True), X, y, None, 32, 0, 1))),
        ("model copy per round while --lipschitz-every is on", best_of(args.repeats, params.copy)),
        (f"Lipschitz (per measurement: 10 gradients over {data.n_train} rows)", best_of(
            max(3, args.repeats // 10), lambda: lipschitz(params, work, MLPGradients(layout, True), X, y, None))),
    ]
    for snip_batches in (1, "all"):
        settings = StudySettings.from_settings(settings_from_config(resolve_config(
            {"model": "mlp", "sparsity": 0.9, "snip_batches": snip_batches})), 20)
        rows.append((f"SNIP mask at start-up, --snip-batches {snip_batches}", best_of(
            3, lambda s=settings: pruning_mask(s, params, MLPGradients(layout, True), X, y, 32, 0))))
    print("| what | ms |")
    print("|---|---:|")
    for label, seconds in rows:
        print(f"| {label} | {seconds * 1e3:.2f} |")
    print(f"load after: {os.getloadavg()}")


def main() -> None:
    run_subcommand(__doc__, {
        "step": (step, {"--sparsity": {"type": float, "default": 0.9}, "--repeats": {"type": int, "default": 300}}),
        "measure": (measure, {"--repeats": {"type": int, "default": 30}}),
    })


if __name__ == "__main__":
    main()
