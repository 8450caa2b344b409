"""The pieces of the time-to-target report on made-up numbers: target parsing and NaN, the
crossover bandwidth, the network option's parser."""

from __future__ import annotations

import numpy as np
import pytest

from ist_cli.comm import parse_link
from ist_cli.errors import UserError
from ist_cli.report.speedup_figure import crossovers
from ist_cli.report.time_to_target import Target


def test_target_meets_only_finite_values_on_the_right_side() -> None:
    target = Target.parse("test_accuracy>=0.9", ["test_accuracy"])
    assert target.met(np.array([0.5, np.nan, 0.9, 0.95])).tolist() == [False, False, True, True]
    below = Target.parse(" loss < 0.1 ", ["loss"])
    assert below.met(np.array([0.1, 0.05, np.inf])).tolist() == [False, True, False]
    for bad in ("test_accuracy=0.9", "test_accuracy>=", "x>=1", "test_accuracy>=nan"):
        with pytest.raises(UserError):
            Target.parse(bad, ["test_accuracy"])


def test_crossover_is_where_a_log_linear_speedup_crosses_one() -> None:
    grid = np.logspace(6, 11, 21)
    # speed-up = (b / 3e8) ** -0.5: above 1 below 3e8, below 1 above it; log-linear in log b
    speedup = (grid / 3e8) ** -0.5
    (found,) = crossovers(grid, np.log(speedup) + 1.0)  # log(speed-up) + 1 crosses 1 at b = 3e8
    assert found == pytest.approx(3e8, rel=1e-9)
    assert crossovers(grid, np.full(21, 2.0)) == []
    assert crossovers(grid, np.where(grid < 1e8, np.nan, 0.5)) == []


def test_network_parts_are_told_apart_by_their_units() -> None:
    assert parse_link("1Gbit,100us") == parse_link("100us, 1Gbit") == (pytest.approx(1e-4), 1.25e8)
    for bad in ("1Gbit", "1,2", "1Gbit,2Gbit", "1ms,2ms", "1Gbit,100us,3", "0Gbit,1us"):
        with pytest.raises(ValueError):
            parse_link(bad)
