"""``ist ls DIR``: the runs of a directory as a table in the terminal (h5py only, no pandas)."""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ist_cli.runs import LEAD_COLUMNS, parse_where, scan_runs, select

#: final metrics shown when a run has them, in this order
SHOWN_METRICS = ("loss", "f_gap", "test_accuracy", "val_error")
#: settings never shown as "varying" (they differ between any two runs or say nothing)
NOT_SETTINGS = {"name", "path", "status", "run_id", "created", "finished", "rounds_completed", "ist_version",
                "git_commit", "git_dirty", "git_diff_sha256", "error", "transport", "goal_reached",
                "steps_to_result", "step_budget", "budget_stopped"}


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def varying_settings(rows: list[dict[str, Any]], metrics: set[str]) -> list[str]:
    """Settings that take two or more values among the runs that have them (a setting of one
    model only, the same in all its runs, is not shown)."""
    keys = dict.fromkeys(key for row in rows for key in row)
    return [key for key in keys if key not in NOT_SETTINGS and key not in metrics and key not in LEAD_COLUMNS
            and len({repr(row[key]) for row in rows if key in row}) > 1]


@click.command(context_settings={"max_content_width": 110})
@click.argument("directory", metavar="DIR", type=str)
@click.option("--where", "where", multiple=True, metavar="KEY=VALUE",
              help="Keep runs whose column KEY equals VALUE (repeat to combine), e.g. --where algorithm=ist.")
@click.option("--columns", type=str, default=None, metavar="A,B,...",
              help="Show these columns after the name (default: status, model, algorithm, the settings that "
                   "differ between the runs shown, rounds completed, final loss and accuracy).")
def ls_command(directory: str, where: tuple[str, ...], columns: str | None) -> None:
    """List the runs under DIR: one row per run file, finished or not.

    Unfinished runs (.h5.tmp) and files that are not run files are listed after the table.
    In Python, ist_cli.load_runs(DIR) gives the same rows as a pandas DataFrame.
    """
    scan = scan_runs(directory)
    rows = select(scan.rows, parse_where(where))
    metrics = {key for row in rows for key in row} & set(SHOWN_METRICS)
    if columns:
        shown = [c.strip() for c in columns.split(",") if c.strip()]
        known = {key for row in scan.rows for key in row}
        unknown = [c for c in shown if c not in known]
        if unknown and scan.rows:
            raise click.UsageError(f"--columns {','.join(unknown)}: no run has this column; expected some of "
                                   f"{', '.join(sorted(known))}")
    else:
        all_metrics = {key for row in rows for key in row if isinstance(row.get(key), float)}
        shown = [*LEAD_COLUMNS[1:], *varying_settings(rows, all_metrics), "rounds_completed",
                 *(m for m in SHOWN_METRICS if m in metrics)]
        if any(row.get("error") for row in rows):
            shown.append("error")
    table = Table(title=f"{len(rows)} runs in {directory}" + (f" where {' and '.join(where)}" if where else ""))
    table.add_column("name")
    for column in shown:
        table.add_column(column, justify="right" if column in metrics or column == "rounds_completed" else "left")
    for row in rows:
        table.add_row(row["name"], *(_show(row.get(column)) for column in shown))
    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 200)
    console.print(table)
    for path in scan.unfinished:
        click.echo(f"unfinished: {path} (a run in progress, or one that died before it finished)")
    for path, reason in scan.unreadable:
        click.echo(f"not a run file: {path} ({reason})")
