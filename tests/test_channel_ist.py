"""Channel-wise IST on convnets (``--model cnn --algorithm ist``): one worker is ``single`` bit
for bit; a round writes back exactly the subnets' entries (checked by index arithmetic written
here, by hand, for Simple-CNN); the partitions follow residual additions; the regions a worker
sends are the accounting's bytes, and MPI moves them and gives shared memory's model bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ist_cli.algorithms import build_algorithm
from ist_cli.config import resolve_config
from ist_cli.io.runfile import read_run
from ist_cli.models import network as nw
from ist_cli.models.channel_subnet import ChannelSubnets
from ist_cli.models.network_driver import NetworkDriver
from ist_cli.models.subnet import block_sizes
from ist_cli.models.subnet_bytes import channel_subnet_sizes
from ist_cli.runner import run_experiment
from ist_cli.runtime.inprocess import InProcessTransport
from tests.convnet_images import write_image_set
from tests.helpers import TIMING, ist, one_error_line
from tests.method_rounds import assert_regions_are_the_accounted_bytes, rounds_on_pool
from tests.mpi_runs import assert_mpi_is_shared_memory_and_counts_the_accounting, run_both

SMALL = {"model": "cnn", "algorithm": "ist", "batch_size": 8, "lr": 0.05, "eval_every": 1, "local_steps": 2}
TINY_PREACT = {"arch": "preact-resnet", "widths": [4, 6, 8], "blocks": [1, 3, 1]}
ARCHS = {"simple-cnn": {"arch": "simple-cnn"}, "resnet8": {"arch": "resnet8"}, "preact-resnet": TINY_PREACT}


@pytest.fixture(scope="module")
def images16(tmp_path_factory) -> str:
    return write_image_set(tmp_path_factory.mktemp("chan16") / "set", train=96, test=24, side=16)


def flags(config: dict) -> list[str]:
    return [part for key, value in config.items() if key not in ("model",)
            for part in (f"--{key.replace('_', '-')}", ",".join(map(str, value)) if isinstance(value, list)
                         else str(value))]


# ----------------------------------------------------------------------------- one worker
@pytest.mark.parametrize("arch", [pytest.param(a, marks=pytest.mark.slow) if a != "simple-cnn" else a for a in ARCHS])
def test_one_worker_is_single_bit_for_bit(tmp_path, images16, arch):
    """With n = 1 the worker holds every channel, in order: its subnet is the network, so IST is
    plain SGD (momentum 0: IST restarts its velocity each round, as on the MLP)."""
    args = ["--model", "cnn", *flags({**SMALL, **ARCHS[arch], "rounds": 3}), "--dataset", images16,
            "--out", str(tmp_path), "--quiet"]
    ist("run", *args, "--workers", "1", "--name", "ist", check=True, timeout=300)
    ist("run", *[a if a != "ist" else "single" for a in args], "--name", "single", check=True, timeout=300)
    a, b = read_run(tmp_path / "ist.h5"), read_run(tmp_path / "single.h5")
    assert set(a.final) == set(b.final)
    for key in a.final:
        assert a.final[key].tobytes() == b.final[key].tobytes(), key
    for key in ("loss", "test_loss", "test_accuracy"):
        assert np.array_equal(a.metrics[key], b.metrics[key]), key
    assert a.metrics["loss"][-1] < a.metrics["loss"][0]
    if arch == "preact-resnet":  # --widths and --blocks reach the network
        assert sum(v.size for v in a.final.values()) == nw.preact_resnet((1, 16, 16), 10, (1, 3, 1), (4, 6, 8)).n_params


def test_eval_samples_scores_a_fixed_subset_of_the_test_set(tmp_path, images16):
    """--eval-samples 10 on 24 test and 96 training images: every accuracy is a multiple of 1/10
    (on all 24 or 96 rows, k/24 or k/96 would rarely be), for any seed."""
    args = ["--model", "cnn", *flags({**SMALL, "algorithm": "single", "rounds": 2}), "--dataset", images16,
            "--eval-samples", "10", "--out", str(tmp_path), "--quiet"]
    for seed in ("0", "1"):
        ist("run", *args, "--seed", seed, "--name", f"s{seed}", check=True, timeout=300)
    runs = [read_run(tmp_path / f"s{seed}.h5") for seed in ("0", "1")]
    for run in runs:
        for key in ("test_accuracy", "train_accuracy"):
            assert np.allclose(run.metrics[key] * 10, np.round(run.metrics[key] * 10)), key
    assert runs[0].config["eval_samples"] == 10


# ----------------------------------------------------------------------------- write-back, by hand
def one_round(config: dict):
    """(model before, model after, ids rows, each worker's trained subnet row) of one real round."""
    algorithm = build_algorithm(resolve_config(config))
    with rounds_on_pool(algorithm, 1) as (start, arrays):
        return algorithm, start, arrays["model"].copy(), arrays["ids"].copy(), arrays["sub"].copy()


def test_simple_cnn_round_writes_back_exactly_each_subnet(images16):
    """Simple-CNN on 16x16x1 (conv 5x5x32, pool, conv 5x5x64, pool to 1x1, dense 64 -> 10) over
    3 workers: channel blocks of 11/11/10 and 22/21/21. Worker i's subnet is W0[:, :, :, A_i],
    b0[A_i], W1[:, :, A_i, B_i], b1[B_i], W2[B_i, :], b2; its trained values land there, the
    cross-block W1 entries keep their values, and b2 becomes the mean of the workers' copies."""
    n = 3
    algorithm, start, end, ids, subs = one_round({**SMALL, "arch": "simple-cnn", "workers": n, "dataset": images16,
                                                  "momentum": 0.5, "seed": 4})
    layout = algorithm.layout
    before, after = layout.named(start), layout.named(end)
    assert after["W1"].shape == (5, 5, 32, 64) and after["W2"].shape == (64, 10)
    sizes0, sizes1 = block_sizes(32, n), block_sizes(64, n)
    blocks0 = [np.asarray(ids[w, : sizes0[w]], dtype=np.int64) for w in range(n)]
    blocks1 = [np.asarray(ids[w, sizes0[w] : sizes0[w] + sizes1[w]], dtype=np.int64) for w in range(n)]
    for blocks, width in ((blocks0, 32), (blocks1, 64)):  # a partition: disjoint, covering, sorted blocks
        assert np.array_equal(np.sort(np.concatenate(blocks)), np.arange(width))
        assert all(np.array_equal(b, np.sort(b)) for b in blocks)
    touched = np.zeros((32, 64), dtype=bool)
    classifier_bias = []
    for w, (a, b) in enumerate(zip(blocks0, blocks1, strict=True)):
        expected = [after["W0"][:, :, :, a], after["b0"][a], after["W1"][:, :, a][:, :, :, b], after["b1"][b],
                    after["W2"][b, :]]
        sizes = [x.size for x in expected]
        assert sizes == [25 * a.size, a.size, 25 * a.size * b.size, b.size, 10 * b.size]
        flat = np.concatenate([x.ravel() for x in expected])
        assert np.array_equal(subs[w, : flat.size], flat), w  # each written entry is the worker's trained value
        classifier_bias.append(subs[w, flat.size : flat.size + 10])
        assert int(channel_subnet_sizes(algorithm.net, n)[0][w]) == flat.size + 10
        touched[np.ix_(a, b)] = True
    assert np.array_equal(after["b2"], (np.sum(classifier_bias, axis=0, dtype=np.float64) / n).astype(np.float32))
    cross = np.broadcast_to(~touched, after["W1"].shape)
    assert np.array_equal(after["W1"][cross], before["W1"][cross])  # outside every subnet: unchanged
    assert not np.array_equal(after["W1"][~cross], before["W1"][~cross])  # inside: trained
    assert touched.sum() == sum(int(sizes0[w] * sizes1[w]) for w in range(n))


def test_residual_additions_join_the_partitions_of_their_two_sides():
    """ResNet-8 (pool-and-pad shortcuts 16 -> 32 -> 64) and the pre-activation ResNet (identity and
    projection shortcuts): worker i's output channels of both sides of every addition are the same,
    and a pool-and-pad block's output starts with its input's channels, in order."""
    for net in (nw.resnet8((1, 16, 16)), nw.preact_resnet((1, 16, 16), 10, (1, 3, 1), (4, 6, 8))):
        subnets = ChannelSubnets(net, 3)
        rows = subnets.draw(seed=1, round_index=2)
        shapes = [tuple(net.input_shape), *net.shapes()]
        for w in range(3):
            channels = subnets.channels_of(rows[w], w)
            outs = {path: channels[g] if g is not None else None
                    for (path, _, _), g in zip(net.weight_layers(), subnets.layer_groups, strict=True)}
            flowing = channels[-1]  # worker w's channels of the tensor flowing along the top level
            for i, layer in enumerate(net.layers):
                if isinstance(layer, nw.Conv2D | nw.Dense):
                    flowing = outs[(i,)]
                elif isinstance(layer, nw.Residual):
                    body = [outs[(i, k)] for k, x in enumerate(layer.body) if isinstance(x, nw.Conv2D)][-1]
                    if layer.shortcut == "identity":
                        assert np.array_equal(body, flowing)
                    elif layer.shortcut == "pool-pad":
                        held = flowing.size
                        assert np.array_equal(body[:held], flowing)
                        assert ((body[held:] >= shapes[i][0]) & (body[held:] < shapes[i + 1][0])).all()
                    else:
                        assert np.array_equal(body, outs[(i, len(layer.body))])
                    flowing = body
            assert flowing is None  # the classifier's outputs: never partitioned
        # every worker's subnet is a valid network of its shares, and the closed form counts it
        values, id_counts = channel_subnet_sizes(net, 3)
        assert [subnets.network(w).n_params for w in range(3)] == values.tolist()
        assert subnets.id_counts().tolist() == id_counts.tolist()
        for w in range(3):
            index = subnets.subnet_index(rows[w], w)
            assert index.size == values[w] and np.unique(index).size == index.size


@pytest.mark.parametrize("net", [nw.resnet8((1, 16, 16)), nw.preact_resnet((1, 16, 16), 10, (1, 3, 1), (4, 6, 8))],
                         ids=["resnet8", "preact-resnet"])
def test_a_subnet_is_the_network_restricted_to_its_channels(net):
    """Worker i's subnet on θ[Iᵢ] computes what the full network computes with every entry
    outside Iᵢ set to 0 (a channel outside the subnet is then 0 through every conv, batch norm,
    shortcut and the classifier): the same logits, loss and gradient on Iᵢ. A misplaced entry of
    the index (a wrong tap, channel, γ/β or projection offset) breaks the equality."""
    rng = np.random.default_rng(5)
    full = NetworkDriver(net)
    theta = nw.initial_params(net, 0, "float64") + rng.normal(0.0, 0.05, full.size)  # γ ≠ 1, β ≠ 0
    X, y = rng.normal(size=(6, 256)), rng.integers(0, 10, 6)
    subnets = ChannelSubnets(net, 3)
    rows = subnets.draw(seed=2, round_index=3)
    for w in range(3):
        index = subnets.subnet_index(rows[w], w)
        restricted = np.zeros_like(theta)
        restricted[index] = theta[index]
        sub = NetworkDriver(subnets.network(w))
        assert sub.size < full.size
        sub_grad, full_grad = np.zeros(sub.size), np.zeros(full.size)
        sub_loss = sub.loss_and_grad(theta[index], X, y, sub_grad)
        full_loss = full.loss_and_grad(restricted, X, y, full_grad)
        np.testing.assert_allclose(sub.logits(theta[index], X), full.logits(restricted, X), rtol=0, atol=1e-12)
        assert sub_loss == pytest.approx(full_loss, abs=1e-12)
        np.testing.assert_allclose(sub_grad, full_grad[index], rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- bytes and transports
CASES = {f"{arch}-{kind}": {**SMALL, **ARCHS[arch], "workers": 3, "rounds": 2,
                             **({"sparsity": 0.9} if kind == "sparse" else {})}
         for arch in ARCHS for kind in ("dense", "sparse")}


@pytest.mark.parametrize("case", CASES)
def test_declared_regions_are_the_bytes_the_accounting_counts(images16, case):
    assert_regions_are_the_accounted_bytes(build_algorithm(resolve_config({**CASES[case], "dataset": images16})))


@pytest.mark.slow
@pytest.mark.parametrize("case", ["resnet8-sparse", "preact-resnet-dense"])
def test_in_process_transport_equals_shared_memory_bitwise(tmp_path, images16, case, shm_guard):
    config = {**CASES[case], "dataset": images16, "momentum": 0.9}
    run_experiment(config, out_dir=tmp_path, name="shm")
    run_experiment(config, out_dir=tmp_path, name="inproc", transport=InProcessTransport)
    a, b = read_run(tmp_path / "shm.h5"), read_run(tmp_path / "inproc.h5")
    for key in a.final:
        assert a.final[key].tobytes() == b.final[key].tobytes(), key
    for key in set(a.metrics) - TIMING:
        assert a.metrics[key].tobytes() == b.metrics[key].tobytes(), key


@pytest.mark.slow
@pytest.mark.parametrize("case", ["simple-cnn-dense", "resnet8-sparse", "preact-resnet-dense", "preact-resnet-sparse"])
def test_mpi_moves_the_accounted_bytes_and_gives_the_shared_memory_model(tmp_path, images16, case):
    pytest.importorskip("mpi4py")
    config = {key: value for key, value in CASES[case].items() if key != "workers"}
    shm, mpi = run_both(tmp_path, ["--model", "cnn", *flags(config), "--dataset", images16], 2)
    assert_mpi_is_shared_memory_and_counts_the_accounting(shm, mpi)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("args", "named"), [
    (["--arch", "preact-resnet", "--widths", "4,8,16", "--workers", "5"], "--workers: 5"),
    (["--arch", "preact-resnet", "--widths", "8,16", "--workers", "2"], "--widths 8,16"),
])
def test_too_many_workers_or_mismatched_stages_are_one_line_errors(tmp_path: Path, args, named):
    result = ist("run", "--model", "cnn", "--algorithm", "ist", *args, "--rounds", "1", "--out", str(tmp_path))
    line = one_error_line(result)
    assert named in line and "expected" in line
    assert not any(tmp_path.iterdir())
