"""One experiment from config to HDF5 file: the coordinator's round loop.

Order of work keeps the run file's promises (docs/schema.md): the config and the output directory
are checked before anything is created; the arena, the temporary file and the workers
are torn down in ``finally`` whatever happens; the file is renamed to ``.h5`` only
after its status is written. The pieces: ``run_round`` (one round), ``Totals`` (the
cumulative counters), ``FaultPolicy`` (what an exception makes of the run),
``existing_run`` (an identical finished run is reported, not recomputed) and
``RunSummary`` (what the caller gets back).
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ist_cli._version import __version__
from ist_cli.algorithms import Algorithm, build_algorithm, worker_preload
from ist_cli.comm import NetworkModel, Traffic
from ist_cli.config import config_hash, default_run_name, resolve_config
from ist_cli.errors import RunFailed, RunInterrupted, UserError
from ist_cli.footprint import estimate_file_bytes, estimate_run
from ist_cli.io.names import run_file_path, utc_now
from ist_cli.io.outputs import check_file_name, first_existing, make_dir, output_dir
from ist_cli.io.provenance import environment, git_commit
from ist_cli.io.runfile import (
    TMP_SUFFIX,
    RunFileBusy,
    RunFileError,
    RunFileWriter,
    read_run,
    tmp_path_for,
)
from ist_cli.progress import RunProgress
from ist_cli.runtime.arena import Arena, reclaim_orphaned_segments
from ist_cli.runtime.budget import DISK_MARGIN_BYTES, SpaceGuard, check_memory, check_space
from ist_cli.runtime.choice import default_transport
from ist_cli.runtime.signals import (
    interrupts_raised,
    raise_if_interrupted,
    signals_deferred,
    signals_ignored,
)
from ist_cli.runtime.transport import Transport, TransportFactory
from ist_cli.settings import settings_from_config
from ist_cli.training.goal import EvalSchedule, Goal

TIMING_METRICS = ("wall_time", "compute_time", "comm_time_model", "sim_time", "comm_time_measured")


# ----------------------------------------------------------------------------- one round
@dataclass(frozen=True)
class RoundResult:
    """What one round produced: the workers' step results and what it cost."""

    results: list[Any]
    slowest_worker_seconds: float
    coordinator_seconds: float
    traffic: Traffic


def run_round(algorithm: Algorithm, transport: Transport, arrays: dict[str, np.ndarray], round_index: int) -> RoundResult:
    """Plan, run every worker, aggregate; the coordinator's own time is measured apart."""
    started = time.perf_counter()
    payloads = algorithm.plan_round(arrays, round_index)
    plan_seconds = time.perf_counter() - started
    replies = transport.run_round(round_index, payloads)
    results = [result for _, result in replies]
    aggregate_start = time.perf_counter()
    algorithm.aggregate(arrays, round_index, results)
    coordinator_seconds = plan_seconds + time.perf_counter() - aggregate_start
    return RoundResult(results, max(seconds for seconds, _ in replies), coordinator_seconds,
                       algorithm.round_traffic(round_index))


@dataclass
class Totals:
    """The cumulative counters every metrics row carries."""

    network: NetworkModel
    bytes_up: float = 0.0
    bytes_down: float = 0.0
    compute_time: float = 0.0
    comm_time_model: float = 0.0

    def add(self, done: RoundResult) -> None:
        # workers run in parallel in the modelled deployment: the slowest one counts
        self.compute_time += done.slowest_worker_seconds + done.coordinator_seconds
        self.bytes_up += done.traffic.total_up
        self.bytes_down += done.traffic.total_down
        self.comm_time_model += self.network.round_time(done.traffic)

    def row(self) -> dict[str, float]:
        return {"bytes_up": self.bytes_up, "bytes_down": self.bytes_down, "compute_time": self.compute_time,
                "comm_time_model": self.comm_time_model, "sim_time": self.compute_time + self.comm_time_model}


# ----------------------------------------------------------------------------- faults
@dataclass
class FaultPolicy:
    """What an exception inside the run makes of it: its status, the error stored in the
    file, and whether the file is kept (a ``UserError`` discards it: the run never started)."""

    status: str = "failed"
    error: str | None = None
    keep_file: bool = True

    @contextmanager
    def watching(self, current_round: Callable[[], int]) -> Iterator[None]:
        try:
            yield
        except KeyboardInterrupt:
            stopped_at = current_round()
            self.status, self.error = "failed", f"interrupted by the user at round {stopped_at}"
            raise RunInterrupted(f"stopped at round {stopped_at}; the run file records it as failed") from None
        except RunFailed as exc:
            self.status, self.error = "failed", full_story(exc)
            raise
        except UserError:
            self.status, self.keep_file = "failed", False
            raise
        except BaseException as exc:
            self.status, self.error = "failed", full_story(exc)
            raise


def full_story(exc: BaseException) -> str:
    """The one-line message first, then the traceback (a worker's own is chained as its cause)."""
    line = str(exc) if isinstance(exc, RunFailed) else f"{type(exc).__name__}: {exc}"
    return line + "\n\n" + "".join(traceback.format_exception(exc)).rstrip()


# ----------------------------------------------------------------------------- the run
@dataclass(frozen=True)
class RunSummary:
    """What a finished run returns; the HDF5 file is the full record."""

    name: str
    run_id: str
    status: str
    file: str
    rounds_completed: int
    workers: int
    last_metrics: Mapping[str, float] = field(default_factory=dict)  # the last metrics row (its round aside)
    bytes_per_round_per_worker: float = 0.0
    extras: Mapping[str, Any] = field(default_factory=dict)  # the method's own (``Algorithm.summary_extras``)

    def as_dict(self) -> dict[str, Any]:
        """One flat dict (``--json`` and the summary table)."""
        return {"name": self.name, "run_id": self.run_id, "status": self.status, "file": self.file,
                "rounds_completed": self.rounds_completed, "workers": self.workers, **self.last_metrics,
                "bytes_per_round_per_worker": self.bytes_per_round_per_worker, **self.extras}


class _FinishedMeanwhile(Exception):
    """The identical run finished while this one was starting: report it (exit 0)."""

    def __init__(self, summary: RunSummary) -> None:
        super().__init__(summary.file)
        self.summary = summary


def _refuse_finished(path: Path, run_id: str) -> Exception:
    """What a finished file found when claiming ``path`` makes of this run: the very same run
    is reported as ``existing_run`` reports it; anything else is a one-line refusal."""
    previous = existing_run(path, run_id)  # raises the refusal for another or a failed run
    if previous is None:  # gone again: the claim lost a race with a replacement
        return UserError(f"{str(path)!r} was replaced while this run started; expected one run per --name")
    return _FinishedMeanwhile(previous)


def prepare_output(out_dir: str | Path, name: str, overwrite: bool = False) -> Path:
    """Check ``out_dir`` and ``name`` and return ``out_dir/name.h5``, creating nothing;
    ``existing_run`` decides about a file there. The directory is made only when the run file is."""
    directory = output_dir(out_dir, "--out")
    check_file_name(name, directory, ".h5" + TMP_SUFFIX, "--name")
    return run_file_path(directory, name)


REUSABLE_STATUSES = ("completed", "diverged")


def existing_run(path: Path, run_id: str) -> RunSummary | None:
    """The summary of the finished run already at ``path`` when it is this very run (same
    ``run_id``, completed or diverged), so re-running the same command costs nothing, as a
    sweep skips finished runs. None when there is no file. Anything else at ``path`` (another
    config under the same ``--name``, a failed run) is refused: finished files are never
    replaced without ``--overwrite``."""
    if not path.exists():
        return None
    refuse = UserError(f"{str(path)!r} already exists and holds a different run or a failed one (finished "
                       "runs are never replaced); expected a new --name, or --overwrite to replace it")
    try:
        run = read_run(path, load_problem=False)
    except RunFileError:
        raise refuse from None
    if run.run_id != run_id or run.status not in REUSABLE_STATUSES:
        raise refuse
    last = {}
    for key, values in run.metrics.items():
        measured = values[~np.isnan(values)] if run.status == "completed" else values
        if key != "round" and measured.size:
            last[key] = float(measured[-1])
    rounds = int(run.attrs.get("rounds_completed", run.metrics["round"][-1]))
    workers = int(run.config.get("workers", 1))
    sent = last.get("bytes_up", 0.0) + last.get("bytes_down", 0.0)
    return RunSummary(
        name=path.stem, run_id=run_id, status=run.status, file=str(path), rounds_completed=rounds, workers=workers,
        last_metrics=last, bytes_per_round_per_worker=sent / max(rounds, 1) / workers, extras={"reused": True},
    )


def _claim_run_file(path: Path, overwrite: bool, run_id: str, **header: Any) -> RunFileWriter:
    """Start the run file, claiming ``NAME.h5.tmp``: a live run of the same name, or one
    that finished since ``prepare_output`` looked, is a one-line refusal."""
    try:
        return RunFileWriter(path, replace=overwrite, run_id=run_id, **header)
    except RunFileBusy:
        raise UserError(f"{str(tmp_path_for(path))!r} is being written by another live run; "
                        "expected a different --name or --out, or to wait for that run") from None
    except FileExistsError:
        raise _refuse_finished(path, run_id) from None


def _finish_file(writer: RunFileWriter, guard: SpaceGuard, final: Mapping[str, Any], status: str,
                 error: str | None, attrs: Mapping[str, Any]) -> tuple[str, str | None, str | None]:
    """Write ``/final`` and the status and rename the file; returns (status, error, lost).

    ``/final`` is skipped, and the run marked failed, when the disk has no room for it. If
    the file cannot be finished at all (deleted with its directory), it is dropped and
    ``lost`` says why in one line. Never raises: cleanup after it must still run.
    """
    try:
        if final:
            guard.check(sum(np.asarray(v).nbytes for v in final.values()))
            writer.write_group("final", {k: np.asarray(v) for k, v in final.items()})
    except RunFailed as exc:
        status, error = "failed", error or str(exc)
    except (OSError, RuntimeError, ValueError) as exc:
        status, error = "failed", error or f"the final model could not be written ({exc})"
    try:
        writer.close(status, error=error, extra_attrs=dict(attrs))
        return status, error, None
    except (OSError, RuntimeError, ValueError) as exc:
        writer.discard()
        # the stored error is the full story (message, then traceback): the line names the message only
        reason = error.splitlines()[0] if error else f"{type(exc).__name__}: {exc}"
        return "failed", error, f"the run file {str(writer.final_path)!r} could not be finished: {reason}"


def run_experiment(
    config: Mapping[str, Any],
    *,
    out_dir: str | Path = "results",
    name: str | None = None,
    overwrite: bool = False,
    quiet: bool = True,
    on_start: Callable[[list[int]], None] | None = None,
    round_timeout: float | None = None,
    transport: TransportFactory | None = None,
    step_budget: int | None = None,
) -> RunSummary:
    """Run one experiment and return its summary; the HDF5 file is the full record.

    ``config`` may be partial: it is resolved against the defaults. Raises ``UserError``
    for bad input (nothing written), ``RunFailed``/``RunInterrupted`` after writing a
    ``failed`` file. A diverged run returns normally with status ``diverged``.
    ``transport`` builds the workers (``runtime.transport``); None: ``runtime.choice`` (shared
    memory; a one-worker ``single`` run in this process), where
    ``round_timeout`` (seconds) fails a round whose workers do not all answer in time and
    None learns a generous one from the first rounds (``runtime.watchdog``).
    ``step_budget`` (a study's trial pruning, docs/study.md): at an evaluation that does not
    meet the goal, stop once this many steps are taken; recorded as ``budget_stopped``. It is
    not part of the config: every evaluation up to the stop is the one the run makes without it.
    """
    config = resolve_config(config)
    name = default_run_name(config) if name is None else name
    path = prepare_output(out_dir, name, overwrite)
    check_memory(estimate_run(config))
    check_space(first_existing(path.parent), estimate_file_bytes(config) + DISK_MARGIN_BYTES, "the run file")
    run_id = config_hash(config)
    if not overwrite:
        previous = existing_run(path, run_id)
        if previous is not None:
            return previous
    if transport is None:  # shared memory (the fork server warms up while the data loads) or in-process
        settings = settings_from_config(config)
        transport = default_transport(settings, worker_preload(settings), round_timeout)
    progress = RunProgress(config["rounds"], name, quiet=quiet)
    progress.stage("loading data" if config["model"] == "mlp" else "building the problem")
    try:
        algorithm = build_algorithm(config)  # loads data / problem: may raise UserError
    except BaseException:
        progress.end_stage()
        raise
    settings = algorithm.settings
    save_every = getattr(settings, "save_params_every", 0)

    steps_per_round = getattr(algorithm, "steps_per_round", None)  # MLP methods log /metrics/step
    schedule = EvalSchedule(settings.eval_every, getattr(settings, "eval_every_steps", 0), steps_per_round or 1,
                            settings.rounds)
    goal = Goal.from_settings(settings)
    goal_attrs: dict[str, Any] = {"goal_reached": False, "steps_to_result": -1} if goal is not None else {}
    if step_budget is not None:
        if goal is None:
            raise UserError(f"--step-budget: {step_budget} is not allowed without a goal; "
                            "expected --goal-error too (the budget only stops runs that train to a goal)")
        goal_attrs.update(step_budget=int(step_budget), budget_stopped=False)
    policy = FaultPolicy()
    totals = Totals(settings.network)
    last_metrics: dict[str, float] = {}
    round_index = 0
    arena: Arena | None = None
    writer: RunFileWriter | None = None
    workers: Transport | None = None
    guard: SpaceGuard | None = None
    started = time.perf_counter()
    reclaim_orphaned_segments()

    def log(metrics: Mapping[str, float]) -> None:
        steps = {"step": float(round_index * steps_per_round)} if steps_per_round else {}
        row = {"round": float(round_index), **steps, **metrics, **totals.row(), **transport_metrics(workers),
               "wall_time": time.perf_counter() - started}
        guard.check()
        with signals_deferred():
            writer.append_metrics(row)
        last_metrics.update(row)
        raise_if_interrupted()  # one that an evaluation's kernel load swallowed (runtime/signals.py)

    def reached(metrics: Mapping[str, float]) -> bool:
        """Is the goal met at this evaluation? Records steps-to-result if so."""
        if goal is None or not goal.reached(metrics):
            return False
        goal_attrs.update(goal_reached=True, steps_to_result=round_index * (steps_per_round or 1))
        return True

    timeline: dict[str, str] = {}  # when the rounds began and ended (root attrs; bench_startup.py)
    meanwhile: RunSummary | None = None
    with interrupts_raised():
        try:
            with policy.watching(lambda: round_index):
                arena = Arena.create(algorithm.arena_spec(), tag=run_id[:8])
                arrays = arena.arrays
                algorithm.initialize(arrays)
                # no warm-up here: the fork server loads every worker kernel meanwhile, and this
                # process loads the few it calls (evaluation) at the initial evaluation below
                make_dir(path.parent, "--out")
                writer = _claim_run_file(path, overwrite, run_id=run_id, config=config, env=environment(),
                                         seed=settings.seed, version=__version__, git_commit=git_commit())
                guard = SpaceGuard(writer.tmp_path)
                # built (not started) before row 0, whose columns include the transport's own metrics
                workers = transport(algorithm.worker_program(), arrays, arena.layout, algorithm.n_workers)
                problem = algorithm.problem_arrays()
                if problem:
                    writer.write_group("problem", problem)
                for group, values in algorithm.run_file_groups().items():
                    writer.write_group(group, values)
                # The first evaluation loads its kernels from numba's cache, partly inside a
                # ctypes callback, where a KeyboardInterrupt is printed and dropped (the run
                # would go on): an interrupt is held until the evaluation is done.
                with signals_deferred():
                    initial = {**algorithm.evaluate(arrays), **algorithm.round_metrics([])}
                log(initial)
                if save_every:
                    writer.append_params(0, algorithm.snapshot(arrays))
                writer.start_live()
                progress.stage(f"starting {algorithm.n_workers} workers")
                workers.start()
                if on_start is not None:
                    on_start(workers.pids)

                policy.status = "completed"
                done_early = reached(initial)  # the initial model may already meet the goal
                timeline["rounds_began"] = utc_now("microseconds")
                with progress:
                    for round_index in range(1, 0 if done_early else settings.rounds + 1):
                        raise_if_interrupted()
                        done = run_round(algorithm, workers, arrays, round_index)
                        totals.add(done)
                        if save_every and round_index % save_every == 0:
                            guard.check()
                            with signals_deferred():
                                writer.append_params(round_index, algorithm.snapshot(arrays))
                        metrics = None
                        if schedule.due(round_index):
                            metrics = {**algorithm.evaluate(arrays), **algorithm.round_metrics(done.results)}
                            log(metrics)
                            if not math.isfinite(metrics["loss"]):
                                policy.status = "diverged"
                                break
                            if reached(metrics):
                                progress.update(round_index, metrics)
                                break
                            if step_budget is not None and round_index * (steps_per_round or 1) >= step_budget:
                                goal_attrs["budget_stopped"] = True
                                progress.update(round_index, metrics)
                                break
                        progress.update(round_index, metrics)
                timeline["rounds_ended"] = utc_now("microseconds")
        except _FinishedMeanwhile as done:  # nothing of this run was written; the other one is the record
            meanwhile = done.summary
        finally:
            lost = None
            progress.end_stage()
            with signals_ignored():
                if workers is not None:
                    workers.close()
                if writer is not None and not policy.keep_file:
                    writer.discard()
                elif writer is not None:
                    final = algorithm.final_params(arena.arrays) if arena is not None and arena.arrays else {}
                    attrs = {"rounds_completed": round_index, **goal_attrs, **timeline, **transport_attrs(workers)}
                    policy.status, policy.error, lost = _finish_file(writer, guard, final, policy.status,
                                                                     policy.error, attrs)
                if arena is not None:
                    arena.close()
            if lost is not None:  # the file could not be finished: say so in one line, exit 1
                raise RunFailed(lost) from None

    if meanwhile is not None:
        return meanwhile
    return RunSummary(
        name=name, run_id=run_id, status=policy.status, file=str(path), rounds_completed=round_index,
        workers=algorithm.n_workers, last_metrics={k: v for k, v in last_metrics.items() if k != "round"},
        bytes_per_round_per_worker=(totals.bytes_up + totals.bytes_down) / max(round_index, 1) / algorithm.n_workers,
        extras={**goal_attrs, **algorithm.summary_extras(), **transport_attrs(workers)},
    )


def transport_metrics(workers: Transport | None) -> dict[str, float]:
    """Cumulative metrics a transport measures itself (MPI: bytes moved, time in messages)."""
    return dict(workers.metrics()) if workers is not None and hasattr(workers, "metrics") else {}


def transport_attrs(workers: Transport | None) -> dict[str, Any]:
    """Run-file attributes a transport records (MPI: start-up and control bytes)."""
    return dict(workers.attrs()) if workers is not None and hasattr(workers, "attrs") else {}
