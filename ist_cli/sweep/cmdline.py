"""A sweep given on the command line (``ist sweep --grid lr=0.01,0.1 -- RUN OPTIONS``).

The terms become the tables of a sweep file (``[grid]`` from ``--grid``, ``[base]`` from the
run options) and go through ``parse_sweep`` like a file, so the run ids, the manifest, resume
and never-twice are those of a file sweep with the same tables.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ist_cli.config import OPTIONS_BY_KEY, check_keys
from ist_cli.errors import UserError, shown
from ist_cli.sweep.spec import DEFAULT_MAX_RUNS, SweepSpec, parse_sweep


def parse_grid_terms(terms: Iterable[str]) -> dict[str, list[str]]:
    """``KEY=V1,V2,...`` per ``--grid`` into axes; values holding a comma themselves (``hidden``)
    are separated by ``;`` instead (``hidden=16,16;32,32``). Values stay text: the options parse them."""
    axes: dict[str, list[str]] = {}
    for term in terms:
        key, sep, values = term.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise UserError(f"--grid: {shown(term)} is not allowed; expected KEY=V1,V2,... e.g. lr=0.01,0.1")
        separator = ";" if ";" in values else ","
        items = [value.strip() for value in values.split(separator)]
        if any(not item for item in items):
            raise UserError(f"--grid {key}: {shown(values)} has an empty value; expected KEY=V1,V2,...")
        (name,) = check_keys({key.strip(): None}, "--grid")
        if name in axes:
            raise UserError(f"--grid {key}: given twice; expected one --grid per setting")
        axes[name] = items
    return axes


def default_name(grid: Mapping[str, list[str]], base: Mapping[str, Any]) -> str:
    """``grid-`` and 8 hex digits of the tables: the same command resumes into the same
    ``results/NAME`` directory; another grid or base gets another one."""
    text = json.dumps({"grid": grid, "base": base}, sort_keys=True, default=str)
    return "grid-" + hashlib.sha256(text.encode()).hexdigest()[:8]


def command_line_sweep(grid_terms: Iterable[str], base: Mapping[str, Any], *, name: str | None = None,
                       argv: Iterable[str] = (), max_runs: int = DEFAULT_MAX_RUNS) -> SweepSpec:
    """The sweep of ``--grid`` terms over the ``base`` settings (from the run options)."""
    grid = parse_grid_terms(grid_terms)
    if not grid:
        raise UserError("ist sweep needs GRID.toml or at least one --grid KEY=V1,V2,...")
    for key, value in base.items():
        OPTIONS_BY_KEY[key].coerce(value, source=OPTIONS_BY_KEY[key].flag)
    for key in grid:
        if key in base:
            raise UserError(f"--grid {key}: also given as a run option after --; expected it in one place")
    raw = {"name": name or default_name(grid, base), "base": dict(base), "grid": grid}
    spec = parse_sweep(raw, Path("--grid"), max_runs=max_runs)
    spec.command = shlex.join(["ist", "sweep", *argv])
    return spec
