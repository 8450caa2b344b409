"""``ist run --model mlp`` as a subprocess: options that change the math, bad input,
determinism and a worker killed mid-run; every check reads the HDF5 file the run wrote."""

from __future__ import annotations

import signal

import numpy as np
import pytest

import tests.test_faults as faults
from ist_cli.io.runfile import read_run
from tests.helpers import (
    TIMING,
    assert_no_new_segments,
    ist,
    ist_json,
    one_error_line,
    overridden,
    shm_entries,
)

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
    # cumulative bytes are 30 rounds of the closed form (docs/mlp.md), computed here by hand
    up, down, seconds = closed_form_round(data.config)
    assert data.metrics["bytes_up"][-1] == 30 * up
    assert data.metrics["bytes_down"][-1] == 30 * down
    assert data.metrics["comm_time_model"][-1] == pytest.approx(30 * seconds)
    widths = [64, 32, 24, 10]
    assert data.final["W1"].shape == (32, 24) and data.final["W2"].shape == (24, 10)
    assert data.final["W0"].dtype == np.dtype(data.config["dtype"])
    assert ("gamma0" in data.final) == (data.config["norm"] == "batch")
    assert summary["params"] == sum(a * b + b for a, b in zip(widths[:-1], widths[1:], strict=True)) + (
        2 * 56 if data.config["norm"] == "batch" else 0)


def closed_form_round(config: dict) -> tuple[float, float, float]:
    """Bytes up, bytes down (all 3 workers) and modelled seconds of one round of SMALL on digits
    (64 features, hidden 32,24, 10 classes): 10Gbit, 50us."""
    value = np.dtype(config["dtype"]).itemsize
    bn = config["norm"] == "batch"
    latency, bandwidth = 50e-6, 10e9 / 8
    if config["algorithm"] == "ist":
        blocks = [(11, 8), (11, 8), (10, 8)]  # 32 and 24 hidden neurons over 3 workers
        values = [64 * a + a + a * b + b + b * 10 + 10 + (2 * (a + b) if bn else 0) for a, b in blocks]
        up = value * sum(values)
        down = up + 4 * sum(a + b for a, b in blocks)
        return up, down, 2 * latency + (up + down) / bandwidth  # ps: one down and one up phase
    params = 64 * 32 + 32 + 32 * 24 + 24 + 24 * 10 + 10 + (2 * 56 if bn else 0)
    each = 2 * 2 / 3 * params * value  # ring all-reduce of the model: 2(n-1)/n of it each way
    return 3 * each, 3 * each, 2 * 2 * latency + each / bandwidth


def test_hidden_width_below_worker_count_is_a_one_line_error(tmp_path):
    line = one_error_line(ist("run", "--model", "mlp", "--workers", "8", "--hidden", "64,4", "--out", str(tmp_path)))
    assert "--hidden" in line and "4" in line and "8 workers" in line
    assert list(tmp_path.iterdir()) == []


def test_same_seed_gives_bitwise_identical_mlp_runs(tmp_path):
    args = overridden(SMALL, ["--rounds", "12", "--eval-every", "4", "--momentum", "0.5", "--hidden", "30,17",
                              "--workers", "2", "--out", str(tmp_path), "--quiet"])
    for name in ("a", "b"):
        ist(*args, "--name", name, check=True)
    a, b = read_run(tmp_path / "a.h5"), read_run(tmp_path / "b.h5")
    assert a.run_id == b.run_id
    for key in set(a.metrics) - TIMING:
        assert a.metrics[key].tobytes() == b.metrics[key].tobytes(), key  # bitwise (NaN in row 0 of worker_train_loss)
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
