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
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from ist_cli.algorithms.plans import theory_covers
from ist_cli.config import settings_from_config
from ist_cli.errors import UserError
from ist_cli.io.metric_info import metric_label, metric_range
from ist_cli.io.outputs import make_dir
from ist_cli.io.runfile import RunData, RunFileError, read_run
from ist_cli.models.analysis import Analysis, analyze, run_inputs
from ist_cli.models.theory import DYNAMICS
from ist_cli.report.choices import DEFAULT_FIGSIZE, FIGSIZES
from ist_cli.report.labels import Labels, group_label
from ist_cli.report.metrics import BOOKKEEPING, X_AXES, X_LABELS, X_UNITS, final_value, series
from ist_cli.report.stats import CI_LEVEL, DEFAULT_CI, band, ci_caption, summarize_values
from ist_cli.report.table import Group
from ist_cli.report.units import format_axis, unit_of

MAX_POINTS = 400
LOG_DECADES = 2.0
THEORY_METRIC = "dist_to_opt_sq"
LEGEND_ROW_INCHES = 0.17
LOG_X_DEFAULT = ("bytes", "sim_time", "steps", "samples")  # span decades: log scale unless --linx
LINESTYLES = ("-", (0, (4, 1.5)), (0, (1, 1.2)), "-.", (0, (6, 1.5, 1, 1.5, 1, 1.5)))
PANEL_INCHES = (3.4, 2.3)  # one panel of a figure grid
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
    """One legend for the whole figure, under its axes (a legend inside a one-column plot
    hides the curves); the figure grows by one text row per legend row so the axes keep their
    size. Entries of every axes are gathered once (a figure grid shares one legend)."""
    entries: dict[str, object] = {}
    for axes in fig.axes:
        for handle, label in zip(*axes.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    if not entries:
        return
    width, height = fig.get_size_inches()
    longest = max(len(label) for label in entries)
    ncols = max(1, min(len(entries), int(width * 13 // max(longest + 4, 1))))
    rows = -(-len(entries) // ncols) + (1 if title else 0)
    fig.set_size_inches(width, height + LEGEND_ROW_INCHES * rows + 0.1)
    fig.legend(list(entries.values()), list(entries), loc="outside lower center", ncols=ncols, frameon=False,
               title=title)


def short(label: str, limit: int = 60) -> str:
    """Legend labels stay readable: long group labels are cut (the HTML lists full configs)."""
    return label if len(label) <= limit else label[: limit - 1] + "…"


def color(index: int) -> str:
    return f"C{index % 10}"


def group_styles(groups: Sequence[Group], *, colour_only: bool = False) -> list[tuple[str, object]]:
    """(colour, line style) per group: colour by the first grouping key, line style by the
    rest (e.g. colour = method, style = number of workers), so the factor structure shows;
    every group its own colour when ``colour_only`` (dashed and dotted lines mean theory)."""
    return key_styles([group.key for group in groups], colour_only=colour_only)


def key_styles(keys: Sequence[Mapping[str, object]], *, colour_only: bool = False) -> list[tuple[str, object]]:
    """``group_styles`` of bare group keys (figures whose curves are not groups of runs)."""
    if colour_only or not keys or len(keys[0]) < 2:
        return [(color(i), "-") for i in range(len(keys))]
    first = list(keys[0])[0]
    # a key with one value per colour (DP's pinned local_steps) belongs to the method: no style of its own
    heads: dict[str, set[str]] = {}
    for key in keys:
        for k, v in key.items():
            heads.setdefault(k, set()).add(repr((key.get(first), v)))
    own = {k for k, pairs in heads.items() if len(pairs) == len({repr(key.get(first)) for key in keys})}
    colours: dict[str, int] = {}
    styles: dict[str, int] = {}
    out = []
    for key in keys:
        head = repr(key.get(first))
        rest = repr([v for k, v in key.items() if k != first and k not in own])
        c = colours.setdefault(head, len(colours))
        st = styles.setdefault(rest, len(styles))
        out.append((color(c), LINESTYLES[st % len(LINESTYLES)]))
    return out


def legend_text(group: Group, labels: Labels | None = None) -> str:
    """``IST, 4 workers (n = 3)``."""
    return short(group_label(group.key, labels, len(group.runs)))


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
    mean, low, high = band(ys, ci, metric_range(metric))
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
    if not theory_covers(cfg) or cfg.get("local_steps", 1) != 1:
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
    rule = DYNAMICS.get(run.config.get("algorithm"))
    if rule is None or not rule.biased or run.config.get("sketch") == "identity":
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


def default_logx(x: str) -> bool:
    """Bytes, modelled time, steps and samples span decades: a log x axis unless the user asks otherwise."""
    return x in LOG_X_DEFAULT


def draw_metric(ax, groups: Sequence[Group], metric: str, x: str = "round", *, theory: bool = True,
                ci: str = DEFAULT_CI, logx: bool = False, labels: Labels | None = None) -> None:
    """Draw ``metric`` vs ``x`` into ``ax``: a mean line (gid ``mean``) and CI band (gid ``ci``)
    per group, and on dist_to_opt_sq the theory (gids ``theory``, ``theory-curve``)."""
    show_theory = theory and metric == THEORY_METRIC
    styles = group_styles(groups, colour_only=show_theory)
    plotted: list[np.ndarray] = []
    bands: list[np.ndarray] = []
    for index, group in enumerate(groups):
        curve = group_curve(group, metric, x, ci)
        if curve is None:
            continue
        xs, mean, low, high = curve
        if logx:  # round 0 and time 0 have no place on a log axis
            keep = xs > 0
            xs, mean, low, high = xs[keep], mean[keep], low[keep], high[keep]
        colour, linestyle = styles[index]
        (line,) = ax.plot(xs, mean, color=colour, ls=linestyle, label=legend_text(group, labels))
        line.set_gid("mean")
        plotted.append(mean)
        if len(group.runs) > 1:
            shade = ax.fill_between(xs, low, high, color=colour, alpha=0.18, lw=0)
            shade.set_gid("ci")
            bands.extend([low, high])
    # a positive quantity whose means or bands span decades goes on a log axis, where its
    # log-scale band is symmetric (a linear axis would be all band)
    positive = metric_range(metric)[0] == 0 and bands and all(np.nanmin(b) > 0 for b in bands if np.isfinite(b).any())
    log = bool(plotted) and wants_log(np.concatenate(plotted + (bands if positive else [])))
    if show_theory:
        # the group's colour says whose theory a line is; the legend explains the two styles once
        kinds: dict[str, str] = {}
        for index, group in enumerate(groups):
            curve = group_theory_curve(group, x)
            if curve is not None:
                xs, ys = curve
                shown = np.isfinite(ys) & (ys > 0 if log else True) & (xs > 0 if logx else True)
                (line,) = ax.plot(xs[shown], ys[shown], color=styles[index][0], ls=":", lw=1.4)
                line.set_gid("theory-curve")
                kinds[":"] = r"theory $\|E[x^k] - x^*\|^2$ (exact mean)"
            value = group_theory(group)
            if value is None or (log and value <= 0):
                continue
            line = ax.axhline(value, color=styles[index][0], ls="--", lw=1.0)
            line.set_gid("theory")
            kinds["--"] = r"theory $\|x^\infty - x^*\|^2$ (limit of the mean)"
        for kind, label in kinds.items():
            ax.plot([], [], color="0.4", ls=kind, lw=1.2, label=label)
    if log:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    format_axis(ax.xaxis, X_UNITS[x], integer=X_UNITS[x] == "count")
    format_axis(ax.yaxis, unit_of(metric))
    ax.set_xlabel(X_LABELS[x])
    ax.set_ylabel(metric_label(metric))
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.08)


@styled
def metric_figure(groups: Sequence[Group], metric: str, x: str = "round", *, theory: bool = True,
                  ci: str = DEFAULT_CI, size: str = DEFAULT_FIGSIZE, logx: bool | None = None,
                  labels: Labels | None = None) -> Figure:
    """``metric`` vs ``x`` (``X_AXES``) in one axes, with the legend under it (``draw_metric``).
    ``logx`` (default: ``default_logx(x)``) puts the x axis on a log scale."""
    fig = new_figure(size)
    ax = fig.add_subplot()
    draw_metric(ax, groups, metric, x, theory=theory, ci=ci, logx=default_logx(x) if logx is None else logx,
                labels=labels)
    legend_below(fig, ax, size)
    return fig


@styled
def curves_figure(groups: Sequence[Group], metrics: Sequence[str], x: str = "round", *, ci: str = DEFAULT_CI,
                  logx: bool | None = None, labels: Labels | None = None) -> Figure:
    """Every metric vs ``x`` as a grid of panels (two per row) sharing one legend under them."""
    n = len(metrics)
    ncols = 1 if n == 1 else 2
    nrows = -(-n // ncols)
    fig = Figure(figsize=(PANEL_INCHES[0] * ncols, PANEL_INCHES[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        draw_metric(ax, groups, metric, x, ci=ci, logx=default_logx(x) if logx is None else logx, labels=labels)
    for ax in list(axes.flat)[n:]:
        fig.delaxes(ax)
    legend_below(fig, axes.flat[0], "page")
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
                ci: str = DEFAULT_CI, size: str = DEFAULT_FIGSIZE, labels: Labels | None = None) -> Figure:
    """Final ``metric`` (default test_accuracy, else f_gap, else loss) vs total bytes, one point
    per group with its CI as an error bar, in the group's colour and marker (as in every other
    figure); the x axis is logarithmic when the totals are positive."""
    metric = metric or comm_metric(groups)
    fig = new_figure(size)
    ax = fig.add_subplot()
    xs_all: list[float] = []
    ys_all: list[float] = []
    markers = ("o", "s", "^", "D", "v")
    for index, group in enumerate(groups):
        bytes_ = summarize_values([final_value(run, "bytes") for run in group.runs], ci, bounds=metric_range("bytes"))
        value = summarize_values([final_value(run, metric) for run in group.runs], ci, bounds=metric_range(metric))
        if not (np.isfinite(bytes_.mean) and np.isfinite(value.mean)):
            continue
        low = value.low if np.isfinite(value.low) else value.mean
        high = value.high if np.isfinite(value.high) else value.mean
        colour, linestyle = group_styles(groups)[index]
        marker = markers[LINESTYLES.index(linestyle) % len(markers)] if linestyle in LINESTYLES else "o"
        ax.errorbar([bytes_.mean], [value.mean], yerr=[[max(value.mean - low, 0.0)], [max(high - value.mean, 0.0)]],
                    fmt=marker, ms=4, color=colour, capsize=2, label=legend_text(group, labels))
        xs_all.append(bytes_.mean)
        ys_all.extend([low, high])
    if xs_all and min(xs_all) > 0:
        ax.set_xscale("log")
        lo, hi = min(xs_all), max(xs_all)
        if hi / lo < 10:  # fewer than one decade: widen the view to show labelled decades
            ax.set_xlim(lo / 2, hi * 2)
    if ys_all and wants_log(np.asarray(ys_all)):
        ax.set_yscale("log")
    format_axis(ax.xaxis, "byte")
    format_axis(ax.yaxis, unit_of(metric))
    ax.set_xlabel("bytes communicated (all workers)")
    ax.set_ylabel(f"{which} {metric_label(metric)}")
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.08)
    legend_below(fig, ax, size)
    return fig


def report_figures(groups: Sequence[Group], metrics: Sequence[str], x: str = "round", *, ci: str = DEFAULT_CI,
                   size: str = DEFAULT_FIGSIZE, logx: bool | None = None, labels: Labels | None = None,
                   ) -> dict[str, Figure]:
    """The figure set of a report: one per metric (vs ``x``), all of them as one grid with a
    shared legend (``curves_vs_<x>``, when there are several), and communication vs accuracy."""
    figures: dict[str, Figure] = {}
    curves: list[str] = []
    with style():
        for metric in metrics:
            if metric in BOOKKEEPING or metric == X_AXES[x] or metric == "bytes":
                continue
            if any(series(run, metric) is not None for g in groups for run in g.runs):
                curves.append(metric)
                figures[f"{metric}_vs_{x}"] = metric_figure(groups, metric, x, ci=ci, size=size, logx=logx,
                                                            labels=labels)
        if len(curves) > 1:
            figures[f"curves_vs_{x}"] = curves_figure(groups, curves, x, ci=ci, logx=logx, labels=labels)
        if any(series(run, "bytes") is not None for g in groups for run in g.runs):
            metric = comm_metric(groups)
            figures[f"comm_vs_{metric}"] = comm_figure(groups, metric, ci=ci, size=size, labels=labels)
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
