"""No process holds the model: owners draw their shards, evaluate model parallel, and /final is written slice by slice.

The references are the whole-model code paths (``initial_params``, the numba forward pass,
``h5py`` writing a whole array) and plain numpy written here; the slow test runs real MPI
ranks and reads every rank's peak resident memory from the run file.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from ist_cli.algorithms import build_algorithm
from ist_cli.algorithms.mlp import ist_partitioned
from ist_cli.config import resolve_config
from ist_cli.io.runfile import RunFileWriter, read_attrs
from ist_cli.io.sliced import SlicedArray, materialised
from ist_cli.kernels import mlp as kernels
from ist_cli.models.mlp import B, initial_params, net_layout
from ist_cli.models.shard_init import initial_output_bias, initial_shard
from ist_cli.models.sharded_forward import combine, hidden_block, local_partials, owner_partial
from ist_cli.models.shards import shard_layout
from tests.helpers import ist, ist_json, one_error_line

SHAPES = [((7, 5, 3), 2), ((9, 12, 10, 4), 3), ((6, 8, 11, 9, 5), 4), ((4, 13, 13, 2), 5)]


@pytest.mark.parametrize(("widths", "n"), SHAPES)
@pytest.mark.parametrize("batch_norm", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_an_owner_draws_exactly_its_entries_of_the_initial_model(widths, n, batch_norm, dtype):
    layout = net_layout(widths, batch_norm)
    whole = initial_params(layout, 7, np.dtype(dtype))
    for k in range(n):
        owner = shard_layout(widths, n, k, batch_norm)
        expected = np.full(owner.size, np.nan, dtype=dtype)
        owner.split(whole, layout, expected)
        drawn = np.full(owner.size + 3, -5.0, dtype=dtype)  # stale values must not survive (beta is written too)
        initial_shard(owner, 7, np.dtype(dtype), drawn)
        assert drawn[: owner.size].tobytes() == expected.tobytes()
        assert (drawn[owner.size :] == -5.0).all()  # nothing past the shard
    bias = layout.vector(whole, layout.n_layers - 1, B)
    assert initial_output_bias(widths, 7, np.dtype(dtype)).tobytes() == bias.tobytes()


def _shards(model, widths, n, batch_norm):
    layout = net_layout(widths, batch_norm)
    owners = [shard_layout(widths, n, k, batch_norm) for k in range(n)]
    values = []
    for owner in owners:
        part = np.zeros(owner.size, dtype=model.dtype)
        owner.split(model, layout, part)
        values.append(part)
    return layout, owners, values


@pytest.mark.parametrize(("widths", "n"), SHAPES)
@pytest.mark.parametrize("batch_norm", [True, False])
def test_model_parallel_logits_match_the_whole_models_forward_pass(widths, n, batch_norm):
    rng = np.random.default_rng(3)
    model = rng.normal(size=net_layout(widths, batch_norm).size).astype(np.float32)
    layout, owners, values = _shards(model, widths, n, batch_norm)
    bias_at = int(layout.offsets[layout.n_layers - 1, B])
    X = rng.normal(size=(37, widths[0])).astype(np.float32)
    whole = kernels.forward_logits(params=model, offsets=layout.offsets, widths=layout.widths,
                                   batch_norm=batch_norm, scale=1.0, X=X)
    logits = combine(local_partials(owners, values, X), model[bias_at : bias_at + widths[-1]])
    np.testing.assert_allclose(logits, whole, rtol=1e-5, atol=1e-5 * np.abs(whole).max())


def _exchanged_layers(owners, values, X):
    """Each hidden layer but the last, whole: every owner's block side by side (what an all-gather returns)."""
    out, inputs = [], X
    for layer in range(owners[0].n_layers - 2):
        inputs = np.concatenate([hidden_block(o, v, layer, inputs) for o, v in zip(owners, values, strict=True)],
                                axis=1)
        out.append(inputs)
    return out


@pytest.mark.parametrize(("widths", "n"), SHAPES)
def test_each_owners_part_with_an_all_gather_is_the_local_pass_bit_for_bit(widths, n):
    """What an MPI rank computes (its part, the others' blocks gathered) is what the coordinator
    computes for all owners at once: the transports give the same numbers."""
    rng = np.random.default_rng(4)
    model = rng.normal(size=net_layout(widths, True).size).astype(np.float32)
    _, owners, values = _shards(model, widths, n, True)
    X = rng.normal(size=(21, widths[0])).astype(np.float32)
    local = local_partials(owners, values, X)
    for k in range(n):
        layers, seen = iter(_exchanged_layers(owners, values, X)), []

        def gather(block, layer, layers=layers, seen=seen, k=k):
            seen.append(layer)
            whole = next(layers)
            lo, hi = owners[k].range_of(layer)
            assert whole[:, lo:hi].tobytes() == block.tobytes()  # its own block, in its place
            return whole

        assert owner_partial(owners[k], values[k], X, gather).tobytes() == local[k].tobytes()
        assert seen == list(range(1, len(widths) - 2))  # every hidden layer but the last is exchanged


def test_a_sliced_array_is_written_as_the_whole_array_would_be(tmp_path):
    whole = np.arange(6 * 10, dtype=np.float32).reshape(6, 10)
    fetched = []

    def blocks():
        for lo, hi in ((0, 3), (3, 7), (7, 10)):  # column blocks, as owners hold a hidden layer's weights
            for start in range(0, 6, 4):
                fetched.append((lo, start))
                yield np.s_[start : start + 4, lo:hi], whole[start : start + 4, lo:hi].copy()

    writer = RunFileWriter(tmp_path / "run.h5", run_id="r", config={}, env={}, seed=0, version="0")
    writer.write_group("final", {"W0": SlicedArray(whole.shape, whole.dtype, blocks), "b0": whole[0]})
    writer.close("completed")
    with h5py.File(tmp_path / "run.h5") as handle:
        written = handle["final/W0"]
        assert written.dtype == whole.dtype and written.chunks is None  # the layout of a whole write
        assert written[...].tobytes() == whole.tobytes()
        assert handle["final/b0"][...].tobytes() == whole[0].tobytes()
    assert len(fetched) == 6


@pytest.mark.parametrize("extra", [{}, {"norm": "none", "hidden": [30, 20, 12]}, {"partition_rule": "stratified"}])
def test_the_partitioned_coordinator_never_builds_the_model_yet_its_final_is_the_initial_model(extra, monkeypatch):
    monkeypatch.setattr(ist_partitioned, "FINAL_BLOCK_BYTES", 200)  # many blocks per owner, as a large model has
    base = {"model": "mlp", "algorithm": "ist", "workers": 3, "hidden": [24, 16], "seed": 5, **extra}
    central = build_algorithm(resolve_config(base))
    arrays = {name: np.zeros(shape, dtype=dtype) for name, (shape, dtype) in central.arena_spec().items()}
    central.initialize(arrays)
    partitioned = build_algorithm(resolve_config({**base, "server": "partitioned"}))
    spec = partitioned.arena_spec()
    mine = {name: np.zeros(shape, dtype=dtype) for name, (shape, dtype) in spec.items()}
    partitioned.initialize(mine)
    layout = partitioned.layout
    bias_at = int(layout.offsets[layout.n_layers - 1, B])
    assert not mine["model"][:bias_at].any() and not mine["shard"].any()  # nothing of the model but the bias yet
    partitioned.attach(None)  # no shard host: the coordinator draws the shards itself, owner by owner
    final = partitioned.final_params(mine)
    assert sum(isinstance(v, SlicedArray) for v in final.values()) == len(final) - 1  # all but the output bias
    for name, value in final.items():
        if isinstance(value, SlicedArray):
            cover = np.zeros(value.shape, dtype=np.int64)
            for where, block in value.blocks():
                cover[where] += 1
                assert block.nbytes <= max(200, block[:1].nbytes)  # one block, or one row if a row is larger
            assert (cover == 1).all(), name  # every entry written once
    expected = central.final_params(arrays)
    got = {name: materialised(value) for name, value in final.items()}
    assert list(got) == list(expected)
    for name in expected:
        assert got[name].shape == expected[name].shape and got[name].tobytes() == expected[name].tobytes(), name
    # and the initial evaluation, model parallel, agrees with the central one
    model_parallel, whole = partitioned.evaluate(mine), central.evaluate(arrays)
    assert model_parallel.keys() == whole.keys()
    np.testing.assert_allclose(list(model_parallel.values()), list(whole.values()), rtol=1e-5)


@pytest.mark.parametrize("option", ["--noise-scale-every", "--lipschitz-every"])
def test_measurements_that_need_the_whole_model_refuse_the_partitioned_server(tmp_path, option):
    result = ist("run", "--model", "mlp", "--algorithm", "ist", "--server", "partitioned", option, "1",
                 "--out", str(tmp_path))
    line = one_error_line(result)
    assert option in line and "whole model" in line
    assert not list(tmp_path.iterdir())


MODEL_MB = ["--dataset", "synthetic", "--synthetic-samples", "96", "--synthetic-features", "16",
            "--synthetic-classes", "4", "--hidden", "14336,14336", "--batch-size", "8", "--local-steps", "1"]


@pytest.mark.slow
def test_no_rank_holds_the_model_with_the_partitioned_server(tmp_path):
    """An 824 MB model (float32) over MPI with 4 workers: every rank's peak resident memory stays
    below 3/4 of the model's bytes, while the central server's rank 0 holds more than the model.

    Not smaller: a rank's peak includes about 210 MB that no model causes (Python, numba's
    loaded kernels, BLAS, MPI), and a worker holds its quarter of the model, its subnet and the
    pieces in flight (about 0.43 of the model), so 3/4 is within reach from about 660 MB on.
    """
    pytest.importorskip("mpi4py")
    widths = (16, 14336, 14336, 4)
    model_bytes = 4 * net_layout(widths, True).size
    assert model_bytes >= 800 * 10**6
    kernels.warm_up("float32")  # the ranks load the kernels from the cache: a compiler's peak is not the model's
    common = ["run", "--model", "mlp", "--algorithm", "ist", "--workers", "4", "--transport", "mpi",
              "--out", str(tmp_path), *MODEL_MB]
    ist_json(*common, "--rounds", "2", "--eval-every", "1", "--server", "partitioned", "--name", "partitioned",
             timeout=900)
    partitioned = read_attrs(tmp_path / "partitioned.h5")  # not the 824 MB of /final into this process
    assert partitioned["status"] == "completed"
    peaks = np.asarray(partitioned["peak_rss_bytes_per_rank"])
    assert peaks.shape == (5,) and (peaks > 10**6).all()
    assert (peaks < 0.75 * model_bytes).all(), (peaks / model_bytes).round(3).tolist()
    ist_json(*common, "--rounds", "1", "--name", "central", timeout=900)
    central = read_attrs(tmp_path / "central.h5")
    assert central["status"] == "completed"
    with h5py.File(tmp_path / "partitioned.h5") as handle:  # /final whole, in its usual layout
        assert handle["final/W1"].shape == (14336, 14336) and handle["final/W1"].chunks is None
        assert np.isfinite(handle["final/W1"][:64]).all()
    assert float(central["peak_rss_bytes_rank0"]) > model_bytes
    # /final came from the owners, block by block: every value but the output bias (4 classes)
    assert partitioned["bytes_final_collect_measured"] == model_bytes - 4 * 4
