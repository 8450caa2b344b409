"""Same config and seed: the same numbers, bit for bit, whatever the scheduling."""

from __future__ import annotations

import numpy as np

from ist_cli.io.runfile import read_run
from tests.helpers import TIMING, ist

ARGS = ["run", "--model", "quadratic", "--workers", "4", "--dim", "16", "--rounds", "40",
        "--sketch", "rand", "--save-params-every", "5", "--quiet"]


def test_same_seed_gives_bitwise_identical_metrics_and_final(tmp_path):
    for name in ("a", "b"):
        ist(*ARGS, "--out", str(tmp_path), "--name", name, check=True)
    a, b = read_run(tmp_path / "a.h5"), read_run(tmp_path / "b.h5")
    assert a.run_id == b.run_id
    assert set(a.metrics) == set(b.metrics)
    for key in set(a.metrics) - TIMING:
        assert np.array_equal(a.metrics[key], b.metrics[key]), key
    assert np.array_equal(a.final["x"], b.final["x"])
    assert np.array_equal(a.params["x"], b.params["x"])


def test_another_seed_gives_other_numbers(tmp_path):
    ist(*ARGS, "--out", str(tmp_path), "--name", "a", check=True)
    ist(*ARGS, "--out", str(tmp_path), "--name", "b", "--seed", "1", check=True)
    a, b = read_run(tmp_path / "a.h5"), read_run(tmp_path / "b.h5")
    assert a.run_id != b.run_id
    assert not np.array_equal(a.final["x"], b.final["x"])
