"""Steps-to-result per (grid point, batch size), from the trials' run files.

steps-to-result(B) is the fewest steps, over the trials at B, until the goal was first met
(the run's ``steps_to_result``); the best trial is the one with those steps, the lowest
trial number among ties. The study's structure (which run is which trial) comes from the
sweep manifest ``sweep.json`` of the study's output directory.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ist_cli.errors import UserError
from ist_cli.io.names import run_file_path
from ist_cli.study.fit import Fit, fit_steps
from ist_cli.study.outcomes import OUTCOMES, Outcome, read_outcome
from ist_cli.study.spec import Trial
from ist_cli.sweep.manifest import read_manifest

# per-run metrics the study summarises next to the fit, when the runs logged them
NOISE_METRIC, LIPSCHITZ_METRIC = "noise_scale", "lipschitz"


@dataclass
class PointResult:
    """One batch size at one grid point."""

    batch_size: int
    steps: int | None
    best: Trial | None
    counts: Counter
    trial_steps: list[float]  # every trial's steps-to-result, inf when not reached
    best_config: dict[str, Any] = field(default_factory=dict)


@dataclass
class GroupResult:
    """Every batch size of one grid point, and the K(B) fit."""

    group: tuple[tuple[str, Any], ...]
    points: list[PointResult]
    fit: Fit
    noise_scale: float = float("nan")  # median B_simple at the goal over trials that reached it
    lipschitz: float = float("nan")    # median L-hat over every logged row of every trial

    def label(self) -> str:
        return " ".join(f"{key}={value}" for key, value in self.group) or "all"


@dataclass
class StudyResult:
    name: str
    directory: Path
    search_keys: list[str]
    group_axes: list[str]
    groups: list[GroupResult]


def study_trials(manifest: dict[str, Any]) -> tuple[list[Trial], list[str], list[str]]:
    """The trials of a study's manifest, its grid axes (without B) and its searched keys."""
    raw = manifest.get("spec") or {}
    study = raw.get("study")
    if not isinstance(study, dict):
        raise UserError("not a study manifest")
    norm = [key.strip().replace("-", "_") for key in (raw.get("grid") or {})]
    group_axes = (["sparsity"] if "sparsities" in study else []) + norm
    search_keys = [key.strip().replace("-", "_") for key in (raw.get("search") or {})]
    first_seed = int((raw.get("base") or {}).get("seed", 0))
    trials = []
    for record in manifest["runs"]:
        point = record["point"]
        trials.append(Trial(run_id=record["id"], batch_size=int(point["batch_size"]),
                            group=tuple((key, point.get(key)) for key in group_axes),
                            index=int(point["seed"]) - first_seed,
                            values={key: point.get(key) for key in search_keys}))
    return trials, group_axes, search_keys


def is_study_dir(path: Path) -> bool:
    """Is ``path`` a study's output directory? A sweep.json there that is not a manifest is a
    one-line ``UserError`` (``read_manifest``), not a directory of run files."""
    manifest = read_manifest(path) if path.is_dir() else None
    return bool(manifest) and isinstance((manifest.get("spec") or {}).get("study"), dict)


def load_study_result(directory: Path, *, resamples: int | None = None) -> StudyResult:
    """Read every trial's outcome in ``directory`` and aggregate it."""
    manifest = read_manifest(directory)
    if manifest is None:
        raise UserError(f"{str(directory)!r} has no sweep.json; expected the --out directory of ist study")
    trials, group_axes, search_keys = study_trials(manifest)
    configs = {record["id"]: record.get("config", {}) for record in manifest["runs"]}
    outcomes = {trial.run_id: read_outcome(run_file_path(directory, trial.run_id)) for trial in trials}
    groups: dict[tuple, list[Trial]] = defaultdict(list)
    for trial in trials:
        groups[trial.group].append(trial)
    results = []
    for group, members in groups.items():
        points = aggregate(members, outcomes, configs)
        kwargs = {} if resamples is None else {"resamples": resamples}
        fit = fit_steps([p.batch_size for p in points], [np.asarray(p.trial_steps) for p in points], **kwargs)
        noise, lipschitz = _logged(directory, members, outcomes)
        results.append(GroupResult(group, points, fit, noise, lipschitz))
    return StudyResult(str(manifest.get("name", directory.name)), directory, search_keys, group_axes, results)


def aggregate(trials: list[Trial], outcomes: dict[str, Outcome], configs: dict[str, dict]) -> list[PointResult]:
    """One ``PointResult`` per batch size (ascending) of one grid point's trials."""
    by_b: dict[int, list[Trial]] = defaultdict(list)
    for trial in trials:
        by_b[trial.batch_size].append(trial)
    points = []
    for b in sorted(by_b):
        members = sorted(by_b[b], key=lambda t: t.index)
        counts = Counter({name: 0 for name in OUTCOMES})
        counts.update(outcomes[t.run_id].outcome for t in members)
        reached = [(outcomes[t.run_id].steps, t.index, t) for t in members if outcomes[t.run_id].steps is not None]
        best = min(reached, key=lambda item: (item[0], item[1]))[2] if reached else None
        steps = outcomes[best.run_id].steps if best else None
        trial_steps = [float(outcomes[t.run_id].steps) if outcomes[t.run_id].steps is not None else math.inf
                       for t in members]
        points.append(PointResult(b, steps, best, counts, trial_steps, configs.get(best.run_id, {}) if best else {}))
    return points


def _logged(directory: Path, trials: list[Trial], outcomes: dict[str, Outcome]) -> tuple[float, float]:
    """Median noise scale at the goal row of trials that reached it, median L-hat over all rows."""
    noise, lipschitz = [], []
    for trial in trials:
        path = run_file_path(directory, trial.run_id)
        if outcomes[trial.run_id].outcome in ("not run", "failed"):
            continue
        try:
            with h5py.File(path, "r") as handle:
                metrics = handle["metrics"]
                if NOISE_METRIC in metrics and outcomes[trial.run_id].steps is not None:
                    values = metrics[NOISE_METRIC][()]
                    finite = values[np.isfinite(values)]
                    if finite.size:
                        noise.append(float(finite[-1]))
                if LIPSCHITZ_METRIC in metrics:
                    values = metrics[LIPSCHITZ_METRIC][()]
                    lipschitz.extend(values[np.isfinite(values)].tolist())
        except (OSError, KeyError):
            continue
    return (float(np.median(noise)) if noise else float("nan"),
            float(np.median(lipschitz)) if lipschitz else float("nan"))


def to_rows(result: StudyResult) -> list[dict[str, Any]]:
    """Flat rows (one per grid point and B) for CSV and JSON."""
    rows = []
    for group in result.groups:
        for point in group.points:
            row: dict[str, Any] = {**dict(group.group), "batch_size": point.batch_size, "steps_to_result": point.steps}
            row["best_trial"] = point.best.index if point.best else None
            for key in result.search_keys:
                row[f"best_{key}"] = point.best.values.get(key) if point.best else None
            lr, momentum = point.best_config.get("lr"), point.best_config.get("momentum")
            if point.best_config.get("optimizer") == "sgd":
                momentum = 0.0  # the momentum setting is unused by plain SGD
            numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lr, momentum))
            row["best_effective_lr"] = lr / (1 - momentum) if numbers and momentum < 1 else None  # a manifest's config
            for name in OUTCOMES:
                row[name.replace(" ", "_")] = point.counts[name]
            row.update({"k_min": group.fit.k_min, "k_min_low": group.fit.k_min_ci[0], "k_min_high": group.fit.k_min_ci[1],
                        "b_c": group.fit.b_c, "b_c_low": group.fit.b_c_ci[0], "b_c_high": group.fit.b_c_ci[1],
                        "fit_dof": group.fit.dof, "fit_no_ci": group.fit.no_ci,
                        "noise_scale": group.noise_scale, "lipschitz": group.lipschitz})
            rows.append(row)
    return rows


def json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return str(value)


def to_json_text(result: StudyResult) -> str:
    rows = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
            for row in to_rows(result)]
    return json.dumps({"study": result.name, "rows": rows}, indent=1, default=json_default)
