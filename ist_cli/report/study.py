"""The study section of ``ist report``: steps-to-result per batch size, its figures and the fit.

Given the output directory of ``ist study`` (it holds the study's ``sweep.json``), the
report shows per grid point a table (steps-to-result(B), the best trial's searched
settings, how many trials reached the goal, were infeasible, incomplete, pruned), the
figures of Shallue et al. (log2-log2 steps vs B with the perfect-scaling line through the
first point; the same normalised by the steps at the smallest B; best lr and effective lr
vs B) and the fit K(B) = K_min (1 + B_c / B) with its bootstrap CI.
"""

from __future__ import annotations

import base64
import csv
import io
import math

import numpy as np
from matplotlib.figure import Figure

from ist_cli._version import __version__
from ist_cli.io.names import utc_now
from ist_cli.report.figures import color, png_bytes, short
from ist_cli.report.html import CSS, _e, _table
from ist_cli.report.render import fmt
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
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)


def steps_figure(result: StudyResult, *, normalised: bool = False) -> Figure:
    """Steps-to-result vs B, one curve per grid point, perfect scaling dashed, the fit dotted."""
    fig = Figure(figsize=(6.4, 4.6), layout="constrained")
    ax = fig.add_subplot()
    for index, group in enumerate(result.groups):
        b, k = _curve(group)
        if b.size == 0:
            continue
        scale = k[0] if normalised else 1.0
        ax.plot(b, k / scale, "o-", color=color(index), label=short(group.label(), 40))
        ax.plot(b, k[0] * b[0] / b / scale, "--", color="black" if len(result.groups) == 1 else color(index),
                alpha=0.6, linewidth=1)
        if not normalised and math.isfinite(group.fit.k_min) and math.isfinite(group.fit.b_c):
            grid = np.geomspace(b.min(), b.max(), 100)
            ax.plot(grid, group.fit.k_min * (1 + group.fit.b_c / grid), ":", color=color(index), linewidth=1.5)
    ylabel = "steps / steps at smallest B" if normalised else "steps to result"
    _log2_axes(ax, _b_note(result), ylabel)
    what = "normalised steps-to-result" if normalised else "steps-to-result (dotted: fit K_min(1+B_c/B))"
    ax.set_title(f"{result.name}: {what}\ndashed: perfect scaling", fontsize=10)  # two lines: fits the axes
    if ax.lines:
        ax.legend(fontsize=8)
    return fig


def lr_figure(result: StudyResult) -> Figure:
    """Best learning rate and effective learning rate lr/(1 - momentum) vs B."""
    fig = Figure(figsize=(6.4, 4.6), layout="constrained")
    ax = fig.add_subplot()
    for index, group in enumerate(result.groups):
        points = [p for p in group.points if p.best_config.get("lr") is not None]
        if not points:
            continue
        b = np.array([p.batch_size for p in points], dtype=float)
        lr = np.array([p.best_config["lr"] for p in points], dtype=float)
        ax.plot(b, lr, "o-", color=color(index), label=f"lr {short(group.label(), 30)}")
        momentum = np.array([_momentum(p.best_config) for p in points], dtype=float)
        if np.any(momentum > 0):
            ax.plot(b, lr / (1 - momentum), "s--", color=color(index), alpha=0.7,
                    label=f"lr/(1-m) {short(group.label(), 30)}")
    _log2_axes(ax, _b_note(result), "learning rate of the best trial")
    ax.set_title(f"{result.name}: best learning rate (solid) and effective lr (dashed)", fontsize=10)
    if ax.lines:
        ax.legend(fontsize=8)
    return fig


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


def fit_rows(result: StudyResult) -> tuple[list[str], list[list[str]]]:
    header = ["grid point", "K_min", f"K_min {LEVEL:.0%} CI", "B_c", f"B_c {LEVEL:.0%} CI", "B points",
              "B_simple (runs)", "L-hat (runs)"]
    rows = []
    for group in result.groups:
        fit = group.fit
        rows.append([group.label(), fmt(fit.k_min), f"[{fmt(fit.k_min_ci[0], 3)}, {fmt(fit.k_min_ci[1], 3)}]",
                     fmt(fit.b_c), f"[{fmt(fit.b_c_ci[0], 3)}, {fmt(fit.b_c_ci[1], 3)}]", str(fit.points),
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
    """A self-contained HTML page (inline PNGs, no external resources)."""
    now = utc_now()
    header, rows = table_rows(result)
    fit_header, fit_table = fit_rows(result)
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>ist study {_e(result.name)}</title>", f"<style>{CSS}</style></head><body>",
        f"<h1>Study {_e(result.name)}</h1>",
        f'<p class="meta">{_e(result.directory)} · generated {now} by ist {__version__} · '
        f"steps-to-result(B) = fewest steps over the trials at B until the goal was first met; "
        f"{_e(_b_note(result))}</p>",
        "<h2>Steps to result</h2>", _table(header, rows, n_left=len(result.group_axes) + 1),
        "<h2>Fit K(B) = K_min (1 + B_c / B)</h2>",
        f'<p class="meta">weighted least squares of K on 1/B; CI: {RESAMPLES} bootstrap resamples over trials '
        "with a wild bootstrap of the fit residuals. B_simple: median gradient noise scale at the goal over the "
        "trials that reached it (McCandlish et al. predict B_crit ≈ B_noise); L-hat: median local Lipschitz "
        "estimate over the logged rows.</p>",
        _table(fit_header, fit_table, n_left=1),
        "<h2>Figures</h2>", '<div class="figs">',
    ]
    for name, fig in figures.items():
        data = base64.b64encode(png_bytes(fig)).decode()
        parts.append(f'<figure><img alt="{_e(name)}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{_e(name)}</figcaption></figure>")
    parts.append("</div>")
    parts.append('<p class="meta">Trial outcomes: ' + ", ".join(OUTCOMES) + " (see docs/study.md).</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


