"""Runs as data: ``ist_cli.load_runs`` and ``.curves()`` checked against values read with h5py
alone; ``ist ls`` on a directory of runs of two models, a failed run, a ``.tmp`` and a file
that is not a run; typed config attributes, integer rounds and git provenance in the file."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from ist_cli.io.provenance import git_state
from ist_cli.io.runfile import read_run
from tests.helpers import ist, one_error_line

pytestmark = pytest.mark.slow  # real runs and a sweep
pd = pytest.importorskip("pandas")
xr = pytest.importorskip("xarray")

ROOT = Path(__file__).resolve().parents[1]
GRID = """name = "table"
seeds = [0, 1]
[base]
model = "quadratic"
workers = 2
dim = 4
rounds = 6
eval_every = 2
[grid]
lr = [0.02, 0.05]
"""


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("table")
    (root / "grid.toml").write_text(GRID)
    out = root / "out"
    result = ist("sweep", str(root / "grid.toml"), "--out", str(out), "--jobs", "2", "--quiet", timeout=300)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two models, a failed run (a worker raises in round 2), an unfinished .tmp, a non-run .h5."""
    out = tmp_path_factory.mktemp("mixed")
    for args in (("--model", "quadratic", "--dim", "6", "--rounds", "3", "--name", "quad"),
                 ("--model", "quadratic", "--algorithm", "gd", "--dim", "6", "--rounds", "3", "--name", "quad-gd"),
                 ("--model", "mlp", "--hidden", "8,8", "--local-steps", "2", "--rounds", "2", "--eval-every", "1",
                  "--name", "mlp")):
        ist("run", "--workers", "2", *args, "--out", str(out), "--quiet", check=True)
    code = ("import functools, sys; import ist_cli.cli.run as run_cli; from ist_cli.runner import run_experiment; "
            "from tests.programs import failing_transport; "
            "run_cli.run_experiment = functools.partial(run_experiment, transport=failing_transport(2)); "
            "from ist_cli.cli import main; main(sys.argv[1:])")
    failed = subprocess.run([sys.executable, "-c", code, "run", "--model", "quadratic", "--workers", "2", "--dim", "6",
                             "--rounds", "5", "--out", str(out), "--name", "broken", "--quiet"],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert failed.returncode == 1, failed.stderr
    (out / "dead.h5.tmp").write_bytes(b"")
    (out / "notes.h5").write_bytes(b"not hdf5")
    return out


def by_h5py(path: Path) -> dict:
    """What a user would read with h5py and json alone."""
    with h5py.File(path, "r") as handle:
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in handle.attrs.items()}
        config = json.loads(handle["config"][()])
        metrics = {name: handle["metrics"][name][()] for name in handle["metrics"]}
        config_attrs = dict(handle["config"].attrs)
    return {"attrs": attrs, "config": config, "metrics": metrics, "config_attrs": config_attrs}


def test_load_runs_on_a_sweep_equals_what_h5py_reads(sweep_dir: Path) -> None:
    from ist_cli import load_runs

    table = load_runs(sweep_dir)
    files = sorted(sweep_dir.glob("*.h5"))
    assert isinstance(table, pd.DataFrame) and len(table) == len(files) == 4
    assert sorted(table.index) == sorted(p.stem for p in files)
    for path in files:
        raw = by_h5py(path)
        row = table.loc[path.stem]
        assert row["status"] == raw["attrs"]["status"] == "completed"
        assert row["run_id"] == raw["attrs"]["run_id"] and row["git_commit"] == raw["attrs"].get("git_commit")
        for key, value in raw["config"].items():
            cell = row[key]
            assert (cell is None or cell != cell) if value is None else cell == value, key
        for name, values in raw["metrics"].items():
            if name != "round":
                measured = values[~np.isnan(values)]
                assert row[name] == measured[-1], name
    assert set(table["lr"]) == {0.02, 0.05} and set(table["seed"]) == {0, 1}
    only = load_runs(sweep_dir, where={"lr": 0.05})
    assert len(only) == 2 and set(only["lr"]) == {0.05}


def test_curves_are_an_xarray_dataset_indexed_by_run_and_round(sweep_dir: Path) -> None:
    from ist_cli import load_runs

    table = load_runs(sweep_dir)
    subset = table[table["lr"] == 0.02]
    curves = subset.curves()
    assert isinstance(curves, xr.Dataset) and curves.loss.dims == ("run", "round")
    assert list(curves["run"].values) == list(subset.index)
    assert curves["round"].dtype == np.int64 and list(curves["round"].values) == [0, 2, 4, 6]
    for name in subset.index:
        raw = by_h5py(sweep_dir / f"{name}.h5")
        assert raw["metrics"]["round"].dtype == np.int64  # integer rounds in the file itself
        for metric in ("loss", "bytes_up", "f_gap"):
            np.testing.assert_array_equal(curves[metric].sel(run=name).values, raw["metrics"][metric])
        assert curves["run_id"].sel(run=name).item() == raw["attrs"]["run_id"]


def test_config_is_also_typed_attributes_of_the_config_dataset(sweep_dir: Path) -> None:
    raw = by_h5py(sorted(sweep_dir.glob("*.h5"))[0])
    typed = raw["config_attrs"]
    for key, value in raw["config"].items():
        if value is None:
            assert key not in typed
        else:
            assert typed[key] == value, key
    assert typed["lr"].dtype == np.float64 and typed["workers"].dtype == np.int64
    assert isinstance(typed["model"], str)


def test_curves_of_runs_of_two_models_leave_nan_where_a_run_lacks_a_metric(mixed_dir: Path) -> None:
    from ist_cli import load_runs

    table = load_runs(mixed_dir)
    assert set(table.index) == {"quad", "quad-gd", "mlp", "broken"}  # the .tmp and the non-run file are not rows
    assert table.loc["broken", "status"] == "failed" and "planned failure" in table.loc["broken", "error"]
    curves = table.loc[["quad", "mlp"]].curves()
    assert np.isnan(curves.test_accuracy.sel(run="quad")).all()
    np.testing.assert_array_equal(curves.step.sel(run="mlp").values[:3], by_h5py(mixed_dir / "mlp.h5")["metrics"]["step"])


def test_ist_ls_lists_a_mixed_directory_and_filters(mixed_dir: Path) -> None:
    listed = ist("ls", str(mixed_dir), check=True)
    for name in ("quad", "quad-gd", "mlp", "broken"):
        assert f" {name} " in listed.stdout, listed.stdout
    assert "failed" in listed.stdout and "planned failure" in listed.stdout
    assert "unfinished: " in listed.stdout and "dead.h5.tmp" in listed.stdout
    assert "not a run file: " in listed.stdout and "notes.h5" in listed.stdout
    filtered = ist("ls", str(mixed_dir), "--where", "algorithm=gd", check=True)
    assert " quad-gd " in filtered.stdout and " quad " not in filtered.stdout and " mlp " not in filtered.stdout
    both = ist("ls", str(mixed_dir), "--where", "model=quadratic", "--where", "status=completed", check=True)
    assert " quad " in both.stdout and " quad-gd " in both.stdout and " broken " not in both.stdout
    line = one_error_line(ist("ls", str(mixed_dir), "--where", "nosuchkey=1"))
    assert "'nosuchkey'" in line and "algorithm" in line
    assert "KEY=VALUE" in one_error_line(ist("ls", str(mixed_dir), "--where", "algorithm"))
    assert "not a directory" in one_error_line(ist("ls", str(mixed_dir / "nowhere")))
    chosen = ist("ls", str(mixed_dir), "--columns", "dim,test_accuracy", check=True)
    header = next(line for line in chosen.stdout.splitlines() if " name " in line)
    assert "dim" in header and "test_accuracy" in header and "algorithm" not in header
    assert "no run has this column" in one_error_line(ist("ls", str(mixed_dir), "--columns", "nosuch"))


def test_old_files_with_float_rounds_read_as_integers(sweep_dir: Path, tmp_path: Path) -> None:
    source = sorted(sweep_dir.glob("*.h5"))[0]
    old = tmp_path / "old.h5"
    old.write_bytes(source.read_bytes())
    with h5py.File(old, "r+") as handle:  # rewrite /metrics/round as the float64 older versions wrote
        rounds = handle["metrics/round"][()]
        for name in handle["metrics"]:
            if name != "round":
                handle["metrics"][name].dims[0].detach_scale(handle["metrics/round"])
        del handle["metrics/round"]
        handle["metrics"].create_dataset("round", data=rounds.astype(np.float64))
    data = read_run(old)
    assert data.metrics["round"].dtype == np.int64
    np.testing.assert_array_equal(data.metrics["round"], rounds)


def test_git_state_flags_local_changes_and_hashes_the_diff(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "a.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "a.py"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert git_state(repo) == {"git_commit": head, "git_dirty": False}
    git_state.cache_clear()
    (repo / "a.py").write_text("x = 2\n")
    diff = subprocess.run([*git, "diff", "HEAD", "--binary"], capture_output=True, check=True).stdout
    state = git_state(repo)
    assert state["git_dirty"] is True and state["git_diff_sha256"] == hashlib.sha256(diff).hexdigest()
    git_state.cache_clear()
    assert git_state(tmp_path) == {}
