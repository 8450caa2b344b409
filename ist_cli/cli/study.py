"""``ist study STUDY.toml``: steps-to-result vs batch size with a quasi-random search (docs/study.md).

The study is expanded into a sweep and run by the sweep engine, so exit codes, resume,
claims, ``--jobs`` and ``--executor`` are those of ``ist sweep``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from ist_cli.cli import say
from ist_cli.cli.sweep import engine_options, execute
from ist_cli.config import parse_set_overrides
from ist_cli.errors import UserError
from ist_cli.io.outputs import output_dir
from ist_cli.io.terminal import SafeConsole
from ist_cli.study.results import load_study_result, to_json_text
from ist_cli.study.search import SAMPLERS
from ist_cli.study.spec import load_study
from ist_cli.study.step_budgets import TrialPruner


@click.command(context_settings={"max_content_width": 110})
@click.argument("study_file", metavar="STUDY.toml", type=str)
@click.option("--sampler", type=click.Choice(SAMPLERS), default=None,
              help="Search sequence (default: study.sampler of the file, else sobol: unscrambled, as Lee et al.).")
@click.option("--prune-trials/--no-prune-trials", "prune", default=True, show_default=True,
              help="Stop a trial at the best steps-to-result already known for its batch size and grid point.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a setting of the file's [base] (repeatable; not one the study varies).")
@engine_options
def study_command(study_file: str, sampler: str | None, prune: bool, overrides: tuple[str, ...],
                  **options: Any) -> None:
    """Run every trial of STUDY.toml once (resumable, parallel); then `ist report OUT`.

    Exit codes: 0 all trials completed or diverged, 1 any trial failed, 130 interrupted, 2 bad input.
    """
    study = load_study(study_file, sampler, max_runs=options.pop("max_runs"),
                       overrides=parse_set_overrides(overrides) if overrides else None)
    if any(run.config.get("goal_error") is None for run in study.sweep.runs):
        raise UserError(f"{Path(study_file).name}: base.goal_error: missing; a study measures the steps to a goal, "
                        "expected e.g. goal_error = 0.05 with validation_fraction = 0.1 in [base]")
    chosen = options["out_dir"]
    out = output_dir(chosen if chosen is not None else Path("results") / study.name, "--out").absolute()
    prepare = TrialPruner(study, out).prepare if prune else None
    execute(study.sweep, **{**options, "out_dir": str(out)}, prepare=prepare,
            extra={"sampler": study.sampler, "prune_trials": prune})
    if not options["quiet"] and not options["dry_run"]:
        say(f"study {study.name}: steps-to-result per batch size: ist report {out}", err=True)


def report_study(directory: Path, fmt: str, figures_dir: str | None, html_out: str | None, *,
                 quiet: bool = False) -> None:
    """``ist report OUT`` for the output directory of a study (called by ``ist report``)."""
    # matplotlib (through the report) loads only here: ``ist study`` refusing a bad file or
    # running trials never needs it (0.7 s of CPU)
    from ist_cli.report.figures import save_figure
    from ist_cli.report.html import write_html
    from ist_cli.report.study import (
        fit_rows,
        markdown,
        study_figures,
        study_html,
        table_rows,
        to_csv,
    )

    result = load_study_result(directory)
    err = SafeConsole(stderr=True, highlight=False, soft_wrap=True, quiet=quiet)
    if fmt == "table":
        out = SafeConsole(highlight=False, width=None if sys.stdout.isatty() else 160)
        for caption, (header, rows) in (("steps to result", table_rows(result)), ("fit", fit_rows(result))):
            table = Table(title=f"study {result.name}: {caption}")
            for column in header:
                table.add_column(column)
            for row in rows:
                table.add_row(*row)
            out.print(table)
    elif fmt == "md":
        say(markdown(result), nl=False)
    elif fmt == "csv":
        say(to_csv(result), nl=False)
    else:
        say(to_json_text(result))
    if figures_dir or html_out:
        figures = study_figures(result)
        if figures_dir:
            for name, fig in figures.items():
                for path in save_figure(fig, figures_dir, name):
                    err.print(f"ist: wrote {path}", markup=False)
        if html_out:
            err.print(f"ist: wrote {write_html(html_out, study_html(result, figures))}", markup=False)
