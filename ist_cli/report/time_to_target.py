"""Time to a target: when each run first met ``metric >= value`` (or ``<=``), and how much sooner
than a baseline method (docs/report.md#time-to-a-target).

A run *meets* the target at its first ``/metrics`` row whose value satisfies the comparison
(NaN never does); its time is that row's ``sim_time``, with the row's round and bytes
(``bytes_up + bytes_down``). Runs are grouped by model, method and workers, and by the network
and topology when those vary (``--group-by`` chooses other keys): a method's own settings,
such as its rounds or evaluation interval, do not split it. Per group: the mean time over the runs that met the target, with the
report's interval; how many runs missed it and their seeds (never dropped silently). The
speed-up of a group over the baseline group (same key but the method) is the mean, over the
seeds both ran and both met the target, of ``T_baseline(seed) / T(seed)``, with its interval.
Both are positive quantities: their intervals are those of the report for a non-negative metric
(``stats.interval`` with ``NONNEGATIVE`` bounds, on the log scale for ``t``), never below 0.
"""

from __future__ import annotations

import csv
import io
import json
import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ist_cli.errors import UserError
from ist_cli.io.metric_info import NONNEGATIVE, metric_range
from ist_cli.io.runfile import RunData
from ist_cli.report.stats import DEFAULT_CI, few_runs_note, interval
from ist_cli.report.table import Group, canon, group_runs, show, varying_keys
from ist_cli.report.units import human

COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {">=": operator.ge, "<=": operator.le, ">": operator.gt,
                                                     "<": operator.lt}


@dataclass(frozen=True)
class Target:
    metric: str
    op: str
    value: float

    @classmethod
    def parse(cls, text: str, available: Sequence[str]) -> Target:
        match = re.fullmatch(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|>|<)\s*([-+0-9.eE]+)\s*", text)
        if not match:
            raise UserError(f"--target: {text!r} is not allowed; expected METRIC>=VALUE or METRIC<=VALUE, "
                            "e.g. test_accuracy>=0.95")
        metric, op, number = match.groups()
        if metric not in available:
            raise UserError(f"--target: unknown metric {metric!r}; available: {', '.join(available)}")
        try:
            value = float(number)
        except ValueError:
            raise UserError(f"--target: {number!r} is not a number; expected e.g. test_accuracy>=0.95") from None
        if not math.isfinite(value):
            raise UserError(f"--target: {number!r} is not allowed; expected a finite number")
        return cls(metric, op, value)

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"

    def met(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            return np.isfinite(values) & COMPARISONS[self.op](values, self.value)


@dataclass(frozen=True)
class Hit:
    """Where one run met the target; NaN everywhere when it never did."""

    run: RunData
    met: bool
    sim_time: float = math.nan
    round: float = math.nan
    bytes: float = math.nan

    @property
    def seed(self) -> Any:
        return self.run.config.get("seed", self.run.attrs.get("seed"))


def first_hit(run: RunData, target: Target) -> Hit:
    if target.metric not in run.metrics:
        return Hit(run, False)
    reached = np.flatnonzero(target.met(run.metrics[target.metric]))
    if reached.size == 0:
        return Hit(run, False)
    row = int(reached[0])
    m = run.metrics
    return Hit(run, True, float(m["sim_time"][row]), float(m["round"][row]),
               float(m["bytes_up"][row] + m["bytes_down"][row]))


@dataclass
class TargetRow:
    """One group's time to the target."""

    group: Group
    hits: list[Hit]
    time: tuple[float, float, float]  # mean, low, high of sim_time over the runs that met it
    round_mean: float
    bytes_mean: float
    baseline: Group | None = None
    speedup: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    speedup_values: list[float] = field(default_factory=list)

    @property
    def met(self) -> list[Hit]:
        return [hit for hit in self.hits if hit.met]

    @property
    def missed_seeds(self) -> list[Any]:
        return [hit.seed for hit in self.hits if not hit.met]


def _matches_baseline(group: Group, candidate: Group) -> bool:
    """Same key but the method (keys one of them lacks, a method's own settings, are not compared)."""
    for key, value in group.key.items():
        if key == "algorithm" or key not in candidate.key:
            continue
        other = candidate.key[key]
        if value is not None and other is not None and canon(value) != canon(other):
            return False
    return True


GROUP_KEYS = ("model", "algorithm", "workers")
NETWORK_KEYS = ("network", "topology", "latency", "bandwidth")


def default_keys(runs: Sequence[RunData]) -> list[str]:
    varying = set(varying_keys(runs))
    return [*GROUP_KEYS, *(key for key in NETWORK_KEYS if key in varying)]


def time_to_target(runs: Sequence[RunData], target: Target, baseline: str | None = "dp",
                   ci: str = DEFAULT_CI, group_by: Sequence[str] | None = None) -> list[TargetRow]:
    """One row per group of ``runs`` (``default_keys`` unless ``group_by``), with the speed-up
    over the ``baseline`` method's matching group when there is one."""
    groups = group_runs(runs, list(group_by) if group_by else default_keys(runs))
    rows = []
    for group in groups:
        hits = [first_hit(run, target) for run in group.runs]
        met = [hit for hit in hits if hit.met]
        rows.append(TargetRow(group, hits, interval([hit.sim_time for hit in met], ci, bounds=metric_range("sim_time")),
                              float(np.mean([hit.round for hit in met])) if met else math.nan,
                              float(np.mean([hit.bytes for hit in met])) if met else math.nan))
    if baseline is None:
        return rows
    bases = [row for row in rows if row.group.config.get("algorithm", row.group.key.get("algorithm")) == baseline]
    for row in rows:
        match = next((base for base in bases if _matches_baseline(row.group, base.group)), None)
        if match is None:
            continue
        row.baseline = match.group
        base_times = {canon(hit.seed): hit.sim_time for hit in match.met}
        row.speedup_values = [base_times[canon(hit.seed)] / hit.sim_time for hit in row.met
                              if canon(hit.seed) in base_times and hit.sim_time > 0]
        row.speedup = interval(row.speedup_values, ci, bounds=NONNEGATIVE)
    return rows


# ----------------------------------------------------------------------------- output
def _num(value: float) -> float | None:
    return value if math.isfinite(value) else None


def flat(rows: Sequence[TargetRow], target: Target) -> list[dict[str, Any]]:
    """One flat dict per group (CSV and JSON): key columns, counts, times, speed-up."""
    out = []
    for row in rows:
        item: dict[str, Any] = {"model": row.group.config.get("model", row.group.key.get("model"))}
        item.update({k: show(v) for k, v in row.group.key.items() if k != "model"})
        item.update({
            "target": str(target), "runs": len(row.hits), "met": len(row.met), "missed": len(row.missed_seeds),
            "missed_seeds": " ".join(show(s) for s in row.missed_seeds),
            "sim_time_mean": _num(row.time[0]), "sim_time_ci_low": _num(row.time[1]),
            "sim_time_ci_high": _num(row.time[2]), "round_mean": _num(row.round_mean),
            "bytes_mean": _num(row.bytes_mean), "speedup_mean": _num(row.speedup[0]),
            "speedup_ci_low": _num(row.speedup[1]), "speedup_ci_high": _num(row.speedup[2]),
            "speedup_n": len(row.speedup_values),
            "baseline": row.baseline.label if row.baseline is not None else None,
        })
        out.append(item)
    return out


def to_csv(rows: Sequence[TargetRow], target: Target) -> str:
    items = flat(rows, target)
    buffer = io.StringIO()
    if items:
        fields = list(dict.fromkeys(name for item in items for name in item))
        writer = csv.DictWriter(buffer, fieldnames=fields, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in item.items()} for item in items)
    return buffer.getvalue()


def to_json(rows: Sequence[TargetRow], target: Target, ci: str) -> str:
    groups = []
    for row, item in zip(rows, flat(rows, target), strict=True):
        item["files"] = [str(hit.run.path) for hit in row.hits]
        item["per_run"] = [{"seed": hit.seed, "met": hit.met, "sim_time": _num(hit.sim_time),
                            "round": _num(hit.round), "bytes": _num(hit.bytes)} for hit in row.hits]
        groups.append(item)
    return json.dumps({"target": str(target), "ci": ci, "groups": groups}, indent=2, allow_nan=False)


def _fmt(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}g}" if math.isfinite(value) else "-"


def _cell(stats: tuple[float, float, float], n: int) -> str:
    """``mean [low, high]`` and, for 2-4 values, the few-runs note."""
    mean, low, high = stats
    if not math.isfinite(mean):
        return "-"
    if not (math.isfinite(low) and math.isfinite(high)) or low == high:
        return _fmt(mean)
    note = few_runs_note(n)
    return f"{_fmt(mean)} [{_fmt(low, 3)}, {_fmt(high, 3)}]" + (f" ({note})" if note else "")


def display(rows: Sequence[TargetRow]) -> tuple[list[str], list[list[str]]]:
    """Header and text rows for the terminal and Markdown tables."""
    keys = list(dict.fromkeys(k for row in rows for k in row.group.key))
    header = [*keys, "met/runs", "missed (seeds)", "sim_time to target [s]", "round", "bytes", "speed-up"]
    lines = []
    for row in rows:
        missed = row.missed_seeds
        lines.append([*(show(row.group.key.get(k)) for k in keys), f"{len(row.met)}/{len(row.hits)}",
                      f"{len(missed)} ({' '.join(show(s) for s in missed)})" if missed else "0",
                      _cell(row.time, len(row.met)), _fmt(row.round_mean), human(row.bytes_mean, "byte"),
                      _cell(row.speedup, len(row.speedup_values))])
    return header, lines


def markdown(rows: Sequence[TargetRow], target: Target, caption: str) -> str:
    header, lines = display(rows)
    out = [f"_time to {target}: {caption}_", "", "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(out) + "\n"


def rich_table(rows: Sequence[TargetRow], target: Target, caption: str) -> Any:
    from rich.table import Table  # noqa: PLC0415

    header, lines = display(rows)
    table = Table(title=f"time to {target}", caption=caption)
    for name in header:
        table.add_column(name)
    for line in lines:
        table.add_row(*line)
    return table
