"""Figures of the report: metric curves with CI bands, the theory overlay (the mean's
limit as a dashed line, its exact trajectory as a dotted curve), and
communication vs accuracy. Built on ``matplotlib.figure.Figure`` (Agg, no pyplot, no
display), returned as objects so a notebook or a test can inspect the lines and bands.

Curves of a group are aligned by round: at each logged round the line is the mean over the
group's runs and the band the 95% CI (``stats.band``); the x position is the mean over runs
of the x series at that round (bytes are the same for every seed; measured times differ a
little). Bands are drawn only for groups with at least two runs.

Figures are sized for a paper (``FIGSIZES``: one column or a full page width) with fonts that
stay legible there (``STYLE``); SVG keeps its text as text and PDF embeds TrueType fonts, so
both stay editable. Group ``i`` of a report has colour ``C{i}`` in every figure.
"""

from __future__ import annotations

import contextlib
import functools
import io
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from ist_cli.config import settings_from_config
from ist_cli.errors import UserError
from ist_cli.io.metric_info import metric_label
from ist_cli.io.outputs import make_dir
from ist_cli.io.runfile import RunData, RunFileError, read_run
from ist_cli.models.analysis import Analysis, analyze, run_inputs
from ist_cli.report.choices import DEFAULT_FIGSIZE, FIGSIZES
from ist_cli.report.metrics import BOOKKEEPING, X_AXES, X_LABELS, final_value, series
from ist_cli.report.stats import CI_LEVEL, DEFAULT_CI, band, ci_caption, summarize_values
from ist_cli.report.table import Group

MAX_POINTS = 400
LOG_DECADES = 2.0
THEORY_METRIC = "dist_to_opt_sq"
LEGEND_ROW_INCHES = 0.17
STYLE = {
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
    "legend.fontsize": 7, "lines.linewidth": 1.3, "svg.fonttype": "none", "pdf.fonttype": 42,
    "axes.prop_cycle": matplotlib.rcParamsDefault["axes.prop_cycle"],
}
FORMATS = ("png", "svg", "pdf")
PNG_DPI = 300


@contextlib.contextmanager
def style() -> Iterator[None]:
    """The report's matplotlib settings, and no warning from matplotlib on the user's terminal
    (e.g. a glyph missing from the font): figures are built and saved inside this."""
    import logging

    logger = logging.getLogger("matplotlib")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with matplotlib.rc_context(STYLE), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def styled(function):
    """Run a figure builder inside ``style()`` (fonts are fixed when text is created)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with style():
            return function(*args, **kwargs)

    return wrapper


def new_figure(size: str = DEFAULT_FIGSIZE) -> Figure:
    if size not in FIGSIZES:
        raise ValueError(f"size must be one of {', '.join(FIGSIZES)}, got {size!r}")
    return Figure(figsize=FIGSIZES[size], layout="constrained")


def legend_below(fig: Figure, ax, size: str, title: str | None = None) -> None:
    """Legend under the axes (a legend inside a one-column plot hides the curves); the
    figure grows by one text row per entry so the axes keep their size."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    ncols = 1 if size == "column" else 2
    rows = -(-len(handles) // ncols) + (1 if title else 0)
    width, height = FIGSIZES[size]
    fig.set_size_inches(width, height + LEGEND_ROW_INCHES * rows + 0.1)
    fig.legend(handles, labels, loc="outside lower center", ncols=ncols, frameon=False, title=title)


def short(label: str, limit: int = 60) -> str:
    """Legend labels stay readable: long group labels are cut (the HTML lists full configs)."""
    return label if len(label) <= limit else label[: limit - 1] + "…"


def color(index: int) -> str:
    return f"C{index % 10}"


def group_curve(group: Group, metric: str, x: str = "round", ci: str = DEFAULT_CI,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
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
    mean, low, high = band(ys, ci)
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


@styled
def metric_figure(groups: Sequence[Group], metric: str, x: str = "round", *, theory: bool = True,
                  ci: str = DEFAULT_CI, size: str = DEFAULT_FIGSIZE, logx: bool = False) -> Figure:
    """``metric`` vs ``x`` (round|bytes|time|sim_time): a mean line (gid ``mean``) and CI band
    (gid ``ci``) per group, plus on dist_to_opt_sq the theory: dashed limit lines (gid ``theory``)
    and dotted exact mean trajectories (gid ``theory-curve``).
    ``logx`` puts the x axis on a log scale (bytes and times span decades)."""
    fig = new_figure(size)
    ax = fig.add_subplot()
    plotted: list[np.ndarray] = []
    for index, group in enumerate(groups):
        curve = group_curve(group, metric, x, ci)
        if curve is None:
            continue
        xs, mean, low, high = curve
        if logx:  # round 0 and time 0 have no place on a log axis
            keep = xs > 0
            xs, mean, low, high = xs[keep], mean[keep], low[keep], high[keep]
        (line,) = ax.plot(xs, mean, color=color(index), label=short(f"{group.label} (n={len(group.runs)})"))
        line.set_gid("mean")
        plotted.append(mean)
        if len(group.runs) > 1:
            shade = ax.fill_between(xs, low, high, color=color(index), alpha=0.2, lw=0)
            shade.set_gid("ci")  # not in ``plotted``: a t band may dip below 0 where the means do not
    log = bool(plotted) and wants_log(np.concatenate(plotted))
    if theory and metric == THEORY_METRIC:
        # the group's colour says whose theory a line is; the legend explains the two styles once
        styles: dict[str, str] = {}
        for index, group in enumerate(groups):
            curve = group_theory_curve(group, x)
            if curve is not None:
                xs, ys = curve
                shown = np.isfinite(ys) & (ys > 0 if log else True) & (xs > 0 if logx else True)
                (line,) = ax.plot(xs[shown], ys[shown], color=color(index), ls=":", lw=1.4)
                line.set_gid("theory-curve")
                styles[":"] = r"theory $\|E[x^k] - x^*\|^2$ (exact mean)"
            value = group_theory(group)
            if value is None or (log and value <= 0):
                continue
            line = ax.axhline(value, color=color(index), ls="--", lw=1.0)
            line.set_gid("theory")
            styles["--"] = r"theory $\|x^\infty - x^*\|^2$ (limit of the mean)"
        for style, label in styles.items():
            ax.plot([], [], color="0.4", ls=style, lw=1.2, label=label)
    if log:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a log axis collide
    ax.set_xlabel(X_LABELS[x])
    ax.set_ylabel(metric_label(metric))
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.08)
    legend_below(fig, ax, size)
    return fig


THEORY_GIDS = ("theory", "theory-curve")


def has_theory(fig: Figure, gid: str | None = None) -> bool:
    """Whether the figure draws a theory line (``gid`` one of THEORY_GIDS; None: either)."""
    gids = THEORY_GIDS if gid is None else (gid,)
    return any(line.get_gid() in gids for ax in fig.axes for line in ax.lines)


def figure_caption(fig: Figure, name: str, ci: str = DEFAULT_CI) -> str:
    """What the figure shows, naming the CI method, and the theory line only where one is drawn."""
    if name.startswith("comm_vs_"):
        text = f"final value vs total bytes communicated, one point per group; error bar = {ci_caption(ci)}"
    else:
        method = ci if ci == "t" else "bootstrap"  # bands of bca reports use the percentile bootstrap
        text = f"line = mean over the group's runs; band = {ci_caption(method, CI_LEVEL)} pointwise"
    if has_theory(fig, "theory"):
        text += "; dashed = theory: limit ‖x^∞ − x*‖² of IST's mean iterate"
    if has_theory(fig, "theory-curve"):
        text += "; dotted = theory: ‖E[x^k] − x*‖², the exact mean trajectory (a lower bound by Jensen)"
    return text


def comm_metric(groups: Sequence[Group]) -> str:
    """test_accuracy when any run has it (MLP), else f_gap = f(x) − f* (quadratic: the loss
    itself can be negative), else the training loss."""
    for metric in ("test_accuracy", "f_gap"):
        if any(series(run, metric) is not None for g in groups for run in g.runs):
            return metric
    return "loss"


@styled
def comm_figure(groups: Sequence[Group], metric: str | None = None, which: str = "final", *,
                ci: str = DEFAULT_CI, size: str = DEFAULT_FIGSIZE) -> Figure:
    """Final ``metric`` (default test_accuracy, else f_gap, else loss) vs total bytes, one point
    per group with its CI as an error bar, in the group's colour (as in every other figure)."""
    metric = metric or comm_metric(groups)
    fig = new_figure(size)
    ax = fig.add_subplot()
    xs_all: list[float] = []
    ys_all: list[float] = []
    for index, group in enumerate(groups):
        bytes_ = summarize_values([final_value(run, "bytes") for run in group.runs], ci)
        value = summarize_values([final_value(run, metric) for run in group.runs], ci)
        if not (np.isfinite(bytes_.mean) and np.isfinite(value.mean)):
            continue
        low = value.low if np.isfinite(value.low) else value.mean
        high = value.high if np.isfinite(value.high) else value.mean
        ax.errorbar([bytes_.mean], [value.mean], yerr=[[value.mean - low], [high - value.mean]],
                    fmt="o", ms=4, color=color(index), capsize=2, label=short(f"{group.label} (n={len(group.runs)})"))
        xs_all.append(bytes_.mean)
        ys_all.extend([low, high])
    if xs_all and min(xs_all) > 0 and max(xs_all) / min(xs_all) > 10:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    if ys_all and wants_log(np.asarray(ys_all)):
        ax.set_yscale("log")
    ax.set_xlabel("total bytes communicated (all workers)")
    ax.set_ylabel(f"{which} {metric_label(metric)}")
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.08)
    legend_below(fig, ax, size)
    return fig


def report_figures(groups: Sequence[Group], metrics: Sequence[str], x: str = "round", *, ci: str = DEFAULT_CI,
                   size: str = DEFAULT_FIGSIZE, logx: bool = False) -> dict[str, Figure]:
    """The figure set of a report: one per metric (vs ``x``) and communication vs accuracy."""
    figures: dict[str, Figure] = {}
    with style():
        for metric in metrics:
            if metric in BOOKKEEPING or metric == X_AXES[x] or metric == "bytes":
                continue
            if any(series(run, metric) is not None for g in groups for run in g.runs):
                figures[f"{metric}_vs_{x}"] = metric_figure(groups, metric, x, ci=ci, size=size, logx=logx)
        if any(series(run, "bytes") is not None for g in groups for run in g.runs):
            metric = comm_metric(groups)
            figures[f"comm_vs_{metric}"] = comm_figure(groups, metric, ci=ci, size=size)
    return figures


def save_figure(fig: Figure, directory: str | Path, stem: str, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write ``stem.png`` (300 dpi), ``stem.svg`` (text kept as text) and ``stem.pdf`` into ``directory``."""
    directory = make_dir(Path(directory), "--figures")
    paths = [directory / f"{stem}.{fmt}" for fmt in formats]
    try:
        with style():
            for path in paths:
                fig.savefig(path, dpi=PNG_DPI if path.suffix == ".png" else "figure")
    except OSError as exc:
        raise UserError(f"--figures: {str(directory)!r} cannot be written ({exc.strerror}); "
                        "expected a writable directory") from None
    return paths


def png_bytes(fig: Figure, dpi: int = 200) -> bytes:
    buffer = io.BytesIO()
    with style():
        fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
