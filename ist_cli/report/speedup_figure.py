"""The speed-up of each method over a baseline as a function of bandwidth, every run re-priced
from its ``/rounds`` (``repricing``) at each bandwidth of a log grid, its own latency kept.

A point is the time-to-target speed-up of ``report.time_to_target`` (mean over the seeds both
met the target of ``T_baseline / T``); where a curve crosses 1 the method stops (or starts)
beating the baseline: that crossover bandwidth is marked and labelled (log-interpolated
between grid points). Curves are named and styled as on the run pages: method names and
``4 workers`` (``labels``), colour by method and line style by the number of workers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, LogLocator

from ist_cli.comm import parse_latency
from ist_cli.io.runfile import RunData
from ist_cli.report.choices import DEFAULT_FIGSIZE
from ist_cli.report.figures import key_styles, legend_below, new_figure, styled
from ist_cli.report.labels import Labels, group_label, value_label
from ist_cli.report.stats import DEFAULT_CI
from ist_cli.report.table import show
from ist_cli.report.time_to_target import Target, default_keys, time_to_target
from ist_cli.report.units import format_axis, human
from ist_cli.repricing import Link, can_reprice, repriced

GRID = np.logspace(6, 11, 21) / 8  # 1 Mbit/s .. 100 Gbit/s, in bytes per second
RATE_TICKS = (1e7, 1e9, 1e11)  # labelled bandwidths, bit/s


@dataclass
class Curve:
    key: dict[str, Any]  # the group's key but the model, e.g. {"algorithm": "ist", "workers": 4}
    bandwidths: np.ndarray  # bytes per second
    speedup: np.ndarray  # NaN where no seed pair met the target
    crossovers: list[float]


def crossovers(bandwidths: np.ndarray, speedup: np.ndarray) -> list[float]:
    """Bandwidths where ``speedup`` crosses 1, log-interpolated between neighbouring points."""
    found = []
    for i in range(len(bandwidths) - 1):
        a, b = speedup[i] - 1.0, speedup[i + 1] - 1.0
        if not (math.isfinite(a) and math.isfinite(b)) or a * b > 0 or a == b:
            continue
        fraction = a / (a - b)
        found.append(float(np.exp(np.log(bandwidths[i]) + fraction * np.log(bandwidths[i + 1] / bandwidths[i]))))
    return found


def speedup_curves(runs: Sequence[RunData], target: Target, baseline: str, *, grid: np.ndarray = GRID,
                   ci: str = DEFAULT_CI) -> list[Curve]:
    """One curve per (model, method, workers) other than the baseline."""
    runs = [run for run in runs if can_reprice(run)]
    points: dict[tuple, list[float]] = {}
    keys_of: dict[tuple, dict[str, Any]] = {}
    keys = [key for key in default_keys(runs) if key not in ("bandwidth", "network")]
    for bandwidth in grid:
        priced = [repriced(run, Link("", parse_latency(run.config["latency"]), float(bandwidth))) for run in runs]
        for row in time_to_target(priced, target, baseline, ci, group_by=keys):
            if row.group.key.get("algorithm") == baseline:
                continue
            key = {k: v for k, v in row.group.key.items() if k != "model"}
            ident = tuple((k, show(v)) for k, v in key.items())
            keys_of.setdefault(ident, key)
            points.setdefault(ident, []).append(row.speedup[0])
    return [Curve(keys_of[ident], grid, np.asarray(values), crossovers(grid, np.asarray(values)))
            for ident, values in points.items()
            if len(values) == len(grid) and np.isfinite(values).any()]  # no pair met the target: no curve


@styled
def speedup_figure(curves: Sequence[Curve], target: Target, baseline: str, size: str = DEFAULT_FIGSIZE,
                   labels: Labels | None = None) -> Figure:
    fig = new_figure(size)
    ax = fig.add_subplot()
    bits = 8.0  # the axis reads in bit/s, as links are sold
    styles = key_styles([curve.key for curve in curves])
    for curve, (colour, linestyle) in zip(curves, styles, strict=True):
        ax.plot(curve.bandwidths * bits, curve.speedup, color=colour, ls=linestyle, marker="o", markersize=2.5,
                label=group_label(curve.key, labels))
        for where in curve.crossovers:
            ax.axvline(where * bits, color=colour, linestyle=":", linewidth=0.8)
            ax.annotate(human(where * bits, "bit/s"), (where * bits, 1.0), color=colour, fontsize=6,
                        rotation=90, va="bottom", ha="right")
    ax.axhline(1.0, color="0.4", linewidth=0.8, linestyle="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    format_axis(ax.xaxis, "bit/s")
    format_axis(ax.yaxis, "1")
    # a label every other decade (10 Mbit/s, 1 Gbit/s, 100 Gbit/s): six would collide in a column
    ax.xaxis.set_major_locator(FixedLocator(RATE_TICKS))
    ax.xaxis.set_minor_locator(LogLocator(base=10.0, subs=(1.0,), numticks=20))
    ax.set_xlabel("bandwidth (each run re-priced, its latency kept)")
    ax.set_ylabel(f"speed-up over {value_label('algorithm', baseline, labels)}")
    ax.grid(True, which="major", alpha=0.3)
    ax.xaxis.grid(True, which="minor", alpha=0.3)  # every decade
    legend_below(fig, ax, size, title=f"time to {target}")
    return fig
