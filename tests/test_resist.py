"""ResIST (``--algorithm resist``) on the pre-activation ResNet and small generated images.

The oracle of every round check is written here from the network's layout (which top-level
layer owns which run of the flat vector), not from the method's own piece bookkeeping:
what a worker is sent, how the model is averaged, how many bytes a round moves.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from ist_cli.algorithms import build_algorithm
from ist_cli.config import resolve_config
from ist_cli.io.runfile import read_run
from ist_cli.models import resist_assignment as ra
from tests.convnet_images import write_image_set
from tests.helpers import files_in, ist, one_error_line
from tests.mpi_runs import assert_mpi_is_shared_memory_and_counts_the_accounting, run_both

ARGS = ["--model", "cnn", "--arch", "preact-resnet", "--batch-size", "4", "--lr", "0.05", "--momentum", "0.9",
        "--eval-every", "1", "--rounds", "2", "--local-steps", "2"]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> str:
    return write_image_set(tmp_path_factory.mktemp("resist") / "set", train=48, test=12, side=16)


# ----------------------------------------------------------------------------- the oracle
def layer_ranges(net) -> dict[int, tuple[int, int]]:
    """Top-level layer index -> [start, stop) of all its parameters in the flat vector."""
    ranges: dict[int, tuple[int, int]] = {}
    for p in net.layout().params:
        start, stop = ranges.get(p.path[0], (p.offset, p.offset))
        ranges[p.path[0]] = (min(start, p.offset), max(stop, p.offset + p.size))
    return ranges


def subnet_runs(net, held: np.ndarray) -> list[tuple[int, tuple[int, int]]]:
    """(layer, range) of every layer in a worker's sub-ResNet, in order: all but the
    partitioned blocks it does not hold."""
    blocks = net.droppable_blocks()
    keep = {blocks[int(j)] for j in held}
    return [(layer, r) for layer, r in sorted(layer_ranges(net).items()) if layer not in blocks or layer in keep]


def subnet_of(net, held: np.ndarray, full: np.ndarray) -> np.ndarray:
    return np.concatenate([full[a:b] for _, (a, b) in subnet_runs(net, held)])


def copy_of(net, held: np.ndarray, sub: np.ndarray, layer: int) -> np.ndarray:
    """A layer's parameters inside a worker's sub-ResNet vector ``sub``."""
    position = 0
    for other, (a, b) in subnet_runs(net, held):
        if other == layer:
            return sub[position : position + b - a]
        position += b - a
    raise KeyError(layer)


def setup(images: str, workers: int, min_blocks: int = 0, **extra):
    config = resolve_config({"model": "cnn", "algorithm": "resist", "arch": "preact-resnet", "dataset": images,
                             "workers": workers, "min_blocks": min_blocks, "batch_size": 4, "local_steps": 2,
                             "lr": 0.05, "momentum": 0.9, "rounds": 3, **extra})
    algorithm = build_algorithm(config)
    arrays = {name: np.zeros(shape, dtype=dtype) for name, (shape, dtype) in algorithm.arena_spec().items()}
    algorithm.initialize(arrays)
    program = algorithm.worker_program()
    programs = []
    for worker in range(workers):  # as with shared memory: every worker on the one arena
        programs.append(copy.deepcopy(program))
        programs[-1].setup(arrays, worker)
    return config, algorithm, arrays, programs


def one_round(algorithm, arrays, programs, round_index: int):
    """(model before, what each worker was sent, what it trained) of one round, aggregated."""
    before = arrays["model"].copy()
    algorithm.plan_round(arrays, round_index)
    for program in programs:
        program.pack_down(round_index)
    sent = arrays["sub"].copy()
    results = [program.step(round_index, None) for program in programs]
    trained = arrays["sub"].copy()
    for program in programs:
        program.unpack_up(round_index)
    algorithm.aggregate(arrays, round_index, results)
    return before, sent, trained


# ----------------------------------------------------------------------------- a round
@pytest.mark.parametrize(("workers", "min_blocks"), [(2, 0), (3, 2), (7, 0)])
def test_a_round_sends_each_worker_its_subnet_and_averages_every_piece_over_its_holders(images, workers, min_blocks):
    """(2, 0): a partition of the 5 blocks; (3, 2): 6 slots, one block held twice; (7, 0): two
    workers hold no block and train the shared layers only."""
    config, algorithm, arrays, programs = setup(images, workers, min_blocks)
    net, seed = algorithm.net, config["seed"]
    blocks = net.droppable_blocks()
    for round_index in (1, 2):
        before, sent, trained = one_round(algorithm, arrays, programs, round_index)
        assignment = ra.draw_assignment(len(blocks), workers, min_blocks, seed, round_index)
        holders = ra.holder_counts(assignment, len(blocks))
        assert (holders >= 1).all()  # no block is left unheld
        for worker, held in enumerate(assignment):
            expected = subnet_of(net, held, before)
            assert np.array_equal(arrays["ids"][worker, : held.size], held)
            assert np.array_equal(sent[worker, : expected.size], expected)
            assert not np.array_equal(trained[worker, : expected.size], expected)  # it trained
        model = arrays["model"]
        for layer, (a, b) in layer_ranges(net).items():
            if layer in blocks:
                owners = [w for w, held in enumerate(assignment) if blocks.index(layer) in held]
                assert len(owners) == holders[blocks.index(layer)]
            else:
                owners = list(range(workers))
            copies = np.stack([copy_of(net, assignment[w], trained[w], layer) for w in owners]).astype(np.float64)
            mean = (copies.sum(axis=0) / len(owners)).astype(model.dtype)
            assert np.array_equal(model[a:b], mean), layer


def test_the_sub_resnet_is_the_network_with_its_other_blocks_the_identity(images):
    """A worker's sub-ResNet on its gathered values computes what the whole network computes
    with the branches of the blocks it lacks set to 0 (their last conv zeroed)."""
    _, algorithm, arrays, programs = setup(images, 2)
    net, model = algorithm.net, arrays["model"]
    X = arrays["X_train"][:6]
    blocks = net.droppable_blocks()
    held = np.array([1, 3])
    zeroed = model.copy()
    for j, layer in enumerate(blocks):
        if j not in held:
            last = [p for p in net.layout().params if p.path[0] == layer and p.kind == "W"][-1]
            zeroed[last.offset : last.offset + last.size] = 0.0
    sub = subnet_of(net, held, model)
    assert np.array_equal(programs[0].driver(held).logits(sub, X), algorithm.driver.logits(zeroed, X))


@pytest.mark.parametrize(("workers", "min_blocks", "c"), [(1, 0, 1.0), (4, 0, 0.25), (4, 3, 0.6)])
def test_evaluation_scales_every_partitioned_branch_by_c(images, workers, min_blocks, c):
    """c = max(1/n, b/m) with m = 5 blocks; the branch's last conv is linear, so scaling its
    weight scales the branch."""
    _, algorithm, arrays, _ = setup(images, workers, min_blocks)
    net, model = algorithm.net, arrays["model"]
    X = arrays["X_test"][:6]
    scaled = model.copy()
    for layer in net.droppable_blocks():
        last = [p for p in net.layout().params if p.path[0] == layer and p.kind == "W"][-1]
        scaled[last.offset : last.offset + last.size] *= np.float32(c)
    assert np.array_equal(algorithm.logits(model, X), algorithm.driver.logits(scaled, X))
    if c != 1.0:
        assert not np.array_equal(algorithm.logits(model, X), algorithm.driver.logits(model, X))


@pytest.mark.parametrize("sparsity", [0.0, 0.9])
def test_round_bytes_are_the_subnets_values_and_block_ids(images, sparsity):
    """Worker i: v·P_i down plus 4 bytes per block id, v·P_i up, P_i counted here from the
    layout (a pruned run: the kept entries of its sub-ResNet)."""
    workers, min_blocks = 3, 2
    config, algorithm, arrays, programs = setup(images, workers, min_blocks, sparsity=sparsity)
    net = algorithm.net
    for round_index in (1, 2):
        one_round(algorithm, arrays, programs, round_index)
        traffic = algorithm.round_traffic(round_index)
        assignment = ra.draw_assignment(len(net.droppable_blocks()), workers, min_blocks, config["seed"], round_index)
        whole = arrays["mask"] if sparsity else np.ones(net.n_params)
        values = np.array([subnet_of(net, held, whole).sum() for held in assignment])
        assert np.array_equal(traffic.bytes_up, 4 * values)
        assert np.array_equal(traffic.bytes_down, 4 * values + 4 * np.array([held.size for held in assignment]))
        if sparsity:  # pruned entries stay 0 through training and averaging
            assert (arrays["model"][arrays["mask"] == 0] == 0).all()


# ----------------------------------------------------------------------------- whole runs
@pytest.mark.slow  # two whole runs
def test_one_worker_is_single_worker_sgd_bit_for_bit(tmp_path, images):
    """n = 1 holds every block (c = 1), shares nothing, keeps its momentum: plain SGD."""
    for algorithm in ("single", "resist"):
        ist("run", *ARGS, "--dataset", images, "--algorithm", algorithm, "--workers", "1", "--out", str(tmp_path),
            "--name", algorithm, "--quiet", check=True, timeout=400)
    single, resist = read_run(tmp_path / "single.h5"), read_run(tmp_path / "resist.h5")
    assert set(single.final) == set(resist.final)
    for key in single.final:
        assert single.final[key].tobytes() == resist.final[key].tobytes(), key
    for key in ("loss", "test_loss", "test_accuracy", "worker_train_loss"):
        assert np.array_equal(single.metrics[key], resist.metrics[key], equal_nan=True), key


def test_resist_on_an_arch_without_partitioned_blocks_is_one_line(tmp_path, images):
    result = ist("run", "--model", "cnn", "--algorithm", "resist", "--arch", "resnet8", "--dataset", images,
                 "--out", str(tmp_path / "o"))
    line = one_error_line(result)
    assert "--algorithm: resist is not allowed with --arch resnet8" in line and "expected --arch preact-resnet" in line
    assert files_in(tmp_path) == []


def test_more_min_blocks_than_partitioned_blocks_is_one_line(tmp_path, images):
    result = ist("run", *ARGS, "--algorithm", "resist", "--min-blocks", "6", "--dataset", images,
                 "--out", str(tmp_path / "o"))
    assert "--min-blocks: 6 is not allowed with --arch preact-resnet (5 partitioned" in one_error_line(result)
    assert files_in(tmp_path) == []


def test_run_help_lists_resist_and_min_blocks():
    out = " ".join(ist("run", "--help", check=True).stdout.split())
    assert "--algorithm [ist|gd|dcgd|dp|local-sgd|single|resist]" in out and "--min-blocks B" in out


# ----------------------------------------------------------------------------- over MPI
MPI_CASES = {
    "dense": ("2", []),
    "shared-blocks": ("3", ["--min-blocks", "2"]),
    "sparse": ("2", ["--sparsity", "0.9"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", MPI_CASES)
def test_mpi_gives_the_shared_memory_final_model_and_counts_the_accounted_bytes(tmp_path, images, case):
    pytest.importorskip("mpi4py")
    workers, extra = MPI_CASES[case]
    shm, mpi = run_both(tmp_path, [*ARGS, "--dataset", images, "--algorithm", "resist", *extra], int(workers))
    assert_mpi_is_shared_memory_and_counts_the_accounting(shm, mpi)
