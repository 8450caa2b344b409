"""What a new user meets first: a default install without what the default run never
imports, a one-line error naming the extra when an optional part is missing, and a first
run (cold numba cache) that says it is compiling before anything else, even when piped."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from tests.helpers import files_in, ist, one_error_line

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = {"dask": "cluster", "distributed": "cluster", "mnist1d": "data", "pandas": "notebook",
            "xarray": "notebook", "mpi4py": "mpi"}


def requirements() -> list[tuple[str, str | None]]:
    """(package name, extra or None) of every requirement of the installed ist-cli."""
    found = []
    for line in metadata.requires("ist-cli") or []:
        name = re.match(r"[A-Za-z0-9_.-]+", line).group(0).lower()
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", line)
        found.append((name, extra.group(1) if extra else None))
    return found


def test_the_default_install_leaves_the_optional_parts_to_their_extras() -> None:
    reqs = requirements()
    default = {name for name, extra in reqs if extra is None}
    assert default and not default & set(OPTIONAL), default
    for package, extra in OPTIONAL.items():
        wanted = "dask" if package == "distributed" else package  # dask[distributed] names dask
        assert (wanted, extra) in reqs, (package, extra)
        assert (wanted, "test") in reqs, f"the test extra must pull {wanted}, so CI tests everything"


def blocked(tmp_path: Path, *packages: str) -> dict[str, str]:
    """An environment in which importing ``packages`` fails, as if they were not installed."""
    blocker = tmp_path / "block"
    for package in packages:
        (blocker / package).mkdir(parents=True)
        (blocker / package / "__init__.py").write_text(f"raise ImportError('no {package} here')\n")
    return {**os.environ, "PYTHONPATH": f"{blocker}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def test_a_missing_extra_is_one_line_naming_it(tmp_path: Path) -> None:
    env = blocked(tmp_path, "mnist1d", "distributed", "pandas")
    out = tmp_path / "out"
    line = one_error_line(ist("run", "--dataset", "mnist1d", "--workers", "2", "--rounds", "1", "--out", str(out),
                              env=env))
    assert "mnist1d" in line and "pip install -e '.[data]'" in line
    assert files_in(out) == []
    grid = tmp_path / "grid.toml"
    grid.write_text('[base]\nmodel = "quadratic"\nworkers = 1\ndim = 4\nrounds = 2\n[grid]\nlr = [0.01]\n')
    line = one_error_line(ist("sweep", str(grid), "--executor", "dask", "--out", str(out), env=env))
    assert "dask" in line and "pip install -e '.[cluster]'" in line
    code = "import sys; from ist_cli import load_runs; from ist_cli.cli import main; load_runs(sys.argv[1])"
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env,
                            cwd=ROOT, timeout=60)
    assert result.returncode != 0 and "pip install -e '.[notebook]'" in result.stderr


@pytest.mark.slow  # compiles the quadratic's kernels into an empty cache
def test_a_piped_first_run_says_it_compiles_before_it_does(tmp_path: Path) -> None:
    """With an empty numba cache (NUMBA_CACHE_DIR) and stderr piped, the first line is the
    compile notice, and it arrives while the kernels are still being compiled (the cache is
    not yet complete when it is read). A second run, warm, does not print it."""
    cache = tmp_path / "numba-cache"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    args = [sys.executable, "-m", "ist_cli", "run", "--model", "quadratic", "--workers", "2", "--dim", "8",
            "--rounds", "3", "--out", str(tmp_path / "out")]
    proc = subprocess.Popen([*args, "--name", "cold"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env)
    first = proc.stderr.readline()
    indexes_then = len(list(cache.rglob("*.nbi")))
    rest = proc.stderr.read()
    assert proc.wait(timeout=300) == 0, rest
    assert first == "cold: compiling kernels (first run only, a few seconds)\n", first + rest
    assert indexes_then < len(list(cache.rglob("*.nbi"))), "the notice came after the kernels were compiled"
    warm = ist("run", *args[4:], "--name", "warm", env=env, check=True)
    assert "compiling kernels" not in warm.stderr


@pytest.mark.slow  # compiles the MLP's kernels into an empty cache
def test_a_cold_data_parallel_run_compiles_each_kernel_once_not_once_per_worker(tmp_path: Path) -> None:
    """numba's cache log (NUMBA_DEBUG_CACHE) names every kernel a process compiled and saved:
    with 4 workers, ``loss_and_grad`` (every DP worker's kernel) is compiled once, by the fork
    server they are forked from, and no kernel is compiled by every worker."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache"), "NUMBA_DEBUG_CACHE": "1"}
    result = ist("run", "--model", "mlp", "--algorithm", "dp", "--workers", "4", "--rounds", "1", "--eval-every", "1",
                 "--out", str(tmp_path / "out"), "--quiet", env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    saved = re.findall(r"data saved to '.*?(?:mlp|sgd)\.(\w+)-\d+\.py\d+\.(\d+)\.nbc'", result.stdout)  # numba logs on stdout
    counts: dict[tuple[str, str], int] = {}
    for kernel, signature in saved:
        counts[kernel, signature] = counts.get((kernel, signature), 0) + 1
    assert counts.get(("loss_and_grad", "1")) == 1, counts
    assert max(counts.values()) <= 2, counts  # the coordinator and the fork server at most, never per worker


def saved_kernels(log: str) -> dict[str, int]:
    """Kernel -> how many times a process compiled and saved it, from numba's cache log
    (NUMBA_DEBUG_CACHE, printed on standard output by every process of the run)."""
    counts: dict[str, int] = {}
    for kernel in re.findall(r"data saved to '.*?(?:mlp|sgd)\.(\w+)-\d+\.py\d+\.\d+\.nbc'", log):
        counts[kernel] = counts.get(kernel, 0) + 1
    return counts


@pytest.mark.slow  # compiles the MLP's IST kernels into an empty cache
def test_a_cold_ist_run_compiles_what_it_calls_once_each_and_a_warm_one_nothing(tmp_path: Path) -> None:
    """IST's workers train subnets (``train_steps``, ``gather_subnet``, ``scatter_subnet``) and only
    the coordinator evaluates (``forward_logits``): the fork server compiles ``train_steps`` once
    while the coordinator compiles ``forward_logits``, the subnet kernels and the loss and update
    ``train_steps`` calls, which the server then loads (it compiles them too only if it gets there
    first). ``gather_subnet`` and ``scatter_subnet`` share one compile of ``_copy_subnet`` in a
    process (no literal flags). No process compiles ``loss_and_grad``, which IST never calls; no
    worker compiles anything. A second run finds every kernel cached: it compiles nothing and
    does not announce a compile."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache"), "NUMBA_DEBUG_CACHE": "1"}
    args = ["run", "--model", "mlp", "--workers", "4", "--rounds", "1", "--out", str(tmp_path / "out")]
    cold = ist(*args, "--name", "cold", env=env, timeout=600)
    assert cold.returncode == 0, cold.stderr[-2000:]
    counts = saved_kernels(cold.stdout)
    assert counts.get("train_steps") == 1 and counts.get("forward_logits") == 1, counts
    assert 1 <= counts.get("gather_subnet", 0) <= 2 and 1 <= counts.get("scatter_subnet", 0) <= 2, counts
    assert counts.get("_copy_subnet") == counts["gather_subnet"], counts  # once per process that compiled them
    assert "loss_and_grad" not in counts, counts
    for kernel in ("sgd_update", "softmax_xent"):  # called by train_steps, compiled first by the coordinator
        assert 1 <= counts.get(kernel, 0) <= 2, counts
    assert "compiling kernels" in cold.stderr
    warm = ist(*args, "--name", "warm", env=env, timeout=600)
    assert warm.returncode == 0, warm.stderr[-2000:]
    assert saved_kernels(warm.stdout) == {} and "compiling kernels" not in warm.stderr, warm.stderr
