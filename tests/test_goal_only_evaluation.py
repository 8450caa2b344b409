"""``full_eval_every``: between full evaluations a run with a goal measures its goal's set
only (the other sets' columns NaN); the goal decision, steps-to-result and ``/final`` are
exactly those of measuring everything, and the row that ends the run is whole. Study trials
default to it (``[base]`` overrides)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from ist_cli.runner import run_experiment
from ist_cli.study.spec import STUDY_FULL_EVAL_EVERY, parse_study

# a study trial: a goal on validation error, evaluated every 40 steps
TRIAL = {"model": "mlp", "algorithm": "single", "hidden": [64], "sparsity": 0.9, "goal_error": 0.1,
         "validation_fraction": 0.1, "max_steps": 400, "eval_every_steps": 40, "batch_size": 16,
         "local_steps": 4, "lr": 0.05, "momentum": 0.9, "seed": 3}
SETS = {"train": ("loss", "train_accuracy"), "test": ("test_loss", "test_accuracy"),
        "val": ("val_loss", "val_accuracy", "val_error")}
TIMING = {"wall_time", "compute_time", "compute_time_wall", "sim_time"}


def _read(path):
    with h5py.File(path, "r") as handle:
        metrics = {name: handle["metrics"][name][()] for name in handle["metrics"]}
        final = {name: handle["final"][name][()] for name in handle["final"]}
        return dict(handle.attrs), metrics, final


def _both(tmp_path, config, every):
    run_experiment(config, out_dir=tmp_path, name="all")
    run_experiment({**config, "full_eval_every": every}, out_dir=tmp_path, name="some")
    return _read(tmp_path / "all.h5"), _read(tmp_path / "some.h5")


@pytest.mark.parametrize("goal_metric, goal_error", [("val_error", 0.1), ("train_error", 0.1), ("val_error", 0.01)],
                         ids=["val-goal-reached", "train-goal", "val-goal-missed"])
def test_goal_only_rows_decide_exactly_as_full_evaluation(tmp_path, goal_metric, goal_error):
    every = 3
    config = {**TRIAL, "goal_metric": goal_metric, "goal_error": goal_error}
    (attrs_a, rows_a, final_a), (attrs_b, rows_b, final_b) = _both(tmp_path, config, every)
    for key in ("goal_reached", "steps_to_result", "rounds_completed"):
        assert attrs_a.get(key) == attrs_b.get(key), key
    assert int(attrs_a["steps_to_result"]) > 0 or goal_error == 0.01
    assert set(final_a) == set(final_b) and final_a
    for name in final_a:
        assert final_a[name].tobytes() == final_b[name].tobytes(), name
    assert set(rows_a) == set(rows_b)
    n = rows_b["round"].size
    assert n >= 5 and all(values.size == n for values in rows_b.values())  # every column the same length
    full = (np.arange(n) % every == 0) | (np.arange(n) == n - 1)  # every K-th evaluation and the last row
    goal_set = "val" if goal_metric == "val_error" else "train"
    for name, values in rows_b.items():
        if name in TIMING:
            continue
        expected = rows_a[name]
        partial_set = next((s for s, cols in SETS.items() if name in cols and s != goal_set), None)
        if partial_set is None:  # the goal's set and every other column: measured at every row
            assert values.tobytes() == expected.tobytes(), name
        else:
            assert np.isnan(values[~full]).all(), name
            assert values[full].tobytes() == expected[full].tobytes(), name
            assert np.isfinite(expected).all(), name


def test_a_run_without_a_goal_ignores_it(tmp_path):
    config = {key: value for key, value in TRIAL.items() if key != "goal_error"}
    (_, rows_a, _), (_, rows_b, _) = _both(tmp_path, {**config, "max_steps": 160}, 2)
    for name in set(rows_a) - TIMING:
        assert rows_a[name].tobytes() == rows_b[name].tobytes(), name


STUDY = {"base": {"model": "mlp", "algorithm": "single", "dataset": "digits", "hidden": [16], "goal_error": 0.2,
                  "validation_fraction": 0.1, "max_steps": 100, "eval_every_steps": 10},
         "study": {"batch_sizes": [8, 16], "trials": 2}, "search": {"lr": {"log": [0.01, 1.0]}}}


def test_study_trials_default_to_sparse_full_evaluation_and_base_overrides_it(tmp_path):
    spec = parse_study(STUDY, tmp_path / "s.toml")
    assert STUDY_FULL_EVAL_EVERY > 1
    assert [run.config["full_eval_every"] for run in spec.sweep.runs] == [STUDY_FULL_EVAL_EVERY] * 4
    raw = {**STUDY, "base": {**STUDY["base"], "full_eval_every": 1}}
    # 1, the default of ``ist run``, is not recorded: such a study's run ids are those of one without the key
    assert all("full_eval_every" not in run.config for run in parse_study(raw, tmp_path / "s.toml").sweep.runs)


def test_a_diverging_run_stops_at_the_same_evaluation(tmp_path):
    """A goal-only row has no ``loss``: divergence is judged on the goal set's loss."""
    config = {**TRIAL, "lr": 200.0, "momentum": 0.0, "sparsity": 0.0, "eval_every_steps": 8}
    (attrs_a, rows_a, _), (attrs_b, rows_b, _) = _both(tmp_path, config, 4)
    assert attrs_a["status"] == attrs_b["status"] == "diverged"
    assert attrs_a.get("rounds_completed") == attrs_b.get("rounds_completed")
    assert rows_a["round"].tobytes() == rows_b["round"].tobytes() and rows_b["round"].size >= 3
    assert not np.isfinite(rows_b["loss"][-1]) and np.isnan(rows_b["loss"][1])  # the ending row is whole
