"""Summaries as text: a rich terminal table, Markdown, CSV and JSON.

CSV and JSON carry full-precision floats (Python's round-trip repr) so a reader can check
them against the HDF5 files; non-finite values are empty in CSV and ``null`` in JSON.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from typing import Any

from rich.console import Group as RichGroup
from rich.console import RenderableType
from rich.table import Table

from ist_cli.io.terminal import SafeConsole, safe_text
from ist_cli.report.load import Skipped
from ist_cli.report.stats import (
    BOOTSTRAP_SEED,
    CI_LEVEL,
    CI_NAMES,
    DEFAULT_CI,
    N_RESAMPLES,
    GroupSummary,
    ci_caption,
    few_runs_note,
)
from ist_cli.report.table import show
from ist_cli.report.units import human, plain, unit_of

FORMATS = ("table", "md", "csv", "json")


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def fmt(value: float, digits: int = 4) -> str:
    """``digits`` significant digits, without an exponent between 1e-4 and 1e7 (3910, not 3.91e+03)."""
    return plain(value, digits) if math.isfinite(value) else "-"


def format_metric(metric: str, value: float, digits: int = 4) -> str:
    """A value of ``metric`` as a table shows it: bytes and seconds in human units (kB, MB,
    GB; s, min, h), other numbers with ``digits`` significant digits."""
    unit = unit_of(metric)
    if unit in ("byte", "s") and math.isfinite(value):
        return human(value, unit, digits - 1)
    return fmt(value, digits)


def cell(summary: GroupSummary, metric: str) -> str:
    """``mean [low, high]``, with ``(n = 3 < 5)`` when fewer than FEW_SEEDS runs back the
    interval; just the mean for a single run."""
    stats = summary.metrics[metric]
    if stats.n == 0:
        return "-"
    low, high = format_metric(metric, stats.low, 3), format_metric(metric, stats.high, 3)
    if stats.n == 1 or low == high:  # no spread at the shown precision: the mean alone
        return format_metric(metric, stats.mean)
    note = few_runs_note(stats.n)
    text = f"{format_metric(metric, stats.mean)} [{low}, {high}]"
    return f"{text} ({note})" if note else text


def _keys(summaries: Sequence[GroupSummary]) -> list[str]:
    return list(summaries[0].group.key) if summaries else []


def _metrics(summaries: Sequence[GroupSummary]) -> list[str]:
    return list(summaries[0].metrics) if summaries else []


def title(summaries: Sequence[GroupSummary]) -> str:
    which = summaries[0].which if summaries else "final"
    method = summaries[0].ci if summaries else DEFAULT_CI
    return f"{which} values: mean [{ci_caption(method)}] over the runs of each group"


def model_of(summary: GroupSummary) -> str:
    group = summary.group
    return show(group.config.get("model", group.key.get("model", "")))


def display_rows(summaries: Sequence[GroupSummary]) -> tuple[list[str], list[list[str]]]:
    """Header and text cells shared by the terminal, Markdown and HTML tables."""
    keys, metrics = _keys(summaries), _metrics(summaries)
    show_diverged = any(s.diverged for s in summaries)
    header = keys + ["runs"] + (["diverged"] if show_diverged else []) + metrics
    rows = []
    for s in summaries:
        row = [show(s.group.key[k]) for k in keys] + [str(s.runs)]
        if show_diverged:
            row.append(str(s.diverged))
        rows.append(row + [cell(s, m) for m in metrics])
    return header, rows


def rich_table(summaries: Sequence[GroupSummary], heading: str = "") -> Table:
    """One row per group. Cells fold onto a second line rather than being cut with "…"."""
    header, rows = display_rows(summaries)
    table = Table(title=" · ".join(filter(None, [heading, title(summaries)])), title_style="bold")
    n_keys = len(_keys(summaries))
    for index, name in enumerate(header):
        if index < n_keys:
            table.add_column(name, style="cyan", overflow="fold")
        else:
            table.add_column(name, justify="right", overflow="fold")
    for row in rows:
        table.add_row(*(safe_text(value) for value in row))  # Text: no rich markup in values
    return table


def vertical_table(summaries: Sequence[GroupSummary], heading: str = "") -> RenderableType:
    """The same numbers, one block per group (``name  value`` lines), for narrow terminals."""
    header, rows = display_rows(summaries)
    blocks: list[RenderableType] = [safe_text(" · ".join(filter(None, [heading, title(summaries)])), style="bold")]
    for row in rows:
        block = Table.grid(padding=(0, 2))
        block.add_column(style="cyan", no_wrap=True)
        block.add_column(overflow="fold")
        for name, value in zip(header, row, strict=True):
            block.add_row(name, safe_text(value))
        blocks.extend([safe_text(""), block])
    return RichGroup(*blocks)


def natural_width(renderable: RenderableType) -> int:
    """Columns the renderable needs to print without folding anything."""
    console = SafeConsole(width=100_000)
    return console.measure(renderable).maximum


def terminal_table(summaries: Sequence[GroupSummary], width: int | None, heading: str = "") -> RenderableType:
    """The summary table when it fits in ``width`` columns (None: any width), else the
    vertical layout: numbers are never truncated."""
    table = rich_table(summaries, heading)
    if width is None or natural_width(table) <= width:
        return table
    return vertical_table(summaries, heading)


def markdown(summaries: Sequence[GroupSummary], heading: str = "") -> str:
    header, rows = display_rows(summaries)
    lines = [f"## {heading}", ""] if heading else []
    lines += [f"_{title(summaries)}_", "", "| " + " | ".join(header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def flat_rows(summaries: Sequence[GroupSummary]) -> list[dict[str, Any]]:
    """One flat dict per group: model, key columns, runs, seeds, and
    ``<metric>_mean|_ci_low|_ci_high|_n``."""
    rows = []
    for s in summaries:
        row: dict[str, Any] = {"model": model_of(s)}
        row.update({k: show(v) for k, v in s.group.key.items()})
        row["runs"] = s.runs
        row["diverged"] = s.diverged
        row["seeds"] = " ".join(show(seed) for seed in s.group.seeds)
        for metric, stats in s.metrics.items():
            row[f"{metric}_mean"] = _finite(stats.mean)
            row[f"{metric}_ci_low"] = _finite(stats.low)
            row[f"{metric}_ci_high"] = _finite(stats.high)
            row[f"{metric}_n"] = stats.n
        rows.append(row)
    return rows


def to_csv(summaries: Sequence[GroupSummary]) -> str:
    rows = flat_rows(summaries)
    buffer = io.StringIO()
    if rows:  # groups of different models have different key columns: the union, in first-seen order
        fields = list(dict.fromkeys(name for row in rows for name in row))
        writer = csv.DictWriter(buffer, fieldnames=fields, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def ci_document(method: str) -> dict[str, Any]:
    """The CI method as JSON: level, name, and the resampling details of bootstrap methods."""
    document: dict[str, Any] = {"level": CI_LEVEL, "method": method, "name": f"{CI_NAMES[method]} interval of the mean"}
    if method != "t":
        document.update(resamples=N_RESAMPLES, seed=BOOTSTRAP_SEED)
    return document


def to_json(summaries: Sequence[GroupSummary], skipped: Sequence[Skipped] = ()) -> str:
    """The full summary: method, groups (key, shared config, seeds, files, per-metric stats
    with the per-run values), and the skipped files with reasons."""
    groups = []
    for s in summaries:
        groups.append({
            "model": model_of(s),
            "key": s.group.key,
            "config": s.group.config,
            "runs": s.runs,
            "diverged": s.diverged,
            "seeds": s.group.seeds,
            "files": [str(run.path) for run in s.group.runs],
            "metrics": {
                metric: {
                    "mean": _finite(stats.mean), "ci_low": _finite(stats.low), "ci_high": _finite(stats.high),
                    "n": stats.n, "excluded": stats.excluded, "values": [_finite(v) for v in stats.values],
                }
                for metric, stats in s.metrics.items()
            },
        })
    document = {
        "which": summaries[0].which if summaries else "final",
        "ci": ci_document(summaries[0].ci if summaries else DEFAULT_CI),
        "groups": groups,
        "skipped": [{"path": str(s.path), "reason": s.reason} for s in skipped],
    }
    return json.dumps(document, indent=2, allow_nan=False)
