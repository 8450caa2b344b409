"""``ist report``: load run files, group seeds, summarise with confidence intervals, draw figures,
write an HTML report. Usable from a notebook::

    from ist_cli.report import load_runs, group_runs, summarize, metric_figure
    runs, skipped = load_runs(["results/"])   # duplicates (same run_id) land in skipped
    groups = group_runs(runs)                 # runs differing only by seed share a group
    summaries = summarize(groups, ["loss"])   # mean and 95% Student-t CI of the final loss
    fig = metric_figure(groups, "loss", x="bytes")
    sections = build_sections(runs)           # what `ist report` does: one section per model

Names resolve lazily so importing the package does not pull in matplotlib. The theory
overlay's math lives with the model, in ``ist_cli.models.theory``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load": ("Skipped", "find_run_files", "load_runs"),
    "metrics": ("available_metrics", "best_value", "default_metrics", "final_value", "run_value", "series"),
    "table": ("Group", "filter_runs", "group_runs", "parse_where", "runs_table", "split_by_model", "varying_keys"),
    "stats": ("GroupSummary", "MetricSummary", "bca_ci", "bootstrap_band", "bootstrap_ci", "interval", "summarize",
              "t_band", "t_ci"),
    "figures": ("comm_figure", "figure_caption", "group_curve", "metric_figure", "report_figures", "save_figure",
                "theory_value"),
    "sections": ("Section", "build_sections"),
    "render": ("flat_rows", "markdown", "rich_table", "to_csv", "to_json"),
    "html": ("build_html", "write_html"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'ist_cli.report' has no attribute {name!r}")
    return getattr(importlib.import_module(f"ist_cli.report.{_WHERE[name]}"), name)
