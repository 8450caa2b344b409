"""Real rounds of the MLP methods on a real WorkerPool: IST's partition, write-back and
invariants, and the exact traffic of every method."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from ist_cli.algorithms import build_algorithm
from ist_cli.algorithms.mlp import MLPMethod
from ist_cli.algorithms.mlp.mask_and_measures import StudySettings
from ist_cli.config import resolve_config
from ist_cli.kernels import mlp as kernels
from ist_cli.models.subnet import block_sizes, draw_partition, neuron_index, subnet_layout
from ist_cli.seeding import stream
from ist_cli.training.batches import minibatches
from tests.method_rounds import rounds_on_pool

HIDDEN = [10, 7]  # ragged over 3 workers: blocks of 4,3,3 and 3,2,2


def make(algorithm: str, **overrides) -> MLPMethod:
    config = resolve_config({"model": "mlp", "algorithm": algorithm, "workers": 3, "hidden": HIDDEN,
                             "local_steps": 3, "batch_size": 8, "seed": 5, **overrides})
    return build_algorithm(config)


def run_rounds(algorithm: MLPMethod, rounds: int, lr: float | None = None):
    """Initial model, final model and the arena arrays' plans after ``rounds`` real rounds."""
    if lr is not None:
        algorithm.settings = replace(algorithm.settings, lr=lr)  # the CLI refuses lr = 0; the math must still hold
        algorithm.study = StudySettings.from_settings(algorithm.settings, algorithm.steps_per_round())
    with rounds_on_pool(algorithm, rounds) as (start, arrays):
        plans = {name: arrays[name].copy() for name in arrays if name.startswith("plan")}
        return start, arrays["model"].copy(), plans, {k: arrays[k].copy() for k in ("X_train", "y_train",
                                                                                     "shard_index", "shard_bounds")}


@pytest.mark.parametrize("algorithm", ["ist", "dp", "local-sgd", "single"])
def test_round_with_zero_learning_rate_leaves_model_unchanged(algorithm):
    start, end, _, _ = run_rounds(make(algorithm, norm="batch"), rounds=2, lr=0.0)
    np.testing.assert_array_equal(start, end)


def test_partition_blocks_are_disjoint_and_cover_every_hidden_neuron():
    widths = [10, 7, 16]
    for round_index in (1, 2):
        plans = draw_partition(widths, 3, seed=1, round_index=round_index)
        for width, plan in zip(widths, plans, strict=True):
            rows = [row[row >= 0] for row in plan]
            assert [r.size for r in rows] == list(block_sizes(width, 3))
            assert max(r.size for r in rows) - min(r.size for r in rows) <= 1
            assert np.array_equal(np.sort(np.concatenate(rows)), np.arange(width))
    a, b = draw_partition(widths, 3, 1, 1), draw_partition(widths, 3, 1, 2)
    assert any(not np.array_equal(x, y) for x, y in zip(a, b, strict=True))  # a new partition every round
    assert all(np.array_equal(x, y) for x, y in zip(a, draw_partition(widths, 3, 1, 1), strict=True))


@pytest.mark.parametrize("norm, scale", [("none", 1.0), ("batch", 3.0)])  # auto: width (x n) under batch norm
def test_ist_round_trains_blocks_and_leaves_cross_block_weights_untouched(norm, scale):
    algorithm = make("ist", norm=norm, momentum=0.5)
    bn = norm == "batch"
    layout = algorithm.layout
    start, end, plans, data = run_rounds(algorithm, rounds=1)
    written = [plans[f"plan{h}"] for h in range(len(HIDDEN))]
    expected_plans = draw_partition(HIDDEN, 3, seed=5, round_index=1)
    for got, want in zip(written, expected_plans, strict=True):
        np.testing.assert_array_equal(got, want)
    owner = []
    for plan in written:
        o = np.full(plan.max() + 1, -1)
        for worker, row in enumerate(plan):
            o[row[row >= 0]] = worker
        owner.append(o)
    before, after = layout.weight(start, 1), layout.weight(end, 1)  # hidden-to-hidden W1 (10 x 7)
    same_block = owner[0][:, None] == owner[1][None, :]
    np.testing.assert_array_equal(after[~same_block], before[~same_block])
    assert (after[same_block] != before[same_block]).mean() > 0.5  # some ReLUs stay dead in 3 steps

    # Reference: each worker's subnet trained in this process with the same batches.
    reference = start.copy()
    out_bias = np.zeros(layout.widths[-1])
    bounds = data["shard_bounds"]
    for worker in range(3):
        sub_layout = subnet_layout(algorithm.widths, 3, worker, bn)
        neurons, starts = neuron_index(algorithm.widths, expected_plans, worker)
        sub = np.zeros(sub_layout.size, dtype=start.dtype)
        kernels.gather_subnet(
            full=start, full_offsets=layout.offsets, full_widths=layout.widths, sub=sub,
            sub_offsets=sub_layout.offsets, sub_widths=sub_layout.widths, neurons=neurons, starts=starts
        )
        shard = data["shard_index"][bounds[worker] : bounds[worker + 1]]
        batches = minibatches(shard, 3, 8, stream(5, "worker", 1, worker))
        kernels.train_steps(
            X=data["X_train"], y=data["y_train"], batches=batches, params=sub, offsets=sub_layout.offsets,
            widths=sub_layout.widths, batch_norm=bn, scale=scale, lrs=np.full(3, 0.1), momentum=0.5, nesterov=False,
            mask=sub[:0], grad=np.zeros_like(sub), velocity=np.zeros_like(sub), size=sub_layout.size
        )
        kernels.scatter_subnet(
            full=reference, full_offsets=layout.offsets, full_widths=layout.widths, sub=sub,
            sub_offsets=sub_layout.offsets, sub_widths=sub_layout.widths, neurons=neurons, starts=starts,
            skip_output_bias=True
        )
        out_bias += sub_layout.vector(sub, sub_layout.n_layers - 1, 1)
    layout.vector(reference, layout.n_layers - 1, 1)[...] = out_bias / 3
    np.testing.assert_allclose(end, reference, rtol=1e-5, atol=1e-6)


def _parameter_count(widths, bn):
    dense = sum(a * b + b for a, b in zip(widths[:-1], widths[1:], strict=True))
    return dense + (2 * sum(widths[1:-1]) if bn else 0)


@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bytes_per_round_match_closed_form(bn, dtype):
    value = np.dtype(dtype).itemsize
    norm = "batch" if bn else "none"
    widths = [64, *HIDDEN, 10]  # digits: 64 features, 10 classes
    P = _parameter_count(widths, bn)

    ist = make("ist", norm=norm, dtype=dtype).round_traffic(1)
    blocks = [block_sizes(w, 3) for w in HIDDEN]  # [4,3,3], [3,2,2]
    for worker in range(3):
        h1, h2 = blocks[0][worker], blocks[1][worker]
        values = 64 * h1 + h1 + h1 * h2 + h2 + h2 * 10 + 10 + (2 * (h1 + h2) if bn else 0)
        assert ist.bytes_up[worker] == value * values
        assert ist.bytes_down[worker] == value * values + 4 * (h1 + h2)

    for name in ("dp", "local-sgd"):
        ps = make(name, norm=norm, dtype=dtype).round_traffic(1)
        np.testing.assert_array_equal(ps.bytes_up, np.full(3, value * P))
        np.testing.assert_array_equal(ps.bytes_down, np.full(3, value * P))
        ring = make(name, norm=norm, dtype=dtype, topology="ring").round_traffic(1)
        np.testing.assert_allclose(ring.bytes_up, np.full(3, 2 * 2 / 3 * value * P))
        np.testing.assert_allclose(ring.bytes_down, ring.bytes_up)

    single = make("single", norm=norm, dtype=dtype)
    assert single.n_workers == 1
    assert single.round_traffic(1).total_up == single.round_traffic(1).total_down == 0

    extras = make("ist", norm=norm, dtype=dtype).summary_extras()
    assert extras["params"] == P
    assert extras["dp_bytes_per_round_per_worker"] == 2 * value * P


@pytest.mark.parametrize("algorithm", ["dp", "local-sgd"])
def test_baseline_rounds_match_an_in_process_reference(algorithm):
    """dp: the mean of the workers' batch gradients, one momentum step (velocity kept on the
    server); local-sgd: the mean of R-step replicas. Two rounds, so carried state counts."""
    alg = make(algorithm, norm="batch", momentum=0.5)
    layout = alg.layout
    start, end, _, data = run_rounds(alg, rounds=2)
    bounds = data["shard_bounds"]
    shards = [data["shard_index"][bounds[w] : bounds[w + 1]] for w in range(3)]
    X, y = data["X_train"], data["y_train"]
    model = start.copy()
    velocities = [np.zeros_like(model) for _ in range(3)]
    for round_index in (1, 2):
        outs = []
        for worker in range(3):
            rng = stream(5, "worker", round_index, worker)
            if algorithm == "dp":
                rows = minibatches(shards[worker], 1, 8, rng)[0]
                grad = np.zeros_like(model)
                kernels.loss_and_grad(
                    params=model, offsets=layout.offsets, widths=layout.widths, batch_norm=True, scale=1.0,
                    X=X[rows], y=y[rows], grad=grad
                )
                outs.append(grad.astype(np.float64))
            else:
                replica = model.copy()
                kernels.train_steps(
                    X=X, y=y, batches=minibatches(shards[worker], 3, 8, rng), params=replica,
                    offsets=layout.offsets, widths=layout.widths, batch_norm=True, scale=1.0, lrs=np.full(3, 0.1),
                    momentum=0.5, nesterov=False, mask=model[:0], grad=np.zeros_like(model),
                    velocity=velocities[worker], size=layout.size
                )
                outs.append(replica.astype(np.float64))
        mean = np.mean(outs, axis=0)
        if algorithm == "dp":
            velocities[0] = 0.5 * velocities[0] + mean
            model = (model - 0.1 * velocities[0]).astype(model.dtype)
        else:
            model = mean.astype(model.dtype)
    np.testing.assert_allclose(end, model, rtol=1e-5, atol=1e-6)
    assert not np.allclose(end, start)
