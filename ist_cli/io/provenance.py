"""Where and with what a run was made: stored in /env and the root attrs of a run file."""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("numpy", "numba", "scipy", "h5py", "click", "rich", "scikit-learn", "matplotlib", "dask", "distributed")


@lru_cache(maxsize=1)
def environment() -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "packages": versions,
    }


def _git(source: Path, *args: str) -> bytes | None:
    try:
        result = subprocess.run(["git", "-C", str(source), *args], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


@lru_cache(maxsize=4)
def git_state(source: Path | None = None) -> dict[str, Any]:
    """Root attrs of provenance for the git checkout ``source`` (default: the one this code
    runs from): ``git_commit``; ``git_dirty``, whether it had local changes (tracked changes,
    or untracked files that are not ignored); ``git_diff_sha256``, the SHA-256 of
    ``git diff HEAD --binary`` (tracked changes only; absent when there are none), which
    tells runs of one edit from runs of another on the same commit. Empty outside a checkout."""
    source = source or Path(__file__).resolve().parents[2]
    if not (source / ".git").exists():
        return {}
    commit = (_git(source, "rev-parse", "HEAD") or b"").decode().strip()
    if not commit:
        return {}
    state: dict[str, Any] = {"git_commit": commit}
    status = _git(source, "status", "--porcelain")
    diff = _git(source, "diff", "HEAD", "--binary", "--no-ext-diff")
    if status is not None:
        state["git_dirty"] = bool(status.strip())
    if diff:
        state["git_diff_sha256"] = hashlib.sha256(diff).hexdigest()
    return state
