"""``OUT/sweep.json``: the sweep's fixed run list and each run's status, attempts and file.

Every update is read-modify-write under the directory ``flock`` and lands with
tmp + rename, so concurrent sweep processes and a crash at any instant leave a whole,
current manifest. The run files stay the ground truth: ``reconcile`` re-derives each
status from ``RUNID.h5`` and the claims.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ist_cli.errors import UserError
from ist_cli.io.atomic import write_text_atomic
from ist_cli.io.names import run_file_name, utc_now
from ist_cli.io.regular import check_regular
from ist_cli.sweep.claims import directory_lock
from ist_cli.sweep.manifest_schema import check_manifest
from ist_cli.sweep.spec import SweepSpec

MANIFEST_NAME = "sweep.json"
MANIFEST_SCHEMA = 1


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest in ``directory`` or None; one that is not a regular file, not JSON or not of
    a manifest's shape (``manifest_schema``) is a one-line ``UserError``, and nothing is written."""
    path = directory / MANIFEST_NAME
    try:
        check_regular(path)  # a FIFO named sweep.json would block the read for ever
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UserError(f"--out: {str(path)!r} is not a readable sweep manifest ({exc}); "
                        "expected a sweep.json written by ist sweep") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise UserError(f"--out: {str(path)!r} is not a readable sweep manifest ({exc}); "
                        "expected a sweep.json written by ist sweep") from None
    return check_manifest(data, path)


def _new_record(run: Any) -> dict[str, Any]:
    return {"id": run.run_id, "point": run.point, "config": run.config, "status": "pending",
            "attempts": 0, "file": run_file_name(run.run_id), "history": []}


class Manifest:
    """Locked access to one sweep directory's manifest."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / MANIFEST_NAME

    @contextmanager
    def edit(self) -> Iterator[dict[str, Any]]:
        """Hold the lock, yield the manifest dict, write it back atomically on success."""
        with directory_lock(self.directory):
            data = read_manifest(self.directory)
            if data is None:
                raise UserError(f"--out: {str(self.path)!r} disappeared while the sweep ran")
            yield data
            data["updated"] = utc_now()
            write_text_atomic(self.path, json.dumps(data, indent=1, sort_keys=False))

    def open(self, spec: SweepSpec, *, force: bool) -> dict[str, Any]:
        """Create the manifest, or check that the existing one holds the same run list.

        A changed run list is an error unless ``force`` (``--force`` or ``--adopt``); then the new
        list replaces it, keeping the records of runs in both. Returns the manifest.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        with directory_lock(self.directory):
            data = read_manifest(self.directory)
            if data is None:
                data = {"schema": MANIFEST_SCHEMA, "name": spec.name, "sweep_file": spec.source(),
                        "spec": spec.raw, "created": utc_now(), "runs": [_new_record(run) for run in spec.runs]}
            else:
                old_ids = [run["id"] for run in data.get("runs", [])]
                if set(old_ids) != set(spec.run_ids):
                    if not force:
                        added = len(set(spec.run_ids) - set(old_ids))
                        removed = len(set(old_ids) - set(spec.run_ids))
                        raise UserError(
                            f"--out: {str(self.path)!r} holds a different run list ({added} runs added, "
                            f"{removed} removed by the sweep file); expected the same grid, a new --out, "
                            "--adopt to take the new run list and keep its finished runs, or --force to "
                            "take it and run every run again")
                    records = {run["id"]: run for run in data.get("runs", [])}
                    data["runs"] = [records.get(run.run_id) or _new_record(run) for run in spec.runs]
                    data["spec"] = spec.raw
                    data["sweep_file"] = spec.source()
                data["name"] = spec.name
            data["updated"] = utc_now()
            write_text_atomic(self.path, json.dumps(data, indent=1, sort_keys=False))
            return data

    def read(self) -> dict[str, Any]:
        with directory_lock(self.directory):
            data = read_manifest(self.directory)
        if data is None:
            raise UserError(f"--out: {str(self.path)!r} disappeared while the sweep ran")
        return data

    def update_run(self, run_id: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Apply ``change`` to one run's record under the lock; return the new record."""
        with self.edit() as data:
            for record in data["runs"]:
                if record["id"] == run_id:
                    change(record)
                    return dict(record)
        raise KeyError(run_id)
