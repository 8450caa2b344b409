"""``ist study`` on real trials that reach their goal.

Three runs of one small study (digits, a 16-unit MLP, 2 batch sizes x 3 trials): with
pruning and ``--jobs 2``, SIGKILLed midway and resumed; without pruning (``--jobs 2``); with
pruning and ``--jobs 1`` (sequential, so later trials are pruned). The oracle is the run
files, read with h5py in the documented schema (docs/schema.md), never ist_cli.study.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from ist_cli.report.study import study_figures
from ist_cli.study.results import load_study_result
from tests.helpers import ist
from tests.test_sweep import (
    file_identity,
    leftovers,
    manifest,
    remove_segments,
    segments_of_runs,
    wait_midway,
)

pytestmark = pytest.mark.slow

TRIALS = 3
STUDY = f"""
name = "acc"
[base]
model = "mlp"
algorithm = "single"
workers = 1
dataset = "digits"
hidden = [16]
norm = "none"
validation_fraction = 0.1
goal_error = 0.25
max_steps = 300
eval_every_steps = 10
local_steps = 10
[study]
batch_sizes = [8, 64]
trials = {TRIALS}
[search]
lr = {{ log = [0.003, 1.0] }}
"""
RUNS = 2 * TRIALS


def run_study(path: Path, out: Path, *args: str) -> dict:
    result = ist("study", str(path), "--out", str(out), "--json", "--quiet", *args, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def read_trials(out: Path) -> dict[str, dict]:
    """Every run file of ``out``: its config and goal attrs, read with h5py alone."""
    trials = {}
    for path in sorted(out.glob("*.h5")):
        with h5py.File(path, "r") as handle:
            attrs = dict(handle.attrs)
            trials[path.stem] = {"config": json.loads(handle["config"][()]), "status": str(attrs["status"]),
                                 "goal_reached": bool(attrs["goal_reached"]),
                                 "steps_to_result": int(attrs["steps_to_result"]),
                                 "step_budget": attrs.get("step_budget"),
                                 "budget_stopped": bool(attrs.get("budget_stopped", False)),
                                 "val_error": handle["metrics/val_error"][()], "step": handle["metrics/step"][()]}
    return trials


def answer_from_files(trials: dict[str, dict]) -> dict[int, tuple[int | None, int | None]]:
    """steps-to-result(B) and the best trial (lowest seed = trial number among ties) per B."""
    best: dict[int, tuple[int | None, int | None]] = {}
    for trial in trials.values():
        b = trial["config"]["batch_size"]
        best.setdefault(b, (None, None))
        if trial["status"] == "completed" and trial["goal_reached"]:
            candidate = (trial["steps_to_result"], trial["config"]["seed"])
            if best[b][0] is None or candidate < best[b]:
                best[b] = candidate
    return best


def report_answer(out: Path) -> tuple[dict, dict]:
    """The per-B answer of ``ist report --format json`` and ``--format csv``."""
    rows = json.loads(ist("report", str(out), "--format", "json", check=True).stdout)["rows"]
    from_json = {row["batch_size"]: (row["steps_to_result"], row["best_trial"]) for row in rows}
    text = ist("report", str(out), "--format", "csv", check=True).stdout
    from_csv = {int(row["batch_size"]): (int(row["steps_to_result"]) if row["steps_to_result"] else None,
                                         int(row["best_trial"]) if row["best_trial"] else None)
                for row in csv.DictReader(io.StringIO(text))}
    return from_json, from_csv


@pytest.fixture(scope="module")
def study_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("study") / "acc.toml"
    path.write_text(STUDY)
    return path


@pytest.fixture(scope="module")
def killed_and_resumed(study_file, tmp_path_factory):
    """``ist study --jobs 2`` (pruning on) SIGKILLed with two trials done and one running
    (the whole process group, as in test_sweep), then the same command again."""
    out = tmp_path_factory.mktemp("killed") / "out"
    proc = subprocess.Popen([sys.executable, "-m", "ist_cli", "study", str(study_file), "--out", str(out),
                             "--jobs", "2", "--quiet"], start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    run_ids: list[str] = []
    try:
        run_ids = wait_midway(proc, out)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        snapshot = manifest(out)["runs"]
        finished_before = {run["id"]: file_identity(out / run["file"]) for run in snapshot
                           if (out / run["file"]).exists()}
        in_flight = {run["id"] for run in snapshot if run["status"] == "running"} - set(finished_before)
        time.sleep(0.5)  # let the kernel reap the killed group
        summary = run_study(study_file, out, "--jobs", "2")
        assert segments_of_runs(run_ids) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        remove_segments(run_ids)
    return out, finished_before, in_flight, summary


@pytest.fixture(scope="module")
def unpruned(study_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("unpruned") / "out"
    summary = run_study(study_file, out, "--jobs", "2", "--no-prune-trials")
    assert summary["executed"] == {"completed": RUNS} and summary["prune_trials"] is False
    return out


@pytest.fixture(scope="module")
def sequential(study_file, tmp_path_factory) -> Path:
    """``--jobs 1``, not quiet: its progress lines are kept in ``progress.txt`` beside ``out``."""
    out = tmp_path_factory.mktemp("sequential") / "out"
    result = ist("study", str(study_file), "--out", str(out), "--json", "--jobs", "1", timeout=600)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["executed"] == {"completed": RUNS}
    (out.parent / "progress.txt").write_text(result.stderr)
    return out


def test_resume_after_sigkill_runs_no_trial_twice(killed_and_resumed):
    out, finished_before, in_flight, summary = killed_and_resumed
    assert finished_before and in_flight and not set(finished_before) & in_flight
    assert summary["final"] == {"completed": RUNS}
    assert summary["executed"] == {"completed": RUNS - len(finished_before)}
    runs = manifest(out)["runs"]
    assert len(runs) == RUNS and sorted(p.stem for p in out.glob("*.h5")) == sorted(run["id"] for run in runs)
    for run in runs:
        outcomes = [entry["outcome"] for entry in run["history"]]
        assert outcomes.count("completed") == 1 and run["attempts"] == len(outcomes), outcomes
        if run["id"] in finished_before:  # untouched by the resume: same inode, same creation stamp
            assert outcomes == ["completed"] and file_identity(out / run["file"]) == finished_before[run["id"]]
        elif run["id"] in in_flight:  # the killed attempt is recorded, never counted as a result
            assert outcomes == ["abandoned", "completed"], outcomes
    assert leftovers(out) == []


def test_report_csv_and_json_equal_the_answer_recomputed_from_the_run_files(killed_and_resumed):
    out = killed_and_resumed[0]
    trials = read_trials(out)
    assert len(trials) == RUNS
    expected = answer_from_files(trials)
    assert sorted(expected) == [8, 64] and all(steps is not None for steps, _ in expected.values())
    from_json, from_csv = report_answer(out)
    assert from_json == expected and from_csv == expected


def test_the_answer_is_the_same_with_and_without_pruning_and_with_one_or_two_jobs(killed_and_resumed, unpruned,
                                                                                  sequential):
    answers = [answer_from_files(read_trials(out)) for out in (killed_and_resumed[0], unpruned, sequential)]
    assert answers[0] == answers[1] == answers[2]


def test_pruned_trials_are_recorded_as_such_and_stopped_where_the_unpruned_run_had_not_reached(unpruned, sequential):
    full, pruned_run = read_trials(unpruned), read_trials(sequential)
    assert set(full) == set(pruned_run)  # same run ids: the budget is not part of the config
    assert all(trial["step_budget"] is None and not trial["budget_stopped"] for trial in full.values())
    stopped = {run_id: trial for run_id, trial in pruned_run.items() if trial["budget_stopped"]}
    assert stopped, "the small study pruned nothing: the test would prove nothing"
    for run_id, trial in stopped.items():
        other = full[run_id]
        assert trial["status"] == "completed" and not trial["goal_reached"] and trial["steps_to_result"] == -1
        assert trial["step"][-1] >= trial["step_budget"] > trial["step"][-2]  # stopped at the first eval past it
        # every evaluation it made is the one the unpruned trial made, and none met the goal
        rows = trial["step"].size
        np.testing.assert_array_equal(trial["step"], other["step"][:rows])
        np.testing.assert_array_equal(trial["val_error"], other["val_error"][:rows])
        assert not other["goal_reached"] or other["steps_to_result"] >= trial["step_budget"]
    finished = [line for line in (sequential.parent / "progress.txt").read_text().splitlines() if f"/{RUNS}] " in line]
    assert len(finished) == RUNS  # the progress says "pruned" for these trials, "completed" for the others
    assert sum(": pruned (stopped at its step budget)" in line for line in finished) == len(stopped)
    assert sum(": completed (" in line for line in finished) == RUNS - len(stopped)
    rows = json.loads(ist("report", str(sequential), "--format", "json", check=True).stdout)["rows"]
    per_b = {b: sum(t["budget_stopped"] for t in stopped.values() if t["config"]["batch_size"] == b) for b in (8, 64)}
    assert {row["batch_size"]: row["pruned"] for row in rows} == per_b


def test_report_of_a_real_study_draws_figures_with_one_curve_and_a_self_contained_page(sequential, tmp_path):
    page, figures = tmp_path / "study.html", tmp_path / "figs"
    result = ist("report", str(sequential), "--html", str(page), "--figures", str(figures), "--format", "csv")
    assert result.returncode == 0, result.stderr
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 3  # every figure inline: the page opens offline
    assert "http://" not in text and "https://" not in text and "<script" not in text
    names = sorted(p.stem for p in figures.glob("*.png"))
    assert names == ["study_lr", "study_steps", "study_steps_normalised"]
    for name in names:
        pixels = np.asarray(Image.open(figures / f"{name}.png").convert("L"), dtype=np.float64)
        assert pixels.std() > 10.0, name  # drawn, not blank
    # one grid point, so one data curve (markers) on each figure
    for name, fig in study_figures(load_study_result(sequential, resamples=50)).items():
        assert len([line for line in fig.axes[0].lines if line.get_marker() == "o"]) == 1, name
