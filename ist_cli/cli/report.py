"""``ist report PATH...``: tables, figures and an HTML report from run files.

Thin layer over ``ist_cli.report``: parse options, load, filter, group, summarise, print.
Skipped files go to stderr; only the requested format goes to stdout.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ist_cli.cli import say
from ist_cli.cli.study import report_study
from ist_cli.errors import UserError
from ist_cli.io.outputs import output_dir, output_file
from ist_cli.io.terminal import SafeConsole
from ist_cli.report.choices import AGGREGATES, CI_METHODS, DEFAULT_CI, DEFAULT_FIGSIZE, FIGSIZES
from ist_cli.report.extras import ExtraTables
from ist_cli.report.labels import merged, parse_label_options, plural, sweep_labels
from ist_cli.report.load import load_runs
from ist_cli.report.metrics import X_AXES, available_metrics, default_metrics
from ist_cli.report.render import FORMATS, markdown, natural_width, terminal_table, to_csv, to_json
from ist_cli.report.table import filter_runs, parse_where
from ist_cli.study.results import is_study_dir


@click.command(context_settings={"max_content_width": 110})
@click.argument("paths", nargs=-1, required=True, metavar="PATH...", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
              help="Output on stdout.")
@click.option("--metric", "metrics", multiple=True, metavar="NAME",
              help="Metric to summarise (repeatable; default: loss and the model's main metrics).")
@click.option("--group-by", "group_by", multiple=True, metavar="KEY",
              help="Config key to group by (repeatable; default: every varying key except seed).")
@click.option("--where", "where", multiple=True, metavar="KEY=VALUE",
              help="Keep runs whose config matches (repeatable; same key twice = either value).")
@click.option("--best", is_flag=True, help="Summarise each run's best value instead of its final one.")
@click.option("--ci", "ci", type=click.Choice(CI_METHODS), default=DEFAULT_CI, show_default=True,
              help="Confidence interval: Student-t, percentile bootstrap, or BCa bootstrap.")
@click.option("--figures", "figures_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Write PNG, SVG and PDF figures into DIR.")
@click.option("--figsize", type=click.Choice(tuple(FIGSIZES)), default=DEFAULT_FIGSIZE, show_default=True,
              help="Figure size: one paper column (3.4 in wide) or the full page width (7 in).")
@click.option("--x", "x_axis", type=click.Choice(tuple(X_AXES)), default="round", show_default=True,
              help="x axis of the curves: round, cumulative bytes, wall time, or modelled time.")
@click.option("--logx/--linx", "logx", default=None,
              help="Logarithmic or linear x axis for the curves (default: log for bytes and sim_time).")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), default=None, metavar="OUT.html",
              help="Write a self-contained HTML report.")
@click.option("--network", "networks", multiple=True, metavar="BANDWIDTH,LATENCY",
              help="Price every run on this network instead of its own, from its per-round costs, e.g. "
                   "1Gbit,100us (repeatable: one set of rows per network).")
@click.option("--target", "target_text", default=None, metavar="METRIC>=VALUE",
              help="Add the time-to-target table (first sim_time at which the target was met), "
                   "e.g. test_accuracy>=0.95; with --figures, the speed-up vs bandwidth figure.")
@click.option("--compare", "compare_key", default=None, metavar="KEY",
              help="Compare each value of KEY with --baseline: difference, CI, t-test, P(improvement), Holm.")
@click.option("--baseline", default=None, metavar="VALUE", help="The value compared against: of --compare's KEY, or the method of --target's speed-ups (default dp).")
@click.option("--aggregate", type=click.Choice(AGGREGATES), default="mean", show_default=True,
              help="What --compare compares: the mean, median or interquartile mean of the runs.")
@click.option("--best-by", "best_by", default=None, metavar="METRIC",
              help="Report only each method's best value of --over KEY, chosen on METRIC (e.g. val_error).")
@click.option("--over", "over", default=None, metavar="KEY", help="The key --best-by chooses (e.g. lr).")
@click.option("--label", "label_items", multiple=True, metavar="KEY=VALUE:LABEL,...",
              help="Names in legends, e.g. algorithm=ist:IST,dp:DP (repeatable; also [labels] of the sweep file).")
@click.option("--quiet", is_flag=True, help="Nothing on stderr but errors (no skipped files, no files written).")
def report_command(
    paths: tuple[str, ...], fmt: str, metrics: tuple[str, ...], group_by: tuple[str, ...], where: tuple[str, ...],
    best: bool, ci: str, figures_dir: str | None, figsize: str, x_axis: str, logx: bool | None, html_out: str | None,
    networks: tuple[str, ...] = (), target_text: str | None = None, compare_key: str | None = None,
    baseline: str | None = None, aggregate: str = "mean", best_by: str | None = None, over: str | None = None,
    label_items: tuple[str, ...] = (), quiet: bool = False,
) -> None:
    """Summarise the run files under PATH... (directories are searched recursively).

    One section per model. Runs that differ only by seed form a group; each metric is reported
    as the mean and a 95% CI over the group's runs (--ci). A run found twice (same run id) counts
    once. Unreadable and duplicate files are listed on stderr.
    """
    from ist_cli.repricing import Link  # noqa: PLC0415 - standard library and numpy only

    links = [Link.parse(text) for text in networks]
    if any(is_study_dir(Path(path)) for path in paths):
        if len(paths) > 1:
            raise UserError(f"PATH: {', '.join(paths)}: a study's directory is reported alone; expected one PATH")
        report_study(Path(paths[0]), fmt, figures_dir, html_out, quiet=quiet)
        return
    from ist_cli.report.compare import compare  # matplotlib and scipy: only when reporting
    from ist_cli.report.sections import build_sections
    from ist_cli.report.tuning import pick_best

    err = SafeConsole(stderr=True, highlight=False, soft_wrap=True, quiet=quiet)
    if compare_key is not None and baseline is None:
        raise UserError("--compare KEY needs --baseline VALUE; expected both")
    if baseline is not None and compare_key is None and target_text is None:
        raise UserError(f"--baseline: {baseline!r} is not allowed alone; expected --compare KEY or --target too")
    if (best_by is None) != (over is None):
        raise UserError("--best-by METRIC and --over KEY go together; expected both or neither")
    labels = merged(sweep_labels(paths), parse_label_options(label_items))
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

    own_network = runs  # the speed-up figure re-prices these on its own grid of bandwidths
    if links:
        from ist_cli.repricing import reprice_all  # noqa: PLC0415

        runs, unpriced = reprice_all(runs, links)
        for run in unpriced:
            err.print(f"ist: skipped {run.path}: no /rounds to re-price it from (written by an older ist)",
                      markup=False)
        if not runs:
            raise UserError("--network: no run has the per-round costs (/rounds) re-pricing needs")

    available = available_metrics(runs)
    target = None
    if target_text is not None:
        from ist_cli.report.time_to_target import Target  # noqa: PLC0415

        target = Target.parse(target_text, available)
        target_baseline = baseline if compare_key is None and baseline is not None else "dp"
        methods = sorted({str(run.config.get("algorithm")) for run in runs})
        if target_baseline not in methods:
            raise UserError(f"--baseline: {target_baseline!r} is not a method of these runs; expected one of "
                            f"{', '.join(methods)}")
    for metric in metrics:
        if metric not in available:
            raise UserError(f"--metric: unknown metric {metric!r}; available: {', '.join(available)}")
    chosen = list(dict.fromkeys(metrics))
    choices = []
    if best_by is not None:
        if best_by not in available:
            raise UserError(f"--best-by: unknown metric {best_by!r}; available: {', '.join(available)}")
        runs, choices = pick_best(runs, best_by, over.replace("-", "_"), "best" if best else "final")
    sections = build_sections(runs, chosen, "best" if best else "final", ci=ci,
                              group_by=[key.replace("-", "_") for key in group_by] or None)
    summaries = [summary for section in sections for summary in section.summaries]
    n_groups = len(summaries)
    headed = len(sections) > 1
    comparisons = []
    if compare_key is not None:
        compared = [m for m in (chosen or default_metrics(runs)) if m in available]
        comparisons = compare(runs, compared, compare_key.replace("-", "_"), baseline, how=aggregate,
                              which="best" if best else "final", ignore=[over.replace("-", "_")] if over else [])
    extras = ExtraTables(choices, best_by or "", "best" if best else "final", comparisons,
                         compare_key or "", labels)

    if target is not None:
        report_time_to_target(runs, own_network, target, target_baseline, fmt, ci, figures_dir, figsize, err,
                              [key.replace("-", "_") for key in group_by], labels=labels)
        if fmt in ("csv", "json"):  # one document on stdout: the time-to-target table
            return
    if fmt == "table":
        tables = [terminal_table(section.summaries, None, f"model {section.model}") for section in sections]
        # a terminal gets the vertical layout when the table is too wide; a pipe gets every column
        width = None if sys.stdout.isatty() else max(natural_width(table) for table in tables)
        out = SafeConsole(highlight=False, width=width)
        for section in sections:
            out.print(terminal_table(section.summaries, out.width, f"model {section.model}"))
        for renderable in extras.rich_tables():
            out.print(renderable)
        out.print(f"{plural(len(runs), 'run')} in {plural(n_groups, 'group')}; "
                  f"{plural(len(skipped), 'file')} skipped", style="dim")
    elif fmt == "md":
        say("\n".join(markdown(section.summaries, section.model if headed else "") for section in sections)
                   + extras.markdown(), nl=False)
    elif fmt == "csv":
        say(extras.csv() if comparisons else to_csv(summaries), nl=False)
    else:
        say(extras.json(to_json(summaries, skipped)))

    if figures_dir or html_out:
        from ist_cli.report.figures import report_figures, save_figure
        from ist_cli.report.html import build_html, write_html

        for section in sections:
            section.figures = report_figures(section.groups, section.metrics, x_axis, ci=ci, size=figsize, logx=logx,
                                             labels=labels)
        if figures_dir:
            for section in sections:
                for name, fig in section.figures.items():
                    stem = f"{section.model}_{name}" if headed else name
                    for path in save_figure(fig, figures_dir, stem):
                        err.print(f"ist: wrote {path}", markup=False)
        if html_out:
            text = build_html(sections, runs, skipped, x=x_axis, sources=paths, extra_html=extras.html())
            err.print(f"ist: wrote {write_html(html_out, text)}", markup=False)


def report_time_to_target(runs: list, own_network: list, target: object, baseline: str, fmt: str, ci: str,
                          figures_dir: str | None, figsize: str, err: SafeConsole, group_by: list[str],
                          labels: dict | None = None) -> None:
    """The time-to-target table of ``runs`` on stdout (in ``fmt``) and, with ``--figures``, the
    speed-up figure (``own_network``: the runs before any ``--network``, each keeps its latency)."""
    from ist_cli.report import time_to_target as ttt  # noqa: PLC0415
    from ist_cli.report.stats import ci_caption  # noqa: PLC0415

    rows = ttt.time_to_target(runs, target, baseline, ci, group_by=group_by or None)
    caption = (f"mean [{ci_caption(ci)}] over the runs that met it; speed-up over {baseline}: mean over seeds "
               f"of T_{baseline}/T")
    if fmt == "table":
        table = ttt.rich_table(rows, target, caption)
        SafeConsole(highlight=False, width=None if sys.stdout.isatty() else natural_width(table)).print(table)
    elif fmt == "md":
        click.echo(ttt.markdown(rows, target, caption))
    elif fmt == "csv":
        click.echo(ttt.to_csv(rows, target), nl=False)
    else:
        click.echo(ttt.to_json(rows, target, ci))
    if figures_dir:
        from ist_cli.report.figures import save_figure  # noqa: PLC0415
        from ist_cli.report.speedup_figure import speedup_curves, speedup_figure  # noqa: PLC0415

        curves = speedup_curves(own_network, target, baseline, ci=ci)
        if not curves:
            err.print(f"ist: no speed-up figure: no method and {baseline} both met {target} with the same seed",
                      markup=False)
        else:
            for path in save_figure(speedup_figure(curves, target, baseline, figsize, labels), figures_dir,
                                    f"speedup_vs_bandwidth_over_{baseline}"):
                err.print(f"ist: wrote {path}", markup=False)
