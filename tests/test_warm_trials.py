"""Warm trial execution (``--isolation warm``, the default) against the subprocess path
(``--isolation process``), and a one-worker ``single`` run in its own process against the
shared-memory pool: the same numbers bit for bit; a trial that segfaults, is killed or hangs
is a failed trial and the study goes on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from ist_cli.algorithms.plans import runs_in_process
from ist_cli.config import resolve_config
from ist_cli.io.metric_info import TIMING_METRICS
from ist_cli.io.runfile import read_run
from ist_cli.runner import run_experiment
from ist_cli.runtime.pool import shared_memory_transport
from ist_cli.sweep.executors import LocalExecutor, WarmExecutor, make_executor
from ist_cli.sweep.spec import PlannedRun
from tests.helpers import ist, live_rounds

STUDY_LIKE = {"model": "mlp", "algorithm": "single", "workers": 1, "dataset": "digits", "hidden": [32],
              "norm": "none", "validation_fraction": 0.1, "goal_error": 0.1, "max_steps": 300,
              "eval_every_steps": 10, "local_steps": 10, "batch_size": 16, "lr": 0.1}
SINGLE_CASES = [
    {**STUDY_LIKE, "momentum": 0.9},
    {**STUDY_LIKE, "sparsity": 0.9, "snip_batches": "all", "momentum": 0.0},
    {**STUDY_LIKE, "dtype": "float64", "optimizer": "nesterov", "momentum": 0.5, "norm": "batch",
     "noise_scale_every": 1, "goal_error": None},
]


def assert_bitwise_equal(a_path: Path, b_path: Path) -> None:
    a, b = read_run(a_path), read_run(b_path)
    assert a.status == b.status and a.run_id == b.run_id
    assert set(a.metrics) == set(b.metrics)
    for key in set(a.metrics) - set(TIMING_METRICS):
        assert a.metrics[key].tobytes() == b.metrics[key].tobytes(), key
    assert set(a.final) == set(b.final) and a.final
    for key in a.final:
        assert a.final[key].dtype == b.final[key].dtype and a.final[key].tobytes() == b.final[key].tobytes(), key
    for key in ("goal_reached", "steps_to_result", "step_budget", "budget_stopped", "rounds_completed"):
        assert a.attrs.get(key) == b.attrs.get(key), key


def test_the_warm_process_warms_every_entry_and_starts_the_shared_resource_tracker():
    """An entry that no longer resolves (a renamed function) used to be swallowed with every
    entry after it, and each trial then started its own resource tracker and ran git three
    times: 40 ms of a trial's 60."""
    code = textwrap.dedent("""
        import json
        from multiprocessing import resource_tracker
        from ist_cli.cli.trial_server import warm_up
        failed = warm_up()
        print(json.dumps({"failed": failed, "tracker": resource_tracker._resource_tracker._pid is not None}))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"failed": [], "tracker": True}


@pytest.mark.parametrize("config", SINGLE_CASES, ids=["momentum", "snip-sparse", "float64-batchnorm-noise"])
def test_single_in_its_own_process_equals_the_shared_memory_pool_bitwise(tmp_path, config, shm_guard):
    config = {key: value for key, value in config.items() if value is not None}
    assert runs_in_process(resolve_config(config))
    run_experiment(config, out_dir=tmp_path, name="pool", transport=shared_memory_transport)
    run_experiment(config, out_dir=tmp_path, name="own")
    assert_bitwise_equal(tmp_path / "pool.h5", tmp_path / "own.h5")
    run = read_run(tmp_path / "own.h5")
    assert run.metrics["loss"][-1] < run.metrics["loss"][0]  # it trained: equal by doing nothing would not count


def test_only_single_with_one_worker_runs_in_its_own_process():
    for config, expected in (({"model": "mlp", "algorithm": "single"}, True),
                             ({"model": "mlp", "algorithm": "local-sgd", "workers": 1}, False),
                             ({"model": "mlp", "algorithm": "ist", "workers": 2}, False),
                             ({"model": "quadratic", "algorithm": "gd", "workers": 1}, False)):
        assert runs_in_process(resolve_config(config)) is expected, config


def test_a_round_past_its_deadline_kills_a_run_in_its_own_process():
    """A step that never returns (here: sleeping in C) is ended by the round deadline."""
    script = textwrap.dedent("""
        import time, numpy as np
        from ist_cli.runtime.choice import OwnProcessTransport
        from ist_cli.runtime.transport import WorkerProgram
        class Hang(WorkerProgram):
            def setup(self, arrays, worker): pass
            def step(self, round_index, payload):
                if round_index == 2:
                    time.sleep(120)
                return round_index
        transport = OwnProcessTransport(Hang(), {"x": np.zeros(1)}, None, 1, round_timeout=1.0)
        transport.start()
        print(transport.run_round(1), flush=True)
        transport.run_round(2)
        print("not reached", flush=True)
    """)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == -signal.SIGALRM, (result.returncode, result.stderr)
    assert "not reached" not in result.stdout and result.stdout.startswith("[(")
    assert time.monotonic() - started < 50


TINY_STUDY = """
name = "tiny"
[base]
model = "mlp"
algorithm = "single"
workers = 1
dataset = "digits"
hidden = [32]
norm = "none"
validation_fraction = 0.1
goal_error = 0.15
max_steps = 300
eval_every_steps = 10
local_steps = 10
seed = 0
[study]
batch_sizes = [8, 32, 128]
sparsities = [0.0, 0.9]
trials = 2
[search]
lr = { log = [1e-2, 1.0] }
"""


@pytest.mark.slow
def test_a_warm_study_equals_the_subprocess_study_bitwise(tmp_path):
    """Every trial's /metrics, /final and goal attributes, and the K(B) fit of the report.

    Without trial pruning: a pruned trial's budget depends on which trials finished first
    (the answers do not: test_study_acceptance.py), so only unpruned trials are comparable
    row for row."""
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_STUDY)
    outs = {}
    for isolation in ("process", "warm"):
        out = tmp_path / isolation
        result = ist("study", str(path), "--out", str(out), "--jobs", "2", "--json", "--quiet",
                     "--isolation", isolation, "--no-prune-trials", timeout=600)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["executed"] == {"completed": 12}
        outs[isolation] = out
    files = sorted(p.name for p in outs["warm"].glob("*.h5"))
    assert len(files) == 12 and files == sorted(p.name for p in outs["process"].glob("*.h5"))
    for name in files:
        assert_bitwise_equal(outs["process"] / name, outs["warm"] / name)
    assert any(read_run(outs["warm"] / name).attrs["goal_reached"] for name in files)
    reports = []
    for out in outs.values():
        report = ist("report", str(out), "--format", "json", timeout=300)
        assert report.returncode == 0, report.stderr
        reports.append(json.loads(report.stdout))
    assert reports[0] == reports[1]


GRID_LONG = """
name = "long"
seeds = [0, 1, 2, 3]
[base]
model = "mlp"
algorithm = "single"
dataset = "digits"
hidden = [64]
rounds = 4000
eval_every = 400
"""


def _running_pid(out: Path, seen: set[int], deadline: float) -> tuple[str, int]:
    while True:
        assert time.monotonic() < deadline, "no run started"
        time.sleep(0.1)
        try:
            runs = json.loads((out / "sweep.json").read_text())["runs"]
        except (FileNotFoundError, ValueError):
            continue
        for run in runs:
            pid = (run.get("history") or [{}])[-1].get("run_pid")
            if run["status"] == "running" and pid and pid not in seen and psutil.pid_exists(pid):
                return run["id"], pid


@pytest.mark.slow
def test_a_segfaulting_and_a_killed_trial_are_failed_and_the_sweep_goes_on(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID_LONG)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "ist_cli", "sweep", str(grid), "--out", str(out), "--jobs", "1",
                             "--json", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        victims = {}
        for sig in (signal.SIGSEGV, signal.SIGKILL):
            run_id, pid = _running_pid(out, set(victims.values()), deadline)
            server = psutil.Process(pid).ppid()
            os.kill(pid, sig)
            victims[run_id] = pid
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1, stderr
    assert json.loads(stdout)["executed"] == {"failed": 2, "completed": 2}
    runs = {run["id"]: run for run in json.loads((out / "sweep.json").read_text())["runs"]}
    for run_id, sig in zip(victims, (signal.SIGSEGV, signal.SIGKILL), strict=True):
        assert runs[run_id]["status"] == "failed" and runs[run_id]["history"][-1]["exit_code"] == -sig
        assert not (out / f"{run_id}.h5").exists()
    done = [run for run in runs.values() if run["status"] == "completed"]
    assert len(done) == 2 and all(run["attempts"] == 1 for run in runs.values())
    # both were forked from the one warm process, which survived them and ran the rest
    assert {run["history"][-1]["where"].split(":")[1] for run in done}.isdisjoint(map(str, victims.values()))
    assert not psutil.pid_exists(server)  # and ended with the sweep


@pytest.mark.slow
def test_a_trial_whose_worker_hangs_fails_at_its_round_deadline_through_the_warm_executor(tmp_path):
    """A stopped worker of a two-worker run: the run's own round deadline fails it, and the
    warm executor reports it as the subprocess executor does."""
    config = {"model": "mlp", "algorithm": "local-sgd", "workers": 2, "dataset": "digits", "hidden": [16],
              "rounds": 100000, "eval_every": 1}
    run = PlannedRun(run_id="hang", config=config, point={}, run_args=("--round-timeout", "3"))
    executor = make_executor("local", tmp_path, 1, None, 1)
    assert isinstance(executor, WarmExecutor) and isinstance(executor, LocalExecutor)
    pids: list[int] = []
    try:
        executor.submit(run, pids.append)
        deadline = time.monotonic() + 240
        workers: list[psutil.Process] = []
        # stopped only once the run is in its rounds: a worker stopped while it starts is
        # judged by the start-up deadline (minutes, for a first compile), not the round's
        while len(live_rounds(tmp_path / "hang.h5.tmp")) < 2:
            assert time.monotonic() < deadline, "the run never reached its rounds"
            time.sleep(0.2)
        workers = [p for p in psutil.Process(pids[0]).children(recursive=True)
                   if p.name().startswith("ist-worker-1")]
        workers[0].suspend()
        finished = []
        while not finished:
            assert time.monotonic() < deadline, "the hung run was never failed"
            finished = executor.wait(0.5)
    finally:
        executor.interrupt()
        executor.close()
    (run_id, outcome), = finished
    assert run_id == "hang" and outcome.returncode == 1, outcome.stderr
    assert "worker 1" in outcome.error_line() and "--round-timeout 3" in outcome.error_line()
    failed = read_run(tmp_path / "hang.h5", load_problem=False)
    assert failed.status == "failed" and "--round-timeout 3" in failed.attrs["error"]
    assert np.isfinite(failed.metrics["loss"][0])
