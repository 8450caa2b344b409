"""The alpha-beta model against a real slow link: MPI over TCP through a loopback shaped to
200 Mbit/s in a private network namespace (benchmarks/emulated_network.py; root only).
``ist calibrate`` must find the shaped bandwidth, and the measured communication time of an IST
and a DP run priced on the calibrated link must match the model's."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from emulated_network import calibrate, run_pair, why_not_available  # noqa: E402

pytest.importorskip("mpi4py")
pytestmark = pytest.mark.slow  # a calibration and two MPI runs over a 200 Mbit/s link

RATE_BYTES = 200e6 / 8


@pytest.fixture(scope="module")
def available() -> None:
    reason = why_not_available()
    if reason:
        pytest.skip(reason)


def test_calibrate_finds_the_shaped_bandwidth_and_the_model_prices_the_runs(available: None, tmp_path: Path) -> None:
    fit = calibrate("200mbit")
    assert abs(fit["bandwidth"] / RATE_BYTES - 1) <= 0.15, fit
    runs = run_pair("200mbit", tmp_path, f"{fit['bandwidth']!r}B", f"{fit['latency']!r}s")
    for algorithm, m in runs.items():
        assert m["bytes_up"] + m["bytes_down"] > 1e6  # enough bytes that the link, not the loop, decides
        assert abs(m["comm_time_measured"] / m["comm_time_model"] - 1) <= 0.20, (algorithm, m)
