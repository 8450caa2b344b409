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
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from ist_cli._version import __version__
from ist_cli.algorithms import Algorithm, build_algorithm, worker_preload
from ist_cli.algorithms.plans import plan_of, runs_in_process
from ist_cli.comm import NetworkModel, Traffic
from ist_cli.config import config_hash, default_run_name, resolve_config, settings_from_config
from ist_cli.errors import RunFailed, RunInterrupted, UserError
from ist_cli.footprint import estimate_file_bytes
from ist_cli.io.names import run_file_path, utc_now
from ist_cli.io.outputs import check_file_name, first_existing, make_dir, output_dir
from ist_cli.io.provenance import environment, git_state
from ist_cli.io.runfile import (
    RESULT_STATUSES,
    TMP_SUFFIX,
    RunFileBusy,
    RunFileError,
    RunFileWriter,
    read_run,
    tmp_path_for,
)
from ist_cli.kernels.cache import kernels_cached
from ist_cli.preflight import check_run_inputs
from ist_cli.progress import RunProgress
from ist_cli.rounds import RoundLog
from ist_cli.runtime.arena import Arena, reclaim_orphaned_segments
from ist_cli.runtime.budget import DISK_MARGIN_BYTES, SpaceGuard, check_space
from ist_cli.runtime.choice import default_transport
from ist_cli.runtime.signals import (
    interrupts_raised,
    raise_if_interrupted,
    signals_deferred,
    signals_ignored,
)
from ist_cli.runtime.transport import (
    StepClock,
    StepTime,
    Transport,
    TransportFactory,
    shares_memory,
)
from ist_cli.training.goal import Goal


# ----------------------------------------------------------------------------- one round
@dataclass(frozen=True)
class RoundResult:
    """What one round produced: the workers' step results and what it cost (``StepTime``s:
    thread CPU seconds, the charge of a dedicated core, and wall seconds)."""

    results: list[Any]
    slowest_worker: StepTime
    coordinator: StepTime
    traffic: Traffic


def run_round(algorithm: Algorithm, transport: Transport, arrays: dict[str, np.ndarray], round_index: int) -> RoundResult:
    """Plan, run every worker, aggregate; the coordinator's own time is measured apart."""
    clock = StepClock()
    payloads = algorithm.plan_round(arrays, round_index)
    plan = clock.stop()
    replies = transport.run_round(round_index, payloads)
    results = [result for _, result in replies]
    clock = StepClock()
    algorithm.aggregate(arrays, round_index, results)
    aggregate = clock.stop()
    slowest = StepTime(max(t.cpu for t, _ in replies), max(t.wall for t, _ in replies))
    return RoundResult(results, slowest, StepTime(plan.cpu + aggregate.cpu, plan.wall + aggregate.wall),
                       algorithm.round_traffic(round_index))


@dataclass
class Totals:
    """The cumulative counters every metrics row carries."""

    network: NetworkModel
    bytes_up: float = 0.0
    bytes_down: float = 0.0
    compute_time: float = 0.0
    compute_time_wall: float = 0.0
    comm_time_model: float = 0.0
    links: dict[str, np.ndarray] = field(default_factory=dict)  # cumulative bytes per link, by kind

    def add(self, done: RoundResult) -> None:
        # workers run in parallel in the modelled deployment: the slowest one counts
        self.compute_time += done.slowest_worker.cpu + done.coordinator.cpu
        self.compute_time_wall += done.slowest_worker.wall + done.coordinator.wall
        self.bytes_up += done.traffic.total_up
        self.bytes_down += done.traffic.total_down
        self.comm_time_model += self.network.round_time(done.traffic)
        kind, carried = self.network.link_bytes(done.traffic)
        self.links[kind] = carried if kind not in self.links else self.links[kind] + carried

    def row(self) -> dict[str, float]:
        return {"bytes_up": self.bytes_up, "bytes_down": self.bytes_down, "compute_time": self.compute_time,
                "compute_time_wall": self.compute_time_wall, "comm_time_model": self.comm_time_model, "sim_time": self.compute_time + self.comm_time_model,
                "bytes_busiest_link": max((float(v.max()) for v in self.links.values() if v.size), default=0.0)}


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
    if run.run_id != run_id or run.status not in RESULT_STATUSES:
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
                 error: str | None, attrs: Callable[[], dict[str, Any]]) -> tuple[str, str | None, str | None]:
    """Write ``/final`` and the status and rename the file; returns (status, error, lost).

    ``/final`` is skipped, and the run marked failed, when the disk has no room for it. If
    the file cannot be finished at all (deleted with its directory), it is dropped and
    ``lost`` says why in one line. Never raises: cleanup after it must still run.
    """
    try:
        if final:
            guard.check(sum(v.nbytes for v in final.values()))
            writer.write_group("final", final)  # a partitioned model arrives slice by slice
    except RunFailed as exc:
        status, error = "failed", error or str(exc)
    except (OSError, RuntimeError, ValueError) as exc:
        status, error = "failed", error or f"the final model could not be written ({exc})"
    try:
        writer.close(status, error=error, extra_attrs=attrs())  # after /final: the peaks include writing it
        return status, error, None
    except (OSError, RuntimeError, ValueError) as exc:
        writer.discard()
        # the stored error is the full story (message, then traceback): the line names the message only
        reason = error.splitlines()[0] if error else f"{type(exc).__name__}: {exc}"
        return "failed", error, f"the run file {str(writer.final_path)!r} could not be finished: {reason}"


class Stop(Enum):
    """Why the round loop ended."""

    COMPLETED = "completed"  # every round ran
    DIVERGED = "diverged"  # the loss is no longer finite
    GOAL = "goal"  # an evaluation met the goal
    BUDGET = "budget"  # the step budget ran out before the goal
    INTERRUPTED = "interrupted"  # the user interrupted (SIGINT/SIGTERM)


@dataclass
class Targets:
    """When an evaluation ends the run: divergence, the goal, the step budget; and the root
    attrs that record it (``goal_reached``, ``steps_to_result``, ``budget_stopped``)."""

    goal: Goal | None
    step_budget: int | None
    steps_per_round: int
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.goal is not None:
            self.attrs.update(goal_reached=False, steps_to_result=-1)
        if self.step_budget is not None:
            if self.goal is None:
                raise UserError(f"--step-budget: {self.step_budget} is not allowed without a goal; expected "
                                "--goal-error too (the budget only stops runs that train to a goal)")
            self.attrs.update(step_budget=int(self.step_budget), budget_stopped=False)

    def reached(self, metrics: Mapping[str, float], round_index: int) -> bool:
        """Is the goal met at this evaluation? Records steps-to-result if so."""
        if self.goal is None or not self.goal.reached(metrics):
            return False
        self.attrs.update(goal_reached=True, steps_to_result=round_index * self.steps_per_round)
        return True

    def stop(self, metrics: Mapping[str, float], round_index: int) -> Stop | None:
        """What the evaluation after round ``round_index`` makes of the run (None: go on)."""
        loss = metrics["loss"] if "loss" in metrics or self.goal is None else metrics[self.goal.loss_metric]
        if not math.isfinite(loss):
            return Stop.DIVERGED
        if self.reached(metrics, round_index):
            return Stop.GOAL
        if self.step_budget is not None and round_index * self.steps_per_round >= self.step_budget:
            self.attrs["budget_stopped"] = True
            return Stop.BUDGET
        return None


@dataclass
class RunLog:
    """The rows of ``/metrics`` (and ``/params`` snapshots) as the rounds go."""

    totals: Totals
    steps_per_round: int | None  # None: the method does not count steps (no /metrics/step)
    started: float
    rounds: RoundLog  # /rounds: each round's cost, for re-pricing (ist_cli.rounds)
    round_index: int = 0
    last: dict[str, float] = field(default_factory=dict)
    writer: RunFileWriter = field(init=False)  # set as the run starts (``_start``)
    guard: SpaceGuard = field(init=False)
    workers: Transport = field(init=False)

    def write(self, metrics: Mapping[str, float]) -> None:
        steps = {"step": float(self.round_index * self.steps_per_round)} if self.steps_per_round else {}
        row = {"round": float(self.round_index), **steps, **metrics, **self.totals.row(), **self.workers.metrics(),
               "wall_time": time.perf_counter() - self.started}
        self.guard.check()
        with signals_deferred():
            self.writer.append_metrics(row)
            self.rounds.flush(self.writer)
        self.last.update(row)
        raise_if_interrupted()  # one that an evaluation's kernel load swallowed (runtime/signals.py)

    def snapshot(self, algorithm: Algorithm, arrays: dict[str, np.ndarray]) -> None:
        self.guard.check()
        with signals_deferred():
            self.writer.append_params(self.round_index, algorithm.snapshot(arrays))


def run_rounds(algorithm: Algorithm, workers: Transport, arrays: dict[str, np.ndarray], log: RunLog,
               targets: Targets, progress: RunProgress) -> Stop:
    """Rounds 1..R: each one run, counted, snapshotted and evaluated when due; why they ended."""
    schedule, save_every = algorithm.eval_schedule(), algorithm.snapshot_every()
    try:
        for round_index in range(1, algorithm.settings.rounds + 1):
            log.round_index = round_index
            raise_if_interrupted()
            done = run_round(algorithm, workers, arrays, round_index)
            log.totals.add(done)
            log.rounds.add(round_index, done.slowest_worker, done.coordinator, done.traffic)
            if save_every and round_index % save_every == 0:
                log.snapshot(algorithm, arrays)
            metrics = None
            if schedule.due(round_index):
                metrics = {**algorithm.evaluate(arrays), **algorithm.round_metrics(done.results)}
                stop = targets.stop(metrics, round_index)
                last = stop is not None or round_index == algorithm.settings.rounds
                metrics = algorithm.complete(arrays, metrics, full=last)  # the row that ends a run is whole
                log.write(metrics)
                if stop is Stop.DIVERGED:
                    return stop
                if stop is not None:
                    progress.update(round_index, metrics)
                    return stop
            progress.update(round_index, metrics)
    except KeyboardInterrupt:
        return Stop.INTERRUPTED
    return Stop.COMPLETED


@dataclass
class Resources:
    """What a run holds, released in reverse order by an ``ExitStack`` (under ``signals_ignored``)."""

    stack: ExitStack = field(default_factory=ExitStack)
    arena: Arena | None = None
    writer: RunFileWriter | None = None
    workers: Transport | None = None
    lost: str | None = None  # why the run file could not be finished

    def transport_attrs(self) -> dict[str, Any]:
        return self.workers.attrs() if self.workers is not None else {}

    def finish_file(self, algorithm: Algorithm, policy: FaultPolicy, attrs: Callable[[], dict[str, Any]]) -> None:
        """Registered once the file is claimed: discard it (a refused run) or write ``/final`` and close it."""
        writer = self.writer
        assert writer is not None
        if not policy.keep_file:
            writer.discard()
            return
        final = algorithm.final_params(self.arena.arrays) if self.arena is not None and self.arena.arrays else {}
        policy.status, policy.error, self.lost = _finish_file(writer, SpaceGuard(writer.tmp_path), final,
                                                              policy.status, policy.error, attrs)

    def close(self, progress: RunProgress) -> None:
        progress.end_stage()
        with signals_ignored():
            self.stack.close()
        if self.lost is not None:  # the file could not be finished: say so in one line, exit 1
            raise RunFailed(self.lost) from None


def _method(config: Mapping[str, Any], progress: RunProgress) -> Algorithm:
    """The configured method, its data loaded (may raise UserError)."""
    progress.stage(plan_of(config).loading_stage)
    try:
        return build_algorithm(config)
    except BaseException:
        progress.end_stage()
        raise


def _default_transport(config: Mapping[str, Any], round_timeout: float | None) -> TransportFactory:
    """Shared memory (the fork server starts warming while the coordinator loads the data), or
    this process for a method whose one worker may step here (``runtime.choice``)."""
    return default_transport(runs_in_process(config), worker_preload(settings_from_config(config)), round_timeout)


@dataclass(frozen=True)
class RunFile:
    """Where the run is written and what its header holds."""

    path: Path
    overwrite: bool
    run_id: str
    config: Mapping[str, Any]


def _start(algorithm: Algorithm, transport: TransportFactory, held: Resources, policy: FaultPolicy, file: RunFile,
           progress: RunProgress, log: RunLog, attrs: Callable[[], dict[str, Any]]) -> None:
    """Arena, run file, workers and row 0 (the initial evaluation), each resource on ``held.stack``
    as it is made; fills in ``log``'s writer and transport."""
    held.arena = Arena.create(algorithm.arena_spec(), tag=file.run_id[:8], shared=shares_memory(transport))
    held.stack.callback(held.arena.close)
    arrays = held.arena.arrays
    algorithm.initialize(arrays)
    # no warm-up here: the fork server loads every worker kernel meanwhile, and this
    # process loads the few it calls (evaluation) at the initial evaluation below
    make_dir(file.path.parent, "--out")
    held.writer = log.writer = _claim_run_file(
        file.path, file.overwrite, run_id=file.run_id, config=file.config, env=environment(),
        seed=algorithm.settings.seed, version=__version__, **git_state())
    held.stack.callback(held.finish_file, algorithm, policy, attrs)
    log.guard = SpaceGuard(held.writer.tmp_path)
    held.writer.create_rounds(log.rounds.shapes())
    # built (not started) before row 0, whose columns include the transport's own metrics
    held.workers = log.workers = transport(algorithm.worker_program(), arrays, held.arena.layout, algorithm.n_workers)
    held.stack.callback(held.workers.close)
    algorithm.attach(held.workers)
    problem = algorithm.problem_arrays()
    if problem:
        held.writer.write_group("problem", problem)
    for group, values in algorithm.run_file_groups().items():
        held.writer.write_group(group, values)
    # The first evaluation loads its kernels from numba's cache, partly inside a ctypes
    # callback, where a KeyboardInterrupt is printed and dropped (the run would go on): an
    # interrupt is held until the evaluation is done.
    with signals_deferred():
        initial = {**algorithm.evaluate(arrays), **algorithm.round_metrics([])}
    log.write(initial)
    if algorithm.snapshot_every():
        log.snapshot(algorithm, arrays)
    held.writer.start_live()
    progress.stage(f"starting {algorithm.n_workers} workers")
    held.workers.start()


COMPILING = "compiling kernels (first run only, a few seconds)"


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
    # int64, data files, batch size, memory (per process for MPI ranks): what a sweep checks up front
    check_run_inputs(config, ranks=not shares_memory(transport))
    check_space(first_existing(path.parent), estimate_file_bytes(config) + DISK_MARGIN_BYTES, "the run file")
    run_id = config_hash(config)
    previous = None if overwrite else existing_run(path, run_id)
    if previous is not None:
        return previous
    transport = _default_transport(config, round_timeout) if transport is None else transport
    progress = RunProgress(config["rounds"], name, quiet=quiet)
    algorithm = _method(config, progress)
    targets = Targets(algorithm.goal(), step_budget, algorithm.steps_per_round() or 1)
    if kernels_cached(worker_preload(algorithm.settings)) is False:  # input checked: no error line can follow this one
        progress.announce(COMPILING)
    policy, held, timeline = FaultPolicy(), Resources(), {}  # timeline: when the rounds began and ended
    log = RunLog(Totals(algorithm.settings.network), algorithm.steps_per_round(), time.perf_counter(),
                 RoundLog(algorithm.n_workers))
    reclaim_orphaned_segments()

    def attrs() -> dict[str, Any]:  # the root attrs the run file is closed with
        return {"rounds_completed": log.round_index, **targets.attrs, **timeline, **held.transport_attrs()}

    with interrupts_raised():
        try:
            with policy.watching(lambda: log.round_index):
                _start(algorithm, transport, held, policy, RunFile(path, overwrite, run_id, config), progress, log,
                       attrs)
                if on_start is not None:
                    on_start(held.workers.pids)
                timeline["rounds_began"] = utc_now("microseconds")
                stop = Stop.GOAL if targets.reached(log.last, 0) else None  # the initial model may meet it
                with progress:
                    stop = stop or run_rounds(algorithm, held.workers, held.arena.arrays, log, targets, progress)
                with signals_deferred():
                    log.rounds.flush(log.writer)
                if stop is Stop.INTERRUPTED:
                    raise KeyboardInterrupt
                policy.status = "diverged" if stop is Stop.DIVERGED else "completed"
                timeline["rounds_ended"] = utc_now("microseconds")
        except _FinishedMeanwhile as done:  # nothing of this run was written; the other one is the record
            return done.summary
        finally:
            held.close(progress)
    rounds, n = log.round_index, algorithm.n_workers
    return RunSummary(
        name=name, run_id=run_id, status=policy.status, file=str(path), rounds_completed=rounds, workers=n,
        last_metrics={k: v for k, v in log.last.items() if k != "round"},
        bytes_per_round_per_worker=(log.totals.bytes_up + log.totals.bytes_down) / max(rounds, 1) / n,
        extras={**targets.attrs, **algorithm.summary_extras(), **held.transport_attrs()},
    )
