"""The busiest link's bytes (``bytes_busiest_link``): links as the alpha-beta model prices them,
the numbers the run files' own byte counts give, and ``ist report`` showing them for both servers.

The partitioned run's figure is checked against the per-pair bytes written out from the
partition alone (``closed_form_pairs``), the central one against ``bytes_up + bytes_down`` read
with h5py: never against the code's own accounting.
"""

from __future__ import annotations

import json

import h5py
import numpy as np

from ist_cli.comm import NetworkModel, pair_traffic, server_traffic
from tests.helpers import ist
from tests.test_partitioned import closed_form_pairs, run_pair


def test_links_are_the_ones_the_network_model_prices():
    up, down = [3.0, 4.0], [10.0, 20.0]
    kind, carried = NetworkModel(latency=0.0, bandwidth=1.0).link_bytes(server_traffic(up, down))
    assert kind == "server" and carried.tolist() == [37.0]  # one server link carries everything
    kind, carried = NetworkModel(latency=0.0, bandwidth=1.0, topology="ring").link_bytes(server_traffic(up, down))
    assert kind == "worker" and carried.tolist() == [3.0, 4.0, 10.0, 20.0]  # each worker, each direction
    pairs = np.zeros((2, 3, 3))
    pairs[0, 1, 2], pairs[1, 1, 2], pairs[1, 2, 0] = 5.0, 7.0, 1.0  # rank 1 -> 2 in both phases
    kind, carried = NetworkModel(latency=0.0, bandwidth=1.0).link_bytes(pair_traffic(pairs))
    assert kind == "pairs" and carried.reshape(3, 3)[1, 2] == 12.0 and carried.sum() == 13.0


def test_the_report_shows_the_busiest_link_of_both_servers(tmp_path):
    run_pair(tmp_path, [], 3)  # IST on digits, hidden 24,16, 4 rounds, evaluated after rounds 2 and 4
    with h5py.File(tmp_path / "central.h5", "r") as central:
        metrics = central["metrics"]
        # the central server's one link carries every byte of every worker
        np.testing.assert_array_equal(metrics["bytes_busiest_link"][:], metrics["bytes_up"][:] + metrics["bytes_down"][:])
        central_busiest = float(metrics["bytes_busiest_link"][-1])
    with h5py.File(tmp_path / "partitioned.h5", "r") as partitioned:
        rounds = partitioned["metrics/round"][:]
        busiest = partitioned["metrics/bytes_busiest_link"][:]
    assert rounds.tolist() == [0, 2, 4]
    for round_index, value in zip(rounds, busiest, strict=True):
        expected = closed_form_pairs([64, 24, 16, 10], 3, 0, int(round_index), {2, 4}).max() if round_index else 0.0
        assert value == expected, round_index
    assert busiest[-1] > 0

    result = ist("report", str(tmp_path), "--format", "json", check=True)
    groups = json.loads(result.stdout)["groups"]
    shown = {group["key"]["server"]: group["metrics"]["bytes_busiest_link"]["mean"] for group in groups}
    assert shown == {"central": central_busiest, "partitioned": float(busiest[-1])}
    table = ist("report", str(tmp_path), "--format", "md", check=True).stdout
    assert "bytes_busiest_link" in table and "partitioned" in table
    result = ist("report", str(tmp_path), "--format", "json", "--compare", "server", "--baseline", "central",
                 check=True)
    rows = [row for row in json.loads(result.stdout)["comparisons"] if row["metric"] == "bytes_busiest_link"]
    assert len(rows) == 1
    assert rows[0]["value"] == "partitioned" and rows[0]["baseline"] == "central"
    assert rows[0]["other_value"] == float(busiest[-1]) and rows[0]["baseline_value"] == central_busiest
