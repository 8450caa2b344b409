"""The study file: a sweep over batch sizes (and other axes) with a quasi-random search.

A study is expanded into an ordinary sweep and handed to ``ist_cli.sweep``: the grid is
``batch_size`` x ``sparsity`` x any ``[grid]`` axis, and the searched settings are a zipped
axis of ``trials`` rows (one per point of the sequence) with ``seed = base seed + trial``.
So every value is checked by the run's own option rules, every trial is an ordinary run
file, and resume, claims, ``--jobs`` and the executors are the sweep's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ist_cli.config import OPTIONS_BY_KEY, check_keys, load_toml
from ist_cli.errors import UserError
from ist_cli.study.search import SAMPLERS, Dimension, parse_dimension, sample_points
from ist_cli.sweep.spec import DEFAULT_MAX_RUNS, SweepSpec, _table, parse_sweep

# A trial is judged on its goal alone: the full train/test metrics at every 10th evaluation
# (and the last); the others measure the goal's set only. ``full_eval_every`` in [base] overrides it.
STUDY_FULL_EVAL_EVERY = 10
TOP_LEVEL_KEYS = ("name", "description", "base", "study", "grid", "search")
STUDY_KEYS = ("batch_sizes", "sparsities", "trials", "sampler", "max_examples")
DEFAULT_SAMPLER = "sobol"


@dataclass(frozen=True)
class Trial:
    """One run of the study: its batch size, grid point (without B) and trial number."""

    run_id: str
    batch_size: int
    group: tuple[tuple[str, Any], ...]
    index: int
    values: dict[str, Any]


@dataclass
class StudySpec:
    """A parsed study: the sweep that executes it and the study's view of each run."""

    name: str
    path: Path
    raw: dict[str, Any]
    sampler: str
    trials_per_point: int
    dimensions: list[Dimension]
    group_axes: list[str]
    sweep: SweepSpec
    trials: list[Trial]

    def trial(self, run_id: str) -> Trial:
        return self._by_id[run_id]

    def __post_init__(self) -> None:
        self._by_id = {trial.run_id: trial for trial in self.trials}


def load_study(path: str | Path, sampler: str | None = None, *, max_runs: int = DEFAULT_MAX_RUNS,
               overrides: Mapping[str, Any] | None = None) -> StudySpec:
    """Read and expand a study file; any mistake is a one-line ``UserError`` naming its key path.
    ``overrides`` (``--set``) replace settings of its ``[base]``."""
    path = Path(path)
    try:
        raw = load_toml(path)
    except UserError as exc:
        raise UserError(str(exc).replace("config file", "study file", 1)) from None
    if overrides:
        raw = _with_overrides(raw, overrides, path.name)
    return parse_study(raw, path, sampler, max_runs=max_runs)


def _with_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The study with ``--set`` settings in its ``[base]``; a key the study varies is refused."""
    varied = {"batch_size": "study.batch_sizes", "sparsity": "study.sparsities"}
    for table in ("grid", "search"):
        value = raw.get(table)
        varied.update({key.replace("-", "_"): table for key in (value if isinstance(value, dict) else {})})
    base = raw.get("base", {})
    base = dict(base) if isinstance(base, dict) else base
    for key, value in overrides.items():
        OPTIONS_BY_KEY[key].coerce(value, source=f"--set {key}")
        if key in varied:
            raise UserError(f"--set {key}: varied by {varied[key]} in {where}; expected a setting of [base]")
        if isinstance(base, dict):
            base[key] = value
    return {**raw, "base": base}


def parse_study(raw: Mapping[str, Any], path: Path, sampler: str | None = None, *,
                max_runs: int = DEFAULT_MAX_RUNS) -> StudySpec:
    """Check the study tables and expand them into a sweep (``sampler`` overrides ``study.sampler``);
    more than ``max_runs`` runs are refused before any point is drawn."""
    where = path.name
    unknown = [key for key in raw if key not in TOP_LEVEL_KEYS]
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; allowed top-level keys: {', '.join(TOP_LEVEL_KEYS)}")
    if "study" not in raw:
        raise UserError(f"{where}: study: missing; expected a [study] table with batch_sizes and trials")
    study = _table(raw, "study", where)
    for key in study:
        if key not in STUDY_KEYS:
            raise UserError(f"{where}: study.{key}: unknown key; allowed: {', '.join(STUDY_KEYS)}")
    batch_sizes = _batch_sizes(study, where)
    trials = _trials(study, where)
    sampler = sampler or study.get("sampler", DEFAULT_SAMPLER)
    if sampler not in SAMPLERS:
        raise UserError(f"{where}: study.sampler: {sampler!r} is not allowed; expected one of {', '.join(SAMPLERS)}")

    base = check_keys(_table(raw, "base", where), f"{where}: base")
    grid = check_keys(_table(raw, "grid", where), f"{where}: grid") if "grid" in raw else {}
    axes: dict[str, Any] = {"batch_size": batch_sizes}
    if "sparsities" in study:
        axes["sparsity"] = _sparsities(study, where)
    for key, values in grid.items():
        if key in ("batch_size", "sparsity", "seed"):
            origin = {"batch_size": "study.batch_sizes", "sparsity": "study.sparsities",
                      "seed": "the trial number (seed = base seed + trial)"}[key]
            raise UserError(f"{where}: grid.{key}: set by {origin}; expected it there only")
        axes[key] = values

    runs_asked = trials * math.prod(len(values) if isinstance(values, list) else 1 for values in axes.values())
    if runs_asked > max_runs:
        raise UserError(f"{where}: study.trials: {trials} trials x {runs_asked // trials} grid points = {runs_asked} "
                        f"runs; expected at most {max_runs} (--max-runs)")
    dimensions = _dimensions(raw, where, base, axes)
    first_seed = OPTIONS_BY_KEY["seed"].coerce(base.get("seed", 0), source=f"{where}: base.seed")
    points = sample_points(dimensions, trials, sampler, seed=first_seed)
    for dim in dimensions:
        option = OPTIONS_BY_KEY[dim.key]
        for point in points:
            option.coerce(point[dim.key], source=f"{where}: search.{dim.key} (value {point[dim.key]!r})")
    zipped = {dim.key: [point[dim.key] for point in points] for dim in dimensions}
    zipped["seed"] = [first_seed + i for i in range(trials)]

    trial_base = {k: v for k, v in base.items() if k != "seed"}
    method = {"model": base.get("model", OPTIONS_BY_KEY["model"].default), "algorithm": base.get("algorithm")}
    if OPTIONS_BY_KEY["full_eval_every"].used_by(method) and "full_eval_every" not in {*axes, *zipped}:
        trial_base.setdefault("full_eval_every", STUDY_FULL_EVAL_EVERY)
    sweep_raw = {"base": trial_base, "grid": axes, "zip": zipped}
    if "name" in raw:
        sweep_raw["name"] = raw["name"]
    max_examples = _max_examples(study, where)
    if max_examples is None:
        sweep = parse_sweep(sweep_raw, path, max_runs=max_runs)
    else:
        sweep = _sweep_with_step_caps(sweep_raw, path, batch_sizes, max_examples, where, max_runs)
    for run in sweep.runs:
        if "batch_size" not in run.config:
            raise UserError(f"{where}: base.model: {run.config['model']!r} has no batch size; expected model = \"mlp\" or \"cnn\"")
        for dim in dimensions:
            if dim.key not in run.config:
                raise UserError(f"{where}: search.{dim.key}: not a setting of model {run.config['model']!r}; "
                                "expected a setting the runs use")
    stored = {**raw, "study": {**study, "sampler": sampler}}
    sweep.raw = stored  # the manifest records the study as written, with the sampler used
    group_axes = [key for key in axes if key != "batch_size"]
    search_keys = [dim.key for dim in dimensions]
    runs = [Trial(run_id=run.run_id, batch_size=int(run.point["batch_size"]),
                  group=tuple((key, run.point[key]) for key in group_axes),
                  index=int(run.point["seed"]) - first_seed,
                  values={key: run.point[key] for key in search_keys})
            for run in sweep.runs]
    return StudySpec(name=sweep.name, path=path, raw=stored, sampler=sampler, trials_per_point=trials,
                     dimensions=dimensions, group_axes=group_axes, sweep=sweep, trials=runs)


def _batch_sizes(study: Mapping[str, Any], where: str) -> list[int]:
    values = study.get("batch_sizes")
    if not isinstance(values, list) or not values:
        raise UserError(f"{where}: study.batch_sizes: {values!r} is not allowed; "
                        "expected a non-empty array of integers >= 1, e.g. [2, 4, 8]")
    for index, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{where}: study.batch_sizes[{index}]: {value!r} is not allowed; expected an integer >= 1")
    if len(set(values)) != len(values):
        raise UserError(f"{where}: study.batch_sizes: {values!r} repeats a value; expected distinct batch sizes")
    return list(values)


def _trials(study: Mapping[str, Any], where: str) -> int:
    value = study.get("trials")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{where}: study.trials: {value!r} is not allowed; expected an integer >= 1")
    return value


def _max_examples(study: Mapping[str, Any], where: str) -> int | None:
    value = study.get("max_examples")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{where}: study.max_examples: {value!r} is not allowed; expected an integer >= 1 "
                        "(training examples per trial: at most ceil(max_examples / B) steps)")
    return value


def _step_cap(batch_size: int, max_examples: int, max_steps: int) -> int:
    """A trial's step budget at batch size B: ceil(max_examples / B), and at most ``max_steps`` if > 0."""
    cap = -(-max_examples // batch_size)
    return min(cap, max_steps) if max_steps > 0 else cap


def _sweep_with_step_caps(sweep_raw: Mapping[str, Any], path: Path, batch_sizes: list[int], max_examples: int,
                          where: str, max_runs: int) -> SweepSpec:
    """The study's sweep with ``max_steps`` set per batch size (``study.max_examples``): one sweep per
    B (the slowest axis), joined in order. Every trial's budget is then about the same number of
    training examples, instead of a large B training B / B_min times more examples than the
    smallest before a trial that cannot reach the goal stops."""
    base = sweep_raw["base"]
    max_steps = OPTIONS_BY_KEY["max_steps"].coerce(base.get("max_steps", 0), source=f"{where}: base.max_steps")
    parts = [parse_sweep({**sweep_raw, "base": {**base, "max_steps": _step_cap(b, max_examples, max_steps)},
                          "grid": {**sweep_raw["grid"], "batch_size": [b]}}, path, max_runs=max_runs)
             for b in batch_sizes]
    sweep = parts[0]
    sweep.runs = [run for part in parts for run in part.runs]
    sweep.duplicates = sum(part.duplicates for part in parts)
    return sweep


def _sparsities(study: Mapping[str, Any], where: str) -> list[Any]:
    values = study["sparsities"]
    if "sparsity" not in OPTIONS_BY_KEY:
        raise UserError(f"{where}: study.sparsities: this ist run has no sparsity setting; expected no sparsities")
    if not isinstance(values, list) or not values:
        raise UserError(f"{where}: study.sparsities: {values!r} is not allowed; expected a non-empty array of numbers")
    option = OPTIONS_BY_KEY["sparsity"]
    for index, value in enumerate(values):
        option.coerce(value, source=f"{where}: study.sparsities[{index}]")
    return list(values)


def _dimensions(raw: Mapping[str, Any], where: str, base: Mapping[str, Any],
                axes: Mapping[str, Any]) -> list[Dimension]:
    if "search" not in raw:
        return []
    search = raw["search"]
    if not isinstance(search, dict):
        raise UserError(f"{where}: search: {search!r} is not allowed; expected a table [search]")
    dimensions = []
    for key, entry in search.items():
        source = f"{where}: search.{key}"
        if key.strip().replace("-", "_") not in OPTIONS_BY_KEY:
            check_keys({key: None}, f"{where}: search")  # the one-line unknown-key error
        name = key.strip().replace("-", "_")
        if name in axes:
            axis = {"batch_size": "study.batch_sizes", "sparsity": "study.sparsities"}.get(name, f"grid.{name}")
            raise UserError(f"{source}: also an axis ({axis}); expected each key in one place")
        if name == "seed":
            raise UserError(f"{source}: the seed is the trial number (base seed + trial); expected another setting")
        if name in base:
            raise UserError(f"{source}: also set in base.{name}; expected one of them")
        dimensions.append(parse_dimension(name, entry, source))
    return dimensions
