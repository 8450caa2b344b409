"""A report is one section per model: its runs, seed groups, summaries and figures.

Quadratic and MLP runs share no metric and few config keys, so a report never mixes them in
one table or figure; each section chooses its own default metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ist_cli.io.runfile import RunData
from ist_cli.report.metrics import available_metrics, default_metrics
from ist_cli.report.stats import DEFAULT_CI, GroupSummary, summarize
from ist_cli.report.table import Group, group_runs, split_by_model

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass
class Section:
    model: str
    runs: list[RunData]
    groups: list[Group]
    metrics: list[str]
    summaries: list[GroupSummary]
    figures: dict[str, Figure] = field(default_factory=dict)


def build_sections(
    runs: Sequence[RunData], metrics: Sequence[str] = (), which: str = "final", *, ci: str = DEFAULT_CI,
    group_by: Sequence[str] | None = None,
) -> list[Section]:
    """One ``Section`` per model (sorted by name). ``metrics`` (default: the model's main ones)
    are kept per model where its runs have them. Figures are left to the caller."""
    if group_by is not None:  # a key of one model only (``dim``) groups that model's section
        group_runs(runs, group_by)  # raises the one-line error for a key no run has
    sections = []
    for model, model_runs in split_by_model(runs).items():
        present = set(available_metrics(model_runs))
        chosen = [m for m in metrics if m in present] if metrics else default_metrics(model_runs)
        by = None if group_by is None else [k for k in group_by if any(k in run.config for run in model_runs)]
        groups = group_runs(model_runs, by)
        sections.append(Section(model, model_runs, groups, chosen, summarize(groups, chosen, which, ci=ci)))
    return sections
