"""The pieces of the time-to-target report on made-up numbers: target parsing and NaN, the
crossover bandwidth, the network option's parser, intervals of times and speed-ups that stay
positive, and the speed-up figure's layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from ist_cli.comm import parse_link
from ist_cli.errors import UserError
from ist_cli.io.runfile import RunData
from ist_cli.report.speedup_figure import Curve, crossovers, speedup_figure
from ist_cli.report.time_to_target import Target, markdown, time_to_target


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


def fake_run(algorithm: str, seed: int, hit_time: float) -> RunData:
    """A run whose test accuracy first reaches 0.9 at its third row, at ``hit_time`` seconds."""
    rounds = np.arange(5.0)
    return RunData(path=Path(f"{algorithm}-{seed}.h5"), attrs={"seed": seed, "status": "completed"},
                   config={"model": "mlp", "algorithm": algorithm, "workers": 2, "seed": seed}, env={},
                   metrics={"round": rounds, "sim_time": hit_time * rounds / 2, "test_accuracy": rounds * 0.3,
                            "bytes_up": rounds * 4e7, "bytes_down": rounds * 4e7})


def test_times_and_speedups_get_intervals_that_stay_positive() -> None:
    # spread wide enough that mean ± t·s/√n would go below 0 for both the times and the speed-ups
    dp, ist = [1.0, 1.2, 9.0], [0.1, 0.6, 0.3]
    runs = [fake_run("dp", s, t) for s, t in enumerate(dp)] + [fake_run("ist", s, t) for s, t in enumerate(ist)]
    target = Target.parse("test_accuracy>=0.5", ["test_accuracy"])
    rows = {row.group.key["algorithm"]: row for row in time_to_target(runs, target, "dp")}
    ratios = np.array(dp) / np.array(ist)
    for values, (mean, low, high) in ((np.array(dp), rows["dp"].time), (np.array(ist), rows["ist"].time),
                                      (ratios, rows["ist"].speedup)):
        half = stats.t.ppf(0.975, 2) * values.std(ddof=1) / np.sqrt(3)
        assert values.mean() - half < 0  # the plain t-interval would leave the range
        assert mean == pytest.approx(values.mean(), rel=1e-12)
        assert low == pytest.approx(mean * np.exp(-half / mean), rel=1e-9)
        assert high == pytest.approx(mean * np.exp(half / mean), rel=1e-9)
        assert 0 < low < mean < high
    text = markdown(list(rows.values()), target, "caption")
    assert "[-" not in text and "(n = 3 < 5)" in text
    assert "| 160 MB |" in text  # bytes at the hit (round 2: 2 · 8e7) in human units


def test_speedup_figure_labels_methods_and_keeps_its_legend_outside() -> None:
    from tests.test_report_review import check_figure

    grid = np.logspace(6, 11, 21) / 8
    curves = [Curve({"algorithm": algorithm, "workers": n}, grid, (grid / 1e9) ** -0.3 * factor, [])
              for algorithm, factor in (("ist", 3.0), ("local-sgd", 1.5)) for n in (2, 4)]
    target = Target.parse("test_accuracy>=0.8", ["test_accuracy"])
    fig = speedup_figure(curves, target, "dp")
    check_figure("speedup", fig, {})
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert set(lines) == {"IST, 2 workers", "IST, 4 workers", "local SGD, 2 workers", "local SGD, 4 workers"}
    # colour by method, line style by the number of workers
    assert lines["IST, 2 workers"].get_color() == lines["IST, 4 workers"].get_color()
    assert lines["IST, 2 workers"].get_color() != lines["local SGD, 2 workers"].get_color()
    assert lines["IST, 2 workers"].get_linestyle() != lines["IST, 4 workers"].get_linestyle()
    assert lines["IST, 2 workers"].get_linestyle() == lines["local SGD, 2 workers"].get_linestyle()
    ticks = [t.get_text() for t in ax.xaxis.get_ticklabels() if t.get_text()]
    assert ticks == ["10 Mbit/s", "1 Gbit/s", "100 Gbit/s"], ticks
    assert ax.get_ylabel() == "speed-up over DP" and "0.8" in fig.legends[0].get_title().get_text()
