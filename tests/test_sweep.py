"""``ist sweep`` end to end: the real CLI as subprocesses, small
quadratic runs, and the manifest and run files it leaves behind as the evidence."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ist_cli.io.metric_info import TIMING_METRICS
from ist_cli.io.runfile import read_run
from tests.helpers import dead_pid, ist, one_error_line

pytestmark = pytest.mark.slow

BASE = """
[base]
model = "quadratic"
workers = 1
dim = 4
rounds = 5
"""
GRID_12 = 'name = "acc"\nseeds = [0, 1, 2]\n' + BASE + '[grid]\nlr = [0.02, 0.05]\nalgorithm = ["ist", "dcgd"]\n'
# a subset of GRID_12: same configs, so the same run ids
GRID_2 = 'name = "acc2"\nseeds = [0]\n' + BASE + '[grid]\nlr = [0.05]\nalgorithm = ["ist", "dcgd"]\n'
GRID_6 = 'name = "six"\nseeds = [0, 1, 2]\n' + BASE.replace("rounds = 5", "rounds = 40") + "[grid]\nlr = [0.02, 0.05]\n"
GRID_4 = 'name = "four"\nseeds = [0, 1]\n' + BASE + "[grid]\nlr = [0.02, 0.05]\n"
# the same sweeps on the command line (ist sweep --grid ... -- RUN OPTIONS): same runs, same ids
RUN_OPTIONS = ["--", "--model", "quadratic", "--workers", "1", "--dim", "4"]
COMMAND_LINE = {
    GRID_6: ["--name", "six", "--grid", "lr=0.02,0.05", "--grid", "seed=0,1,2", *RUN_OPTIONS, "--rounds", "40"],
    GRID_4: ["--name", "four", "--grid", "lr=0.02,0.05", "--grid", "seed=0,1", *RUN_OPTIONS, "--rounds", "5"],
}
SOURCES = ["file", "command-line"]


def sweep_source(tmp_path: Path, text: str, kind: str) -> Path | list[str]:
    """The sweep ``text`` as a file written under ``tmp_path``, or as its command-line arguments."""
    if kind == "command-line":
        return COMMAND_LINE[text]
    grid = tmp_path / "grid.toml"
    grid.write_text(text)
    return grid


def source_args(grid: Path | list[str]) -> list[str]:
    """Arguments naming the sweep: last on the command line (run options follow ``--``)."""
    return [str(grid)] if isinstance(grid, Path) else list(grid)


def manifest(out: Path) -> dict:
    return json.loads((out / "sweep.json").read_text())


def sweep(grid: Path | list[str], out: Path, *args: str, timeout: float = 240) -> tuple[subprocess.CompletedProcess, dict]:
    result = ist("sweep", "--out", str(out), "--json", *args, *source_args(grid), timeout=timeout)
    assert result.returncode == 0, result.stderr
    return result, json.loads(result.stdout)


def file_identity(path: Path) -> tuple[int, str]:
    """(inode, created attr): a file re-created by a second execution differs in both."""
    return path.stat().st_ino, read_run(path, load_problem=False).attrs["created"]


def assert_same_numbers(a: Path, b: Path) -> None:
    """Same /metrics (timing columns aside) and /final, bit for bit."""
    run_a, run_b = read_run(a), read_run(b)
    assert run_a.config == run_b.config
    names = set(run_a.metrics) - set(TIMING_METRICS)
    assert names == set(run_b.metrics) - set(TIMING_METRICS) and "loss" in names
    for name in names:
        np.testing.assert_array_equal(run_a.metrics[name], run_b.metrics[name], err_msg=name)
    assert set(run_a.final) == set(run_b.final) == {"x"}
    np.testing.assert_array_equal(run_a.final["x"], run_b.final["x"])


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.endswith((".lock", ".tmp")) and p.name != ".sweep.lock")


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """GRID_12 through the local executor with --jobs 2."""
    root = tmp_path_factory.mktemp("local")
    grid = root / "grid.toml"
    grid.write_text(GRID_12)
    out = root / "out"
    result, summary = sweep(grid, out, "--jobs", "2")
    return grid, out, result, summary


def test_grid_runs_once_and_a_second_invocation_executes_nothing(local_sweep):
    grid, out, result, summary = local_sweep
    assert summary["executed"] == {"completed": 12} and summary["final"] == {"completed": 12}
    runs = manifest(out)["runs"]
    assert len(runs) == 12 and len({run["id"] for run in runs}) == 12
    points = {(run["point"]["lr"], run["point"]["algorithm"], run["point"]["seed"]) for run in runs}
    assert points == {(lr, alg, seed) for lr in (0.02, 0.05) for alg in ("ist", "dcgd") for seed in (0, 1, 2)}
    before = {}
    for run in runs:
        assert run["status"] == "completed" and run["attempts"] == 1 and len(run["history"]) == 1
        data = read_run(out / run["file"], load_problem=False)
        assert data.status == "completed" and data.run_id == run["id"]
        assert data.config == run["config"]  # the subprocess ran exactly the manifest's config
        before[run["id"]] = file_identity(out / run["file"])
    assert leftovers(out) == []

    again = ist("sweep", str(grid), "--out", str(out), "--jobs", "2", timeout=120)
    assert again.returncode == 0, again.stderr
    assert "nothing to do: all 12 runs already finished (12 completed)" in again.stderr
    assert {run["id"]: file_identity(out / run["file"]) for run in manifest(out)["runs"]} == before
    assert all(run["attempts"] == 1 for run in manifest(out)["runs"])


def test_a_command_line_grid_is_its_file_sweep_and_runs_once(tmp_path):
    """``--grid ... -- RUN OPTIONS`` expands to the same run ids as the equivalent file, runs
    each once, and the same command again executes nothing and touches no file."""
    from ist_cli.sweep.spec import load_sweep

    file_ids = set(load_sweep(sweep_source(tmp_path, GRID_4, "file")).run_ids)
    out = tmp_path / "out"
    _, summary = sweep(COMMAND_LINE[GRID_4], out, "--jobs", "2")
    assert summary["name"] == "four" and summary["executed"] == {"completed": 4}
    runs = manifest(out)["runs"]
    assert {run["id"] for run in runs} == file_ids
    assert manifest(out)["sweep_file"].startswith("ist sweep ") and "--grid lr=0.02,0.05" in manifest(out)["sweep_file"]
    before = {run["id"]: file_identity(out / run["file"]) for run in runs}
    again = ist("sweep", "--out", str(out), *COMMAND_LINE[GRID_4], timeout=120)
    assert again.returncode == 0 and "nothing to do: all 4 runs already finished" in again.stderr
    assert {run["id"]: file_identity(out / run["file"]) for run in manifest(out)["runs"]} == before
    assert leftovers(out) == []


def test_set_overrides_the_base_of_a_sweep_file(tmp_path):
    from ist_cli.sweep.spec import load_sweep

    grid = sweep_source(tmp_path, GRID_4, "file")
    out = tmp_path / "out"
    _, summary = sweep(grid, out, "--set", "dim=3", "--set", "rounds=2")
    assert summary["final"] == {"completed": 4}
    for run in manifest(out)["runs"]:
        data = read_run(out / run["file"], load_problem=False)
        assert data.config["dim"] == 3 and data.config["rounds"] == 2 and data.config["workers"] == 1
    assert {run["id"] for run in manifest(out)["runs"]}.isdisjoint(load_sweep(grid).run_ids)


def segments_of_runs(run_ids) -> list[str]:
    return [name for name in os.listdir("/dev/shm") if any(name.startswith(f"ist_{run_id[:8]}_") for run_id in run_ids)]


def remove_segments(run_ids) -> None:
    """Cleanup on a failing path only; on success the resumed sweep has reclaimed them."""
    for name in segments_of_runs(run_ids):
        os.unlink(f"/dev/shm/{name}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def start_sweep(tmp_path: Path, kind: str = "file") -> tuple[subprocess.Popen, Path | list[str], Path]:
    """GRID_6 (a file or its command line) by ``ist sweep --jobs 2`` in its own process group
    (so a signal can reach all of it, as a terminal's would); the process, the sweep's source
    and the output directory."""
    grid = sweep_source(tmp_path, GRID_6, kind)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "ist_cli", "sweep", "--out", str(out), "--jobs", "2",
                             "--quiet", *source_args(grid)], start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    return proc, grid, out


def wait_midway(proc: subprocess.Popen, out: Path) -> list[str]:
    """Wait until two runs have completed and one is running; return every run id."""
    deadline = time.monotonic() + 150
    while True:
        assert time.monotonic() < deadline, "sweep made no progress"
        assert proc.poll() is None, "sweep ended before it could be stopped midway"
        time.sleep(0.1)
        try:
            runs = manifest(out)["runs"]
        except (FileNotFoundError, ValueError):
            continue
        live = [run for run in runs if run["status"] == "running" and alive(run["history"][-1].get("run_pid", 0))]
        if sum(run["status"] == "completed" for run in runs) >= 2 and live:
            return [run["id"] for run in runs]


@pytest.mark.parametrize("kind", SOURCES)
def test_sigkill_mid_sweep_then_resume_finishes_without_running_anything_twice(tmp_path, kind):
    proc, grid, out = start_sweep(tmp_path, kind)
    run_ids: list[str] = []
    try:
        run_ids = wait_midway(proc, out)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        killed_at = time.time()
        snapshot = manifest(out)["runs"]
        finished_before = {run["id"]: file_identity(out / run["file"])
                           for run in snapshot if (out / run["file"]).exists()}
        # a run that wrote its file just before the kill, unrecorded, is finished, not in flight
        in_flight = {run["id"] for run in snapshot if run["status"] == "running"} - set(finished_before)
        assert finished_before and in_flight and not set(finished_before) & in_flight
        time.sleep(0.5)  # let the kernel reap the killed group

        started = time.monotonic()
        _, summary = sweep(grid, out, "--jobs", "2")
        assert time.monotonic() - started < 100  # no stale claim made it wait for a timeout
        # the killed group took its resource tracker along; the resumed runs reclaim the segments
        assert segments_of_runs(run_ids) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        remove_segments(run_ids)

    runs = {run["id"]: run for run in manifest(out)["runs"]}
    assert summary["final"] == {"completed": 6}
    assert summary["executed"] == {"completed": 6 - len(finished_before)}
    for run_id, run in runs.items():
        outcomes = [entry["outcome"] for entry in run["history"]]
        assert run["status"] == "completed" and outcomes[-1] == "completed"
        assert outcomes.count("completed") == 1  # executed to the end exactly once
        assert run["attempts"] == len(outcomes)
        if run_id in finished_before:  # untouched: same inode, same creation stamp
            assert run["attempts"] == 1 and file_identity(out / run["file"]) == finished_before[run_id]
        elif run_id in in_flight:  # its killed attempt is recorded, never counted as a result
            assert outcomes == ["abandoned", "completed"], outcomes
        else:
            assert outcomes == ["completed"]
        if run_id not in finished_before:
            created = read_run(out / run["file"], load_problem=False).attrs["created"]
            assert time.mktime(time.strptime(created[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone >= int(killed_at) - 1
    assert leftovers(out) == []


@pytest.mark.parametrize("kind", SOURCES)
def test_ctrl_c_mid_sweep_then_resume_finishes_without_running_anything_twice(tmp_path, kind):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it): the sweep stops its
    runs, puts them back to pending and exits 130 with one line; the same command resumes."""
    proc, grid, out = start_sweep(tmp_path, kind)
    run_ids: list[str] = []
    try:
        run_ids = wait_midway(proc, out)
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 130
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert lines[-1].startswith("ist: interrupted: sweep six stopped; run the same command again to resume") and "Traceback" not in stderr
        snapshot = manifest(out)["runs"]
        assert not any(run["status"] == "running" for run in snapshot)  # nothing left claimed
        interrupted = {run["id"] for run in snapshot if run["history"] and run["history"][-1]["outcome"] == "interrupted"}
        finished_before = {run["id"]: file_identity(out / run["file"]) for run in snapshot if run["status"] == "completed"}
        assert interrupted and finished_before and all(
            run["status"] == "pending" for run in snapshot if run["id"] in interrupted)
        assert leftovers(out) == [] and segments_of_runs(run_ids) == []

        _, summary = sweep(grid, out, "--jobs", "2")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        remove_segments(run_ids)

    assert summary["final"] == {"completed": 6}
    assert summary["executed"] == {"completed": 6 - len(finished_before)}
    for run in manifest(out)["runs"]:
        outcomes = [entry["outcome"] for entry in run["history"]]
        assert run["status"] == "completed" and outcomes.count("completed") == 1, outcomes
        if run["id"] in finished_before:  # untouched by the resume
            assert outcomes == ["completed"] and file_identity(out / run["file"]) == finished_before[run["id"]]
        elif run["id"] in interrupted:
            assert outcomes == ["interrupted", "completed"], outcomes
    assert leftovers(out) == []


@pytest.mark.parametrize("kind", SOURCES)
def test_two_sweeps_started_together_execute_each_run_exactly_once(tmp_path, kind):
    grid = sweep_source(tmp_path, GRID_4, kind)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "ist_cli", "sweep", "--out", str(out), "--jobs", "1", "--json",
               "--quiet", *source_args(grid)]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    summaries = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=240)
        assert proc.returncode == 0, stderr
        summaries.append(json.loads(stdout))
    executed = sum(sum(s["executed"].values()) for s in summaries)
    assert executed == 4  # together, each run once
    for summary in summaries:
        assert summary["final"] == {"completed": 4}
        assert sum(summary["executed"].values()) + sum(summary["elsewhere"].values()) == 4
    for run in manifest(out)["runs"]:
        assert run["attempts"] == 1 and [entry["outcome"] for entry in run["history"]] == ["completed"]
    assert leftovers(out) == []


# ----------------------------------------------------------------------------- dask
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def dask_scheduler(request):
    """An external ``dask scheduler`` + one ``dask worker`` on 127.0.0.1, torn down afterwards."""
    dask = str(Path(sys.executable).parent / "dask")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = []

    def teardown() -> None:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    request.addfinalizer(teardown)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "start_new_session": True}
    procs.append(subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                   "--no-dashboard"], **quiet))
    procs.append(subprocess.Popen([dask, "worker", address, "--nworkers", "1", "--nthreads", "1",
                                   "--no-dashboard", "--host", "127.0.0.1"], **quiet))
    deadline = time.monotonic() + 120  # a loaded machine: the scheduler listens only once it has started
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    return address


@pytest.mark.parametrize("mode", ["localcluster", "scheduler"])
def test_dask_executor_gives_the_local_numbers(tmp_path, local_sweep, mode, request):
    _, local_out, _, _ = local_sweep
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID_2)
    out = tmp_path / "out"
    args = ["--executor", "dask"]
    if mode == "scheduler":
        args += ["--scheduler", request.getfixturevalue("dask_scheduler")]
    else:
        args += ["--jobs", "2"]
    _, summary = sweep(grid, out, *args)
    assert summary["executed"] == {"completed": 2}
    runs = manifest(out)["runs"]
    assert len(runs) == 2
    for run in runs:
        assert run["attempts"] == 1 and run["history"][-1]["executor"] == "dask"
        assert_same_numbers(out / run["file"], local_out / run["file"])
    assert leftovers(out) == [] and not list(out.glob("*.incoming"))


GRID_OUTCOMES = 'name = "outcomes"\n' + BASE + """
[zip]
lr = [0.02, 10000.0, 0.02]
rounds = [5, 200, 5]
problem_file = ["", "", "/nonexistent/problem.npz"]
"""


def test_failed_and_diverged_runs_are_recorded_and_retried_only_on_request(tmp_path):
    """One completed, one diverged (exit 0 alone), one failed (exit 1); --rerun-failed and
    --force run again and keep every old file under a new name."""
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID_OUTCOMES)
    out = tmp_path / "out"
    first = ist("sweep", str(grid), "--out", str(out), "--json", "--jobs", "2", timeout=240)
    assert first.returncode == 1, first.stderr
    assert json.loads(first.stdout)["executed"] == {"completed": 1, "diverged": 1, "failed": 1}
    assert "retry them with --rerun-failed" in first.stderr
    runs = manifest(out)["runs"]
    ok, div, bad = (run["id"] for run in runs)
    assert [run["status"] for run in runs] == ["completed", "diverged", "failed"]
    assert "does not exist" in runs[2]["error"] and not (out / f"{bad}.h5").exists()
    assert read_run(out / f"{div}.h5").status == "diverged"
    ok_identity = file_identity(out / f"{ok}.h5")

    plain = ist("sweep", str(grid), "--out", str(out), "--json", timeout=120)
    assert plain.returncode == 1 and json.loads(plain.stdout)["executed"] == {}  # failed runs stay failed

    retry = ist("sweep", str(grid), "--out", str(out), "--json", "--jobs", "2", "--rerun-failed", timeout=240)
    assert retry.returncode == 1 and json.loads(retry.stdout)["executed"] == {"diverged": 1, "failed": 1}
    runs = {run["id"]: run for run in manifest(out)["runs"]}
    assert (runs[ok]["attempts"], runs[div]["attempts"], runs[bad]["attempts"]) == (1, 2, 2)
    assert file_identity(out / f"{ok}.h5") == ok_identity
    assert read_run(out / f"{div}.failed-1.h5").status == "diverged"  # the old file, moved aside

    force = ist("sweep", str(grid), "--out", str(out), "--json", "--jobs", "2", "--force", timeout=240)
    assert force.returncode == 1 and json.loads(force.stdout)["executed"] == {"completed": 1, "diverged": 1, "failed": 1}
    assert file_identity(out / f"{ok}.old-1.h5") == ok_identity  # same file, new name: never overwritten
    assert_same_numbers(out / f"{ok}.h5", out / f"{ok}.old-1.h5")
    assert sorted(p.name for p in out.glob(f"{div}*.h5")) == [f"{div}.failed-1.h5", f"{div}.h5", f"{div}.old-1.h5"]
    assert leftovers(out) == []


def test_adopt_runs_only_the_runs_added_to_the_grid_and_keeps_the_finished_files(tmp_path):
    """Seeds added to a finished sweep: refused as a different run list (naming --adopt);
    --adopt runs the new runs alone, every finished file untouched (same inode and creation,
    no old-N copy); --adopt with --force is refused, nothing run."""
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID_4)
    out = tmp_path / "out"
    sweep(grid, out, "--jobs", "2")
    finished = {run["id"]: file_identity(out / run["file"]) for run in manifest(out)["runs"]}
    grid.write_text(GRID_4.replace("seeds = [0, 1]", "seeds = [0, 1, 2]"))

    refused = ist("sweep", "--out", str(out), str(grid), timeout=120)
    assert refused.returncode == 2
    assert "(2 runs added, 0 removed" in one_error_line(refused) and "--adopt" in one_error_line(refused)
    both = ist("sweep", "--out", str(out), "--adopt", "--force", str(grid), timeout=120)
    assert both.returncode == 2 and "--adopt and --force" in one_error_line(both)
    assert len(manifest(out)["runs"]) == 4

    _, summary = sweep(grid, out, "--jobs", "2", "--adopt")
    assert summary["executed"] == {"completed": 2} and summary["skipped"] == {"completed": 4}
    runs = manifest(out)["runs"]
    assert len(runs) == 6 and {run["status"] for run in runs} == {"completed"}
    for run_id, identity in finished.items():
        assert file_identity(out / f"{run_id}.h5") == identity
    assert not list(out.glob("*.old-*.h5")) and leftovers(out) == []


def test_a_run_whose_file_landed_just_before_its_sweep_died_is_recorded_not_rerun(tmp_path):
    """The window between a run renaming its file and its sweep writing the manifest: the next
    sweep records the file as that attempt's outcome, removes the dead claim, runs nothing."""
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID_4)
    out = tmp_path / "out"
    sweep(grid, out, "--jobs", "2")
    data = manifest(out)
    landed = data["runs"][0]
    identity = file_identity(out / landed["file"])
    dead = dead_pid()
    landed["status"] = "running"  # as the dead sweep left it: attempt open, claim held
    landed["history"][-1].update(outcome=None, sweep_pid=dead)
    (out / "sweep.json").write_text(json.dumps(data))
    (out / f"{landed['id']}.lock").write_text(json.dumps({"run_id": landed["id"], "host": socket.gethostname(),
                                                          "pid": dead, "pid_start": None}))

    _, summary = sweep(grid, out)
    assert summary["executed"] == {} and summary["final"] == {"completed": 4}
    run = next(run for run in manifest(out)["runs"] if run["id"] == landed["id"])
    assert run["status"] == "completed" and run["attempts"] == 1
    assert [entry["outcome"] for entry in run["history"]] == ["completed"]
    assert "recorded from its run file" in run["history"][-1]["note"]
    assert file_identity(out / landed["file"]) == identity
    assert leftovers(out) == []
