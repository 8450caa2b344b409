"""Runs as table rows, filters and seed groups: the frame-like layer of the report.

Rows are plain dicts (no pandas): a notebook can feed them to any frame library.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ist_cli.config import show_value
from ist_cli.errors import UserError
from ist_cli.io.runfile import RunData
from ist_cli.report.metrics import run_value

ATTR_KEYS = ("status", "run_id")


def canon(value: Any) -> str:
    """A hashable, order-stable spelling of a config value (lists, None, numbers alike)."""
    return json.dumps(value, sort_keys=True)


show = show_value  # how a config value reads in a table


FIRST_KEYS = ("model", "algorithm")


def varying_keys(runs: Sequence[RunData]) -> list[str]:
    """Config keys whose value differs among the runs that have the key, ``model`` and
    ``algorithm`` first. A key only some runs have (e.g. ``dim`` when quadratic and MLP runs
    are mixed) belongs to one model, so ``model`` already tells those runs apart."""
    keys = sorted({key for run in runs for key in run.config},
                  key=lambda k: (FIRST_KEYS.index(k) if k in FIRST_KEYS else len(FIRST_KEYS), k))
    return [key for key in keys if len({canon(run.config[key]) for run in runs if key in run.config}) > 1]


def runs_table(runs: Sequence[RunData], metrics: Sequence[str] = (), which: str = "final") -> list[dict[str, Any]]:
    """One row per run: path, run_id, status, seed, every config key, and each metric's value."""
    rows = []
    for run in runs:
        row: dict[str, Any] = {"path": str(run.path), "run_id": run.run_id, "status": run.status}
        row.update(run.config)
        for metric in metrics:
            row[metric] = run_value(run, metric, which)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- filters
def _matches(actual: Any, wanted: str) -> bool:
    if isinstance(actual, bool):
        return wanted.strip().lower() in (("true", "1", "yes", "on") if actual else ("false", "0", "no", "off"))
    if isinstance(actual, (int, float)):
        try:
            return float(wanted) == float(actual)
        except ValueError:
            return False
    return wanted.strip() in (show(actual), canon(actual))


def parse_where(items: Iterable[str], known_keys: Iterable[str]) -> dict[str, list[str]]:
    """``key=value`` strings into {key: [values]}; raises a one-line ``UserError`` on bad ones."""
    known = set(known_keys) | set(ATTR_KEYS)
    where: dict[str, list[str]] = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--where: {item!r} is not allowed; expected key=value, e.g. algorithm=ist")
        key, value = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in known:
            raise UserError(f"--where: unknown key {key!r}; allowed keys: {', '.join(sorted(known))}")
        where.setdefault(key, []).append(value)
    return where


def filter_runs(runs: Sequence[RunData], where: Mapping[str, Sequence[str]]) -> list[RunData]:
    """Keep runs matching every key; several values for one key mean any of them."""

    def value(run: RunData, key: str) -> Any:
        return run.status if key == "status" else run.run_id if key == "run_id" else run.config.get(key)

    return [
        run for run in runs
        if all(any(_matches(value(run, key), wanted) for wanted in values) for key, values in where.items())
    ]


# ----------------------------------------------------------------------------- groups
@dataclass
class Group:
    """Runs sharing the values of the grouping keys (by default: everything but the seed)."""

    key: dict[str, Any]
    runs: list[RunData]
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={show(v)}" for k, v in self.key.items()) or "all runs"

    @property
    def seeds(self) -> list[Any]:
        return [run.config.get("seed", run.attrs.get("seed")) for run in self.runs]


def _common_config(runs: Sequence[RunData]) -> dict[str, Any]:
    first = runs[0].config
    return {
        key: value for key, value in first.items()
        if key != "seed" and all(canon(run.config.get(key)) == canon(value) for run in runs)
    }


def group_runs(runs: Sequence[RunData], by: Sequence[str] | None = None) -> list[Group]:
    """Group runs by the ``by`` config keys; default: every varying key except ``seed``, i.e.
    runs that differ only by seed share a group. Groups are sorted by their key values
    (numbers numerically), the runs of a group by seed."""
    if by is None:
        by = [key for key in varying_keys(runs) if key != "seed"]
    else:
        known = {key for run in runs for key in run.config}
        for key in by:
            if key not in known:
                raise UserError(f"--group-by: unknown key {key!r}; allowed keys: {', '.join(sorted(known))}")
    groups: dict[tuple[str, ...], Group] = {}
    for run in runs:
        ident = tuple(canon(run.config.get(key)) for key in by)
        if ident not in groups:
            groups[ident] = Group(key={key: run.config.get(key) for key in by}, runs=[])
        groups[ident].runs.append(run)
    for group in groups.values():
        group.runs.sort(key=lambda run: (order_key(run.config.get("seed", run.attrs.get("seed"))), str(run.path)))
        group.config = _common_config(group.runs)
    return sorted(groups.values(), key=lambda group: tuple(order_key(v) for v in group.key.values()))


def order_key(value: Any) -> tuple:
    """Sort numbers numerically (2 before 10), then strings, lists element-wise, None last."""
    if isinstance(value, bool):
        return (1, str(value).lower(), ())
    if isinstance(value, (int, float)):
        return (0, float(value), ())
    if isinstance(value, (list, tuple)):
        return (2, len(value), tuple(order_key(v) for v in value))
    if value is None:
        return (3, "", ())
    return (1, str(value), ())


def split_by_model(runs: Sequence[RunData]) -> dict[str, list[RunData]]:
    """Runs per model, in a fixed order: a report never mixes models in one table or figure."""
    by_model: dict[str, list[RunData]] = {}
    for run in runs:
        by_model.setdefault(str(run.config.get("model", "unknown")), []).append(run)
    return dict(sorted(by_model.items()))
