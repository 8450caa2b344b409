"""One experiment from config to HDF5 file: the coordinator's round loop and its fault policy.

Order of work keeps the run file's promises (docs/schema.md): the config and the output directory
are checked before anything is created; the arena, the temporary file and the worker
pool are torn down in ``finally`` whatever happens; the file is renamed to ``.h5`` only
after its status is written.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ist_cli._version import __version__
from ist_cli.algorithms import build_algorithm
from ist_cli.comm import NetworkModel
from ist_cli.config import config_hash, default_run_name, resolve_config
from ist_cli.errors import RunFailed, RunInterrupted, UserError
from ist_cli.io.provenance import environment, git_commit
from ist_cli.io.runfile import RunFileError, RunFileWriter, read_run
from ist_cli.progress import RunProgress
from ist_cli.runtime.arena import Arena, reclaim_orphaned_segments
from ist_cli.runtime.pool import WorkerPool
from ist_cli.runtime.signals import signals_deferred, signals_ignored, sigterm_as_interrupt

TIMING_METRICS = ("wall_time", "compute_time", "comm_time_model", "sim_time")


def prepare_output(out_dir: str | Path, name: str, overwrite: bool = False) -> Path:
    """Create ``out_dir`` and return ``out_dir/name.h5`` (``existing_run`` decides about a file there)."""
    if not name or "/" in name or name.startswith("."):
        raise UserError(f"--name: {name!r} is not allowed; expected a file name without '/' or a leading '.'")
    directory = Path(out_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out: {str(directory)!r} cannot be created ({exc.strerror}); expected a writable directory") from None
    if not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
        raise UserError(f"--out: {str(directory)!r} is not a writable directory; expected a writable directory")
    return directory / f"{name}.h5"


REUSABLE_STATUSES = ("completed", "diverged")


def existing_run(path: Path, run_id: str) -> dict[str, Any] | None:
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
    return {
        "name": path.stem, "run_id": run_id, "status": run.status, "file": str(path), "rounds_completed": rounds,
        "reused": True, **last,
    }


def run_experiment(
    config: Mapping[str, Any],
    *,
    out_dir: str | Path = "results",
    name: str | None = None,
    overwrite: bool = False,
    quiet: bool = True,
    on_start: Callable[[list[int]], None] | None = None,
) -> dict[str, Any]:
    """Run one experiment and return its summary; the HDF5 file is the full record.

    ``config`` may be partial: it is resolved against the defaults. Raises ``UserError``
    for bad input (nothing written), ``RunFailed``/``RunInterrupted`` after writing a
    ``failed`` file. A diverged run returns normally with status ``diverged``.
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
    network = NetworkModel.from_config(config)

    status, error = "failed", None
    totals = {"bytes_up": 0.0, "bytes_down": 0.0, "compute_time": 0.0, "comm_time_model": 0.0}
    last_metrics: dict[str, float] = {}
    round_index = 0
    arena = writer = pool = None
    started = time.perf_counter()
    reclaim_orphaned_segments()
    with sigterm_as_interrupt():
        try:
            arena = Arena.create(algorithm.arena_spec(), tag=run_id[:8])
            algorithm.initialize(arena.arrays)
            progress.stage("compiling or loading the numba kernels")
            algorithm.warm_up()
            writer = RunFileWriter(
                path, run_id=run_id, config=config, env=environment(), seed=config["seed"],
                version=__version__, git_commit=git_commit(),
            )
            problem = algorithm.problem_arrays()
            if problem:
                writer.write_group("problem", problem)
            def log(metrics: dict[str, float]) -> None:
                wall = time.perf_counter() - started
                row = {"round": float(round_index), **metrics, **totals, "wall_time": wall,
                       "sim_time": totals["compute_time"] + totals["comm_time_model"]}
                with signals_deferred():
                    writer.append_metrics(row)
                last_metrics.update(row)

            log(algorithm.evaluate(arena.arrays))
            save_every = config.get("save_params_every", 0)
            if save_every:
                writer.append_params(0, algorithm.snapshot(arena.arrays))
            writer.start_live()
            progress.stage(f"starting {algorithm.n_workers} worker processes")
            pool = WorkerPool(algorithm.worker_program(), arena.layout, algorithm.n_workers)
            pool.start()
            if on_start is not None:
                on_start(pool.pids)

            status = "completed"
            with progress:
                for round_index in range(1, config["rounds"] + 1):
                    coordinator_start = time.perf_counter()
                    payloads = algorithm.plan_round(arena.arrays, round_index)
                    plan_seconds = time.perf_counter() - coordinator_start
                    replies = pool.run_round(round_index, payloads)
                    aggregate_start = time.perf_counter()
                    algorithm.aggregate(arena.arrays, round_index, [result for _, result in replies])
                    coordinator_seconds = plan_seconds + time.perf_counter() - aggregate_start
                    # workers run in parallel in the modelled deployment: the slowest one counts
                    totals["compute_time"] += max(seconds for seconds, _ in replies) + coordinator_seconds
                    traffic = algorithm.round_traffic(round_index)
                    totals["bytes_up"] += traffic.total_up
                    totals["bytes_down"] += traffic.total_down
                    totals["comm_time_model"] += network.round_time(traffic)
                    if save_every and round_index % save_every == 0:
                        with signals_deferred():
                            writer.append_params(round_index, algorithm.snapshot(arena.arrays))
                    metrics = None
                    if round_index % config["eval_every"] == 0 or round_index == config["rounds"]:
                        metrics = algorithm.evaluate(arena.arrays)
                        log(metrics)
                        if not math.isfinite(metrics["loss"]):
                            status = "diverged"
                            break
                    progress.update(round_index, metrics)
        except KeyboardInterrupt:
            status, error = "failed", f"interrupted by the user at round {round_index}"
            raise RunInterrupted(error) from None
        except RunFailed as exc:
            status, error = "failed", str(exc)
            raise
        except UserError:
            status, error = "failed", None
            if writer is not None:
                writer.discard()
                writer = None
            raise
        except BaseException as exc:
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            progress.end_stage()
            with signals_ignored():
                if pool is not None:
                    pool.close()
                if writer is not None:
                    if arena is not None and arena.arrays:
                        final = algorithm.final_params(arena.arrays)
                        writer.write_group("final", {k: np.asarray(v) for k, v in final.items()})
                    writer.close(status, error=error, extra_attrs={"rounds_completed": round_index})
                if arena is not None:
                    arena.close()

    summary: dict[str, Any] = {
        "name": name,
        "run_id": run_id,
        "status": status,
        "file": str(path),
        "rounds_completed": round_index,
        "workers": algorithm.n_workers,
        **{key: value for key, value in last_metrics.items() if key != "round"},
        "bytes_per_round_per_worker": (totals["bytes_up"] + totals["bytes_down"]) / max(round_index, 1) / algorithm.n_workers,
        **algorithm.summary_extras(),
    }
    return summary
