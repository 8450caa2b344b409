"""``ist report PATH...``: tables, figures and an HTML report from run files.

Thin layer over ``ist_cli.report``: parse options, load, filter, group, summarise, print.
Skipped files go to stderr; only the requested format goes to stdout.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from ist_cli.cli.study import report_study
from ist_cli.errors import UserError
from ist_cli.io.outputs import output_dir, output_file
from ist_cli.report.figures import report_figures, save_figure
from ist_cli.report.html import build_html, write_html
from ist_cli.report.load import load_runs
from ist_cli.report.metrics import X_AXES, available_metrics, default_metrics
from ist_cli.report.render import FORMATS, markdown, rich_table, to_csv, to_json
from ist_cli.report.stats import summarize
from ist_cli.report.table import filter_runs, group_runs, parse_where
from ist_cli.study.results import is_study_dir

PIPE_WIDTH = 160  # rich assumes 80 columns when stdout is not a terminal; tables need more


@click.command(context_settings={"max_content_width": 110})
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
              help="Output on stdout.")
@click.option("--metric", "metrics", multiple=True, metavar="NAME",
              help="Metric to summarise (repeatable; default: loss and the model's main metrics).")
@click.option("--group-by", "group_by", multiple=True, metavar="KEY",
              help="Config key to group by (repeatable; default: every varying key except seed).")
@click.option("--where", "where", multiple=True, metavar="KEY=VALUE",
              help="Keep runs whose config matches (repeatable; same key twice = either value).")
@click.option("--best", is_flag=True, help="Summarise each run's best value instead of its final one.")
@click.option("--figures", "figures_dir", type=str, default=None, metavar="DIR",
              help="Write PNG and SVG figures into DIR.")
@click.option("--x", "x_axis", type=click.Choice(tuple(X_AXES)), default="round", show_default=True,
              help="x axis of the curves: round, cumulative bytes, wall time, or modelled time.")
@click.option("--html", "html_out", type=str, default=None, metavar="OUT.html",
              help="Write a self-contained HTML report.")
def report_command(
    paths: tuple[str, ...], fmt: str, metrics: tuple[str, ...], group_by: tuple[str, ...], where: tuple[str, ...],
    best: bool, figures_dir: str | None, x_axis: str, html_out: str | None,
) -> None:
    """Summarise the run files under PATH... (directories are searched recursively).

    Runs that differ only by seed form a group; each metric is reported as the mean and a 95%
    percentile-bootstrap CI over the group's runs. Unreadable files are listed on stderr.
    """
    if any(is_study_dir(Path(path)) for path in paths):
        if len(paths) > 1:
            raise UserError(f"PATH: {', '.join(paths)}: a study's directory is reported alone; expected one PATH")
        report_study(Path(paths[0]), fmt, figures_dir, html_out)
        return
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if figures_dir is not None:
        output_dir(figures_dir, "--figures")
    if html_out is not None:
        output_file(html_out, "--html")
    runs, skipped = load_runs(paths, load_problem=False)  # /problem is read only for the theory line
    for item in skipped:
        err.print(f"ist: skipped {item.path}: {item.reason}", markup=False)
    if not runs:
        raise UserError(f"no readable run files under {', '.join(paths)} ({len(skipped)} skipped, listed above)")

    if where:
        keys = {key for run in runs for key in run.config}
        runs = filter_runs(runs, parse_where(where, keys))
        if not runs:
            raise UserError(f"--where {' '.join(where)}: no run matches; drop or change the filter")

    available = available_metrics(runs)
    for metric in metrics:
        if metric not in available:
            raise UserError(f"--metric: unknown metric {metric!r}; available: {', '.join(available)}")
    chosen = list(dict.fromkeys(metrics)) or default_metrics(runs)
    groups = group_runs(runs, [key.replace("-", "_") for key in group_by] or None)
    summaries = summarize(groups, chosen, "best" if best else "final")

    if fmt == "table":
        out = Console(highlight=False, width=None if sys.stdout.isatty() else PIPE_WIDTH)
        out.print(rich_table(summaries))
        out.print(f"{len(runs)} runs in {len(groups)} groups; {len(skipped)} files skipped", style="dim")
    elif fmt == "md":
        click.echo(markdown(summaries), nl=False)
    elif fmt == "csv":
        click.echo(to_csv(summaries), nl=False)
    else:
        click.echo(to_json(summaries, skipped))

    if figures_dir or html_out:
        figures = report_figures(groups, chosen, x_axis)
        if figures_dir:
            for name, fig in figures.items():
                for path in save_figure(fig, figures_dir, name):
                    err.print(f"ist: wrote {path}", markup=False)
        if html_out:
            text = build_html(summaries, figures, runs, skipped, x=x_axis, sources=paths)
            err.print(f"ist: wrote {write_html(html_out, text)}", markup=False)
