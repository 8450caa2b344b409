"""Figures of the report: metric curves with CI bands, the theory overlay (the mean's
limit as a dashed line, its exact trajectory as a dotted curve), and
communication vs accuracy. Built on ``matplotlib.figure.Figure`` (Agg, no pyplot, no
display), returned as objects so a notebook or a test can inspect the lines and bands.

Curves of a group are aligned by round: at each logged round the line is the mean over the
group's runs and the band the 95% bootstrap CI (``stats.bootstrap_band``); the x position is
the mean over runs of the x series at that round (bytes are the same for every seed; measured
times differ a little). Bands are drawn only for groups with at least two runs.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ist_cli.errors import UserError
from ist_cli.io.outputs import make_dir
from ist_cli.io.runfile import RunData, RunFileError, read_run
from ist_cli.models.analysis import Analysis, analyze, run_inputs
from ist_cli.report.metrics import BOOKKEEPING, X_AXES, X_LABELS, final_value, series
from ist_cli.report.stats import bootstrap_band, summarize_values
from ist_cli.report.table import Group, show
from ist_cli.settings import settings_from_config

MAX_POINTS = 400
LOG_DECADES = 2.0
THEORY_METRIC = "dist_to_opt_sq"


def short(label: str, limit: int = 70) -> str:
    """Legend labels stay readable: long group labels are cut (the HTML lists full configs)."""
    return label if len(label) <= limit else label[: limit - 1] + "…"


def color(index: int) -> str:
    return f"C{index % 10}"


def group_curve(group: Group, metric: str, x: str = "round") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(x, mean, low, high) of ``metric`` for the group, or None when no run has it."""
    if x not in X_AXES:
        raise ValueError(f"x must be one of {', '.join(X_AXES)}, got {x!r}")
    usable = [run for run in group.runs
              if all(series(run, name) is not None for name in (metric, X_AXES[x], "round"))]
    if not usable:
        return None
    rounds = np.unique(np.concatenate([series(run, "round") for run in usable]))
    ys = np.full((len(usable), rounds.size), np.nan)
    xs = np.full((len(usable), rounds.size), np.nan)
    for k, run in enumerate(usable):
        cols = np.searchsorted(rounds, series(run, "round"))
        ys[k, cols] = series(run, metric)
        xs[k, cols] = series(run, X_AXES[x])
    keep = np.isfinite(ys).any(axis=0)
    ys, xs = ys[:, keep], xs[:, keep]
    if ys.shape[1] > MAX_POINTS:
        pick = np.unique(np.linspace(0, ys.shape[1] - 1, MAX_POINTS).round().astype(int))
        ys, xs = ys[:, pick], xs[:, pick]
    mean, low, high = bootstrap_band(ys)
    with np.errstate(invalid="ignore"):
        x_mean = np.nanmean(np.where(np.isfinite(xs), xs, np.nan), axis=0) if xs.size else xs[0]
    return x_mean, mean, low, high


def wants_log(values: np.ndarray) -> bool:
    """Log scale when every finite value is positive and they span more than two decades."""
    finite = values[np.isfinite(values)]
    return bool(finite.size and finite.min() > 0 and np.log10(finite.max() / finite.min()) > LOG_DECADES)


def run_analysis(run: RunData) -> Analysis | None:
    """The exact theory of a quadratic run with one local step (``models.analysis``, the numbers
    ``ist theory RUN.h5`` prints); None when it does not apply or /problem is missing."""
    cfg = run.config
    if cfg.get("model") != "quadratic" or cfg.get("local_steps", 1) != 1:
        return None
    problem = run.problem
    if not problem:  # loaded without /problem (it can be large): read it now, then let it go
        try:
            problem = read_run(run.path, load_problem=True).problem
        except RunFileError:
            return None
    if "L" not in problem or "b" not in problem:
        return None
    try:
        settings = settings_from_config(cfg)
        L, b, x0 = run_inputs(settings, problem, run.params)
        return analyze(settings, L, b, x0, theorems=False)
    except (ValueError, KeyError, np.linalg.LinAlgError):  # a problem/setting the theory does not cover
        return None


def theory_value(run: RunData) -> float | None:
    """Predicted ‖x^∞ − x*‖² of a quadratic IST run with a random sketch (the mean's irreducible
    bias); None when the theory does not apply or the mean does not settle."""
    if run.config.get("algorithm") != "ist" or run.config.get("sketch") == "identity":
        return None
    analysis = run_analysis(run)
    return None if analysis is None else analysis.bias_sq


def theory_curve(run: RunData, x: str = "round") -> tuple[np.ndarray, np.ndarray] | None:
    """(x, ‖E[x^k] − x*‖²) at the run's logged rounds: the exact mean trajectory, a lower bound
    of the expected dist_to_opt_sq by Jensen."""
    rounds, xs = series(run, "round"), series(run, X_AXES[x])
    if rounds is None or xs is None:
        return None
    analysis = run_analysis(run)
    if analysis is None:
        return None
    index = rounds.astype(int)
    keep = index < analysis.mean_dist_sq.size
    return xs[keep], analysis.mean_dist_sq[index[keep]]


def group_theory(group: Group) -> float | None:
    """Mean over the group's runs of each run's prediction (runs of different seeds may have
    different problems, as the mean curve averages over them)."""
    values = [theory_value(run) for run in group.runs]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def group_theory_curve(group: Group, x: str = "round") -> tuple[np.ndarray, np.ndarray] | None:
    """Mean over the group's runs of their theory curves (runs logged at the same rounds)."""
    curves = [c for c in (theory_curve(run, x) for run in group.runs) if c is not None]
    curves = [c for c in curves if curves and c[0].shape == curves[0][0].shape]
    if not curves:
        return None
    return np.mean([c[0] for c in curves], axis=0), np.mean([c[1] for c in curves], axis=0)


def metric_figure(groups: Sequence[Group], metric: str, x: str = "round", *, theory: bool = True) -> Figure:
    """``metric`` vs ``x`` (round|bytes|time|sim_time): a mean line (gid ``mean``) and CI band
    (gid ``ci``) per group, plus dashed theory lines (gid ``theory``) on dist_to_opt_sq."""
    fig = Figure(figsize=(7.0, 4.2), layout="constrained")
    ax = fig.add_subplot()
    plotted: list[np.ndarray] = []
    for index, group in enumerate(groups):
        curve = group_curve(group, metric, x)
        if curve is None:
            continue
        xs, mean, low, high = curve
        (line,) = ax.plot(xs, mean, color=color(index), lw=1.6, label=short(f"{group.label} (n={len(group.runs)})"))
        line.set_gid("mean")
        plotted.append(mean)
        if len(group.runs) > 1:
            band = ax.fill_between(xs, low, high, color=color(index), alpha=0.2, lw=0)
            band.set_gid("ci")
            plotted.extend([low, high])
    log = bool(plotted) and wants_log(np.concatenate(plotted))
    if theory and metric == THEORY_METRIC:
        # the group's colour says whose theory a line is; the legend explains the two styles once
        styles: dict[str, str] = {}
        for index, group in enumerate(groups):
            curve = group_theory_curve(group, x)
            if curve is not None:
                xs, ys = curve
                shown = np.isfinite(ys) & (ys > 0 if log else True)
                (line,) = ax.plot(xs[shown], ys[shown], color=color(index), ls=":", lw=1.4)
                line.set_gid("theory-curve")
                styles[":"] = r"theory $\|E[x^k] - x^*\|^2$ (exact mean)"
            value = group_theory(group)
            if value is None or (log and value <= 0):
                continue
            line = ax.axhline(value, color=color(index), ls="--", lw=1.2)
            line.set_gid("theory")
            styles["--"] = r"theory $\|x^\infty - x^*\|^2$ (limit of the mean)"
        for style, label in styles.items():
            ax.plot([], [], color="0.4", ls=style, lw=1.2, label=label)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(X_LABELS[x])
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs {x}")
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.08)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    return fig


def comm_metric(groups: Sequence[Group]) -> str:
    """test_accuracy when any run has it (MLP), else f_gap = f(x) − f* (quadratic: the loss
    itself can be negative), else the training loss."""
    for metric in ("test_accuracy", "f_gap"):
        if any(series(run, metric) is not None for g in groups for run in g.runs):
            return metric
    return "loss"


def comm_figure(groups: Sequence[Group], metric: str | None = None, which: str = "final") -> Figure:
    """Final ``metric`` (default test_accuracy, else loss) vs total bytes, one point per group
    with its CI as an error bar, coloured by algorithm."""
    metric = metric or comm_metric(groups)
    fig = Figure(figsize=(7.0, 4.2), layout="constrained")
    ax = fig.add_subplot()
    algorithms: list[str] = []
    xs_all: list[float] = []
    ys_all: list[float] = []
    for group in groups:
        bytes_ = summarize_values([final_value(run, "bytes") for run in group.runs])
        value = summarize_values([final_value(run, metric) for run in group.runs])
        if not (np.isfinite(bytes_.mean) and np.isfinite(value.mean)):
            continue
        algorithm = str(group.config.get("algorithm", group.key.get("algorithm", "?")))
        if algorithm not in algorithms:
            algorithms.append(algorithm)
            label = algorithm
        else:
            label = None
        index = algorithms.index(algorithm)
        ax.errorbar([bytes_.mean], [value.mean],
                    yerr=[[value.mean - value.low], [value.high - value.mean]],
                    fmt="o", color=color(index), capsize=3, label=label)
        rest = ", ".join(f"{k}={show(v)}" for k, v in group.key.items() if k != "algorithm")
        if rest:
            ax.annotate(rest, (bytes_.mean, value.mean), fontsize=6, xytext=(4, 4), textcoords="offset points")
        xs_all.append(bytes_.mean)
        ys_all.extend([value.low, value.high])
    if xs_all and min(xs_all) > 0 and max(xs_all) / min(xs_all) > 10:
        ax.set_xscale("log")
    if ys_all and wants_log(np.asarray(ys_all)):
        ax.set_yscale("log")
    ax.set_xlabel("total bytes communicated (all workers)")
    ax.set_ylabel(f"{which} {metric}")
    ax.set_title(f"communication vs {metric}, per algorithm")
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.08)
    if algorithms:
        ax.legend(fontsize=8, title="algorithm")
    return fig


def report_figures(groups: Sequence[Group], metrics: Sequence[str], x: str = "round") -> dict[str, Figure]:
    """The figure set of a report: one per metric (vs ``x``) and communication vs accuracy."""
    figures: dict[str, Figure] = {}
    for metric in metrics:
        if metric in BOOKKEEPING or metric == X_AXES[x] or metric == "bytes":
            continue
        if any(series(run, metric) is not None for g in groups for run in g.runs):
            figures[f"{metric}_vs_{x}"] = metric_figure(groups, metric, x)
    if any(series(run, "bytes") is not None for g in groups for run in g.runs):
        metric = comm_metric(groups)
        figures[f"comm_vs_{metric}"] = comm_figure(groups, metric)
    return figures


def save_figure(fig: Figure, directory: str | Path, stem: str) -> list[Path]:
    """Write ``stem.png`` (150 dpi) and ``stem.svg`` into ``directory``."""
    directory = make_dir(Path(directory), "--figures")
    paths = [directory / f"{stem}.png", directory / f"{stem}.svg"]
    try:
        fig.savefig(paths[0], dpi=150)
        fig.savefig(paths[1])
    except OSError as exc:
        raise UserError(f"--figures: {str(directory)!r} cannot be written ({exc.strerror}); "
                        "expected a writable directory") from None
    return paths


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
