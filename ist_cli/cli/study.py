"""``ist study STUDY.toml``: steps-to-result vs batch size with a quasi-random search (docs/study.md).

The study is expanded into a sweep and run by the sweep engine, so exit codes, resume,
claims, ``--jobs`` and ``--executor`` are those of ``ist sweep``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from ist_cli.cli.sweep import _dry_run, _report, _warn_cpu
from ist_cli.report.figures import save_figure
from ist_cli.report.html import write_html
from ist_cli.report.study import fit_rows, markdown, study_figures, study_html, table_rows, to_csv
from ist_cli.study.pruning import TrialPruner
from ist_cli.study.results import load_study_result, to_json_text
from ist_cli.study.search import SAMPLERS
from ist_cli.study.spec import load_study
from ist_cli.sweep.engine import SweepOptions, default_jobs, run_sweep


@click.command(context_settings={"max_content_width": 110})
@click.argument("study_file", metavar="STUDY.toml", type=str)
@click.option("--sampler", type=click.Choice(SAMPLERS), default=None,
              help="Search sequence (default: study.sampler of the file, else sobol: unscrambled, as Lee et al.).")
@click.option("--prune-trials/--no-prune-trials", "prune", default=True, show_default=True,
              help="Stop a trial at the best steps-to-result already known for its batch size and grid point.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=None,
              help="Trials at once (default: cores // workers per run).")
@click.option("--out", "out_dir", type=str, default=None, help="Output directory (default: results/<study name>).")
@click.option("--dry-run", is_flag=True, help="Print the trial table; execute nothing.")
@click.option("--rerun-failed", is_flag=True, help="Run failed and diverged trials again (old files kept).")
@click.option("--force", is_flag=True, help="Adopt a changed trial list and re-run every trial (old files kept).")
@click.option("--executor", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="Local subprocesses or tasks on a dask.distributed cluster.")
@click.option("--scheduler", type=str, default=None, metavar="ADDRESS",
              help="dask scheduler address (default: a LocalCluster started by ist).")
@click.option("--quiet", is_flag=True, help="No progress or summary on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print the end summary as JSON on stdout.")
def study_command(study_file: str, sampler: str | None, prune: bool, jobs: int | None, out_dir: str | None,
                  dry_run: bool, rerun_failed: bool, force: bool, executor: str, scheduler: str | None,
                  quiet: bool, as_json: bool) -> None:
    """Run every trial of STUDY.toml once (resumable, parallel); then `ist report OUT`.

    Exit codes: 0 all trials completed or diverged, 1 any trial failed, 130 interrupted, 2 bad input.
    """
    study = load_study(study_file, sampler)
    spec = study.sweep
    out = (Path(out_dir) if out_dir else Path("results") / spec.name).absolute()
    if scheduler and executor != "dask":
        raise click.UsageError("--scheduler is only used with --executor dask")
    if dry_run:
        _dry_run(spec, out, jobs or default_jobs(spec.max_workers()))
        return

    def on_plan(todo: list[str], jobs_used: int) -> None:
        if todo:
            _warn_cpu(min(jobs_used, len(todo)), spec.max_workers(), executor, scheduler)

    options = SweepOptions(jobs=jobs, executor=executor, scheduler=scheduler, force=force,
                           rerun_failed=rerun_failed, quiet=quiet)
    prepare = TrialPruner(study, out).prepare if prune else None
    result = run_sweep(spec, out, options, on_plan=on_plan, prepare=prepare)
    if as_json:
        click.echo(json.dumps({
            "name": spec.name, "out": str(out), "total": result.total, "executed": dict(result.executed),
            "skipped": dict(result.skipped), "elsewhere": dict(result.elsewhere), "final": dict(result.final),
            "sampler": study.sampler, "prune_trials": prune, "exit_code": result.exit_code,
        }, sort_keys=True))
    if not quiet:
        _report(spec, out, result)
        click.echo(f"study {spec.name}: steps-to-result per batch size: ist report {out}", err=True)
    if result.exit_code:
        sys.exit(result.exit_code)


def report_study(directory: Path, fmt: str, figures_dir: str | None, html_out: str | None) -> None:
    """``ist report OUT`` for the output directory of a study (called by ``ist report``)."""
    result = load_study_result(directory)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if fmt == "table":
        out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
        for caption, (header, rows) in (("steps to result", table_rows(result)), ("fit", fit_rows(result))):
            table = Table(title=f"study {result.name}: {caption}")
            for column in header:
                table.add_column(column)
            for row in rows:
                table.add_row(*row)
            out.print(table)
    elif fmt == "md":
        click.echo(markdown(result), nl=False)
    elif fmt == "csv":
        click.echo(to_csv(result), nl=False)
    else:
        click.echo(to_json_text(result))
    if figures_dir or html_out:
        figures = study_figures(result)
        if figures_dir:
            for name, fig in figures.items():
                for path in save_figure(fig, figures_dir, name):
                    err.print(f"ist: wrote {path}", markup=False)
        if html_out:
            err.print(f"ist: wrote {write_html(html_out, study_html(result, figures))}", markup=False)
