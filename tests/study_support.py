"""A study's output directory fabricated with the real writers: the manifest of the parsed
study and one run file per trial in the documented schema (``/metrics/step``, the goal
metric, root attrs ``goal_reached``, ``steps_to_result``, ``step_budget``, ``budget_stopped``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ist_cli.io.runfile import RunFileWriter
from ist_cli.study.spec import StudySpec, parse_study
from ist_cli.sweep.manifest import Manifest
from tests.test_report_support import ENV

GOAL = 0.2
EVERY = 100


def make_study(trials: int = 4, batch_sizes=(2, 8, 32, 128)) -> StudySpec:
    raw = {"name": "fab", "base": {"model": "mlp", "algorithm": "single", "workers": 1, "hidden": [8]},
           "study": {"batch_sizes": list(batch_sizes), "trials": trials}, "grid": {"norm": ["none", "batch"]},
           "search": {"lr": {"log": [1e-3, 1.0]}, "momentum": {"reverse_log": [0.5, 0.99]}}}
    return parse_study(raw, Path("fab.toml"))


def error_curve(batch_size: int, trial: int, group: int, rows: int = 100) -> np.ndarray:
    """val_error falling to below the goal at a step that shrinks with B (K ~ 400 (1 + 64/B))."""
    rng = np.random.default_rng([batch_size, trial, group])
    target = 400 * (1 + 64 / batch_size) * (1 + group * 0.5) * (1 + 2 * rng.random() ** 2)
    steps = np.arange(rows) * EVERY
    return 0.9 * np.exp(-np.log(0.9 / GOAL) * steps / target) + 0.001 * rng.random(rows)


def write_trial(directory: Path, run_id: str, config: dict, errors: np.ndarray, *, status: str = "completed",
                budget: int | None = None, goal_attrs: bool = True, max_steps: int = 9900,
                extra_metrics: dict[str, float] | None = None) -> Path:
    """One trial as ist run writes it, one evaluation per row: at each, the goal first, then
    the budget (stop once steps >= budget without the goal); the run ends at ``max_steps``."""
    steps = np.arange(errors.size) * EVERY
    end, hit, stopped = int(np.flatnonzero(steps <= max_steps)[-1]), False, False
    for k in range(end + 1):
        if errors[k] <= GOAL:
            end, hit = k, True
            break
        if budget is not None and steps[k] >= budget:
            end, stopped = k, True
            break
    writer = RunFileWriter(directory / f"{run_id}.h5", run_id=run_id, config={**config, "goal_error": GOAL,
                           "max_steps": max_steps}, env=ENV, seed=config["seed"], version="0.1.0")
    for k in range(end + 1):
        writer.append_metrics({"round": float(k), "step": float(steps[k]), "val_error": float(errors[k]),
                               "loss": float(errors[k]), **{name: value * (k + 1) for name, value
                                                            in (extra_metrics or {}).items()}})
    attrs = {}
    if goal_attrs:
        attrs = {"goal_reached": hit, "steps_to_result": int(steps[end]) if hit else -1}
    if budget is not None:
        attrs.update(step_budget=int(budget), budget_stopped=stopped)
    return writer.close(status, extra_attrs=attrs)


def fabricate(directory: Path, spec: StudySpec, *, skip: tuple[int, ...] = (), diverged: tuple[int, ...] = (),
              no_goal_attrs: tuple[int, ...] = ()) -> None:
    """Manifest plus a run file for every trial (by position in ``spec.trials``) not in ``skip``."""
    Manifest(directory).open(spec.sweep, force=False)
    groups = {group: k for k, group in enumerate(dict.fromkeys(t.group for t in spec.trials))}
    for position, (trial, run) in enumerate(zip(spec.trials, spec.sweep.runs, strict=True)):
        if position in skip:
            continue
        errors = error_curve(trial.batch_size, trial.index, groups[trial.group])
        if position in diverged:
            errors = errors.copy()
            errors[5:] = np.nan
            errors = errors[:6]
        write_trial(directory, trial.run_id, run.config, errors, status="diverged" if position in diverged
                    else "completed", goal_attrs=position not in no_goal_attrs)
