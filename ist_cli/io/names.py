"""How ist names run files and stamps times; standard library only (a dask worker imports it)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path


def utc_now(timespec: str = "seconds") -> str:
    """A timestamp as every file of ist writes it: UTC, ISO 8601, whole seconds (``timespec``
    "microseconds" where a benchmark splits a run's wall time by them)."""
    return datetime.now(timezone.utc).isoformat(timespec=timespec)


RUN_SUFFIX = ".h5"


def run_file_name(stem: str) -> str:
    """The file name of a run called ``stem`` (a ``--name``, or a sweep's run id)."""
    return stem + RUN_SUFFIX


def run_file_path(directory: str | Path, stem: str) -> Path:
    return Path(directory) / run_file_name(stem)
