"""Run claims: ``OUT/RUNID.lock``, created exclusively (a hard link) before a run starts.

A claim records who holds it (host, PID and the PID's start time, so a recycled PID is
not mistaken for the holder) and the PID of the ``ist run`` process once started; its
mtime is the heartbeat, refreshed by the holder. A claim is stale when, on this host,
neither process is alive, or, from another host, when the heartbeat is older than
``stale_after`` seconds. Taking over a stale claim happens under the sweep directory's
``flock`` so two sweeps cannot both take over the same claim.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ist_cli.io.atomic import create_exclusive, write_text_atomic
from ist_cli.io.names import utc_now
from ist_cli.io.regular import regular_file
from ist_cli.runtime.processes import process_alive, process_start_ticks

HEARTBEAT_SECONDS = 5.0
STALE_AFTER_SECONDS = 120.0
LOCK_NAME = ".sweep.lock"


@contextmanager
def directory_lock(directory: Path) -> Iterator[None]:
    """Exclusive ``flock`` on ``DIR/.sweep.lock``: serialises manifest updates and takeovers."""
    regular_file(directory / LOCK_NAME, "--out", "a sweep directory written by ist")  # a FIFO would block
    with open(directory / LOCK_NAME, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def claim_path(directory: Path, run_id: str) -> Path:
    return directory / f"{run_id}.lock"


def read_claim(path: Path) -> dict[str, Any] | None:
    """The claim's record, ``{}`` if it exists but is not yet readable, None if absent."""
    regular_file(path, "--out", "a sweep directory written by ist")  # a FIFO would block the read
    try:
        text = path.read_text()
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        record = {}
    record["heartbeat"] = mtime
    return record


def claim_is_stale(record: dict[str, Any], stale_after: float = STALE_AFTER_SECONDS) -> bool:
    """Dead holder on this host, or a heartbeat older than ``stale_after`` from elsewhere."""
    age = time.time() - record.get("heartbeat", 0.0)
    if record.get("host") == socket.gethostname() and "pid" in record:
        return not (process_alive(record.get("pid"), record.get("pid_start"))
                    or process_alive(record.get("run_pid"), record.get("run_pid_start")))
    return age > stale_after


class ClaimBook:
    """The claims this sweep process holds, with a heartbeat thread keeping them fresh."""

    def __init__(self, directory: Path, *, stale_after: float = STALE_AFTER_SECONDS) -> None:
        self.directory = directory
        self.stale_after = stale_after
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._held: dict[str, dict[str, Any]] = {}
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="ist-sweep-heartbeat", daemon=True)
        self._thread.start()

    # -- claiming ---------------------------------------------------------------------
    def try_claim(self, run_id: str) -> tuple[bool, dict[str, Any] | None]:
        """Claim ``run_id``: (True, stale record taken over or None) or (False, live holder's record)."""
        path = claim_path(self.directory, run_id)
        if self._create(path, run_id):
            return True, None
        with directory_lock(self.directory):
            record = read_claim(path)
            if record is None:
                return (True, None) if self._create(path, run_id) else (False, read_claim(path))
            if not claim_is_stale(record, self.stale_after):
                return False, record
            path.unlink(missing_ok=True)
            if self._create(path, run_id):
                return True, record
            return False, read_claim(path)

    def holder(self, run_id: str) -> dict[str, Any] | None:
        """The live holder's record of ``run_id``, None if unclaimed or stale."""
        record = read_claim(claim_path(self.directory, run_id))
        if record is None or claim_is_stale(record, self.stale_after):
            return None
        return record

    def release_if_unheld(self, run_id: str) -> bool:
        """True when no live sweep holds ``run_id``; a stale claim is deleted on the way.

        The caller holds the directory lock. Only an existing claim is deleted, and a claim
        file is replaced only under that lock, so a claim a live sweep has just made is
        never removed.
        """
        path = claim_path(self.directory, run_id)
        record = read_claim(path)
        if record is None:
            return True
        if not claim_is_stale(record, self.stale_after):
            return False
        path.unlink(missing_ok=True)
        return True

    def _create(self, path: Path, run_id: str) -> bool:
        """Create the claim whole (``create_exclusive``): a sweep killed mid-claim leaves
        one that reads as its dead holder's, never an empty one."""
        record = {
            "run_id": run_id, "host": self.host, "pid": self.pid, "pid_start": process_start_ticks(self.pid),
            "started": utc_now(),
        }
        try:
            create_exclusive(path, json.dumps(record).encode())
        except FileExistsError:
            return False
        with self._guard:
            self._held[run_id] = record
        return True

    def set_run_pid(self, run_id: str, pid: int) -> None:
        """Record the ``ist run`` process, so an orphaned run still counts as alive."""
        with self._guard:
            record = self._held.get(run_id)
            if record is None:
                return
            record.update(run_pid=pid, run_pid_start=process_start_ticks(pid))
            write_text_atomic(claim_path(self.directory, run_id), json.dumps(record))

    def release(self, run_id: str) -> None:
        with self._guard:
            if self._held.pop(run_id, None) is not None:
                claim_path(self.directory, run_id).unlink(missing_ok=True)

    def held(self) -> list[str]:
        with self._guard:
            return list(self._held)

    # -- heartbeat --------------------------------------------------------------------
    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            with self._guard:
                for run_id in self._held:
                    try:
                        os.utime(claim_path(self.directory, run_id))
                    except FileNotFoundError:
                        pass

    def close(self) -> None:
        """Stop the heartbeat and drop every claim still held."""
        self._stop.set()
        for run_id in self.held():
            self.release(run_id)
