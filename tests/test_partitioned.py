"""--server partitioned: the same /final and metrics as the central server, and exactly the accounted bytes per link.

Every run is real: ``ist run`` subprocesses over shared memory, and under the mpich wheel's
``mpiexec`` for the MPI cases. The per-pair byte count is checked against a closed form
written here from the partition, not against the code's own accounting alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from ist_cli.comm import NetworkModel, pair_traffic
from ist_cli.config import config_hash, resolve_config
from ist_cli.data.digits import load_digits_dataset
from ist_cli.footprint import estimate_run
from ist_cli.io.runfile import read_run
from ist_cli.models.subnet import block_sizes, draw_partition
from tests.helpers import (
    TIMING,
    assert_no_new_segments,
    ist,
    ist_json,
    one_error_line,
    overridden,
    shm_entries,
    worker_processes,
)
from tests.test_faults import assert_failed_file, start_long_run, wait_end

MLP = ["--model", "mlp", "--algorithm", "ist", "--hidden", "24,16", "--rounds", "4", "--eval-every", "2",
       "--local-steps", "3"]
CASES = {
    "dense-sgd": [],
    "dense-momentum": ["--momentum", "0.9"],
    "sparse-sgd": ["--sparsity", "0.9"],
    "sparse-momentum": ["--sparsity", "0.9", "--momentum", "0.9"],
    "stratified": ["--partition-rule", "stratified", "--hidden", "32,16"],
}


EVALUATED = ("loss", "train_accuracy", "test_loss", "test_accuracy")


def run_pair(tmp_path, args, workers, transport="shm"):
    common = overridden(["run", *MLP], args, ["--workers", str(workers), "--out", str(tmp_path)])
    central = ist_json(*common, "--name", "central", timeout=600)
    partitioned = ist_json(*common, "--name", "partitioned", "--server", "partitioned", "--transport", transport,
                           timeout=600)
    return central, partitioned, read_run(tmp_path / "central.h5"), read_run(tmp_path / "partitioned.h5")


def assert_same_model_and_metrics(central, partitioned):
    assert central.attrs["status"] == partitioned.attrs["status"] == "completed"
    assert set(central.final) == set(partitioned.final)
    for key in central.final:
        assert central.final[key].tobytes() == partitioned.final[key].tobytes(), key
    for key in EVALUATED:
        # model-parallel evaluation: the logits summed over owners, in another order than one product
        np.testing.assert_allclose(partitioned.metrics[key], central.metrics[key], rtol=1e-5, err_msg=key)
    np.testing.assert_array_equal(partitioned.metrics["worker_train_loss"], central.metrics["worker_train_loss"])


def evaluation_pairs(widths, n, rows, itemsize=4):
    """Bytes from rank to rank of one model-parallel evaluation of ``rows`` rows: each owner's block
    of every hidden layer but the last to every other owner, its partial logits to rank 0."""
    pairs = np.zeros((n + 1, n + 1))
    for width in widths[1:-2]:
        for k, owned in enumerate(block_sizes(width, n)):
            for other in range(n):
                if other != k:
                    pairs[k + 1, other + 1] += rows * owned * itemsize
    pairs[1:, 0] += rows * widths[-1] * itemsize
    return pairs


def digits_eval_rows():
    """Rows a digits run evaluates: its training rows (fewer than the 8192 cap) and its test rows."""
    data = load_digits_dataset()
    return data.n_train + data.n_test


def closed_form_pairs(widths, n, seed, rounds, eval_rounds, batch_norm=True, itemsize=4):
    """Bytes from rank to rank over a run, from the partition alone (dense)."""
    pairs = np.zeros((n + 1, n + 1))
    hidden = widths[1:-1]
    bounds = [np.concatenate([[0], np.cumsum(block_sizes(w, n))]) for w in hidden]
    for r in range(1, rounds + 1):
        plans = draw_partition(hidden, n, seed, r)
        for i in range(n):
            blocks = [p[i][p[i] >= 0] for p in plans]
            sizes = [widths[0], *(b.size for b in blocks)]
            for k in range(n):
                if k == i:
                    continue
                values = 0
                for h, block in enumerate(blocks):
                    mine = int(((block >= bounds[h][k]) & (block < bounds[h][k + 1])).sum())
                    values += sizes[h] * mine + mine * (3 if batch_norm else 1)  # incoming weights, b, gamma, beta
                    if h == len(blocks) - 1:
                        values += mine * widths[-1]  # outgoing weights of the last hidden layer
                pairs[k + 1, i + 1] += values * itemsize
                pairs[i + 1, k + 1] += values * itemsize
            pairs[0, i + 1] += widths[-1] * itemsize  # the output bias, both ways
            pairs[i + 1, 0] += widths[-1] * itemsize
        if r in eval_rounds:
            pairs += evaluation_pairs(widths, n, digits_eval_rows(), itemsize)
    return pairs


@pytest.mark.parametrize("case", ["dense-sgd", "sparse-momentum"])
def test_partitioned_gives_the_central_model_over_shared_memory(tmp_path, case):
    _, summary, central, partitioned = run_pair(tmp_path, CASES[case], 3)
    assert_same_model_and_metrics(central, partitioned)
    assert central.run_id != partitioned.run_id
    assert summary["server"] == "partitioned"
    if case == "dense-sgd":  # digits: 64 features, 10 classes; evaluated after rounds 2 and 4
        expected = closed_form_pairs([64, 24, 16, 10], 3, 0, 4, {2, 4})
        assert np.array_equal(np.asarray(summary["bytes_pairs"]), expected)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["dense-momentum", "sparse-sgd", "stratified"])
def test_partitioned_gives_the_central_model_over_shared_memory_in_every_case(tmp_path, case):
    _, _, central, partitioned = run_pair(tmp_path, CASES[case], 3)
    assert_same_model_and_metrics(central, partitioned)


@pytest.mark.slow
@pytest.mark.parametrize(("case", "workers"), [("dense-sgd", 2), ("sparse-momentum", 2), ("dense-momentum", 4),
                                               ("sparse-sgd", 4)])
def test_partitioned_over_mpi_gives_the_central_model_and_counts_the_accounted_bytes_per_link(tmp_path, case, workers):
    pytest.importorskip("mpi4py")
    central_summary, summary, central, partitioned = run_pair(tmp_path, CASES[case], workers, transport="mpi")
    assert_same_model_and_metrics(central, partitioned)
    for key in set(central.metrics) - TIMING - {"bytes_up", "bytes_down", "bytes_busiest_link", "comm_time_model",
                                                "sim_time", *EVALUATED}:
        assert np.array_equal(central.metrics[key], partitioned.metrics[key], equal_nan=True), key
    sent = partitioned.attrs["bytes_pairs_sent_measured"]
    received = partitioned.attrs["bytes_pairs_received_measured"]
    assert np.array_equal(sent, received)  # counted at both ends of every link
    assert np.array_equal(sent, np.asarray(summary["bytes_pairs"]))  # the method's accounting
    if case.startswith("dense"):
        assert np.array_equal(sent, closed_form_pairs([64, 24, 16, 10], workers, 0, 4, {2, 4}))
        assert np.array_equal(partitioned.attrs["bytes_pairs_initial_evaluation_measured"],
                              evaluation_pairs([64, 24, 16, 10], workers, digits_eval_rows()))
    # the same model-parallel evaluation with shared memory, done by the coordinator: the same bits
    common = overridden(["run", *MLP], CASES[case], ["--workers", str(workers), "--out", str(tmp_path)])
    ist_json(*common, "--name", "partitioned-shm", "--server", "partitioned", timeout=600)
    over_shm = read_run(tmp_path / "partitioned-shm.h5")
    for key in EVALUATED:
        assert np.array_equal(over_shm.metrics[key], partitioned.metrics[key]), key
    for direction in ("up", "down"):
        assert np.array_equal(partitioned.metrics[f"bytes_{direction}_measured"], partitioned.metrics[f"bytes_{direction}"])
    # the busiest link of the run: the largest per-pair count (central: its server link, every byte)
    assert partitioned.metrics["bytes_busiest_link"][-1] == np.asarray(sent).max()
    assert central.metrics["bytes_busiest_link"][-1] == central.metrics["bytes_up"][-1] + central.metrics["bytes_down"][-1]
    # the summary's busiest process: the most bytes any rank sent and received, per round
    measured = np.asarray(sent)
    assert summary["busiest_rank_bytes_per_round"] == (measured.sum(axis=0) + measured.sum(axis=1)).max() / 4
    assert central_summary["busiest_rank_bytes_per_round"] == (central.metrics["bytes_up"][-1]
                                                               + central.metrics["bytes_down"][-1]) / 4
    peak = np.asarray(partitioned.attrs["peak_rss_bytes_per_rank"])
    assert peak.shape == (workers + 1,) and (peak > 10**6).all()  # every rank reported a real VmHWM


@pytest.mark.parametrize("algorithm", ["dp", "local-sgd"])
def test_methods_that_need_the_whole_model_refuse_the_partitioned_server(tmp_path, algorithm):
    result = ist("run", "--model", "mlp", "--algorithm", algorithm, "--server", "partitioned", "--out", str(tmp_path))
    line = one_error_line(result)
    assert "--server" in line and "whole model" in line
    assert not list(tmp_path.iterdir())


def test_the_link_model_prices_the_busiest_link_of_each_phase():
    pairs = np.zeros((2, 3, 3))
    pairs[0, 1, 2], pairs[0, 0, 1] = 1000.0, 10.0  # down: a piece and the output bias
    pairs[1, 2, 1], pairs[1, 1, 0] = 400.0, 2000.0  # up: the piece back, a shard to the coordinator
    traffic = pair_traffic(pairs)
    network = NetworkModel(latency=1e-3, bandwidth=1e3)
    assert network.round_time(traffic) == pytest.approx(2e-3 + 1000 / 1e3 + 2000 / 1e3)
    assert traffic.bytes_down.tolist() == [10.0, 1000.0] and traffic.bytes_up.tolist() == [2000.0, 400.0]


LONG_PARTITIONED = ["run", "--model", "mlp", "--algorithm", "ist", "--server", "partitioned", "--workers", "4",
                    "--hidden", "24,16", "--local-steps", "1", "--rounds", "1000000", "--eval-every", "50",
                    "--name", "long"]


@pytest.mark.slow
def test_a_killed_owner_fails_the_run_within_10_seconds_naming_its_lost_shard(tmp_path):
    before = shm_entries()
    process = start_long_run(tmp_path, LONG_PARTITIONED)
    workers = worker_processes(process.pid)
    workers[2].send_signal(9)
    code, stderr, seconds = wait_end(process, 30)
    assert seconds < 10 and code == 1
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("ist: error: worker") and "shard" in lines[-1] and "SIGKILL" in lines[-1]
    assert_failed_file(tmp_path, "is lost")
    assert_no_new_segments(before, process.pid)
    time.sleep(0.5)
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)


@pytest.mark.slow
def test_ctrl_c_ends_a_partitioned_run_as_today(tmp_path):
    before = shm_entries()
    process = start_long_run(tmp_path, LONG_PARTITIONED)
    process.send_signal(2)
    code, stderr, seconds = wait_end(process, 30)
    assert seconds < 10 and code == 130 and "Traceback" not in stderr
    assert_failed_file(tmp_path, "interrupted")
    assert_no_new_segments(before, process.pid)


def test_server_and_partition_rule_change_the_run_id_and_their_defaults_are_not_recorded():
    base = {"model": "mlp", "algorithm": "ist", "workers": 2, "hidden": [8]}
    default = resolve_config(base)
    assert "server" not in default and "partition_rule" not in default  # ids of older runs stay valid
    assert resolve_config({**base, "server": "central", "partition_rule": "random"}) == default
    ids = {config_hash(resolve_config({**base, "server": s, "partition_rule": r}))
           for s in ("central", "partitioned") for r in ("random", "stratified")}
    assert len(ids) == 4


def test_the_memory_estimate_counts_the_shard_rows():
    base = {"model": "mlp", "algorithm": "ist", "hidden": [512, 256], "workers": 4}
    central = estimate_run(resolve_config(base))
    partitioned = estimate_run(resolve_config({**base, "server": "partitioned"}))
    params = 64 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10 + 2 * (512 + 256)  # digits; gamma, beta
    assert partitioned.arena - central.arena == 4 * params


@pytest.mark.slow
def test_closing_after_rounds_without_evaluation_brings_the_shards_home_for_final():
    """An interrupted run ends between evaluations: rank 0 asks the owners for their shards at close."""
    pytest.importorskip("mpi4py")
    mpiexec = Path(sys.executable).parent / "mpiexec"
    result = subprocess.run([str(mpiexec), "-n", "3", sys.executable, "-m", "tests.mpi_partitioned_close"],
                            capture_output=True, text=True, timeout=600, cwd=Path(__file__).parent.parent)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["same"] and report["changed"]
    assert report["collected"] > 0
