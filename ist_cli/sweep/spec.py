"""The sweep file (docs/sweep.md): TOML expanded once into a fixed, de-duplicated run list.

Every value is checked with the run's own option rules (``ist_cli.config``), and every
run is the output of ``resolve_config``, so a sweep can hold only runs ``ist run`` would
accept; the run id is the hash of the resolved config.

The run count is the product of the axis lengths, known before a single point exists: a
file that asks for more than ``max_runs`` is refused from that product alone, and the
points are generated one at a time, so a 10^7-point grid or ``replicates = 10^9`` costs
nothing but the refusal.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ist_cli.config import (
    OPTIONS_BY_KEY,
    SEED_MAX,
    check_keys,
    config_hash,
    load_toml,
    resolve_config,
    show_value,
)
from ist_cli.errors import UserError, shown

TOP_LEVEL_KEYS = ("name", "description", "base", "grid", "zip", "seeds", "replicates", "labels")
DEFAULT_MAX_RUNS = 100_000
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class PlannedRun:
    """One run of the sweep: the grid point that made it and its resolved config.

    ``run_args``: extra ``ist run`` flags that control the execution but are not part of the
    config or the run id (a study's step budget).
    """

    run_id: str
    point: dict[str, Any]
    config: dict[str, Any]
    run_args: tuple[str, ...] = ()

    def label(self) -> str:
        """Short human name: the id prefix and the varied settings."""
        varied = " ".join(f"{key}={show_value(value)}" for key, value in self.point.items())
        return f"{self.run_id[:8]} {varied}".strip()


@dataclass
class SweepSpec:
    """A parsed sweep file: its name, raw tables and the fixed run list."""

    name: str
    path: Path
    raw: dict[str, Any]
    runs: list[PlannedRun]
    duplicates: int = 0
    axes: list[str] = field(default_factory=list)
    command: str | None = None  # the command line of a sweep given by --grid, without a file

    def source(self) -> str:
        """What the sweep came from: the file's absolute path, or the command line."""
        return self.command or str(self.path.resolve())

    @property
    def run_ids(self) -> list[str]:
        return [run.run_id for run in self.runs]

    def max_workers(self) -> int:
        return max((int(run.config.get("workers", 1)) for run in self.runs), default=1)


def load_sweep(path: str | Path, *, max_runs: int = DEFAULT_MAX_RUNS,
               overrides: Mapping[str, Any] | None = None) -> SweepSpec:
    """Read and expand a sweep file; any mistake is a one-line ``UserError`` naming its key path.
    ``overrides`` (``--set``) replace settings of its ``[base]``."""
    path = Path(path)
    try:
        raw = load_toml(path)
    except UserError as exc:
        raise UserError(str(exc).replace("config file", "sweep file", 1)) from None
    return parse_sweep(raw, path, max_runs=max_runs, overrides=overrides)


def parse_sweep(raw: Mapping[str, Any], path: Path, *, max_runs: int = DEFAULT_MAX_RUNS,
                overrides: Mapping[str, Any] | None = None) -> SweepSpec:
    """Expand the tables of a sweep file into its run list (grid × zip × seeds), at most ``max_runs``;
    ``overrides`` (``--set``, checked keys) replace settings of ``[base]`` but not an axis."""
    where = path.name
    unknown = [key for key in raw if key not in TOP_LEVEL_KEYS]
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; allowed top-level keys: {', '.join(TOP_LEVEL_KEYS)}")
    name = _sweep_name(raw, path, where)
    _check_labels(raw.get("labels", {}), where)
    base = check_keys(_table(raw, "base", where), f"{where}: base")
    for key, value in base.items():
        OPTIONS_BY_KEY[key].coerce(value, source=f"{where}: base.{key}")
    if overrides:
        for key, value in overrides.items():
            OPTIONS_BY_KEY[key].coerce(value, source=f"--set {key}")
            for table in ("grid", "zip"):
                if key in (raw.get(table) or {}):
                    raise UserError(f"--set {key}: an axis of [{table}] in {where}; expected a setting of [base]")
        base = {**base, **overrides}
        raw = {**raw, "base": base}

    grid_axes = _axes(raw, "grid", where)
    zip_axes = _axes(raw, "zip", where)
    _check_zip_lengths(zip_axes, where)
    seeds = _seeds(raw, base, where)
    _check_overlaps(base, grid_axes, zip_axes, seeds is not None, where)
    _check_count(grid_axes, zip_axes, seeds, max_runs, where)

    points = _points(grid_axes, zip_axes, seeds)
    runs: list[PlannedRun] = []
    seen: set[str] = set()
    duplicates = 0
    for point in points:
        layers = [base] + [{key: value} for key, (value, _) in point.items()]
        sources = [f"{where}: base"] + [source for _, source in point.values()]
        config = resolve_config(*layers, sources=sources)
        run_id = config_hash(config)
        if run_id in seen:
            duplicates += 1
            continue
        seen.add(run_id)
        runs.append(PlannedRun(run_id, {key: config.get(key, value) for key, (value, _) in point.items()}, config))
    axes = list(grid_axes) + list(zip_axes) + (["seed"] if seeds is not None else [])
    return SweepSpec(name=name, path=path, raw=dict(raw), runs=runs, duplicates=duplicates, axes=axes)


def _check_labels(labels: Any, where: str) -> None:
    """``[labels.KEY]`` tables of VALUE = "label" strings (names in ``ist report``'s legends)."""
    if not isinstance(labels, dict):
        raise UserError(f"{where}: labels: {shown(labels)} is not allowed; expected tables [labels.KEY]")
    for key, table in labels.items():
        if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
            raise UserError(f"{where}: labels.{key}: {shown(table)} is not allowed; expected a table of "
                            'VALUE = "label" strings, e.g. [labels.algorithm] ist = "IST"')


def _sweep_name(raw: Mapping[str, Any], path: Path, where: str) -> str:
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UserError(f"{where}: name: {shown(name)} is not allowed; expected letters, digits, '_', '-' or '.'")
    return name


def _table(raw: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise UserError(f"{where}: {key}: {shown(value)} is not allowed; expected a table [{key}]")
    for misplaced in ("name", "seeds", "replicates"):
        if misplaced in value:  # TOML puts keys written after [table] inside that table
            raise UserError(f"{where}: {key}.{misplaced}: {shown(misplaced)} is a top-level key; "
                            f"expected it above the first [table] of the file")
    return value


def _axes(raw: Mapping[str, Any], table: str, where: str) -> dict[str, list[tuple[Any, str]]]:
    """Each axis as a list of (coerced value, key path); checks every value with its option."""
    if table not in raw:
        return {}
    values = _table(raw, table, where)
    if not values:
        raise UserError(f"{where}: {table}: empty table; expected at least one axis, e.g. lr = [0.1, 0.01]")
    axes: dict[str, list[tuple[Any, str]]] = {}
    for key, items in check_keys(values, f"{where}: {table}").items():
        if not isinstance(items, list):
            raise UserError(f"{where}: {table}.{key}: {shown(items)} is not allowed; expected an array of values, "
                            f"e.g. {key} = [{shown(items)}]")
        if not items:
            raise UserError(f"{where}: {table}.{key}: empty array; expected at least one value")
        option = OPTIONS_BY_KEY[key]
        axis = []
        for index, item in enumerate(items):
            source = f"{where}: {table}.{key}[{index}]"
            if isinstance(item, dict):
                raise UserError(f"{source}: a table is not allowed; expected {option.expects()}")
            option.coerce(item, source=source)
            axis.append((item, source))
        axes[key] = axis
    return axes


def _check_zip_lengths(zip_axes: Mapping[str, list], where: str) -> None:
    lengths = {key: len(values) for key, values in zip_axes.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{key} has {n}" for key, n in lengths.items())
        raise UserError(f"{where}: zip: axes must have equal lengths ({shown})")


def _seeds(raw: Mapping[str, Any], base: Mapping[str, Any], where: str) -> list[tuple[int, str]] | _Replicates | None:
    """``seeds = [...]`` as given, or ``replicates = N`` as base seed .. base seed + N - 1."""
    if "seeds" in raw and "replicates" in raw:
        raise UserError(f"{where}: seeds and replicates are both set; expected one of them")
    seed_option = OPTIONS_BY_KEY["seed"]
    if "seeds" in raw:
        if "seed" in base:
            raise UserError(f"{where}: base.seed: also given by seeds; expected one of them")
        seeds = raw["seeds"]
        if not isinstance(seeds, list) or not seeds:
            raise UserError(f"{where}: seeds: {shown(seeds)} is not allowed; expected a non-empty array of integers >= 0")
        return [(seed_option.coerce(seed, source=f"{where}: seeds[{i}]"), f"{where}: seeds[{i}]")
                for i, seed in enumerate(seeds)]
    if "replicates" in raw:
        count = raw["replicates"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise UserError(f"{where}: replicates: {shown(count)} is not allowed; expected an integer >= 1")
        first = seed_option.coerce(base.get("seed", 0), source=f"{where}: base.seed")
        last = first + count - 1
        if last > SEED_MAX:
            raise UserError(f"{where}: replicates: {count} seeds from {first} end at {last}; "
                            f"expected seeds <= {SEED_MAX}")
        return _Replicates(first, count, f"{where}: replicates")
    return None


class _Replicates:
    """Seeds ``first .. first + count - 1`` as a sequence that is never materialised."""

    def __init__(self, first: int, count: int, source: str) -> None:
        self.first, self.count, self.source = first, count, source

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[tuple[int, str]]:
        return ((self.first + i, self.source) for i in range(self.count))



def _check_count(grid: Mapping[str, list], zipped: Mapping[str, list], seeds: Any, max_runs: int,
                 where: str) -> None:
    """Refuse a sweep of more than ``max_runs`` points from the axis lengths alone."""
    zip_length = len(next(iter(zipped.values()))) if zipped else 1
    count = math.prod(len(axis) for axis in grid.values()) * zip_length * (len(seeds) if seeds is not None else 1)
    if count > max_runs:
        factors = " x ".join([f"{key} {len(axis)}" for key, axis in grid.items()]
                           + ([f"zip {zip_length}"] if zipped else [])
                           + ([f"seeds {len(seeds)}"] if seeds is not None else []))
        raise UserError(f"{where}: {count} runs ({factors}) exceed the cap of {max_runs}; "
                        "expected a smaller sweep, or a higher --max-runs")


def _check_overlaps(base: Mapping[str, Any], grid: Mapping[str, Any], zipped: Mapping[str, Any],
                    has_seeds: bool, where: str) -> None:
    for key in grid:
        if key in zipped:
            raise UserError(f"{where}: zip.{key}: also an axis of [grid]; expected each key in one place")
    for table, axes in (("grid", grid), ("zip", zipped)):
        for key in axes:
            if key == "seed" and has_seeds:
                raise UserError(f"{where}: {table}.seed: seeds come from seeds/replicates; expected one of them")


def _points(grid: Mapping[str, list[tuple[Any, str]]], zipped: Mapping[str, list[tuple[Any, str]]],
            seeds: Any) -> Iterator[dict[str, tuple[Any, str]]]:
    """Grid product (first axis slowest), then the zipped rows, then seeds innermost; lazily."""
    length = len(next(iter(zipped.values()))) if zipped else 1
    zip_rows = [{key: values[i] for key, values in zipped.items()} for i in range(length)]
    for combo in itertools.product(*grid.values()):
        g = dict(zip(grid, combo, strict=True))
        for z in zip_rows:
            if seeds is None:
                yield {**g, **z}
            else:
                for seed in seeds:
                    yield {**g, **z, "seed": seed}
