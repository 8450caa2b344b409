"""Run files as the sweep sees them: ``RUNID.h5`` exists only for a finished run.

Old files are never overwritten or deleted: they are moved aside under a new name
(``RUNID.failed-1.h5``, ``RUNID.old-2.h5``, ...) with a hard link, which fails rather
than replace an existing name.
"""

from __future__ import annotations

import os
from pathlib import Path

from ist_cli.io.atomic import temporary_writer_pid
from ist_cli.io.runfile import STATUSES, read_attrs
from ist_cli.runtime.processes import process_alive


def finished_status(path: Path) -> str | None:
    """The root ``status`` attr of a finished run file, None if there is no file.

    An unreadable ``.h5`` (not written by ist) counts as ``failed`` so it is never
    silently replaced.
    """
    if not path.exists():
        return None
    try:
        status = str(read_attrs(path).get("status", "failed"))
    except OSError:
        return "failed"
    return status if status in STATUSES else "failed"


def run_file_attrs(path: Path) -> dict[str, str]:
    """A few root attrs, as text: worth copying into the manifest (``run_id``, ``created``,
    ``error``), and ``budget_stopped`` (a study's pruned trial, shown as such)."""
    try:
        attrs = read_attrs(path)
    except OSError:
        return {}
    return {key: str(attrs[key]) for key in ("run_id", "created", "error", "budget_stopped") if key in attrs}


def move_aside(path: Path, tag: str) -> Path:
    """Rename ``RUNID.h5`` to the first free ``RUNID.TAG-N.h5``; never replaces a file."""
    stem = path.name[: -len(".h5")] if path.name.endswith(".h5") else path.name
    number = 1
    while True:
        target = path.with_name(f"{stem}.{tag}-{number}.h5")
        try:
            os.link(path, target)
        except FileExistsError:
            number += 1
            continue
        path.unlink()
        return target


def remove_orphaned_temporaries(directory: Path) -> list[str]:
    """Delete the per-process temporaries a killed sweep left behind; return their names.

    Only a temporary whose writer PID is no longer alive on this host is removed; one of
    a live process (another sweep mid-write) is left alone.
    """
    removed = []
    for path in directory.iterdir():
        writer = temporary_writer_pid(path.name)
        if writer is not None and not process_alive(writer):
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed
