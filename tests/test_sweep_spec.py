"""Sweep file expansion, bad sweep files (exit 2, one line naming the key path, nothing run),
and claim staleness. Fast: no run is executed here."""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ist_cli.config import config_hash, resolve_config
from ist_cli.errors import UserError
from ist_cli.sweep.claims import ClaimBook, claim_path
from ist_cli.sweep.executors import set_args
from ist_cli.sweep.files import move_aside, remove_orphaned_temporaries
from ist_cli.sweep.spec import load_sweep
from tests.helpers import dead_pid, files_in, ist, one_error_line

BASE = """
[base]
model = "quadratic"
workers = 2
dim = 8
rounds = 5
"""


def write(tmp_path: Path, text: str, name: str = "grid.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_grid_zip_seeds_expand_to_the_product_with_ids_of_resolved_configs(tmp_path):
    spec = load_sweep(write(tmp_path, "seeds = [3, 4]\n" + BASE + """
[grid]
lr = [0.01, 0.02, 0.05]
algorithm = ["ist", "dcgd"]
[zip]
workers = [2, 4]
sketch = ["perm", "rand"]
"""))
    expected = []
    for lr, algorithm in itertools.product([0.01, 0.02, 0.05], ["ist", "dcgd"]):
        for workers, sketch in [(2, "perm"), (4, "rand")]:
            for seed in (3, 4):
                config = resolve_config({"model": "quadratic", "workers": workers, "dim": 8, "rounds": 5, "lr": lr,
                                         "algorithm": algorithm, "sketch": sketch, "seed": seed})
                expected.append(config_hash(config))
    assert spec.run_ids == expected
    assert len(spec.runs) == 3 * 2 * 2 * 2
    assert spec.runs[0].point == {"lr": 0.01, "algorithm": "ist", "workers": 2, "sketch": "perm", "seed": 3}
    assert spec.max_workers() == 4


def test_replicates_count_up_from_the_base_seed(tmp_path):
    spec = load_sweep(write(tmp_path, "replicates = 3\n" + BASE.replace("rounds = 5", "rounds = 5\nseed = 10")))
    assert [run.config["seed"] for run in spec.runs] == [10, 11, 12]


def test_points_resolving_to_the_same_config_run_once(tmp_path):
    # gd ignores the sketch: both sketch values give one gd config, so 3 runs, not 4
    spec = load_sweep(write(tmp_path, BASE + """
[grid]
algorithm = ["gd", "ist"]
sketch = ["perm", "identity"]
"""))
    assert spec.duplicates == 1 and len(spec.runs) == 3  # gd's two sketch values are one run
    configs = {json.dumps(run.config, sort_keys=True) for run in spec.runs}
    assert len(configs) == len(spec.runs)
    dup = load_sweep(write(tmp_path, BASE + """
[grid]
lr = [0.1, 0.10, 1e-1]
""", "dup.toml"))
    assert len(dup.runs) == 1 and dup.duplicates == 2


def test_set_args_resolve_back_to_the_same_config(tmp_path):
    """The subprocess gets ``--set`` pairs; they must resolve to the very config the id hashes."""
    from ist_cli.config import parse_set_overrides

    for config in (resolve_config({"model": "quadratic", "lr": 0.1 / 3, "interpolation": True, "latency": "1ms"}),
                   resolve_config({"model": "mlp", "hidden": [64, 32], "workers": 2, "momentum": 0.9})):
        pairs = set_args(config)[1::2]
        assert resolve_config(parse_set_overrides(pairs)) == config


BAD_FILES = [
    ("unknown key in grid", BASE + "[grid]\nlrr = [0.1]\n", "grid: unknown key 'lrr'"),
    ("unknown top-level key", "seedz = [1]\n" + BASE, "unknown key 'seedz'"),
    ("top-level key inside a table", BASE + "seeds = [1]\n", "base.seeds: 'seeds' is a top-level key"),
    ("unknown key in base", BASE + "wokers = 2\n", "base: unknown key 'wokers'"),
    ("zip axes of unequal length", BASE + "[zip]\nlr = [0.1, 0.2]\nseed = [1]\n", "zip: axes must have equal lengths"),
    ("empty grid", BASE + "[grid]\n", "grid: empty table"),
    ("empty axis", BASE + "[grid]\nlr = []\n", "grid.lr: empty array"),
    ("wrong type in an axis", BASE + "[grid]\nlr = [0.1, 0.2, 'abc']\n", "grid.lr[2]: 'abc' is not allowed; expected a number > 0"),
    ("wrong type in base", BASE.replace("workers = 2", "workers = 'many'"), "base.workers: 'many' is not allowed"),
    ("axis not an array", BASE + "[grid]\nlr = 0.1\n", "grid.lr: 0.1 is not allowed; expected an array"),
    ("invalid TOML", BASE + "[grid\nlr = [0.1]\n", "is not valid TOML"),
    ("seeds and replicates", "seeds = [1]\nreplicates = 2\n" + BASE, "seeds and replicates are both set"),
    ("bad seed", "seeds = [1, -2]\n" + BASE, "seeds[1]: -2 is not allowed"),
    ("bad choice", BASE + "[grid]\nsketch = ['perm', 'sparse']\n", "grid.sketch[1]: 'sparse' is not allowed; expected one of perm, perm-precond, rand, identity"),
    ("bad combination", BASE + "[grid]\nworkers = [2, 3]\n", "dim: 8 cannot be split"),
]


@pytest.mark.parametrize("label,text,fragment", BAD_FILES, ids=[case[0] for case in BAD_FILES])
def test_bad_sweep_files_name_the_key_path(tmp_path, label, text, fragment):
    with pytest.raises(UserError) as info:
        load_sweep(write(tmp_path, text))
    message = str(info.value)
    assert fragment in message and "\n" not in message, message
    assert message.startswith("grid.toml") or message.startswith("sweep file '"), message


@pytest.mark.parametrize("label,text,fragment", [BAD_FILES[0], BAD_FILES[3], BAD_FILES[4], BAD_FILES[6], BAD_FILES[9]],
                         ids=["unknown-key", "zip-lengths", "empty-grid", "wrong-type", "invalid-toml"])
def test_cli_rejects_bad_sweep_files_and_executes_nothing(tmp_path, label, text, fragment):
    out = tmp_path / "out"
    result = ist("sweep", str(write(tmp_path, text)), "--out", str(out), timeout=60)
    line = one_error_line(result)
    assert fragment in line
    assert not out.exists(), files_in(out)


def test_changed_grid_is_refused_and_nothing_runs(tmp_path):
    """The run list is fixed once the manifest exists; --dry-run writes nothing."""
    grid = write(tmp_path, BASE + "[grid]\nlr = [0.01]\n")
    out = tmp_path / "out"
    dry = ist("sweep", str(grid), "--out", str(out), "--dry-run", timeout=60)
    assert dry.returncode == 0 and "dry run: nothing executed" in dry.stdout
    assert not out.exists()
    spec = load_sweep(grid)
    out.mkdir()
    (out / "sweep.json").write_text(json.dumps({"schema": 1, "name": "grid", "runs": [
        {"id": "000000000000", "status": "pending", "attempts": 0, "file": "000000000000.h5"}]}))
    result = ist("sweep", str(grid), "--out", str(out), timeout=60)
    assert "holds a different run list (1 runs added, 1 removed" in one_error_line(result)
    assert files_in(out) == [".sweep.lock", "sweep.json"]
    assert spec.run_ids[0] not in (out / "sweep.json").read_text()


# ----------------------------------------------------------------------------- claims
def test_claims_are_exclusive_and_stale_ones_are_taken_over(tmp_path):
    mine, other = ClaimBook(tmp_path), ClaimBook(tmp_path)
    try:
        assert mine.try_claim("a") == (True, None)
        ok, holder = other.try_claim("a")  # same host, live pid: not stale
        assert not ok and holder["pid"] == os.getpid()
        # a claim left by a dead process on this host is taken over at once
        claim_path(tmp_path, "b").write_text(json.dumps({"host": socket.gethostname(), "pid": dead_pid()}))
        ok, stale = other.try_claim("b")
        assert ok and stale["pid"] != os.getpid()
        # a dead claimer whose ist run child still lives is not stale
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            claim_path(tmp_path, "c").write_text(json.dumps({"host": socket.gethostname(), "pid": dead_pid(),
                                                              "run_pid": child.pid}))
            assert other.try_claim("c")[0] is False
        finally:
            child.kill()
            child.wait()
        assert other.try_claim("c")[0] is True
        # another host: stale only when the heartbeat (mtime) is old
        path = claim_path(tmp_path, "d")
        path.write_text(json.dumps({"host": "elsewhere", "pid": 1}))
        assert other.try_claim("d")[0] is False
        old = time.time() - 10_000
        os.utime(path, (old, old))
        assert other.try_claim("d")[0] is True
        other.release("b")
        assert not claim_path(tmp_path, "b").exists()
    finally:
        mine.close()
        other.close()
    assert sorted(p.name for p in tmp_path.glob("*.lock")) == [".sweep.lock"]  # every claim released


def test_move_aside_never_replaces_a_file(tmp_path):
    first = tmp_path / "abc.h5"
    first.write_text("one")
    (tmp_path / "abc.failed-1.h5").write_text("older")
    target = move_aside(first, "failed")
    assert target.name == "abc.failed-2.h5" and target.read_text() == "one"
    assert (tmp_path / "abc.failed-1.h5").read_text() == "older" and not first.exists()


def test_only_temporaries_of_dead_writers_are_removed(tmp_path):
    dead = dead_pid()
    orphans = [f".abc.lock.{dead}.tmp", f".manifest.json.{dead}.tmp", f".abc.h5.{dead}.tmp"]
    kept = [f".abc.lock.{os.getpid()}.tmp", "abc.h5", "abc.lock", f"abc.{dead}.tmp", ".sweep.lock"]
    for name in orphans + kept:
        (tmp_path / name).write_text("x")
    assert sorted(remove_orphaned_temporaries(tmp_path)) == sorted(orphans)
    assert files_in(tmp_path) == sorted(kept)
