"""A method from another package: the example plug-in (examples/ist-topk-dp) is pip-installed
into this environment, run through ``ist run`` over both transports, ``ist sweep`` and
``ist report``, then uninstalled, after which ``ist`` no longer knows it."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from ist_cli.io.runfile import read_run
from tests.helpers import ist, one_error_line
from tests.mpi_runs import (
    assert_counted_bytes_are_accounted,
    assert_mpi_gives_the_shared_memory_numbers,
    run_both,
)
from tests.plugin_support import fake_distribution, installed_example

RUN = ["--model", "mlp", "--algorithm", "topk-dp", "--hidden", "24,16", "--workers", "2"]


def algorithms_in_help() -> str:
    lines = ist("run", "--help", check=True).stdout.splitlines()
    return next(line for line in lines if "--algorithm [" in line)


def closed_form(params: int, workers: int, rounds: np.ndarray, fraction: float = 1 / 32) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative bytes up (k float32 values + k int32 indices a worker) and down (the model)."""
    k = math.ceil(params * fraction)
    return rounds * workers * k * (4 + 4), rounds * workers * params * 4


@pytest.mark.slow
def test_an_installed_plugin_runs_everywhere_and_uninstalls_without_trace(tmp_path):
    assert "topk-dp" not in algorithms_in_help()
    with installed_example("ist-topk-dp", tmp_path):
        assert "topk-dp" in algorithms_in_help()
        help_text = " ".join(ist("run", "--help").stdout.split())
        assert "mlp: ist|dp|local-sgd|single|topk-dp;" in help_text
        assert "--topk-fraction FLOAT RANGE topk-dp: share of the gradient's entries" in help_text, help_text
        wrong = ist("run", "--dataset", "nope", "--out", str(tmp_path))
        assert wrong.returncode == 2 and wrong.stderr.strip().endswith("cifar10:DIR, blobs"), wrong.stderr
        short = [*RUN, "--rounds", "4", "--eval-every", "1"]
        shm, mpi = run_both(tmp_path, short)
        assert_mpi_gives_the_shared_memory_numbers(shm, mpi)
        params = sum(array.size for array in mpi.final.values())
        up, down = closed_form(params, 2, mpi.metrics["round"])
        # bytes counted at MPI's sends and receives = the method's round_traffic = k values + indices up
        assert_counted_bytes_are_accounted(mpi, "up")
        assert_counted_bytes_are_accounted(mpi, "down")
        assert np.array_equal(mpi.metrics["bytes_up"], up)
        assert np.array_equal(mpi.metrics["bytes_down"], down)
        assert np.array_equal(shm.metrics["bytes_up"], up)
        assert mpi.metrics["loss"][-1] < mpi.metrics["loss"][0]
        # its own option, --topk-fraction, changes k and so the bytes
        common = ["run", *short, "--out", str(tmp_path), "--quiet"]
        ist(*common, "--name", "quarter", "--transport", "mpi", "--topk-fraction", "0.25", check=True, timeout=300)
        quarter = read_run(tmp_path / "quarter.h5")
        assert quarter.config["topk_fraction"] == 0.25
        assert np.array_equal(quarter.metrics["bytes_up_measured"], closed_form(params, 2, quarter.metrics["round"],
                                                                                0.25)[0])
        line = one_error_line(ist(*common, "--name", "bad", "--topk-fraction", "2"))
        assert "--topk-fraction: 2.0 is not allowed; expected a number in (0, 1]" in line, line

        sweep = tmp_path / "sweep"
        result = ist("sweep", "--grid", "lr=0.05,0.1", "--out", str(sweep), "-j", "1", "--",
                     *RUN, "--rounds", "3", "--dataset", "blobs", check=True, timeout=600)
        assert "executed 2 (2 completed)" in result.stdout + result.stderr
        files = sorted(sweep.glob("*.h5"))
        assert len(files) == 2
        for path in files:
            with h5py.File(path, "r") as f:
                assert f["config"].attrs["algorithm"] == "topk-dp"
                assert f["config"].attrs["dataset"] == "blobs"
                assert f.attrs["status"] == "completed"
            # the plug-in's data set was trained on: 16 features in, 4 classes out
            widths = sorted(array.shape for array in read_run(path).final.values() if array.ndim == 2)
            assert widths == sorted([(16, 24), (24, 16), (16, 4)]), widths
        report = ist("report", str(sweep), check=True)
        assert "2 runs in 2 groups" in report.stdout
        assert "0.05" in report.stdout and "0.1" in report.stdout
    assert "topk-dp" not in algorithms_in_help() and "--topk-fraction" not in ist("run", "--help").stdout
    gone = ist("run", *RUN, "--rounds", "1", "--out", str(tmp_path), "--name", "gone")
    assert gone.returncode == 2 and "'topk-dp' is not allowed" in gone.stderr
    gone = ist("run", "--dataset", "blobs", "--rounds", "1", "--out", str(tmp_path), "--name", "gone")
    assert gone.returncode == 2 and "--dataset: 'blobs' is not allowed" in gone.stderr
    assert not (tmp_path / "gone.h5").exists()


def test_a_broken_or_shadowing_plugin_costs_one_line_each(tmp_path):
    env = fake_distribution(tmp_path, "[ist_cli.methods]\nmissing = no_such_module:Plan\ndp = os:path\n"
                                      "notaplan = os:path\n")
    result = ist("run", "--help", env=env)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 3, lines
    assert all(line.startswith("ist: warning: plug-in '") for line in lines)
    assert "'missing'" in lines[1] and "ModuleNotFoundError" in lines[1]
    assert "'dp'" in lines[0] and "built-in" in lines[0]
    assert "'notaplan'" in lines[2] and "MethodPlan" in lines[2]
    assert "--algorithm [ist|gd|dcgd|dp|local-sgd|single" in result.stdout  # the built-ins, unchanged
    # a run says it once, not once per worker process
    run = ist("run", "--model", "quadratic", "--dim", "8", "--rounds", "2", "--workers", "2", "--quiet",
              "--out", str(tmp_path), env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert [line for line in run.stderr.splitlines() if line.strip()] == lines


def test_a_plugin_that_fails_at_run_time_is_one_error_line(tmp_path):
    (tmp_path / "half_plugin.py").write_text(
        "from ist_cli.algorithms.plans import DPPlan\n\n"
        "class HalfPlan(DPPlan):\n    algorithm = 'half'\n    method = 'no_such_module:Method'\n\n"
        "def broken(*, seed, dtype):\n    raise RuntimeError('no data here')\n")
    env = fake_distribution(tmp_path, "[ist_cli.methods]\nhalf = half_plugin:HalfPlan\n"
                                      "[ist_cli.datasets]\nbroken = half_plugin:broken\n")
    out = tmp_path / "out"
    method = ist("run", "--algorithm", "half", "--out", str(out), env=env)
    line = one_error_line(method)
    assert "plug-in 'half'" in line and "no_such_module:Method" in line
    data = ist("run", "--dataset", "broken", "--out", str(out), env=env)
    line = one_error_line(data)
    assert "plug-in 'broken'" in line and "no data here" in line
    assert not out.exists() or not list(out.glob("*.h5"))


def test_a_plugin_methods_own_options_are_in_help_parsed_and_checked(tmp_path):
    (tmp_path / "knob_plugin.py").write_text(
        "from ist_cli.algorithms.plans import DPPlan\n\n"
        "class KnobPlan(DPPlan):\n    algorithm = 'knob'\n    method = 'knob_plugin:Method'\n"
        "    options = {'knob_width': (3, 'how wide the knob is.'), 'knob_on': (False, 'turn it on.')}\n\n"
        "class ClashPlan(DPPlan):\n    algorithm = 'clash'\n    method = 'knob_plugin:Method'\n"
        "    options = {'lr': (0.5, 'a second learning rate.')}\n")
    env = fake_distribution(tmp_path, "[ist_cli.methods]\nknob = knob_plugin:KnobPlan\nclash = knob_plugin:ClashPlan\n")
    result = ist("run", "--help", env=env, check=True)
    text = " ".join(result.stdout.split())
    mlp_section = text[text.index("MLP options:"):text.index("MLP optimizer")]
    assert "--knob-width" in mlp_section and "knob: how wide the knob is. (default: 3)" in mlp_section, mlp_section
    assert "--knob-on / --no-knob-on knob: turn it on." in mlp_section
    # a key of a built-in setting is refused: the plug-in is left out with one line
    assert result.stderr.count("ist: warning:") == 1 and "'clash'" in result.stderr and "'lr'" in result.stderr
    assert "|clash" not in text
    env = fake_distribution(tmp_path / "knob", "[ist_cli.methods]\nknob = knob_plugin:KnobPlan\n")
    env["PYTHONPATH"] += os.pathsep + str(tmp_path)
    line = one_error_line(ist("run", "--algorithm", "knob", "--knob-width", "wide", "--out", str(tmp_path), env=env))
    assert line == "ist: error: --knob-width: 'wide' is not allowed; expected an integer", line
    code = ("from ist_cli.config import resolve_config, settings_from_config as s; "
            "print(s(resolve_config({'algorithm': 'knob', 'knob_width': '7'})).option('knob_width'), "
            "s(resolve_config({'algorithm': 'knob'})).option('knob_on'), "
            "'knob_width' in resolve_config({'algorithm': 'dp'}))")
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert printed.stdout.split() == ["7", "False", "False"], printed.stderr
