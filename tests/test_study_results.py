"""Steps-to-result from run files, the study report (CSV, JSON, figures, HTML) and the
pruning bookkeeping, on study directories fabricated in the documented schema."""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

import h5py
import numpy as np
import pytest
from matplotlib.image import imread

from ist_cli.report.figures import png_bytes
from ist_cli.report.study import study_figures
from ist_cli.study.outcomes import read_outcome
from ist_cli.study.results import load_study_result
from ist_cli.study.step_budgets import TrialPruner
from ist_cli.sweep.manifest import Manifest
from tests.helpers import ist
from tests.study_support import GOAL, error_curve, fabricate, make_study, write_trial


def oracle(directory: Path, spec) -> dict[tuple, tuple[int | None, int | None]]:
    """(group, B) -> (steps, best trial) straight from HDF5: first /metrics/step whose
    val_error <= goal in each completed file, minimum over trials, lowest trial on ties."""
    best: dict[tuple, tuple[int | None, int | None]] = {}
    for trial in spec.trials:
        key = (trial.group, trial.batch_size)
        best.setdefault(key, (None, None))
        path = directory / f"{trial.run_id}.h5"
        if not path.exists():
            continue
        with h5py.File(path, "r") as handle:
            if handle.attrs["status"] != "completed" or "goal_reached" not in handle.attrs:
                continue
            err, step = handle["metrics/val_error"][()], handle["metrics/step"][()]
        rows = np.flatnonzero(err <= GOAL)
        if rows.size == 0:
            continue
        steps = int(step[rows[0]])
        current = best[key]
        if current[0] is None or (steps, trial.index) < (current[0], current[1]):
            best[key] = (steps, trial.index)
    return best


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("study")
    spec = make_study()
    fabricate(directory, spec, skip=(1,), diverged=(6,), no_goal_attrs=(9,))
    return directory, spec


@pytest.mark.slow
def test_report_json_and_csv_equal_steps_recomputed_from_the_run_files(study_dir):
    directory, spec = study_dir
    expected = oracle(directory, spec)
    assert any(steps is not None for steps, _ in expected.values())
    result = ist("report", str(directory), "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["rows"]
    assert len(rows) == len(expected) == 2 * 4
    for row in rows:
        group = (("norm", row["norm"]),)
        assert (row["steps_to_result"], row["best_trial"]) == expected[(group, row["batch_size"])], row
        assert sum(row[name] for name in ("reached", "incomplete", "infeasible", "pruned", "failed", "not_run")) == 4
    counts = {name: sum(row[name] for row in rows) for name in ("not_run", "infeasible", "incomplete")}
    assert counts["not_run"] == 1 and counts["infeasible"] == 1 and counts["incomplete"] >= 1
    csv_rows = list(csv.DictReader(io.StringIO(ist("report", str(directory), "--format", "csv").stdout)))
    assert [(r["norm"], int(r["batch_size"]), int(r["steps_to_result"]) if r["steps_to_result"] else None)
            for r in csv_rows] == [(r["norm"], r["batch_size"], r["steps_to_result"]) for r in rows]
    best_lr = {(r["norm"], r["batch_size"]): r["best_lr"] for r in rows}
    for trial in spec.trials:
        key = (trial.group[0][1], trial.batch_size)
        if expected[(trial.group, trial.batch_size)][1] == trial.index:
            assert best_lr[key] == trial.values["lr"]


def test_a_file_without_goal_attrs_is_incomplete_and_a_missing_one_not_run(study_dir):
    directory, spec = study_dir
    assert read_outcome(directory / f"{spec.trials[9].run_id}.h5").outcome == "incomplete"
    assert read_outcome(directory / f"{spec.trials[1].run_id}.h5").outcome == "not run"
    assert read_outcome(directory / f"{spec.trials[6].run_id}.h5").outcome == "infeasible"


def test_figures_are_not_blank_and_have_one_curve_per_grid_point(study_dir):
    directory, _ = study_dir
    result = load_study_result(directory, resamples=200)
    figures = study_figures(result)
    assert set(figures) == {"study_steps", "study_steps_normalised", "study_lr"}
    for fig in figures.values():
        data_lines = [line for line in fig.axes[0].lines if line.get_marker() in ("o",)]
        assert len(data_lines) == len(result.groups) == 2
        assert fig.axes[0].get_xscale() == "log" and fig.axes[0].get_yscale() == "log"
        pixels = imread(io.BytesIO(png_bytes(fig)))
        assert pixels.std() > 0.05
    dashed = [line for line in figures["study_steps"].axes[0].lines
              if line.get_linestyle() == "--" and len(line.get_xdata())]  # not the legend's style entry
    for line in dashed:  # perfect scaling through the first point: K0 B0 / B
        x, y = line.get_data()
        np.testing.assert_allclose(y * x, y[0] * x[0])


@pytest.mark.slow
def test_html_report_is_self_contained(study_dir, tmp_path):
    directory, _ = study_dir
    out = tmp_path / "study.html"
    result = ist("report", str(directory), "--html", str(out), "--figures", str(tmp_path / "figs"))
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert text.count("data:image/png;base64,") == 3
    assert "http://" not in text and "https://" not in text
    assert sorted(p.name for p in (tmp_path / "figs").iterdir() if p.suffix == ".png") == [
        "study_lr.png", "study_steps.png", "study_steps_normalised.png"]


def test_pruner_budget_is_the_best_finished_sibling(tmp_path):
    spec = make_study(trials=3, batch_sizes=(8,))
    first, second, third = spec.trials[:3]
    pruner = TrialPruner(spec, tmp_path)
    assert pruner.best_known(second.run_id) is None
    assert pruner.prepare(spec.sweep.runs[1]) is spec.sweep.runs[1]
    write_trial(tmp_path, first.run_id, spec.sweep.runs[0].config, np.linspace(0.9, 0.1, 40))
    reached = read_outcome(tmp_path / f"{first.run_id}.h5")
    assert reached.outcome == "reached"
    assert pruner.best_known(second.run_id) == reached.steps
    assert pruner.prepare(spec.sweep.runs[1]).run_args == ("--step-budget", str(reached.steps))
    assert pruner.best_known(first.run_id) is None  # a trial is not its own sibling
    other_group = next(t for t in spec.trials if t.group != first.group)
    assert pruner.best_known(other_group.run_id) is None


@pytest.mark.slow
@pytest.mark.parametrize("order_seed", range(3))
def test_pruning_changes_no_answer_in_any_order(tmp_path, order_seed):
    """Simulate the engine: trials start in a shuffled order, two at a time; each gets the
    pruner's budget when it starts, and writes its file when it ends (a run with budget N
    stops at its first evaluation past N without the goal). The answer equals the one without
    pruning; only stopped trials differ, and they are recorded as pruned."""
    spec = make_study(trials=6, batch_sizes=(8, 128))
    configs = {run.run_id: run.config for run in spec.sweep.runs}
    groups = {group: k for k, group in enumerate(dict.fromkeys(t.group for t in spec.trials))}
    curves = {t.run_id: error_curve(t.batch_size, t.index % 3, groups[t.group]) for t in spec.trials}
    plain, pruned = tmp_path / "plain", tmp_path / "pruned"
    plain.mkdir()
    pruned.mkdir()
    for directory in (plain, pruned):
        Manifest(directory).open(spec.sweep, force=False)
    for trial in spec.trials:  # trials i and i + 3 share a curve: ties, broken by the lower trial
        write_trial(plain, trial.run_id, configs[trial.run_id], curves[trial.run_id])
    pruner = TrialPruner(spec, pruned)
    order = [t.run_id for t in spec.trials]
    random.Random(order_seed).shuffle(order)
    running: list[tuple[str, int | None]] = []
    for run_id in order + [None, None]:
        if run_id is not None:
            running.append((run_id, pruner.best_known(run_id)))
        if len(running) == 2 or run_id is None and running:
            done, budget = running.pop(0)
            write_trial(pruned, done, configs[done], curves[done], budget=budget)
    a, b = load_study_result(plain, resamples=50), load_study_result(pruned, resamples=50)
    for ga, gb in zip(a.groups, b.groups, strict=True):
        for pa, pb in zip(ga.points, gb.points, strict=True):
            assert pa.best is not None
            assert (pa.steps, pa.best.index) == (pb.steps, pb.best.index)
            stopped = ("reached", "pruned", "incomplete")
            assert sum(pb.counts[k] for k in stopped) == sum(pa.counts[k] for k in stopped) == 6
            assert pb.counts["reached"] <= pa.counts["reached"]
            assert pa.counts["pruned"] == 0
    assert sum(p.counts["pruned"] for g in b.groups for p in g.points) > 0
    for trial in spec.trials:  # only the stopped trials' records differ
        with_pruning = read_outcome(pruned / f"{trial.run_id}.h5")
        assert with_pruning.outcome == "pruned" or with_pruning == read_outcome(plain / f"{trial.run_id}.h5")


def test_noise_scale_at_the_goal_and_lipschitz_are_summarised(tmp_path):
    """B_simple: the median over trials that reached the goal of their last logged value;
    L-hat: the median over every logged row. Metric values here are value x (row + 1)."""
    spec = make_study(trials=3, batch_sizes=(128,))
    group = spec.trials[0].group
    members = [(t, r) for t, r in zip(spec.trials, spec.sweep.runs, strict=True) if t.group == group]
    Manifest(tmp_path).open(spec.sweep, force=False)
    reached_rows, lipschitz = [], []
    for (trial, run), scale in zip(members, (10.0, 20.0, 40.0), strict=True):
        errors = error_curve(trial.batch_size, trial.index, 0)
        path = write_trial(tmp_path, trial.run_id, run.config, errors,
                           extra_metrics={"noise_scale": scale, "lipschitz": scale / 10})
        with h5py.File(path, "r") as handle:
            rows = handle["metrics/step"].size
            reached_rows.append(scale * rows if handle.attrs["goal_reached"] else None)
            lipschitz.extend((scale / 10) * np.arange(1, rows + 1))
    result = load_study_result(tmp_path, resamples=10)
    found = next(g for g in result.groups if g.group == group)
    assert found.noise_scale == pytest.approx(np.median([v for v in reached_rows if v is not None]))
    assert found.lipschitz == pytest.approx(np.median(lipschitz))
