"""A finished run re-priced on another network equals a run made on it; the time-to-target table
equals the same figures recomputed from the run files with h5py and numpy alone."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy import stats

from ist_cli.comm import parse_link
from ist_cli.errors import UserError
from ist_cli.repricing import Link
from tests.helpers import ist, one_error_line

pytestmark = pytest.mark.slow  # a dozen small runs

COMMON = ("--model", "mlp", "--workers", "2", "--hidden", "16,16", "--rounds", "8", "--eval-every", "1", "--quiet")
METHODS = {"ist": ("--algorithm", "ist"), "dp": ("--algorithm", "dp"),
           "dpring": ("--algorithm", "dp", "--topology", "ring")}
SEEDS = (0, 1, 2)
NETWORK = ("--latency", "100us", "--bandwidth", "1Gbit")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    own = tmp_path_factory.mktemp("own")
    fresh = tmp_path_factory.mktemp("fresh")
    for name, flags in METHODS.items():
        for seed in SEEDS:
            ist("run", *COMMON, *flags, "--seed", str(seed), "--out", str(own), "--name", f"{name}-{seed}",
                check=True, timeout=300)
        ist("run", *COMMON, *flags, *NETWORK, "--seed", "0", "--out", str(fresh), "--name", f"{name}-0",
            check=True, timeout=300)
    return {"own": own, "fresh": fresh}


def read(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as handle:
        return {key: handle["metrics"][key][()] for key in handle["metrics"]} | {
            "config": json.loads(handle["config"][()])}


@pytest.mark.parametrize("method", list(METHODS))
def test_a_run_repriced_equals_a_run_made_on_that_network(runs: dict[str, Path], method: str) -> None:
    from ist_cli.io.runfile import read_run
    from ist_cli.repricing import repriced

    fresh = read(runs["fresh"] / f"{method}-0.h5")
    own = read(runs["own"] / f"{method}-0.h5")
    assert own["config"]["bandwidth"] != fresh["config"]["bandwidth"]
    assert not np.allclose(own["comm_time_model"][1:], fresh["comm_time_model"][1:])  # the network matters
    run = repriced(read_run(runs["own"] / f"{method}-0.h5"), Link.parse("1Gbit,100us"))
    np.testing.assert_allclose(run.metrics["comm_time_model"], fresh["comm_time_model"], rtol=1e-9, atol=0)
    np.testing.assert_allclose(run.metrics["sim_time"], own["compute_time"] + fresh["comm_time_model"], rtol=1e-12)
    # on its own network the run re-prices to exactly what it stored
    back = repriced(read_run(runs["own"] / f"{method}-0.h5"), Link.parse("10Gbit,50us"))
    assert own["config"]["bandwidth"] == "10Gbit" and own["config"]["latency"] == "50us"
    np.testing.assert_allclose(back.metrics["comm_time_model"], own["comm_time_model"], rtol=1e-12, atol=0)

    # the CLI: several networks at once, one group per network
    result = ist("report", str(runs["own"]), "--where", f"algorithm={METHODS[method][1]}", "--metric",
                 "comm_time_model", "--network", "1Gbit,100us", "--network", "100us,10Gbit", "--format", "json",
                 check=True)
    groups = json.loads(result.stdout)["groups"]
    by_network = {}
    for group in groups:
        if group["config"].get("topology", "ps") == fresh["config"]["topology"]:
            by_network[group["key"]["network"]] = group
    values = by_network["1Gbit,100us"]["metrics"]["comm_time_model"]["values"]
    seed0 = by_network["1Gbit,100us"]["seeds"].index(0)
    assert values[seed0] == pytest.approx(fresh["comm_time_model"][-1], rel=1e-9)


def test_bad_network_and_target_are_one_line_errors(runs: dict[str, Path]) -> None:
    for args, needle in ((("--network", "1Gbit"), "1Gbit"), (("--network", "1Gbit,2Gbit"), "1Gbit,2Gbit"),
                         (("--target", "test_accuracy=0.9"), "test_accuracy=0.9"),
                         (("--target", "nope>=1"), "nope"), (("--target", "loss<=1", "--baseline", "sgd"), "sgd")):
        line = one_error_line(ist("report", str(runs["own"]), *args))
        assert needle in line, line
    with pytest.raises(UserError):
        Link.parse("50us,0s")
    assert parse_link("10Gbit,1ms") == parse_link("1ms,10Gbit")


def test_time_to_target_table_matches_h5py(runs: dict[str, Path]) -> None:
    files = sorted(runs["own"].glob("*.h5"))
    data = {path.stem: read(path) for path in files}
    # a target some runs meet and some miss, from the runs themselves
    best = sorted(float(np.nanmax(d["test_accuracy"])) for d in data.values())
    target = best[len(best) // 2]
    assert best[0] < target  # somebody misses it

    result = ist("report", str(runs["own"]), "--target", f"test_accuracy>={target!r}", "--format", "json",
                 check=True)
    table = json.loads(result.stdout)
    groups = {(g["algorithm"], g.get("topology", "ps")): g for g in table["groups"]}
    assert len(groups) == 3

    def hits(method: str) -> dict[int, tuple[float, float, float] | None]:
        out = {}
        for seed in SEEDS:
            d = data[f"{method}-{seed}"]
            reached = np.flatnonzero(d["test_accuracy"] >= target)
            out[seed] = None if reached.size == 0 else (
                d["sim_time"][reached[0]], d["round"][reached[0]], d["bytes_up"][reached[0]] + d["bytes_down"][reached[0]])
        return out

    expected_missed = 0
    for method, key in (("ist", ("ist", "ps")), ("dp", ("dp", "ps")), ("dpring", ("dp", "ring"))):
        mine, group = hits(method), groups[key]
        met = {seed: hit for seed, hit in mine.items() if hit is not None}
        missed = sorted(seed for seed, hit in mine.items() if hit is None)
        expected_missed += len(missed)
        assert group["runs"] == 3 and group["met"] == len(met) and group["missed"] == len(missed)
        assert group["missed_seeds"] == " ".join(str(s) for s in missed)
        assert len(group["per_run"]) == 3  # missed runs are listed, not dropped
        if not met:
            assert group["sim_time_mean"] is None
            continue
        times = np.array([hit[0] for hit in met.values()])
        assert group["sim_time_mean"] == pytest.approx(times.mean(), rel=1e-12)
        assert group["round_mean"] == pytest.approx(np.mean([hit[1] for hit in met.values()]), rel=1e-12)
        assert group["bytes_mean"] == pytest.approx(np.mean([hit[2] for hit in met.values()]), rel=1e-12)
        if len(times) > 1:
            half = stats.t.ppf(0.975, len(times) - 1) * times.std(ddof=1) / np.sqrt(len(times))
            # a time is positive: the t-interval is built on the log scale (delta method), m·exp(±half/m)
            m = times.mean()
            assert group["sim_time_ci_low"] == pytest.approx(m * np.exp(-half / m), rel=1e-9)
            assert group["sim_time_ci_high"] == pytest.approx(m * np.exp(half / m), rel=1e-9)
            assert 0 < group["sim_time_ci_low"] <= m <= group["sim_time_ci_high"]
        base = hits("dp") if key[1] == "ps" else hits("dpring")
        ratios = [base[s][0] / met[s][0] for s in met if base[s] is not None]
        assert group["speedup_n"] == len(ratios)
        if ratios:
            assert group["speedup_mean"] == pytest.approx(np.mean(ratios), rel=1e-12)
        if len(ratios) > 1 and np.ptp(ratios) > 0:
            assert 0 < group["speedup_ci_low"] <= group["speedup_mean"] <= group["speedup_ci_high"]
    assert expected_missed > 0
    assert sum(g["missed"] for g in table["groups"]) == expected_missed
