"""Sweeps from the command line, the parts that run nothing: --grid terms, --set on a file,
what belongs before and after --, and a setting given twice to ist run. (Running, resuming
and never-twice are in tests/test_sweep.py, for a file and its command line alike.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from ist_cli.errors import UserError
from ist_cli.sweep.cmdline import command_line_sweep, parse_grid_terms
from ist_cli.sweep.spec import parse_sweep
from tests.helpers import files_in, ist, one_error_line

RUN = ["--", "--model", "quadratic", "--workers", "1", "--dim", "4", "--rounds", "3"]


def test_grid_terms_split_on_commas_or_on_semicolons_when_values_hold_commas() -> None:
    assert parse_grid_terms(["lr=0.01,0.1", "hidden=16,16;32", "local-steps=1"]) == {
        "lr": ["0.01", "0.1"], "hidden": ["16,16", "32"], "local_steps": ["1"]}
    for bad in ("lr", "lr=", "=1,2", "lr=0.1,,0.2", "nosuchkey=1"):
        with pytest.raises(UserError):
            parse_grid_terms([bad])
    with pytest.raises(UserError, match="given twice"):
        parse_grid_terms(["lr=0.1", "lr=0.2"])


def test_a_command_line_grid_has_the_run_ids_of_its_file() -> None:
    base = {"model": "quadratic", "workers": "1", "dim": "4"}
    spec = command_line_sweep(["lr=0.01,0.02", "seed=0,1"], base, name="g")
    file = parse_sweep({"name": "g", "seeds": [0, 1], "base": {"model": "quadratic", "workers": 1, "dim": 4},
                        "grid": {"lr": [0.01, 0.02]}}, Path("g.toml"))
    assert spec.run_ids == file.run_ids and len(spec.run_ids) == 4
    other = command_line_sweep(["lr=0.01,0.02"], base)
    assert other.name == command_line_sweep(["lr=0.01,0.02"], dict(base)).name  # same command, same directory
    assert other.name != command_line_sweep(["lr=0.01,0.03"], base).name


def test_command_line_mistakes_are_one_line_and_create_nothing(tmp_path) -> None:
    out = tmp_path / "out"
    cases = [
        (["--grid", "lr=0.01,abc", *RUN], "'abc'"),
        (["--grid", "lr=0.01", "--", "--model", "quadratic", "--lr", "0.1"], "--grid lr: also given"),
        (["--grid", "lr=0.01", "--", "--model", "quadratic", "--out", "x"], "--out after --"),
        (["--grid", "lr=0.01", "--", "--model", "quadratic", "--seed", "1", "--seed", "2"], "--seed given 2 times"),
        (["--grid", "lr=0.01", "--", "--model", "quadratic", "--nosuch", "1"], "--nosuch"),
        (["a.toml", "b.toml"], "expected one GRID.toml"),
    ]
    for args, expected in cases:
        line = one_error_line(ist("sweep", "--out", str(out), *args))
        assert expected in line, (args, line)
    assert files_in(tmp_path) == []


def test_set_on_a_sweep_file_is_checked_and_may_not_replace_an_axis(tmp_path) -> None:
    grid = tmp_path / "g.toml"
    grid.write_text('name = "g"\n[base]\nmodel = "quadratic"\nworkers = 1\ndim = 4\n[grid]\nlr = [0.01, 0.02]\n')
    out = tmp_path / "out"
    assert "an axis of [grid]" in one_error_line(ist("sweep", str(grid), "--set", "lr=0.5", "--out", str(out)))
    assert "--set dim" in one_error_line(ist("sweep", str(grid), "--set", "dim=-1", "--out", str(out)))
    dry = ist("sweep", str(grid), "--set", "dim=5", "--dry-run", "--out", str(out), check=True)
    assert "2 runs" in dry.stdout and not out.exists()


def test_ist_run_refuses_a_setting_given_twice(tmp_path) -> None:
    line = one_error_line(ist("run", "--model", "quadratic", "--seed", "1", "--seed", "2", "--out", str(tmp_path)))
    assert "--seed given 2 times (1, 2)" in line and "--grid seed=1,2" in line
    assert files_in(tmp_path) == []
