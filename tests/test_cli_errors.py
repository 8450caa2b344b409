"""Bad input: one line naming the value and what is allowed, exit 2, no traceback, no file."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import files_in, ist, ist_json, one_error_line

QUAD = ["run", "--model", "quadratic", "--rounds", "3", "--quiet"]


@pytest.mark.parametrize(
    "args,needles",
    [
        (["--workers", "0"], ["--workers", "'0'", ">= 1"]),
        (["--workers", "two"], ["--workers", "'two'", "integer"]),
        (["--workers", "4", "--dim", "10"], ["--dim", "10", "multiple of 4"]),
        (["--lr", "0"], ["--lr", "'0'", "> 0"]),
        (["--lr", "-1"], ["--lr", "'-1'", "> 0"]),
        (["--lr", "nan"], ["--lr", "'nan'"]),
        (["--algorithm", "adam"], ["--algorithm", "'adam'", "ist, gd, dcgd"]),
        (["--sketch", "gauss"], ["--sketch", "'gauss'", "perm, perm-precond, rand, identity"]),
        (["--set", "bogus=1"], ["--set", "'bogus'", "allowed keys"]),
        (["--set", "local_steps"], ["--set", "key=value"]),
        (["--set", "lr=abc"], ["lr", "'abc'", "number"]),
        (["--algorithm", "gd", "--local-steps", "3"], ["--local-steps", "3", "expected 1"]),
        (["--bandwidth", "fast"], ["--bandwidth", "'fast'", "10Gbit"]),
        (["--sketch", "rand", "--sketch-q", "99"], ["--sketch-q", "99", "dimension"]),
        (["--problem-file", "/nonexistent/p.npz", "--workers", "2", "--dim", "4"], ["/nonexistent/p.npz", "does not exist"]),
        (["--no-such-flag"], ["--no-such-flag"]),
    ],
)
def test_bad_run_options(tmp_path, args, needles):
    line = one_error_line(ist(*QUAD, "--out", str(tmp_path / "out"), *args))
    for needle in needles:
        assert needle in line, (needle, line)
    assert files_in(tmp_path / "out") == []


def test_unknown_model(tmp_path):
    line = one_error_line(ist("run", "--model", "rnn", "--out", str(tmp_path)))
    assert "'rnn'" in line and "quadratic, mlp, cnn" in line
    assert files_in(tmp_path) == []


def test_malformed_toml(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("workers = = 3\n")
    line = one_error_line(ist(*QUAD, "--config", str(bad), "--out", str(tmp_path / "out")))
    assert "bad.toml" in line and "not valid TOML" in line
    assert files_in(tmp_path / "out") == []


def test_unknown_key_in_toml(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('model = "quadratic"\nlearning_rate = 0.1\n')
    line = one_error_line(ist("run", "--config", str(config), "--out", str(tmp_path / "out")))
    assert "c.toml" in line and "'learning_rate'" in line


def test_output_directory_that_cannot_be_written(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    line = one_error_line(ist(*QUAD, "--out", str(blocker / "sub")))
    assert "--out" in line and str(blocker / "sub") in line
    assert blocker.read_text() == "not a directory"


def test_existing_run_file_is_never_overwritten(tmp_path):
    ist(*QUAD, "--workers", "2", "--dim", "4", "--out", str(tmp_path), "--name", "r", check=True)
    before = (tmp_path / "r.h5").read_bytes()
    # a different config under the same --name is refused
    line = one_error_line(ist(*QUAD, "--workers", "2", "--dim", "4", "--lr", "0.01", "--out", str(tmp_path),
                              "--name", "r"))
    assert "already exists" in line and "different run" in line
    assert (tmp_path / "r.h5").read_bytes() == before
    ist(*QUAD, "--workers", "2", "--dim", "4", "--out", str(tmp_path), "--name", "r", "--overwrite", check=True)
    assert (tmp_path / "r.h5").read_bytes() != before  # recomputed: new timestamps and timings


@pytest.mark.slow
def test_rerunning_an_identical_finished_run_reports_it_without_recomputing(tmp_path):
    args = (*QUAD, "--workers", "2", "--dim", "4", "--out", str(tmp_path))
    first = ist_json(*args)
    path = tmp_path / Path(first["file"]).name
    stat = path.stat()
    started = time.perf_counter()
    again = ist(*[a for a in args if a != "--quiet"], "--json")
    elapsed = time.perf_counter() - started
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert second["reused"] is True and second["run_id"] == first["run_id"] and second["file"] == first["file"]
    assert second["loss"] == first["loss"] and second["rounds_completed"] == first["rounds_completed"]
    assert "already holds this run" in again.stderr and "starting" not in again.stderr
    after = path.stat()
    assert (after.st_mtime_ns, after.st_ino, after.st_size) == (stat.st_mtime_ns, stat.st_ino, stat.st_size)
    # no worker started: the time is the interpreter's start-up, far below a run's (reported, not tuned)
    import_only = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import ist_cli.cli"], check=True)
    import_only = time.perf_counter() - import_only
    assert elapsed < 2.0 or elapsed < import_only + 1.0, (elapsed, import_only)


def test_bad_data_files_through_the_cli(tmp_path):
    import numpy as np

    missing = one_error_line(ist("run", "--model", "mlp", "--dataset", f"npz:{tmp_path}/none.npz",
                                 "--out", str(tmp_path / "out")))
    assert f"{tmp_path}/none.npz" in missing
    bad_labels = tmp_path / "bad.npz"
    rng = np.random.default_rng(0)
    np.savez(bad_labels, X_train=rng.standard_normal((40, 3)), y_train=np.r_[np.zeros(39), -1],
             X_test=rng.standard_normal((10, 3)), y_test=np.zeros(10))
    line = one_error_line(ist("run", "--model", "mlp", "--workers", "2", "--hidden", "8",
                              "--dataset", f"npz:{bad_labels}", "--out", str(tmp_path / "out")))
    assert "bad.npz" in line and "label" in line
    assert files_in(tmp_path / "out") == []
