"""The theory against the algorithm: the mean of many seeds' iterates against the closed-form
mean trajectory, and the two server updates on real runs."""

from __future__ import annotations

import numpy as np
import pytest

from ist_cli.algorithms import build_algorithm
from ist_cli.config import resolve_config
from ist_cli.io.runfile import read_run
from ist_cli.models.quadratic import generate_problem, initial_point
from ist_cli.models.sketches import sketch_law
from ist_cli.models.theory import Method, mean_dynamics
from ist_cli.runner import run_experiment, run_round
from ist_cli.runtime.inprocess import InProcessTransport

N, D = 2, 4
CHECKPOINTS = (1, 10, 100)
SEEDS = range(200)


def iterates_in_process(config: dict, checkpoints) -> dict[int, np.ndarray]:
    """The algorithm's plan, workers and aggregation round by round through the in-process
    transport (bit-identical to worker processes, tests/test_transport.py), at a fraction of the cost."""
    algorithm = build_algorithm(resolve_config(config))
    arrays = {name: np.zeros(shape, dtype) for name, (shape, dtype) in algorithm.arena_spec().items()}
    algorithm.initialize(arrays)
    transport = InProcessTransport(algorithm.worker_program(), arrays, None, algorithm.n_workers)
    transport.start()
    seen = {}
    for round_index in range(1, max(checkpoints) + 1):
        run_round(algorithm, transport, arrays, round_index)
        if round_index in checkpoints:
            seen[round_index] = arrays["x"].copy()
    transport.close()
    return seen


def problem_file(tmp_path, seed: int, n: int = N, d: int = D) -> tuple[str, object]:
    problem = generate_problem(n, d, seed=seed)
    path = tmp_path / f"problem-{seed}.npz"
    np.savez(path, L=problem.L, b=problem.b)
    return str(path), problem


@pytest.mark.slow
@pytest.mark.parametrize("server_update", ["average", "delta"])
@pytest.mark.parametrize("sketch", ["identity", "perm", "perm-precond", "rand"])
def test_mean_of_200_seeds_matches_the_closed_form_mean(tmp_path, sketch, server_update) -> None:
    path, problem = problem_file(tmp_path, 11)  # one problem for every seed
    lr = 0.1
    config = {"model": "quadratic", "algorithm": "ist", "workers": N, "dim": D, "sketch": sketch, "problem_file": path,
              "server_update": server_update, "lr": lr, "local_steps": 1, "sketch_q": 2 if sketch == "rand" else None}
    dyn = mean_dynamics(Method("ist", sketch_law(sketch, problem.L, config["sketch_q"]), server_update, lr),
                        problem.L, problem.b)
    assert dyn.spectral_radius() < 1
    residuals = {k: [] for k in CHECKPOINTS}
    for seed in SEEDS:
        x0 = initial_point(D, seed)
        seen = iterates_in_process({**config, "seed": seed}, CHECKPOINTS)
        expected = x0
        for k in range(1, max(CHECKPOINTS) + 1):
            expected = dyn.P @ expected + dyn.c  # E[x^k | x^0], plain recursion
            if k in CHECKPOINTS:
                residuals[k].append(seen[k] - expected)
    for k in CHECKPOINTS:
        r = np.array(residuals[k])
        se = r.std(axis=0, ddof=1) / np.sqrt(len(r))
        assert np.all(np.abs(r.mean(axis=0)) <= 3 * se + 1e-12), (k, r.mean(axis=0), se)
        if sketch != "identity":
            assert np.all(se > 0)  # a random method: the check is not vacuous


BASE = {"model": "quadratic", "algorithm": "ist", "workers": 2, "dim": 8, "seed": 4, "lr": 0.05}


def final_x(rounds: int, **settings) -> np.ndarray:
    return iterates_in_process({**BASE, **settings}, (rounds,))[rounds]


@pytest.mark.parametrize("sketch", ["perm", "identity"])
def test_delta_and_average_are_one_method_when_the_sketches_sum_to_n_identity(sketch) -> None:
    average = final_x(1000, sketch=sketch, server_update="average")
    delta = final_x(1000, sketch=sketch, server_update="delta")
    assert not np.allclose(average, initial_point(8, 4))
    np.testing.assert_allclose(delta, average, rtol=1e-10, atol=1e-10 * np.abs(average).max())


@pytest.mark.parametrize("sketch", ["perm-precond", "rand"])
def test_delta_and_average_differ_when_the_sketches_do_not_sum_to_n_identity(sketch) -> None:
    average = final_x(200, sketch=sketch, server_update="average")
    delta = final_x(200, sketch=sketch, server_update="delta")
    assert np.linalg.norm(delta - average) > 1e-3 * np.linalg.norm(average)


def test_a_run_with_worker_processes_gives_the_in_process_numbers(tmp_path) -> None:
    settings = {"sketch": "perm-precond", "server_update": "delta"}
    summary = run_experiment({**BASE, **settings, "rounds": 30, "eval_every": 30}, out_dir=tmp_path, name="r")
    assert summary.status == "completed"
    data = read_run(tmp_path / "r.h5")
    assert data.config["server_update"] == "delta" and data.config["sketch"] == "perm-precond"
    np.testing.assert_array_equal(data.final["x"], final_x(30, **settings))
