"""Find run files under the user's paths and load the readable ones.

A report must survive a results directory in any state: runs still in progress (``.h5.tmp``),
corrupted files, files of another schema. Those are returned as ``Skipped`` entries naming the
file and why, never raised, so the rest still gets reported.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ist_cli.config import unrecorded_defaults
from ist_cli.errors import UserError
from ist_cli.io.names import RUN_SUFFIX
from ist_cli.io.runfile import (
    RESULT_STATUSES,
    TMP_SUFFIX,
    RunData,
    RunFileError,
    error_headline,
    read_run,
)


@dataclass(frozen=True)
class Skipped:
    """A file the report did not use, and why (``in progress``, ``unknown schema ...``)."""

    path: Path
    reason: str


def _is_tmp(path: Path) -> bool:
    return path.name.endswith(RUN_SUFFIX + TMP_SUFFIX)


def find_run_files(paths: Iterable[str | Path]) -> list[Path]:
    """Every ``*.h5`` and ``*.h5.tmp`` under ``paths`` (recursively), sorted; files given
    explicitly are kept whatever their name. Raises ``UserError`` for a missing path or when
    nothing is found."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise UserError("ist report needs at least one PATH (a run file or a directory of run files)")
    found: list[Path] = []
    for path in paths:
        if not path.exists():
            raise UserError(f"path {str(path)!r} does not exist; expected a run file or a directory of run files")
        if path.is_dir():
            found.extend(
                p for p in sorted(path.rglob("*"))
                if p.is_file() and (p.name.endswith(RUN_SUFFIX) or _is_tmp(p))
            )
        elif path.is_file():
            found.append(path)
        else:  # a FIFO or device: opening it could block forever or read without end
            raise UserError(f"path {str(path)!r} is not a regular file or a directory; "
                            "expected a run file or a directory of run files")
    unique = sorted(dict.fromkeys(found))
    if not unique:
        where = ", ".join(repr(str(p)) for p in paths)
        raise UserError(f"no run files (*.h5) found under {where}")
    return unique


def load_runs(paths: Iterable[str | Path], *, load_problem: bool = True) -> tuple[list[RunData], list[Skipped]]:
    """Load every readable, finished run under ``paths``.

    Returns ``(runs, skipped)``. Runs in progress, unreadable files, unknown schemas,
    failed runs (their numbers are not final) and second copies of a run already loaded
    (same ``run_id``, e.g. a results directory given twice or copied) go to ``skipped`` with
    the reason.
    """
    runs: list[RunData] = []
    skipped: list[Skipped] = []
    first_of: dict[str, Path] = {}  # run_id -> first file: a run copied to two places counts once
    for path in find_run_files(paths):
        if _is_tmp(path):
            skipped.append(Skipped(path, "in progress (.tmp: the run has not finished)"))
            continue
        try:
            run = read_run(path, load_problem=load_problem)
        except RunFileError as exc:
            skipped.append(Skipped(path, str(exc)))
            continue
        if run.status not in RESULT_STATUSES:
            error = error_headline(run.attrs.get("error"))
            detail = f": {error}" if error else ""
            skipped.append(Skipped(path, f"status {run.status!r}{detail}"))
            continue
        if run.run_id in first_of:
            skipped.append(Skipped(path, f"duplicate of {first_of[run.run_id]} (same run_id {run.run_id[:12]})"))
            continue
        first_of[run.run_id] = path
        run.config.update(unrecorded_defaults(run.config))  # so `server=central` groups, filters and compares
        runs.append(run)
    return runs, skipped
