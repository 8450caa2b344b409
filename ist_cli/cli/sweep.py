"""``ist sweep GRID.toml``: expand a sweep file and run it, resumably (docs/sweep.md).

Exit codes: 0 every run completed or diverged, 1 any run of the sweep failed,
130 interrupted, 2 bad input (sweep file, options).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from ist_cli.cli import say
from ist_cli.config import show_value
from ist_cli.io.names import run_file_path
from ist_cli.io.outputs import output_dir
from ist_cli.io.runfile import STATUSES
from ist_cli.io.terminal import SafeConsole
from ist_cli.preflight import check_runs, check_scheduler, check_sweep_directory
from ist_cli.sweep.engine import SweepOptions, SweepResult, available_cores, default_jobs, run_sweep
from ist_cli.sweep.files import finished_status
from ist_cli.sweep.manifest import read_manifest
from ist_cli.sweep.spec import DEFAULT_MAX_RUNS, PlannedRun, SweepSpec, load_sweep


def _counts(counter: Counter) -> str:
    order = (*STATUSES, "pending", "running")
    parts = [f"{counter[key]} {key}" for key in order if counter.get(key)]
    return ", ".join(parts) if parts else "none"


def _warn_cpu(jobs: int, max_workers: int, executor: str, scheduler: str | None) -> None:
    """Warn when concurrent runs contend; one run wider than the machine is the user's own choice."""
    cores = available_cores()
    if scheduler is None and jobs > 1 and jobs * max_workers > cores:
        say(f"ist: warning: --jobs {jobs} x {max_workers} workers per run = {jobs * max_workers} processes "
            f"on {cores} cores; runs will contend for CPU (timing metrics inflated)", err=True)


def _dry_run(spec: SweepSpec, out_dir: Path, jobs: int) -> None:
    manifest = read_manifest(out_dir) if out_dir.is_dir() else None
    known = {run["id"] for run in manifest["runs"]} if manifest else None
    table = Table(title=f"sweep {spec.name}: {len(spec.runs)} runs -> {out_dir} (jobs {jobs})")
    table.add_column("#", justify="right")
    table.add_column("run id")
    for axis in spec.axes:
        table.add_column(axis)
    table.add_column("status")
    for index, run in enumerate(spec.runs, 1):
        status = finished_status(run_file_path(out_dir, run.run_id)) if out_dir.is_dir() else None
        table.add_row(str(index), run.run_id, *(show_value(run.point.get(axis)) for axis in spec.axes), status or "pending")
    console = SafeConsole(file=sys.stdout, width=160)
    console.print(table)
    if spec.duplicates:
        say(f"{spec.duplicates} grid points resolve to the same config as an earlier one and run once")
    if known is not None and known != set(spec.run_ids):
        say(f"note: {out_dir / 'sweep.json'} holds a different run list; running needs --adopt (keep finished runs), --force (re-run all) or a new --out")
    say("dry run: nothing executed")




def _report(spec: SweepSpec, out_dir: Path, result: SweepResult) -> None:
    executed = sum(result.executed.values())
    if executed == 0 and not result.elsewhere:
        say(f"sweep {spec.name}: nothing to do: all {result.total} runs already finished "
            f"({_counts(result.final)}) in {out_dir}", err=True)
    else:
        line = (f"sweep {spec.name}: {result.total} runs in {out_dir}: executed {executed} "
                f"({_counts(result.executed)}); skipped {sum(result.skipped.values())} already finished")
        if result.elsewhere:
            line += f"; {sum(result.elsewhere.values())} finished by another sweep process"
        if result.takeovers:
            line += f"; took over {result.takeovers} stale claims"
        say(line + f"; now {_counts(result.final)}", err=True)
    if result.final.get("failed"):
        say(f"ist: {result.final['failed']} runs failed (errors in {out_dir / 'sweep.json'}); "
            "retry them with --rerun-failed", err=True)


ENGINE_OPTIONS = (
    click.option("--jobs", "-j", type=click.IntRange(min=1), default=None,
                 help="Runs at once (default: cores // workers per run; dask --scheduler: the cluster's threads)."),
    click.option("--out", "out_dir", type=str, default=None, help="Output directory (default: results/<name>)."),
    click.option("--dry-run", is_flag=True, help="Print the run table; execute nothing."),
    click.option("--rerun-failed", is_flag=True,
                 help="Run failed and diverged runs again (old files kept as ID.failed-N.h5)."),
    click.option("--force", is_flag=True,
                 help="Adopt a changed run list and re-run every run (old files kept as ID.old-N.h5)."),
    click.option("--adopt", is_flag=True,
                 help="Adopt a changed run list and keep every finished run: only runs new to the list run "
                      "(e.g. seeds added to the grid)."),
    click.option("--executor", type=click.Choice(["local", "dask"]), default="local", show_default=True,
                 help="Local subprocesses or tasks on a dask.distributed cluster."),
    click.option("--isolation", type=click.Choice(["warm", "process"]), default="warm", show_default=True,
                 help="Each run in a process forked from a warm one (imports and kernels loaded once), "
                      "or a fresh `ist run` subprocess."),
    click.option("--scheduler", type=str, default=None, metavar="ADDRESS",
                 help="dask scheduler address, e.g. tcp://HOST:8786 (default: a LocalCluster started by ist)."),
    click.option("--max-runs", type=click.IntRange(min=1), default=DEFAULT_MAX_RUNS, show_default=True,
                 help="Refuse a file that expands to more runs than this (counted before expanding)."),
    click.option("--quiet", is_flag=True, help="No progress or summary on stderr."),
    click.option("--json", "as_json", is_flag=True, help="Print the end summary as JSON on stdout."),
)


def engine_options(function):
    """The options of every command that runs a sweep (``ist sweep``, ``ist study``)."""
    for decorator in reversed(ENGINE_OPTIONS):
        function = decorator(function)
    return function


def execute(spec: SweepSpec, *, jobs: int | None, out_dir: str | None, dry_run: bool, rerun_failed: bool,
            force: bool, executor: str, scheduler: str | None, quiet: bool, as_json: bool, isolation: str = "warm",
            adopt: bool = False,
            prepare: Callable[[PlannedRun], PlannedRun] | None = None, extra: dict[str, Any] | None = None) -> None:
    """Dry-run or run ``spec`` with the engine and print what happened; exit 1 if a run failed."""
    out = output_dir(out_dir if out_dir is not None else Path("results") / spec.name, "--out").absolute()
    if scheduler and executor != "dask":
        raise click.UsageError("--scheduler is only used with --executor dask")
    if adopt and force:
        raise click.UsageError("--adopt and --force: not allowed together; --adopt keeps the finished runs, "
                               "--force runs every run again")
    # what each run's ist run would refuse, refused now: before the directory or manifest exists
    check_runs(((f"{spec.path.name}: run {run.label()}", run.config, run.point) for run in spec.runs),
               files_here=not dry_run and executor == "local")
    if out.is_dir():
        check_sweep_directory(out)  # FIFOs and devices by name; then the manifest's shape
        read_manifest(out)  # refused before the lock file is made
    if scheduler and not dry_run:
        check_scheduler(scheduler)
    planned_jobs = jobs or default_jobs(spec.max_workers())
    if dry_run:
        _dry_run(spec, out, planned_jobs)
        return
    if spec.duplicates and not quiet:
        say(f"sweep {spec.name}: {spec.duplicates} grid points resolve to the same config as an "
            "earlier one; each runs once", err=True)

    def on_plan(todo: list[str], jobs_used: int) -> None:
        if todo:
            _warn_cpu(min(jobs_used, len(todo)), spec.max_workers(), executor, scheduler)

    options = SweepOptions(jobs=jobs, executor=executor, isolation=isolation, scheduler=scheduler, force=force,
                           adopt=adopt, rerun_failed=rerun_failed, quiet=quiet)
    result = run_sweep(spec, out, options, on_plan=on_plan, prepare=prepare)
    if as_json:
        say(json.dumps({
            "name": spec.name, "out": str(out), "total": result.total, "executed": dict(result.executed),
            "skipped": dict(result.skipped), "elsewhere": dict(result.elsewhere), "final": dict(result.final),
            "takeovers": result.takeovers, "duplicates": spec.duplicates, "exit_code": result.exit_code,
            **(extra or {}),
        }, sort_keys=True))
    if not quiet:
        _report(spec, out, result)
    if result.exit_code:
        sys.exit(result.exit_code)


#: ``ist run`` options that are not settings: a sweep decides them itself
NOT_SETTINGS = ("out_dir", "name", "overwrite", "round_timeout", "quiet", "as_json", "step_budget", "transport")


def run_options_base(args: tuple[str, ...]) -> dict[str, Any]:
    """The settings of ``ist run`` options (``-- --model mlp --set lr=0.1 ...``) as one base
    table: ``--config``, then ``--set``, then flags, as ``ist run`` layers them."""
    from click.core import ParameterSource

    from ist_cli.cli.run import config_layers, run_command

    ctx = run_command.make_context("ist sweep ... --", list(args))
    params = dict(ctx.params)
    for key in NOT_SETTINGS:
        if ctx.get_parameter_source(key) == ParameterSource.COMMANDLINE:
            flag = next(param.opts[0] for param in run_command.params if param.name == key)
            raise click.UsageError(f"{flag} after --: not a setting of the runs; expected it before -- "
                                   "(ist sweep --help) or not at all")
        params.pop(key, None)
    layers, _ = config_layers(params.pop("config_file"), params.pop("overrides"), params)
    base: dict[str, Any] = {}
    for layer in layers:
        base.update(layer)
    return base


@click.command(context_settings={"max_content_width": 110}, no_args_is_help=True)
@click.argument("args", metavar="[GRID.toml | --grid KEY=V1,V2 ... -- RUN OPTIONS]", nargs=-1, type=click.UNPROCESSED)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a setting of the file's [base] (repeatable; not an axis of its grid).")
@click.option("--grid", "grid", multiple=True, metavar="KEY=V1,V2,...",
              help="Without a file: an axis of the grid (repeatable; ';' separates values that hold commas, "
                   "e.g. hidden=16,16;32,32). The settings of every run follow -- as ist run options.")
@click.option("--name", type=str, default=None,
              help="With --grid: the sweep's name (default: grid- and a hash of the grid and the run options, "
                   "so the same command resumes in the same results/NAME).")
@engine_options
def sweep_command(args: tuple[str, ...], overrides: tuple[str, ...], grid: tuple[str, ...], name: str | None,
                  **options: Any) -> None:
    """Run every run of GRID.toml, or of the --grid axes, once: resumable, parallel, never a run twice.

    ist sweep GRID.toml [--set KEY=VALUE ...]  |  ist sweep --grid lr=0.01,0.1 --grid seed=0,1 -- --model quadratic

    Exit codes: 0 all runs completed or diverged, 1 any run failed, 130 interrupted, 2 bad input.
    """
    from ist_cli.config import parse_set_overrides

    max_runs = options.pop("max_runs")
    if grid:
        if overrides:
            raise click.UsageError("--set is for a sweep file; with --grid, give settings as run options after --")
        from ist_cli.sweep.cmdline import command_line_sweep

        spec = command_line_sweep(grid, run_options_base(args), name=name, argv=sys.argv[2:], max_runs=max_runs)
    else:
        if len(args) != 1 or args[0].startswith("-"):
            raise click.UsageError("expected one GRID.toml, or --grid KEY=V1,V2,... -- RUN OPTIONS"
                                   + (f"; got {' '.join(args)}" if args else ""))
        if name:
            raise click.UsageError("--name is for --grid; a sweep file names itself (name = ...)")
        spec = load_sweep(args[0], max_runs=max_runs, overrides=parse_set_overrides(overrides) if overrides else None)
    execute(spec, **options)
