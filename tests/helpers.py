"""Shared test helpers: run the real CLI as a subprocess, watch /dev/shm and a running run file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import psutil

from ist_cli.io.metric_info import TIMING_METRICS

TIMING = set(TIMING_METRICS)  # measured times: never compared between runs


def ist(*args: str, timeout: float = 120, check: bool = False, **kwargs) -> subprocess.CompletedProcess:
    """``python -m ist_cli ARGS`` with captured text output."""
    result = subprocess.run(
        [sys.executable, "-m", "ist_cli", *args], capture_output=True, text=True, timeout=timeout, **kwargs
    )
    if check and result.returncode != 0:
        raise AssertionError(f"ist {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result


def ist_json(*args: str, **kwargs) -> dict:
    result = ist(*args, "--json", "--quiet", check=True, **kwargs)
    return json.loads(result.stdout)


def shm_entries() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """Assert the user-error contract (exit 2, one line, no traceback) and return the line."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("ist: error: ")
    return lines[0]


def dead_pid() -> int:
    """The PID of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in Path(directory).iterdir()) if Path(directory).exists() else []



def live_rounds(path: Path) -> list[int]:
    """The rounds of ``/metrics/round`` a live SWMR reader sees in a running ``.tmp`` run file
    (none before the file and its first row exist)."""
    try:
        with h5py.File(path, "r", libver="latest", swmr=True) as live:
            return live["metrics/round"][...].tolist()
    except (OSError, KeyError):
        return []


def segments_of(pid: int) -> set[str]:
    """Segments created by coordinator ``pid`` (arena names embed it: ist_<tag>_<pid>_<random>)."""
    return {name for name in shm_entries() if name.startswith("ist_") and f"_{pid}_" in name}


def assert_no_new_segments(before: set[str], pid: int | None = None) -> None:
    """Nothing new left in /dev/shm by this process (or by coordinator ``pid``).

    Other runs on the machine may hold segments meanwhile, so the check is on names
    that are new since ``before`` and belong to the run under test.
    """
    owner = os.getpid() if pid is None else pid
    leaked = {name for name in segments_of(owner) if name not in before}
    leaked |= {name for name in shm_entries() - before if name.startswith("psm_")}
    assert not leaked, f"leaked shared-memory segments: {leaked}"


def worker_processes(pid: int) -> list[psutil.Process]:
    """The run's worker processes (named ``ist-worker-N`` by the pool; not the fork server they
    are forked from, nor the resource tracker)."""
    children = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if child.name().startswith("ist-worker"):
                children.append(child)
        except psutil.NoSuchProcess:
            pass
    return children


def overridden(*parts: list[str]) -> list[str]:
    """Command-line parts joined with later ``--option VALUE`` pairs replacing earlier ones:
    ``ist run`` refuses a setting given twice, so a test's defaults are overridden here."""
    pairs: dict[str, str | None] = {}
    positional: list[str] = []
    tokens = [token for part in parts for token in part]
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.startswith("--"):
            value = tokens[i + 1] if i + 1 < len(tokens) and not tokens[i + 1].startswith("--") else None
            pairs.pop(token, None)
            pairs[token] = value
            i += 1 if value is None else 2
        else:
            positional.append(token)
            i += 1
    return [*positional, *(t for key, value in pairs.items() for t in ((key,) if value is None else (key, value)))]
