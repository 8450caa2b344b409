"""Nothing lost, nothing hangs: concurrent runs of one name, full disks and /dev/shm, stopped
workers, a deleted output directory, failed starts, bounded inputs (docs/reliability.md)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import psutil
import pytest

from ist_cli.errors import UserError
from ist_cli.io.atomic import write_text_atomic
from ist_cli.io.runfile import RunFileWriter, read_run
from ist_cli.report.load import load_runs
from ist_cli.runtime.watchdog import (
    FACTOR,
    FLOOR_SECONDS,
    LEARN_ROUNDS,
    STARTUP_SECONDS,
    RoundWatchdog,
)
from ist_cli.sweep.spec import load_sweep
from tests.helpers import (
    assert_no_new_segments,
    files_in,
    ist,
    live_rounds,
    one_error_line,
    overridden,
    shm_entries,
    worker_processes,
)

QUICK = ["run", "--model", "quadratic", "--workers", "2", "--dim", "8", "--quiet"]
LONG = ["run", "--model", "quadratic", "--workers", "2", "--dim", "16", "--rounds", "10000000",
        "--eval-every", "5", "--quiet", "--name", "long"]


def start_running(out: Path, extra: list[str] = (), rows: int = 3) -> subprocess.Popen:
    """A long run that has logged ``rows`` rows (so its workers are in the round loop)."""
    process = subprocess.Popen([sys.executable, "-m", "ist_cli", *overridden(LONG, list(extra)), "--out", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(live_rounds(out / "long.h5.tmp")) < rows:
        if process.poll() is not None:
            raise AssertionError(f"run ended early: {process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("the run did not reach its rounds in 120 s")
        time.sleep(0.2)
    return process


def assert_gone(pid: int, before: set[str]) -> None:
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert_no_new_segments(before, pid)


# ----------------------------------------------------------------------------- 1: same name at once
def hold_claim(path: Path) -> int:
    """Lock ``path`` the way a live run holds its ``.tmp`` (an OFD write lock)."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR)
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0))
    return fd


def test_a_live_owner_of_the_tmp_refuses_a_second_run_and_keeps_its_file(tmp_path):
    tmp = tmp_path / "same.h5.tmp"
    tmp.write_bytes(b"a live run's bytes")
    fd = hold_claim(tmp)
    try:
        line = one_error_line(ist(*QUICK, "--rounds", "2", "--out", str(tmp_path), "--name", "same"))
    finally:
        os.close(fd)
    assert "same.h5.tmp" in line and "another live run" in line
    assert tmp.read_bytes() == b"a live run's bytes"  # never truncated
    assert files_in(tmp_path) == ["same.h5.tmp"]


def test_a_dead_owners_tmp_is_reclaimed(tmp_path):
    (tmp_path / "same.h5.tmp").write_bytes(b"left by a killed run")
    ist(*QUICK, "--rounds", "2", "--out", str(tmp_path), "--name", "same", check=True)
    assert files_in(tmp_path) == ["same.h5"]
    assert read_run(tmp_path / "same.h5").status == "completed"


@pytest.mark.slow
def test_four_runs_of_one_name_at_once_twenty_times(tmp_path):
    """Exactly one computes a readable file; the others exit 2 with one line while it is live, or
    0 once it has finished (an identical finished run is reported, not recomputed)."""
    before = shm_entries()
    args = [*QUICK, "--rounds", "400", "--eval-every", "50", "--name", "same"]
    for attempt in range(20):
        out = tmp_path / f"a{attempt}"
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda target: ist(*args, "--out", target, timeout=300), [str(out)] * 4))
        codes = sorted(r.returncode for r in results)
        assert codes[0] == 0 and set(codes) <= {0, 2}, (attempt, [(r.returncode, r.stderr[-300:]) for r in results])
        for result in results:
            if result.returncode == 2:
                line = one_error_line(result)
                assert "another live run" in line or "already exists" in line, line
        assert files_in(out) == ["same.h5"], attempt
        data = read_run(out / "same.h5")
        assert data.status == "completed" and data.metrics["round"][-1] == 400
    leaked = {name for name in shm_entries() - before if name.startswith("ist_")
              and not psutil.pid_exists(int(name.split("_")[-2]))}
    assert not leaked


# ----------------------------------------------------------------------------- 5: failed start
def test_a_writer_failing_in_its_constructor_leaves_nothing(tmp_path):
    final = tmp_path / "r.h5"
    with pytest.raises(TypeError):  # 2^70 has no HDF5 integer type
        RunFileWriter(final, run_id="x", config={}, env={}, seed=2**70, version="0")
    assert files_in(tmp_path) == []
    writer = RunFileWriter(final, run_id="x", config={}, env={}, seed=1, version="0")  # the name is free again
    writer.close("completed")
    assert files_in(tmp_path) == ["r.h5"]


def test_seeds_outside_int64_are_refused(tmp_path):
    for seed in ("-1", str(2**63), str(2**70)):
        line = one_error_line(ist(*QUICK, "--seed", seed, "--out", str(tmp_path / "out")))
        assert "--seed" in line and "9223372036854775807" in line
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- 3: stopped worker
def test_the_automatic_round_timeout_is_generous_and_learned():
    watchdog = RoundWatchdog()
    assert watchdog.timeout() == STARTUP_SECONDS
    for seconds in (0.5, 2.0, 1.0)[:LEARN_ROUNDS]:
        watchdog.record(seconds)
    assert watchdog.timeout() == max(FLOOR_SECONDS, FACTOR * 2.0)
    watchdog.record(1000.0)  # later rounds do not move it
    assert watchdog.timeout() == max(FLOOR_SECONDS, FACTOR * 2.0)
    assert RoundWatchdog(fixed=3.0).timeout() == 3.0


def test_round_timeout_values_are_checked(tmp_path):
    for value in ("0", "-1", "nan", "soon"):
        line = one_error_line(ist(*QUICK, "--round-timeout", value, "--out", str(tmp_path / "o")))
        assert "--round-timeout" in line and "auto" in line


@pytest.mark.slow
def test_a_stopped_worker_fails_the_run_naming_it(tmp_path):
    before = shm_entries()
    process = start_running(tmp_path, ["--round-timeout", "5"])
    stopped = worker_processes(process.pid)[-1]
    stopped.send_signal(signal.SIGSTOP)
    try:
        code = process.wait(timeout=90)
    finally:
        if stopped.is_running():
            stopped.kill()
    stderr = process.stderr.read()
    assert code == 1, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr
    assert f"(pid {stopped.pid}) did not answer" in lines[0] and "--round-timeout 5" in lines[0]
    data = read_run(tmp_path / "long.h5")
    assert data.status == "failed" and f"pid {stopped.pid}" in data.attrs["error"]
    assert_gone(process.pid, before)


# ----------------------------------------------------------------------------- 4: directory deleted
@pytest.mark.slow
def test_deleting_the_output_directory_mid_run_fails_in_one_line(tmp_path):
    before = shm_entries()
    out = tmp_path / "out"
    process = start_running(out)
    pids = [w.pid for w in worker_processes(process.pid)]
    shutil.rmtree(out)
    code = process.wait(timeout=90)
    stderr = process.stderr.read()
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 1, stderr
    assert len(lines) == 1 and "Traceback" not in stderr and "deleted" in lines[0], stderr
    assert not out.exists()
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)
    assert_gone(process.pid, before)


# ----------------------------------------------------------------------------- 2: full disk, small /dev/shm
@pytest.fixture
def small_disk(tmp_path):
    """A private tmpfs of 100 MiB (root only); skipped where it cannot be mounted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=100m", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a private tmpfs here ({result.stderr.decode().strip() or 'not root'})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path, leave: int) -> None:
    """Write a filler file so that about ``leave`` bytes stay free in ``directory``."""
    stats = os.statvfs(directory)
    size = stats.f_bavail * stats.f_frsize - leave
    with open(directory / "filler", "wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, max(size, 0))


def test_a_disk_without_room_for_the_run_is_refused_before_starting(small_disk):
    fill(small_disk, 16 * 2**20)
    line = one_error_line(ist(*QUICK, "--rounds", "2", "--out", str(small_disk / "out")))
    assert "needs" in line and "free" in line and "MiB" in line
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


@pytest.mark.slow
def test_a_disk_filling_up_mid_run_records_failed(small_disk):
    before = shm_entries()
    out = small_disk / "out"
    process = start_running(out, ["--rounds", "200000"])  # a file estimate that fits the 100 MiB disk
    fill(small_disk, 32 * 2**20)  # below the 64 MiB margin, with room for the status
    code = process.wait(timeout=90)
    stderr = process.stderr.read()
    assert code == 1, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "out of disk space" in lines[0], stderr
    data = read_run(out / "long.h5")
    assert data.status == "failed" and "out of disk space" in data.attrs["error"]
    assert files_in(out) == ["long.h5"]
    assert_gone(process.pid, before)


def in_private_shm(size: str, command: str) -> subprocess.CompletedProcess:
    """Run ``command`` (sh) in a mount namespace whose /dev/shm is a ``size`` tmpfs."""
    script = f"mount -t tmpfs -o size={size} tmpfs /dev/shm && {command}"
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                            capture_output=True, text=True, timeout=300)
    if "unshare" in result.stderr and result.returncode != 0 and "ist" not in result.stderr:
        pytest.skip(f"no private mount namespace here: {result.stderr.strip()}")
    return result


def test_a_small_dev_shm_is_a_one_line_error_not_sigbus(tmp_path):
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) is not installed")
    out = tmp_path / "out"
    run = (f"{sys.executable} -m ist_cli run --model mlp --workers 2 --hidden 2048,2048 --rounds 1 --quiet "
           f"--out {out}; echo rc=$?; ls /dev/shm")
    result = in_private_shm("8m", run)
    if "mount" in result.stderr and "ist: error" not in result.stderr:
        pytest.skip(f"cannot mount a private /dev/shm: {result.stderr.strip()}")
    assert "rc=2" in result.stdout, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "shared-memory arena needs" in lines[0] and "/dev/shm" in lines[0], result.stderr
    assert result.stdout.strip().endswith("rc=2")  # nothing listed in the private /dev/shm
    assert not out.exists()


def test_the_arena_reservation_itself_refuses_what_does_not_fit(tmp_path):
    """posix_fallocate, not the first write, finds the shortage (the statvfs check is skipped
    by asking for more than the tmpfs holds only at reservation time)."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) is not installed")
    code = ("import ist_cli.runtime.arena as a, ist_cli.runtime.budget as b;"
            "a.check_space = lambda *args: None;"
            "from ist_cli.errors import UserError\n"
            "try:\n a.Arena.create({'x': ((4 * 2**20,), 'f8')})\nexcept UserError as e: print('refused', e)")
    result = in_private_shm("8m", f"{sys.executable} -c \"{code}\"; ls /dev/shm | wc -l")
    if "mount" in result.stderr and "refused" not in result.stdout:
        pytest.skip(f"cannot mount a private /dev/shm: {result.stderr.strip()}")
    assert "refused" in result.stdout and "32.0 MiB" in result.stdout, (result.stdout, result.stderr)
    assert result.stdout.strip().endswith("0")  # the partial segment was unlinked


# ----------------------------------------------------------------------------- 6: memory estimate
def test_a_run_larger_than_memory_is_refused_before_anything_exists(tmp_path):
    before = shm_entries()
    started = time.monotonic()
    result = ist("run", "--model", "mlp", "--hidden", "100000,100000", "--out", str(tmp_path / "out"))
    line = one_error_line(result)
    assert time.monotonic() - started < 60
    assert "the run needs about" in line and "arena" in line and "available" in line
    assert not (tmp_path / "out").exists()
    assert not {n for n in shm_entries() - before if n.startswith("ist_")
                and not psutil.pid_exists(int(n.split("_")[-2]))}


# ----------------------------------------------------------------------------- 7: sweep caps
def write_sweep(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "g.toml"
    path.write_text(text + '\n[base]\nmodel = "quadratic"\n' if "[base]" not in text else text)
    return path


def test_a_ten_million_point_grid_is_refused_fast(tmp_path):
    axes = "\n".join(f"{key} = [{', '.join(str(i + 1) for i in range(10))}]"
                     for key in ("workers", "rounds", "local_steps", "eval_every", "dim", "seed", "client_samples"))
    path = write_sweep(tmp_path, "[grid]\n" + axes + '\n\n[base]\nmodel = "quadratic"\n')
    started = time.perf_counter()
    with pytest.raises(UserError) as error:
        load_sweep(path)
    assert time.perf_counter() - started < 0.5
    assert "10000000 runs" in str(error.value) and "cap of 100000" in str(error.value)


def test_a_billion_replicates_are_refused_fast_and_the_cap_is_settable(tmp_path):
    path = write_sweep(tmp_path, "replicates = 1000000000\n")
    started = time.perf_counter()
    with pytest.raises(UserError) as error:
        load_sweep(path)
    assert time.perf_counter() - started < 0.5
    assert "1000000000 runs" in str(error.value) and "--max-runs" in str(error.value)
    assert len(load_sweep(write_sweep(tmp_path, "replicates = 5\n"), max_runs=5).runs) == 5
    with pytest.raises(UserError):
        load_sweep(write_sweep(tmp_path, "replicates = 6\n"), max_runs=5)
    line = one_error_line(ist("sweep", str(write_sweep(tmp_path, "replicates = 6\n")), "--max-runs", "5",
                              "--out", str(tmp_path / "s")))
    assert "6 runs" in line and "cap of 5" in line
    assert not (tmp_path / "s").exists()


def test_a_study_file_has_the_same_cap(tmp_path):
    """``ist study`` shares the engine options: 2 batch sizes x 3 trials = 6 runs > --max-runs 5."""
    path = tmp_path / "study.toml"
    path.write_text('[base]\nmodel = "mlp"\nalgorithm = "single"\ngoal_error = 0.1\ngoal_metric = "train_error"\n'
                    '[study]\nbatch_sizes = [4, 16]\ntrials = 3\n[search]\nlr = { log = [0.01, 1.0] }\n')
    line = one_error_line(ist("study", str(path), "--max-runs", "5", "--out", str(tmp_path / "s")))
    assert "6 runs" in line and "at most 5" in line
    assert not (tmp_path / "s").exists()
    dry = ist("study", str(path), "--max-runs", "6", "--dry-run", "--out", str(tmp_path / "s"))
    assert dry.returncode == 0, dry.stderr

# ----------------------------------------------------------------------------- 8: report inputs
def make_run_file(path: Path, mutate) -> Path:
    with h5py.File(path, "w") as handle:
        handle.attrs["schema"] = 1
        handle.attrs["status"] = "completed"
        handle["config"] = json.dumps({"model": "quadratic", "algorithm": "ist", "seed": 0})
        handle["env"] = "{}"
        metrics = handle.create_group("metrics")
        metrics["round"] = np.arange(3.0)
        metrics["loss"] = np.ones(3)
        mutate(handle)
    return path


def replace(name, data):
    def mutate(handle):
        del handle[name]
        if callable(data):
            data(handle, name)
        else:
            handle[name] = data
    return mutate


REPORT_CASES = {
    "config-list": (replace("config", "[1, 2]"), "JSON object"),
    "config-number": (replace("config", "3"), "JSON object"),
    "config-bad-json": (replace("config", "{"), "not valid JSON"),
    "config-array": (replace("config", np.arange(3)), "not a JSON string"),
    "metrics-2d": (replace("metrics/loss", np.ones((3, 2))), "one dimension"),
    "metrics-lengths": (replace("metrics/loss", np.ones(4)), "differ in length"),
    "metrics-strings": (replace("metrics/loss", np.array([b"a", b"b", b"c"])), "expected numbers"),
    "metrics-group": (replace("metrics/loss", lambda h, n: h.create_group(n)), "not a dataset"),
    "metrics-huge": (replace("metrics/loss", lambda h, n: h.create_dataset(n, shape=(10**11,), dtype="f8",
                                                                          chunks=(1024,))), "declares shape"),
    "final-huge": (lambda h: h.create_group("final").create_dataset("x", shape=(10**11,), dtype="f8",
                                                                    chunks=(1024,)), "declares shape"),
}


@pytest.mark.parametrize("case", sorted(REPORT_CASES))
def test_report_skips_malformed_run_files_with_the_reason(tmp_path, case):
    mutate, reason = REPORT_CASES[case]
    make_run_file(tmp_path / "good.h5", lambda h: None)
    make_run_file(tmp_path / f"{case}.h5", mutate)
    started = time.monotonic()
    runs, skipped = load_runs([tmp_path])
    assert time.monotonic() - started < 10  # never a whole-file read of 10^11 rows
    assert [r.path.name for r in runs] == ["good.h5"]
    assert len(skipped) == 1 and reason in skipped[0].reason, skipped


def test_report_refuses_a_fifo_without_opening_it(tmp_path):
    fifo = tmp_path / "run.h5"
    os.mkfifo(fifo)
    line = one_error_line(ist("report", str(fifo), timeout=60))  # opening it would block forever
    assert "not a regular file" in line


# ----------------------------------------------------------------------------- 10: output paths
def test_output_paths_of_the_wrong_kind_are_one_line_errors(tmp_path):
    make_run_file(tmp_path / "runs" / "r.h5", lambda h: None) if (tmp_path / "runs").mkdir() is None else None
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    a_dir = tmp_path / "a_dir"
    a_dir.mkdir()
    sweep = write_sweep(tmp_path, "")
    cases = [
        (["sweep", str(sweep), "--out", str(a_file)], "--out"),
        (["sweep", str(sweep), "--out", str(a_file / "sub")], "--out"),
        (["report", str(tmp_path / "runs"), "--html", str(a_dir)], "--html"),
        (["report", str(tmp_path / "runs"), "--html", str(a_file / "r.html")], "--html"),
        (["report", str(tmp_path / "runs"), "--figures", str(a_file)], "--figures"),
        (["run", *QUICK[1:], "--out", str(a_file)], "--out"),
        (["run", *QUICK[1:], "--out", ""], "--out"),
    ]
    for args, needle in cases:
        line = one_error_line(ist(*args))
        assert needle in line, (args, line)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_dir", "a_file", "g.toml", "runs"]
    assert list(a_dir.iterdir()) == [] and a_file.read_text() == "x"


def test_write_text_atomic_removes_its_temporary_on_failure(tmp_path):
    target = tmp_path / "target"
    target.mkdir()  # os.replace of a file over a directory fails
    with pytest.raises(OSError):
        write_text_atomic(target, "text")
    assert files_in(tmp_path) == ["target"] and list(target.iterdir()) == []


# ----------------------------------------------------------------------------- 11: no empty --out
def test_no_output_directory_for_a_run_that_fails_validation_or_loading(tmp_path):
    for args in (["--workers", "0"], ["--problem-file", str(tmp_path / "missing.npz")],
                 ["--name", "a\tb"], ["--dim", "5"]):
        one_error_line(ist(*QUICK, "--rounds", "1", "--out", str(tmp_path / "out" / "deep"), *args))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("settings", [
    {"model": "quadratic", "workers": 4, "dim": 32},
    {"model": "quadratic", "workers": 4, "dim": 32, "heterogeneity": "homogeneous", "client_samples": 100},
    {"model": "mlp", "algorithm": "ist", "hidden": [64, 32], "workers": 4},
    {"model": "mlp", "algorithm": "dp", "hidden": [64, 32], "workers": 4, "dtype": "float64"},
    {"model": "mlp", "algorithm": "local-sgd", "hidden": [48], "workers": 3, "norm": "none"},
    {"model": "mlp", "algorithm": "single", "dataset": "synthetic", "synthetic_samples": 500,
     "synthetic_features": 20, "synthetic_classes": 5},
    # sparse runs add the pruning mask (and IST's per-worker share of it) to the arena
    {"model": "mlp", "algorithm": "ist", "hidden": [64, 32], "workers": 4, "sparsity": 0.5, "prune": "random"},
    {"model": "mlp", "algorithm": "dp", "hidden": [64, 32], "workers": 4, "sparsity": 0.9, "prune": "magnitude"},
    {"model": "mlp", "algorithm": "local-sgd", "hidden": [48], "workers": 3, "sparsity": 0.5, "prune": "random",
     "validation_fraction": 0.2},
    {"model": "mlp", "algorithm": "ist", "hidden": [32], "workers": 2, "dataset": "mnist1d:500"},
])
def test_the_memory_estimate_covers_the_real_arena(settings):
    """The estimate is an upper bound of the arena the method really lays out."""
    from ist_cli.algorithms import build_algorithm
    from ist_cli.config import resolve_config
    from ist_cli.footprint import estimate_run
    from ist_cli.runtime.arena import plan_layout

    config = resolve_config(settings)
    real = plan_layout(build_algorithm(config).arena_spec(), "x").size
    estimate = estimate_run(config)
    assert real <= estimate.arena <= 4 * real + 2**20, (real, estimate)
