"""The study section of ``ist report``: steps-to-result per batch size, its figures and the fit.

Given the output directory of ``ist study`` (it holds the study's ``sweep.json``), the
report shows per grid point a table (steps-to-result(B), the best trial's searched
settings, how many trials reached the goal, were infeasible, incomplete, pruned), the
figures of Shallue et al. (log2-log2 steps vs B with the perfect-scaling line through the
first point; the same normalised by the steps at the smallest B; best lr and effective lr
vs B) and the fit K(B) = K_min (1 + B_c / B) with its bootstrap CI.
"""

from __future__ import annotations

import csv
import io
import math

import numpy as np
from matplotlib.figure import Figure

from ist_cli._version import __version__
from ist_cli.io.names import utc_now
from ist_cli.report.figures import color, legend_below, new_figure, short, styled
from ist_cli.report.html import CSS, _e, _figure, _table
from ist_cli.report.labels import group_label, plural
from ist_cli.report.render import fmt
from ist_cli.report.units import format_axis
from ist_cli.study.fit import LEVEL, RESAMPLES
from ist_cli.study.outcomes import OUTCOMES
from ist_cli.study.results import GroupResult, StudyResult, to_rows

COUNT_COLUMNS = ("reached", "infeasible", "incomplete", "pruned", "failed", "not run")


def _b_note(result: StudyResult) -> str:
    algorithms = {p.best_config.get("algorithm") for g in result.groups for p in g.points if p.best_config}
    return "B = batch per worker and step" if algorithms & {"ist", "local-sgd", "dp"} else "B = batch size"


def _curve(group: GroupResult) -> tuple[np.ndarray, np.ndarray]:
    b = np.array([p.batch_size for p in group.points if p.steps is not None], dtype=float)
    k = np.array([p.steps for p in group.points if p.steps is not None], dtype=float)
    return b, k


def _log2_axes(ax, xlabel: str, ylabel: str) -> None:
    """log2 axes with plain-number ticks (2, 4, …, 1024; not 2⁵), as on the run pages."""
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    format_axis(ax.xaxis, "count", integer=True, base=2.0)
    format_axis(ax.yaxis, "count", integer=True, base=2.0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)


def _study_label(group: GroupResult) -> str:
    return short(group_label(dict(group.group)), 40) if group.group else "all trials"


def _style_entries(ax, entries: dict[str, object]) -> None:
    """Legend entries (grey) that explain a line style once for every group."""
    for label, linestyle in entries.items():
        ax.plot([], [], color="0.4", ls=linestyle, lw=1.2, label=label)


@styled
def steps_figure(result: StudyResult, *, normalised: bool = False) -> Figure:
    """Steps-to-result vs B, one curve per grid point, perfect scaling dashed, the fit dotted."""
    fig = new_figure("column")
    ax = fig.add_subplot()
    fitted = False
    for index, group in enumerate(result.groups):
        b, k = _curve(group)
        if b.size == 0:
            continue
        scale = k[0] if normalised else 1.0
        ax.plot(b, k / scale, "o-", ms=3, color=color(index), label=_study_label(group))
        if not normalised or not any(line.get_linestyle() == "--" for line in ax.lines):  # normalised: one b0/b
            ax.plot(b, k[0] * b[0] / b / scale, "--", color="0.4" if normalised else color(index), alpha=0.6,
                    linewidth=1)
        if not normalised and math.isfinite(group.fit.k_min) and math.isfinite(group.fit.b_c):
            grid = np.geomspace(b.min(), b.max(), 100)
            ax.plot(grid, group.fit.k_min * (1 + group.fit.b_c / grid), ":", color=color(index), linewidth=1.5)
            fitted = True
    entries = {"perfect scaling": "--"}
    if fitted:
        entries[r"fit $K_{min}(1 + B_c/B)$"] = ":"
    _style_entries(ax, entries)
    ylabel = "steps / steps at smallest B" if normalised else "steps to result"
    _log2_axes(ax, _b_note(result), ylabel)
    if normalised:  # ratios fall below 1: decades (1, 0.1, 0.01), not 0.0625, 0.01562, 0.003906
        ax.set_yscale("log")
        format_axis(ax.yaxis, "1")
    legend_below(fig, ax, "column")
    return fig


@styled
def lr_figure(result: StudyResult) -> Figure:
    """Best learning rate and effective learning rate lr/(1 - momentum) vs B."""
    fig = new_figure("column")
    ax = fig.add_subplot()
    effective = False
    for index, group in enumerate(result.groups):
        points = [p for p in group.points if p.best_config.get("lr") is not None]
        if not points:
            continue
        b = np.array([p.batch_size for p in points], dtype=float)
        lr = np.array([p.best_config["lr"] for p in points], dtype=float)
        ax.plot(b, lr, "o-", ms=3, color=color(index), label=_study_label(group))
        momentum = np.array([_momentum(p.best_config) for p in points], dtype=float)
        if np.any(momentum > 0):
            ax.plot(b, lr / (1 - momentum), "s--", ms=3, color=color(index), alpha=0.7)
            effective = True
    if effective:
        _style_entries(ax, {"effective lr/(1 − momentum)": "--"})
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    format_axis(ax.xaxis, "count", integer=True, base=2.0)
    format_axis(ax.yaxis, "1")
    ax.set_xlabel(_b_note(result))
    ax.set_ylabel("learning rate of the best trial")
    ax.grid(True, which="major", alpha=0.3)
    legend_below(fig, ax, "column")
    return fig


FIGURE_CAPTIONS = {
    "study_steps": "steps-to-result (fewest steps over the trials at B) per grid point; dashed: perfect "
                   "scaling through the first point; dotted: the fit K(B)",
    "study_steps_normalised": "steps-to-result divided by the steps at the smallest B; dashed: perfect scaling",
    "study_lr": "learning rate of the best trial at each B (dashed: the effective lr/(1 − momentum))",
}


def _momentum(config: dict) -> float:
    if config.get("optimizer") == "sgd":
        return 0.0
    return float(config.get("momentum") or 0.0)


def study_figures(result: StudyResult) -> dict[str, Figure]:
    return {"study_steps": steps_figure(result), "study_steps_normalised": steps_figure(result, normalised=True),
            "study_lr": lr_figure(result)}


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return fmt(value)
    return str(value)


def table_rows(result: StudyResult) -> tuple[list[str], list[list[str]]]:
    """Header and text cells: one row per grid point and batch size."""
    header = [*result.group_axes, "B", "steps", *(f"best {k}" for k in result.search_keys), *COUNT_COLUMNS]
    rows = []
    for group in result.groups:
        for point in group.points:
            best = point.best.values if point.best else {}
            rows.append([*(_cell(v) for _, v in group.group), str(point.batch_size), _cell(point.steps),
                         *(_cell(best.get(k)) for k in result.search_keys),
                         *(str(point.counts[name]) for name in COUNT_COLUMNS)])
    return header, rows


def _fit_value(value: float, digits: int = 4) -> str:
    """B_c = inf (K_min = 0: perfect scaling over the whole range) reads as ∞."""
    return "∞" if value == math.inf else fmt(value, digits)


def _fit_interval(fit, interval: tuple[float, float], reason: bool = True) -> str:
    if fit.no_ci:
        return fit.no_ci if reason else "-"
    return f"[{_fit_value(interval[0], 3)}, {_fit_value(interval[1], 3)}]"


def fit_rows(result: StudyResult) -> tuple[list[str], list[list[str]]]:
    header = ["grid point", "K_min", f"K_min {LEVEL:.0%} CI", "B_c", f"B_c {LEVEL:.0%} CI", "B points",
              "degrees of freedom", "B_simple (runs)", "L-hat (runs)"]
    rows = []
    for group in result.groups:
        fit = group.fit
        rows.append([group.label(), _fit_value(fit.k_min), _fit_interval(fit, fit.k_min_ci), _fit_value(fit.b_c),
                     _fit_interval(fit, fit.b_c_ci, reason=False), str(fit.points), str(fit.dof),
                     fmt(group.noise_scale), fmt(group.lipschitz)])
    return header, rows


def to_csv(result: StudyResult) -> str:
    rows = to_rows(result)
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None or (isinstance(v, float) and not math.isfinite(v))
                                 else repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def markdown(result: StudyResult) -> str:
    lines = []
    for header, rows in (table_rows(result), fit_rows(result)):
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        lines.extend("| " + " | ".join(row) + " |" for row in rows)
        lines.append("")
    return "\n".join(lines)


def study_html(result: StudyResult, figures: dict[str, Figure]) -> str:
    """A self-contained HTML page laid out as the run report (same header, tables, figure grid
    and captions; inline PNGs, no external resources)."""
    now = utc_now()
    header, rows = table_rows(result)
    fit_header, fit_table = fit_rows(result)
    trials = sum(sum(p.counts.values()) for g in result.groups for p in g.points)
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        f"<title>ist report: study {_e(result.name)}</title>", f"<style>{CSS}</style></head><body>",
        "<h1>ist report</h1>",
        f'<p class="meta">study {_e(result.name)}: {plural(trials, "trial")} at '
        f'{plural(len(result.groups), "grid point")} from {_e(result.directory)} · generated {now} by ist '
        f"{__version__} · steps-to-result(B) = fewest steps over the trials at B until the goal was first met; "
        f"{_e(_b_note(result))}</p>",
        "<h2>Steps to result</h2>", _table(header, rows, n_left=len(result.group_axes) + 1),
        "<h2>Fit K(B) = K_min (1 + B_c / B)</h2>",
        f'<p class="meta">weighted least squares of K on 1/B with K_min, B_c ≥ 0; degrees of freedom = reached '
        f"batch sizes − 2, no CI without any; CI: {RESAMPLES} bootstrap resamples over trials with a wild "
        "bootstrap of the fit residuals. B_simple: median gradient noise scale at the goal over the trials that "
        "reached it (McCandlish et al. predict B_crit ≈ B_noise); L-hat: median local Lipschitz estimate over the "
        "logged rows.</p>",
        _table(fit_header, fit_table, n_left=1),
        "<h3>Figures</h3>", '<div class="figs">',
    ]
    parts.extend(_figure(name, fig, "t", FIGURE_CAPTIONS.get(name, "")) for name, fig in figures.items())
    parts.append("</div>")
    parts.append('<p class="meta">Trial outcomes: ' + ", ".join(OUTCOMES) + " (see docs/study.md).</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
