"""The study's search: points vs scipy's unscrambled sequences, the documented transforms,
and the study file's checks (one line naming the key path, nothing run)."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import qmc

from ist_cli.errors import UserError
from ist_cli.study.search import parse_dimension, sample_points
from ist_cli.study.spec import parse_study
from tests.helpers import files_in, ist, one_error_line

SPACE = {
    "lr": {"log": [1e-4, 1.0]},
    "momentum": {"reverse_log": [0.9, 0.9999]},
    "local_steps": {"int": [3, 9]},
    "l2": {"uniform": [0.0, 0.5]},
    "norm": {"choice": ["none", "batch"]},
}


def reference(units: np.ndarray) -> dict[str, np.ndarray]:
    """The transforms of docs/study.md written out in numpy, column j for search key j."""
    u = units
    return {
        "lr": 10.0 ** (-4 + 4 * u[:, 0]),
        "momentum": 1 - 0.1 * (1e-4 / 0.1) ** u[:, 1],
        "local_steps": np.minimum(9, 3 + np.floor(u[:, 2] * 7)).astype(int),
        "l2": 0.5 * u[:, 3],
        "norm": np.array(["none", "batch"])[np.minimum(1, np.floor(u[:, 4] * 2)).astype(int)],
    }


def dims():
    return [parse_dimension(key, entry, f"s.toml: search.{key}") for key, entry in SPACE.items()]


@pytest.mark.parametrize("sampler,engine", [("sobol", qmc.Sobol), ("halton", qmc.Halton)])
def test_points_equal_scipy_unscrambled_after_skipping_the_zero_point(sampler, engine):
    n = 37
    with pytest.warns(UserWarning, match="power of 2") if sampler == "sobol" else nullcontext():
        units = engine(len(SPACE), scramble=False).random(n + 1)[1:]  # documented skip: the all-zero point
    expected = reference(units)
    points = sample_points(dims(), n, sampler)
    assert len(points) == n
    for key, values in expected.items():
        got = np.array([p[key] for p in points])
        if values.dtype.kind == "f":
            np.testing.assert_allclose(got, values, rtol=1e-12)
        else:
            assert got.tolist() == values.tolist()


def test_one_dimensional_lr_sequence_is_the_one_of_lee_et_al():
    """The published sequence of their code (log on [1e-4, 1], i4_sobol_generate skip=2)."""
    lee = [0.01, 0.1, 0.001, 0.0032, 0.316, 0.0316, 3.2e-4, 5.6e-4, 0.056, 0.56]
    got = [p["lr"] for p in sample_points([parse_dimension("lr", {"log": [1e-4, 1.0]}, "x")], 10, "sobol")]
    np.testing.assert_allclose(got, lee, rtol=0.02)


def test_random_sampler_is_seeded_and_in_range():
    a = sample_points(dims(), 50, "random", seed=3)
    assert a == sample_points(dims(), 50, "random", seed=3)
    assert a != sample_points(dims(), 50, "random", seed=4)
    lr = np.array([p["lr"] for p in a])
    assert lr.min() >= 1e-4 and lr.max() <= 1.0
    assert {p["local_steps"] for p in a} <= set(range(3, 10))


def test_int_and_choice_cells_are_equal():
    """1024 Sobol points fill [low, high] and the choices evenly (equal cells, bounds included)."""
    points = sample_points([parse_dimension("k", {"int": [1, 4]}, "x"),
                            parse_dimension("c", {"choice": ["a", "b", "c", "d"]}, "x")], 1023, "sobol")
    ks, cs = np.array([p["k"] for p in points]), [p["c"] for p in points]
    assert sorted(set(ks)) == [1, 2, 3, 4]
    assert np.bincount(ks)[1:].tolist() in ([256, 256, 256, 255], [255, 256, 256, 256])
    assert sorted({c: cs.count(c) for c in "abcd"}.values()) == [255, 256, 256, 256]


BASE = {"model": "mlp", "algorithm": "single", "workers": 1, "hidden": [8], "rounds": 2}


def study(**tables):
    raw = {"name": "t", "base": dict(BASE), "study": {"batch_sizes": [2, 8, 32], "trials": 5},
           "search": {"lr": {"log": [1e-3, 1.0]}, "momentum": {"reverse_log": [0.5, 0.99]}}}
    for key, value in tables.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    return raw


def test_every_batch_size_sees_the_same_points_and_trial_seeds():
    spec = parse_study(study(grid={"norm": ["none", "batch"]}), Path("s.toml"))
    assert len(spec.trials) == 3 * 2 * 5 == len(spec.sweep.runs)
    by_point: dict = {}
    for trial, run in zip(spec.trials, spec.sweep.runs, strict=True):
        assert run.config["batch_size"] == trial.batch_size
        assert run.config["seed"] == trial.index
        assert run.config["lr"] == trial.values["lr"]
        by_point.setdefault((trial.group, trial.index), set()).add(tuple(sorted(trial.values.items())))
    assert all(len(values) == 1 for values in by_point.values())
    expected = sample_points([parse_dimension("lr", {"log": [1e-3, 1.0]}, "x"),
                              parse_dimension("momentum", {"reverse_log": [0.5, 0.99]}, "x")], 5, "sobol")
    assert [t.values for t in spec.trials[:5]] == expected



@pytest.mark.parametrize("max_steps,caps", [(None, [50, 13, 4]), (20, [20, 13, 4])])
def test_max_examples_caps_each_trials_steps_at_ceil_examples_over_b(max_steps, caps):
    base = dict(BASE) if max_steps is None else {**BASE, "max_steps": max_steps}
    capped = parse_study(study(base=base, study={"batch_sizes": [2, 8, 32], "trials": 5, "max_examples": 100}),
                         Path("s.toml"))
    plain = parse_study(study(base=base), Path("s.toml"))
    assert len(capped.trials) == len(plain.trials) == 15
    for trial, run, twin in zip(capped.trials, capped.sweep.runs, plain.sweep.runs, strict=True):
        assert run.config["max_steps"] == caps[[2, 8, 32].index(trial.batch_size)]
        assert run.config["rounds"] == -(-run.config["max_steps"] // run.config["local_steps"])
        assert run.point == twin.point  # same order, same points and seeds as without the cap
        assert {k: v for k, v in run.config.items() if k not in ("max_steps", "rounds")} == \
            {k: v for k, v in twin.config.items() if k not in ("max_steps", "rounds")}
    assert len(set(capped.sweep.run_ids)) == 15


BAD = [
    ({"search": {"lr": {"gauss": [0, 1]}}}, "s.toml: search.lr.gauss: unknown distribution"),
    ({"search": {"lr": {"uniform": [0.5, 0.5]}}}, "s.toml: search.lr.uniform: [0.5, 0.5] is an empty range"),
    ({"search": {"lr": {"log": [0.0, 1.0]}}}, "s.toml: search.lr.log: [0.0, 1.0] is not allowed; expected 0 < low"),
    ({"search": {"lr": {"log": [-1, 1.0]}}}, "s.toml: search.lr.log"),
    ({"search": {"momentum": {"reverse_log": [0.9, 1.0]}}}, "s.toml: search.momentum.reverse_log"),
    ({"search": {"lr": {"choice": []}}}, "s.toml: search.lr.choice"),
    ({"search": {"lr": [0.1, 0.2]}}, "s.toml: search.lr: [0.1, 0.2] is not allowed"),
    ({"search": {"lrr": {"log": [0.1, 1]}}}, "s.toml: search: unknown key 'lrr'"),
    ({"study": {"batch_sizes": [2, 0], "trials": 2}}, "s.toml: study.batch_sizes[1]: 0 is not allowed"),
    ({"study": {"batch_sizes": [2, 2.5], "trials": 2}}, "s.toml: study.batch_sizes[1]: 2.5 is not allowed"),
    ({"study": {"batch_sizes": [], "trials": 2}}, "s.toml: study.batch_sizes: [] is not allowed"),
    ({"study": {"batch_sizes": [2], "trials": 0}}, "s.toml: study.trials: 0 is not allowed"),
    ({"study": {"batch_sizes": [2, 4], "trials": 10**9}}, "s.toml: study.trials: 1000000000 trials x 2 grid points"),
    ({"study": {"batch_sizes": [2], "trials": 2, "tirals": 3}}, "s.toml: study.tirals: unknown key"),
    ({"study": None}, "s.toml: study: missing"),
    ({"study": {"batch_sizes": [2], "trials": 2, "max_examples": 0}}, "s.toml: study.max_examples: 0 is not allowed"),
    ({"study": {"batch_sizes": [2], "trials": 2, "max_examples": 1.5}}, "s.toml: study.max_examples: 1.5 is not"),
    ({"grid": {"lr": [0.1, 0.2]}}, "s.toml: search.lr: also an axis (grid.lr)"),
    ({"grid": {"batch_size": [4]}}, "s.toml: grid.batch_size: set by study.batch_sizes"),
    ({"base": {**BASE, "lr": 0.1}}, "s.toml: search.lr: also set in base.lr"),
    ({"search": {"momentum": {"uniform": [-1.0, 0.5]}}}, "s.toml: search.momentum (value"),
    ({"base": {"model": "quadratic", "algorithm": "gd", "workers": 2, "dim": 8}}, "s.toml: base.model: 'quadratic' has no batch size"),
    ({"extra": 1}, "s.toml: unknown key 'extra'"),
    ({"search": {"dim": {"int": [4, 8]}}}, "s.toml: search.dim: not a setting of model 'mlp'"),
]


@pytest.mark.parametrize("tables,message", BAD, ids=[m.split(": ", 1)[1][:40] for _, m in BAD])
def test_bad_study_files_name_the_key_path(tables, message):
    with pytest.raises(UserError) as info:
        parse_study(study(**tables), Path("s.toml"))
    text = str(info.value)
    assert text.startswith(message), text
    assert "\n" not in text


@pytest.mark.slow
def test_cli_bad_study_file_is_one_line_exit_2_and_nothing_run(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('name = "t"\n[base]\nmodel = "mlp"\n[study]\nbatch_sizes = [2, 4]\ntrials = 2\n'
                    '[search]\nlr = { log = [0.0, 1.0] }\n')
    out = tmp_path / "out"
    line = one_error_line(ist("study", str(path), "--out", str(out)))
    assert "s.toml: search.lr.log" in line and "expected 0 < low" in line
    assert not out.exists() and files_in(tmp_path) == ["s.toml"]
    line = one_error_line(ist("study", str(path), "--sampler", "lattice", "--out", str(out)))
    assert "--sampler" in line and not out.exists()
