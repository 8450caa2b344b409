"""``ist run --model mlp`` as a subprocess: options that change the math, bad input,
determinism and a worker killed mid-run; every check reads the HDF5 file the run wrote."""

from __future__ import annotations

import signal

import numpy as np
import pytest

import tests.test_faults as faults
from ist_cli.algorithms import build_algorithm
from ist_cli.comm import NetworkModel
from ist_cli.io.runfile import read_run
from tests.helpers import TIMING, assert_no_new_segments, ist, ist_json, one_error_line, shm_entries

SMALL = ["run", "--model", "mlp", "--workers", "3", "--hidden", "32,24", "--rounds", "30", "--eval-every", "10",
         "--local-steps", "5"]


@pytest.mark.parametrize("extra, floor", [
    (["--norm", "batch"], 0.8),
    (["--partition", "dirichlet:0.1"], 0.5),
    (["--algorithm", "local-sgd", "--norm", "none", "--topology", "ring", "--dtype", "float64"], 0.6),
])
def test_short_runs_learn_well_above_chance_and_count_bytes_exactly(tmp_path, extra, floor):
    summary = ist_json(*SMALL, *extra, "--out", str(tmp_path), "--name", "r")
    data = read_run(tmp_path / "r.h5")
    assert data.status == "completed" == summary["status"]
    assert data.config["norm"] == ("none" if "none" in extra else "batch")
    assert data.metrics["round"].tolist() == [0, 10, 20, 30]
    assert data.metrics["test_accuracy"][-1] > floor  # 10 classes: chance is 0.1
    assert data.metrics["test_accuracy"][-1] > data.metrics["test_accuracy"][0]
    assert data.metrics["loss"][-1] < data.metrics["loss"][0]
    # cumulative bytes are 30 rounds of the closed form the algorithm states
    traffic = build_algorithm(data.config).round_traffic(1)
    assert data.metrics["bytes_up"][-1] == 30 * traffic.total_up
    assert data.metrics["bytes_down"][-1] == 30 * traffic.total_down
    assert data.metrics["comm_time_model"][-1] == pytest.approx(30 * NetworkModel.from_config(data.config).round_time(traffic))
    widths = [64, 32, 24, 10]
    assert data.final["W1"].shape == (32, 24) and data.final["W2"].shape == (24, 10)
    assert data.final["W0"].dtype == np.dtype(data.config["dtype"])
    assert ("gamma0" in data.final) == (data.config["norm"] == "batch")
    assert summary["params"] == sum(a * b + b for a, b in zip(widths[:-1], widths[1:], strict=True)) + (
        2 * 56 if data.config["norm"] == "batch" else 0)


def test_hidden_width_below_worker_count_is_a_one_line_error(tmp_path):
    line = one_error_line(ist("run", "--model", "mlp", "--workers", "8", "--hidden", "64,4", "--out", str(tmp_path)))
    assert "--hidden" in line and "4" in line and "8 workers" in line
    assert list(tmp_path.iterdir()) == []


def test_same_seed_gives_bitwise_identical_mlp_runs(tmp_path):
    args = [*SMALL, "--rounds", "12", "--eval-every", "4", "--momentum", "0.5", "--hidden", "30,17", "--workers", "2",
            "--out", str(tmp_path), "--quiet"]
    for name in ("a", "b"):
        ist(*args, "--name", name, check=True)
    a, b = read_run(tmp_path / "a.h5"), read_run(tmp_path / "b.h5")
    assert a.run_id == b.run_id
    for key in set(a.metrics) - TIMING:
        assert np.array_equal(a.metrics[key], b.metrics[key]), key
    assert set(a.final) == set(b.final)
    for key in a.final:
        assert np.array_equal(a.final[key], b.final[key]), key
    assert a.metrics["test_accuracy"][-1] > 0.3


def test_sigkill_of_an_mlp_worker_fails_fast_and_cleanly(tmp_path):
    args = ["run", "--model", "mlp", "--workers", "4", "--hidden", "64,64", "--rounds", "1000000",
            "--eval-every", "5", "--name", "long"]
    before = shm_entries()
    process = faults.start_long_run(tmp_path, args)
    faults.worker_processes(process.pid)[2].send_signal(signal.SIGKILL)
    code, stderr, seconds = faults.wait_end(process, 30)
    assert seconds < 10
    assert code == 1
    assert "SIGKILL" in stderr.strip().splitlines()[-1] and "Traceback" not in stderr
    data = read_run(tmp_path / "long.h5")
    assert data.status == "failed" and "SIGKILL" in data.attrs["error"]
    assert "W0" in data.final  # the model as it stood is still stored
    assert_no_new_segments(before, process.pid)
