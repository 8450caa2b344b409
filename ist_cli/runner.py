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
import os
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ist_cli._version import __version__
from ist_cli.algorithms import Algorithm, build_algorithm
from ist_cli.comm import NetworkModel, Traffic
from ist_cli.config import config_hash, default_run_name, resolve_config
from ist_cli.errors import RunFailed, RunInterrupted, UserError
from ist_cli.io.names import run_file_path
from ist_cli.io.provenance import environment, git_commit
from ist_cli.io.runfile import RunFileError, RunFileWriter, read_run
from ist_cli.progress import RunProgress
from ist_cli.runtime.arena import Arena, reclaim_orphaned_segments
from ist_cli.runtime.pool import shared_memory_transport
from ist_cli.runtime.signals import signals_deferred, signals_ignored, sigterm_as_interrupt
from ist_cli.runtime.transport import Transport, TransportFactory
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
            self.status, self.error = "failed", f"interrupted by the user at round {current_round()}"
            raise RunInterrupted(self.error) from None
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


def prepare_output(out_dir: str | Path, name: str, overwrite: bool = False) -> Path:
    """Create ``out_dir`` and return the run file path (``existing_run`` decides about a file there)."""
    if not name or "/" in name or name.startswith("."):
        raise UserError(f"--name: {name!r} is not allowed; expected a file name without '/' or a leading '.'")
    directory = Path(out_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out: {str(directory)!r} cannot be created ({exc.strerror}); expected a writable directory") from None
    if not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
        raise UserError(f"--out: {str(directory)!r} is not a writable directory; expected a writable directory")
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


def run_experiment(
    config: Mapping[str, Any],
    *,
    out_dir: str | Path = "results",
    name: str | None = None,
    overwrite: bool = False,
    quiet: bool = True,
    on_start: Callable[[list[int]], None] | None = None,
    transport: TransportFactory = shared_memory_transport,
    step_budget: int | None = None,
) -> RunSummary:
    """Run one experiment and return its summary.

    ``config`` may be partial: it is resolved against the defaults. Raises ``UserError``
    for bad input (nothing written), ``RunFailed``/``RunInterrupted`` after writing a
    ``failed`` file. A diverged run returns normally with status ``diverged``.
    ``transport`` builds the workers (``runtime.transport``); shared memory by default.
    ``step_budget`` (a study's trial pruning, docs/study.md): at an evaluation that does not
    meet the goal, stop once this many steps are taken; recorded as ``budget_stopped``. It is
    not part of the config: every evaluation up to the stop is the one the run makes without it.
    """
    config = resolve_config(config)
    name = name or default_run_name(config)
    path = prepare_output(out_dir, name, overwrite)
    run_id = config_hash(config)
    if not overwrite:
        previous = existing_run(path, run_id)
        if previous is not None:
            return previous
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
    started = time.perf_counter()
    reclaim_orphaned_segments()

    def log(metrics: Mapping[str, float]) -> None:
        steps = {"step": float(round_index * steps_per_round)} if steps_per_round else {}
        row = {"round": float(round_index), **steps, **metrics, **totals.row(), **transport_metrics(workers),
               "wall_time": time.perf_counter() - started}
        with signals_deferred():
            writer.append_metrics(row)
        last_metrics.update(row)

    def reached(metrics: Mapping[str, float]) -> bool:
        """Is the goal met at this evaluation? Records steps-to-result if so."""
        if goal is None or not goal.reached(metrics):
            return False
        goal_attrs.update(goal_reached=True, steps_to_result=round_index * (steps_per_round or 1))
        return True

    with sigterm_as_interrupt():
        try:
            with policy.watching(lambda: round_index):
                arena = Arena.create(algorithm.arena_spec(), tag=run_id[:8])
                arrays = arena.arrays
                algorithm.initialize(arrays)
                progress.stage("compiling or loading the numba kernels")
                algorithm.warm_up()
                writer = RunFileWriter(path, run_id=run_id, config=config, env=environment(), seed=settings.seed,
                                       version=__version__, git_commit=git_commit())
                # built (not started) before row 0, whose columns include the transport's own metrics
                workers = transport(algorithm.worker_program(), arrays, arena.layout, algorithm.n_workers)
                problem = algorithm.problem_arrays()
                if problem:
                    writer.write_group("problem", problem)
                for group, values in algorithm.run_file_groups().items():
                    writer.write_group(group, values)
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
                with progress:
                    for round_index in range(1, 0 if done_early else settings.rounds + 1):
                        done = run_round(algorithm, workers, arrays, round_index)
                        totals.add(done)
                        if save_every and round_index % save_every == 0:
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
        finally:
            progress.end_stage()
            with signals_ignored():
                if workers is not None:
                    workers.close()
                if writer is not None and not policy.keep_file:
                    writer.discard()
                elif writer is not None:
                    if arena is not None and arena.arrays:
                        final = algorithm.final_params(arena.arrays)
                        writer.write_group("final", {k: np.asarray(v) for k, v in final.items()})
                    writer.close(policy.status, error=policy.error,
                                 extra_attrs={"rounds_completed": round_index, **goal_attrs, **transport_attrs(workers)})
                if arena is not None:
                    arena.close()

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
