"""``ist theory`` as a user runs it: a subprocess, its JSON against independent numpy, the
report's overlay, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ist_cli.io.runfile import read_run
from ist_cli.report import group_runs, load_runs, metric_figure
from ist_cli.runner import run_experiment
from tests.helpers import files_in, ist, one_error_line


def theory_json(*args: str) -> dict:
    result = ist("theory", *args, "--json", check=True)
    return json.loads(result.stdout)


def write_problem(path: Path, L: np.ndarray, b: np.ndarray) -> Path:
    np.savez(path, L=L, b=b)
    return path


def test_preconditioned_perm1_on_a_homogeneous_problem(tmp_path) -> None:
    n = d = 4
    rng = np.random.default_rng(3)
    A = rng.standard_normal((8, d))
    L1 = A.T @ A / 8 + 0.1 * np.eye(d)
    L, b = np.repeat(L1[None], n, axis=0), np.repeat(rng.standard_normal(d)[None], n, axis=0)
    problem = write_problem(tmp_path / "p.npz", L, b)
    out = theory_json("--problem-file", str(problem), "--workers", "4", "--dim", "4", "--sketch", "perm-precond",
                      "--server-update", "delta", "--lr", "0.5")
    t1 = out["theorem1"]
    assert t1["mean_B_minus_I_max"] <= 1e-12
    np.testing.assert_allclose(np.array(t1["mean_B"]), np.eye(d), atol=1e-12)
    paper = sum(np.diag(L[i]) ** -0.5 * b[i] for i in range(n)) / (n * np.sqrt(n))
    np.testing.assert_allclose(out["x_limit"], paper, rtol=1e-12)
    x_star = np.linalg.solve(L1, b[0])
    assert out["bias"] == pytest.approx(np.linalg.norm(paper - x_star), rel=1e-12)
    assert out["spectral_radius"] == pytest.approx(0.5, rel=1e-12)  # P = I − γ E[B̄] = (1 − γ) I
    assert t1["theta"] == pytest.approx(1.0, rel=1e-9) and out["exact"] and out["samples"] == 0
    assert out["theorem2"]["h"] == pytest.approx(list(x_star - paper), rel=1e-9)
    text = ist("theory", "--problem-file", str(problem), "--workers", "4", "--dim", "4", "--sketch",
               "perm-precond", "--server-update", "delta", "--lr", "0.5", check=True).stdout
    assert "Theorem 1" in text and "Theorem 2" in text and "x^∞" in text


def test_indefinite_w_is_said_not_computed(tmp_path) -> None:
    L = np.array([[[1.0, 1.8], [1.8, 4.0]]] * 2)  # the paper's Perm-1 example: c > 2ab/(a+b)
    problem = write_problem(tmp_path / "p.npz", L, np.zeros((2, 2)))
    out = theory_json("--problem-file", str(problem), "--workers", "2", "--dim", "2", "--lr", "0.01")
    t1 = out["theorem1"]
    assert not t1["W_psd"] and t1["theta"] is None and t1["step_bound"] is None and "indefinite" in t1["note"]


def test_run_file_theory_is_what_the_report_draws(tmp_path) -> None:
    config = {"model": "quadratic", "algorithm": "ist", "workers": 2, "dim": 8, "seed": 5, "lr": 0.05,
              "rounds": 40, "eval_every": 4}
    run_experiment(config, out_dir=tmp_path, name="ist")
    path = tmp_path / "ist.h5"
    out = theory_json(str(path))
    problem = read_run(path).problem
    L, b = problem["L"], problem["b"]
    n, d, q = 2, 8, 4
    M = np.zeros((d, d))  # independent: M̄ entry by entry
    for i in range(n):
        for j in range(d):
            for k in range(d):
                M[j, k] += (n * L[i, j, j] if j == k else n * n * q * (q - 1) / (d * (d - 1)) * L[i, j, k]) / n
    x_limit = np.linalg.solve(M, b.mean(0))
    np.testing.assert_allclose(out["x_limit"], x_limit, rtol=1e-10)
    runs, _ = load_runs([path])
    fig = metric_figure(group_runs(runs), "dist_to_opt_sq")
    lines = {line.get_gid(): line for line in fig.axes[0].get_lines()}
    assert lines["theory"].get_ydata()[0] == pytest.approx(out["bias_sq"], rel=1e-12)
    curve = lines["theory-curve"]
    rounds = np.asarray(curve.get_xdata()).astype(int)
    assert list(rounds) == list(range(0, 41, 4))
    np.testing.assert_allclose(curve.get_ydata(), np.array(out["mean_dist_sq"])[rounds], rtol=1e-12)
    # the curve starts where the run started: E[x^0] = x^0
    assert curve.get_ydata()[0] == pytest.approx(runs[0].metrics["dist_to_opt_sq"][0], rel=1e-12)


def test_monte_carlo_with_local_steps_states_its_error(tmp_path) -> None:
    args = ("--workers", "2", "--dim", "4", "--local-steps", "3", "--lr", "0.05")
    line = one_error_line(ist("theory", *args))
    assert "--local-steps" in line and "--theory-samples" in line
    out = theory_json(*args, "--theory-samples", "200")
    assert not out["exact"] and out["samples"] == 200 and out["bias_se"] > 0 and out["spectral_radius_se"] > 0


@pytest.mark.parametrize("args,needles", [
    (["--sketch", "perm-precond", "--workers", "4", "--dim", "10"], ["--dim", "10", "multiple of 4"]),
    (["--theory-samples", "1"], ["--theory-samples", "'1'", ">= 2"]),
    (["--server-update", "sum"], ["--server-update", "'sum'", "average, delta"]),
    (["--model", "mlp"], ["--model"]),
    (["--dim", "4096"], ["--dim", "4096", "at most 2048"]),
])
def test_bad_theory_options(args, needles) -> None:
    line = one_error_line(ist("theory", *args))
    for needle in needles:
        assert needle in line, (needle, line)


def test_preconditioning_needs_a_positive_diagonal(tmp_path) -> None:
    L = np.array([[[2.0, 0.5], [0.5, 0.0]], [[2.0, -0.5], [-0.5, 3.0]]])  # L_0[1,1] = 0, mean still PD
    problem = write_problem(tmp_path / "p.npz", L, np.ones((2, 2)))
    common = ["--problem-file", str(problem), "--workers", "2", "--dim", "2", "--sketch", "perm-precond"]
    line = one_error_line(ist("theory", *common))
    assert "perm-precond" in line and "L_0[1,1] = 0" in line
    out = tmp_path / "out"
    out.mkdir()
    line = one_error_line(ist("run", "--model", "quadratic", *common, "--rounds", "2", "--out", str(out), "--quiet"))
    assert "perm-precond" in line and "L_0[1,1] = 0" in line
    assert files_in(out) == []


def test_a_run_file_fixes_the_problem(tmp_path) -> None:
    run_experiment({"model": "quadratic", "workers": 2, "dim": 4, "rounds": 2}, out_dir=tmp_path, name="r")
    line = one_error_line(ist("theory", str(tmp_path / "r.h5"), "--dim", "8"))
    assert "dim" in line and "run file" in line
    line = one_error_line(ist("theory", str(tmp_path / "missing.h5")))
    assert "missing.h5" in line
