"""The sweep loop: reconcile, claim, execute, record, until every run of the list is done.

Promises (docs/sweep.md): a finished ``RUNID.h5`` is never executed again or overwritten
(``--force``/``--rerun-failed`` move it aside first); a run executes only under its claim;
a stale claim (dead holder) is taken over; the manifest is the record of attempts.
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ist_cli.errors import RunInterrupted
from ist_cli.io.names import run_file_path, utc_now
from ist_cli.io.runfile import RESULT_STATUSES, error_headline
from ist_cli.runtime.signals import interrupts_raised
from ist_cli.sweep.claims import STALE_AFTER_SECONDS, ClaimBook
from ist_cli.sweep.executors import Outcome, make_executor
from ist_cli.sweep.files import (
    finished_status,
    move_aside,
    remove_orphaned_temporaries,
    run_file_attrs,
)
from ist_cli.sweep.manifest import Manifest
from ist_cli.sweep.progress import SweepProgress
from ist_cli.sweep.spec import PlannedRun, SweepSpec

INTERRUPTED_EXIT = 130
SIGINT_GRACE_SECONDS = 8.0  # a terminal's Ctrl-C reaches the runs too: let them finish cleaning up


@dataclass
class SweepOptions:
    """What ``ist sweep`` was asked to do (see ``ist_cli/cli/sweep.py``)."""

    jobs: int | None = None
    executor: str = "local"
    isolation: str = "warm"  # each run forked from a warm process, or a subprocess (sweep/warm.py)
    scheduler: str | None = None
    force: bool = False
    adopt: bool = False  # a changed run list replaces the manifest's; finished runs are kept
    rerun_failed: bool = False
    quiet: bool = False
    stale_after: float = STALE_AFTER_SECONDS


@dataclass
class SweepResult:
    """Counts of one invocation and the sweep's final state."""

    total: int
    executed: Counter = field(default_factory=Counter)   # outcomes of runs executed here
    skipped: Counter = field(default_factory=Counter)    # finished before this invocation
    elsewhere: Counter = field(default_factory=Counter)  # finished by another sweep process meanwhile
    final: Counter = field(default_factory=Counter)      # status of every run at the end
    takeovers: int = 0

    @property
    def exit_code(self) -> int:
        """1 when any run of the sweep is failed, else 0 (diverged runs are results)."""
        return 1 if self.final.get("failed", 0) else 0


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def default_jobs(max_workers: int, cores: int | None = None) -> int:
    """As many runs at once as fit the cores, each run using ``workers`` processes."""
    return max(1, (cores or available_cores()) // max(1, max_workers))


def _history_entry(attempt: int, outcome: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"attempt": attempt, "started": utc_now(), "host": socket.gethostname(),
            "sweep_pid": os.getpid(), "outcome": outcome, **extra}


def _attempt_open(record: dict[str, Any]) -> bool:
    history = record.get("history") or []
    return bool(history) and history[-1].get("outcome") is None


def _close_open_attempt(record: dict[str, Any], outcome: str, note: str) -> None:
    """Give the last attempt, left open by a process that died, its outcome."""
    if _attempt_open(record):
        record["history"][-1].update(outcome=outcome, ended=utc_now(), note=note)


class SweepEngine:
    """One invocation of a sweep over one output directory."""

    def __init__(self, spec: SweepSpec, out_dir: Path, options: SweepOptions,
                 prepare: Callable[[PlannedRun], PlannedRun] | None = None) -> None:
        self.spec = spec
        self.prepare = prepare  # last look at a run before it is submitted (a study's step budget)
        self.out_dir = out_dir
        self.options = options
        self.runs: dict[str, PlannedRun] = {run.run_id: run for run in spec.runs}
        self.manifest = Manifest(out_dir)
        self.result = SweepResult(total=len(spec.runs))
        self.executed_here: set[str] = set()
        self.interrupting = False

    # -- state ------------------------------------------------------------------------
    def reconcile(self, claims: ClaimBook) -> dict[str, str]:
        """Re-derive each run's status from its file and claim; return id -> status."""
        statuses: dict[str, str] = {}
        with self.manifest.edit() as data:
            remove_orphaned_temporaries(self.out_dir)
            for record in data["runs"]:
                status = finished_status(self.out_dir / record["file"])
                if status is not None:
                    record["status"] = status
                    if claims.release_if_unheld(record["id"]):
                        # the run wrote its file, then its sweep died before recording it
                        _close_open_attempt(record, status, "recorded from its run file; its sweep process died")
                elif record["status"] in RESULT_STATUSES:
                    record["status"] = "pending"  # the file was removed: run it again
                elif record["status"] == "running" and claims.holder(record["id"]) is None:
                    record["status"] = "pending"
                    _close_open_attempt(record, "abandoned", "its sweep process died; no run file")
                statuses[record["id"]] = record["status"]
        return statuses

    def plan(self, statuses: dict[str, str]) -> list[str]:
        """The runs this invocation should make finished; count the others as skipped."""
        todo = []
        for run_id in self.runs:
            status = statuses[run_id]
            wanted = (self.options.force or status in ("pending", "running")
                      or (self.options.rerun_failed and status in ("failed", "diverged")))
            if wanted:
                todo.append(run_id)
            else:
                self.result.skipped[status] += 1
        return todo

    # -- one run ----------------------------------------------------------------------
    def _start(self, run_id: str, claims: ClaimBook, executor: Any, progress: SweepProgress,
               waiting: dict[str, Any]) -> None:
        claimed, record = claims.try_claim(run_id)
        if not claimed:
            waiting[run_id] = record
            return
        path = run_file_path(self.out_dir, run_id)
        status = finished_status(path)
        if status is not None and run_id not in self.executed_here:
            if self.options.force:
                move_aside(path, "old")
                status = None
            elif self.options.rerun_failed and status in ("failed", "diverged"):
                move_aside(path, "failed")
                status = None
        if status is not None:  # finished by another process since we looked
            claims.release(run_id)
            self._record_elsewhere(run_id, status, progress)
            return
        if record is not None:
            self.result.takeovers += 1
        host_pid = f"{record.get('host')}:{record.get('pid')}" if record else ""

        def mark_running(entry: dict[str, Any]) -> None:
            if record is not None:
                _close_open_attempt(entry, "abandoned", f"stale claim of {host_pid} taken over")
            entry["status"] = "running"
            entry["attempts"] = entry.get("attempts", 0) + 1
            entry.setdefault("history", []).append(_history_entry(entry["attempts"], executor=executor.name))
            entry.pop("error", None)

        self.manifest.update_run(run_id, mark_running)
        self.executed_here.add(run_id)
        progress.started(run_id, self.runs[run_id].label())
        run = self.runs[run_id] if self.prepare is None else self.prepare(self.runs[run_id])
        executor.submit(run, lambda pid: self._on_pid(claims, run_id, pid))

    def _on_pid(self, claims: ClaimBook, run_id: str, pid: int) -> None:
        claims.set_run_pid(run_id, pid)
        self.manifest.update_run(run_id, lambda entry: entry["history"][-1].update(run_pid=pid))

    def _finish(self, run_id: str, outcome: Outcome, claims: ClaimBook, progress: SweepProgress) -> None:
        path = run_file_path(self.out_dir, run_id)
        status = finished_status(path)
        error = shown = None
        interrupted = self.interrupting or outcome.returncode == INTERRUPTED_EXIT
        if interrupted:
            if status is not None:
                move_aside(path, "interrupted")
            status, outcome_name = "pending", "interrupted"
        elif status is None:
            status, outcome_name, error = "failed", "failed", outcome.error_line()
        else:
            outcome_name = status
            attrs = run_file_attrs(path)
            if status == "completed" and attrs.get("budget_stopped") == "True":  # a study's pruned trial
                shown = "pruned (stopped at its step budget)"
            if attrs.get("run_id") not in (None, run_id):
                error = f"run file holds run_id {attrs['run_id']}, expected {run_id}"
                status = outcome_name = "failed"
            elif status == "failed":
                error = error_headline(attrs.get("error")) or outcome.error_line()

        def mark_done(entry: dict[str, Any]) -> None:
            entry["status"] = status
            entry["history"][-1].update(outcome=outcome_name, ended=utc_now(), where=outcome.where,
                                        seconds=round(outcome.seconds, 3), exit_code=outcome.returncode)
            if error:
                entry["error"] = error

        self.manifest.update_run(run_id, mark_done)
        claims.release(run_id)
        label = self.runs[run_id].label()
        if interrupted:
            progress.dropped(run_id)
            return
        self.result.executed[status] += 1
        progress.finished(run_id, label, shown or status, f"({outcome.seconds:.1f}s)" + (f": {error}" if error else ""))

    def _record_elsewhere(self, run_id: str, status: str, progress: SweepProgress) -> None:
        self.manifest.update_run(run_id, lambda entry: entry.update(status=status))
        self.result.elsewhere[status] += 1
        progress.finished(run_id, self.runs[run_id].label(), status, "(by another sweep process)")

    # -- the loop ---------------------------------------------------------------------
    def execute(self, todo: list[str], claims: ClaimBook, executor: Any, progress: SweepProgress) -> None:
        queue = deque(todo)
        waiting: dict[str, Any] = {}
        ticks = 0
        while queue or executor.in_flight() or waiting:
            while queue and executor.in_flight() < executor.slots:
                self._start(queue.popleft(), claims, executor, progress, waiting)
            for run_id, outcome in executor.wait(0.2):
                self._finish(run_id, outcome, claims, progress)
            ticks += 1
            if waiting and ticks % 5 == 0:
                self._poll_waiting(waiting, queue, claims, progress)

    def _poll_waiting(self, waiting: dict[str, Any], queue: deque, claims: ClaimBook,
                      progress: SweepProgress) -> None:
        """Runs another sweep process holds: done when their file appears, ours if the claim goes."""
        for run_id in list(waiting):
            status = finished_status(run_file_path(self.out_dir, run_id))
            if status is not None and claims.holder(run_id) is None:
                del waiting[run_id]
                self._record_elsewhere(run_id, status, progress)
            elif claims.holder(run_id) is None:
                del waiting[run_id]
                queue.append(run_id)

    def drain(self, executor: Any, claims: ClaimBook, progress: SweepProgress, *, grace: float) -> None:
        """After an interrupt: stop the runs, wait for them, put them back to pending.

        After a Ctrl-C the runs (same process group) got SIGINT too; a second signal during
        their cleanup would cut it short, so they get ``grace`` seconds before a SIGTERM.
        """
        self.interrupting = True
        deadline = time.monotonic() + grace
        while executor.in_flight() and time.monotonic() < deadline:
            for run_id, outcome in executor.wait(0.2):
                self._finish(run_id, outcome, claims, progress)
        executor.interrupt()
        while executor.in_flight():
            for run_id, outcome in executor.wait(0.5):
                self._finish(run_id, outcome, claims, progress)
        for run_id in claims.held():
            def back_to_pending(entry: dict[str, Any]) -> None:
                if entry["status"] == "running":
                    entry["status"] = "pending"
                    _close_open_attempt(entry, "interrupted", "the sweep was interrupted")
            self.manifest.update_run(run_id, back_to_pending)

    def final_counts(self) -> None:
        data = self.manifest.read()
        self.result.final = Counter(record["status"] for record in data["runs"])


def run_sweep(spec: SweepSpec, out_dir: Path, options: SweepOptions, *, on_plan: Any = None,
              prepare: Callable[[PlannedRun], PlannedRun] | None = None) -> SweepResult:
    """Execute (or resume) a sweep in ``out_dir`` and return what happened."""
    engine = SweepEngine(spec, out_dir, options, prepare)
    engine.manifest.open(spec, force=options.force or options.adopt)
    claims = ClaimBook(out_dir, stale_after=options.stale_after)
    try:
        statuses = engine.reconcile(claims)
        todo = engine.plan(statuses)
        jobs = options.jobs or default_jobs(spec.max_workers())
        if on_plan is not None:
            on_plan(todo, jobs)
        if todo:
            done = len(spec.runs) - len(todo)
            slots = min(jobs, len(todo)) if not options.scheduler else options.jobs
            executor = make_executor(options.executor, out_dir, slots, options.scheduler, jobs, options.isolation)
            try:
                seen: dict[str, bool] = {}
                with interrupts_raised(lambda: seen.update(sigterm=True)), SweepProgress(len(spec.runs), done, spec.name, quiet=options.quiet) as progress:
                    try:
                        engine.execute(todo, claims, executor, progress)
                    except KeyboardInterrupt:
                        grace = 0.0 if seen.get("sigterm") or options.executor != "local" else SIGINT_GRACE_SECONDS
                        engine.drain(executor, claims, progress, grace=grace)
                        raise RunInterrupted(f"sweep {spec.name} stopped; run the same command again to resume") from None
            finally:
                executor.close()
        engine.final_counts()
    finally:
        claims.close()
    return engine.result


__all__ = ["SweepOptions", "SweepResult", "run_sweep", "default_jobs", "available_cores"]
