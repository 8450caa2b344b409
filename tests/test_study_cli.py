"""``ist study`` end to end: real ``ist run`` trials through the sweep engine, then resume."""

from __future__ import annotations

import json

import h5py
import pytest

from ist_cli.study.spec import load_study
from tests.helpers import ist, one_error_line

STUDY = """
name = "tiny"
[base]
model = "mlp"
algorithm = "single"
workers = 1
hidden = [8]
rounds = 2
eval_every = 1
dataset = "synthetic"
synthetic_samples = 200
synthetic_features = 8
goal_error = 0.001
goal_metric = "train_error"
[study]
batch_sizes = [4, 16]
trials = 2
[search]
lr = { log = [0.01, 1.0] }
"""


@pytest.mark.slow
def test_study_runs_every_trial_once_and_resumes_with_nothing_to_do(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(STUDY)
    out = tmp_path / "out"
    first = ist("study", str(path), "--out", str(out), "--jobs", "2", "--json", "--quiet", timeout=900)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["executed"] == {"completed": 4} and summary["sampler"] == "sobol"
    spec = load_study(path)
    for trial in spec.trials:
        with h5py.File(out / f"{trial.run_id}.h5", "r") as handle:
            config = json.loads(handle["config"][()])
            assert handle.attrs["run_id"] == trial.run_id
        assert (config["batch_size"], config["lr"], config["seed"]) == (trial.batch_size, trial.values["lr"], trial.index)
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["spec"]["study"]["sampler"] == "sobol"
    again = ist("study", str(path), "--out", str(out), "--json", "--quiet", timeout=300)
    assert json.loads(again.stdout)["executed"] == {}
    report = json.loads(ist("report", str(out), "--format", "json").stdout)
    # the goal is out of reach in 2 rounds: every trial is incomplete, none reached
    assert [(row["batch_size"], row["incomplete"], row["steps_to_result"]) for row in report["rows"]] == [
        (4, 2, None), (16, 2, None)]
    changed = ist("study", str(path), "--out", str(out), "--sampler", "halton", "--quiet", timeout=300)
    assert changed.returncode == 2 and "different run list" in changed.stderr


def test_a_study_without_a_goal_is_one_line_exit_2_and_nothing_created(tmp_path):
    path = tmp_path / "nogoal.toml"
    path.write_text(STUDY.replace('goal_error = 0.001\ngoal_metric = "train_error"\n', ""))
    out = tmp_path / "out"
    line = one_error_line(ist("study", str(path), "--out", str(out)))
    assert "nogoal.toml: base.goal_error: missing" in line and "goal_error = 0.05" in line
    assert not out.exists()


def test_refusing_a_study_file_never_loads_matplotlib(tmp_path):
    """Only ``ist report`` draws: ``ist study`` refusing its input (or running trials) does not
    pay for importing matplotlib (0.7 s of CPU)."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "ist_cli", "study", str(tmp_path / "none.toml")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "ist_cli.study.spec" in imported and "matplotlib" not in imported
