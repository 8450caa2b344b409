"""Comparisons against a baseline: ``ist report --compare FACTOR --baseline VALUE``.

Runs are split by every varying config key except ``seed`` and FACTOR (the *context*, e.g.
``workers=4``); within a context each value of FACTOR is compared with the baseline value, per
metric, on each run's final (or ``--best``) value:

- the difference of the aggregates (other − baseline) with a 95% CI. ``mean``: the CI of the
  paired or Welch t-test below (``scipy.stats.ttest_rel``/``ttest_ind(equal_var=False)``
  ``.confidence_interval()``); ``median`` and ``iqm`` (interquartile mean: the mean of the
  middle 50%, ``scipy.stats.trim_mean(x, 0.25)``, Agarwal et al. 2021): a percentile bootstrap
  of the difference (pairs resampled together when paired, each side on its own otherwise);
- a two-sided t-test of the means: paired (``ttest_rel``) when both sides have the same set of
  distinct seeds, so runs pair by seed; Welch's (``ttest_ind(equal_var=False)``) otherwise;
- the probability of improvement P(X > Y) of rliable (Agarwal et al. 2021): over all pairs of
  a run x of the other value and a run y of the baseline, the share where x improves on y, ties
  counting one half; "improves" is larger for accuracies and smaller otherwise;
- Holm's step-down correction of the p-values over every comparison of the report.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ist_cli.errors import UserError
from ist_cli.io.runfile import RunData
from ist_cli.report.choices import AGGREGATES
from ist_cli.report.metrics import higher_is_better, run_value
from ist_cli.report.stats import BOOTSTRAP_SEED, CI_LEVEL, N_RESAMPLES
from ist_cli.report.table import canon, order_key, show, varying_keys
from ist_cli.seeding import stream


def aggregate(values: np.ndarray, how: str, axis: int | None = None):
    """Mean, median or interquartile mean (the mean of the middle 50%, rliable's IQM) of the
    values, or of each row along ``axis``."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return float("nan")
    if how == "mean":
        out = x.mean(axis=axis)
    elif how == "median":
        out = np.median(x, axis=axis)
    elif how == "iqm":
        from scipy import stats as scipy_stats

        out = scipy_stats.trim_mean(x, 0.25, axis=axis)
    else:
        raise ValueError(f"aggregate must be one of {', '.join(AGGREGATES)}, got {how!r}")
    return float(out) if axis is None else out


def probability_of_improvement(x: np.ndarray, y: np.ndarray, higher_better: bool = True) -> float:
    """P(X > Y) over all (x, y) pairs, ties counting 1/2 (rliable); with ``higher_better``
    false an improvement is x < y."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size == 0 or y.size == 0:
        return float("nan")
    diff = x[:, None] - y[None, :]
    if not higher_better:
        diff = -diff
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN stays NaN and does not count in m):
    sorted ascending, p_(i) · (m − i + 1), made non-decreasing, capped at 1."""
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m = order.size
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return [float(v) for v in adjusted]


@dataclass
class Comparison:
    """One value of the factor against the baseline, for one metric in one context."""

    metric: str
    context: dict[str, Any]
    value: Any
    baseline: Any
    aggregate: str
    n: int
    n_baseline: int
    other_value: float
    baseline_value: float
    difference: float
    low: float
    high: float
    test: str
    statistic: float
    p: float
    prob_improvement: float
    p_holm: float = float("nan")


def _seed(run: RunData) -> Any:
    return run.config.get("seed", run.attrs.get("seed"))


def _pairs(other: list[RunData], base: list[RunData]) -> tuple[list[RunData], list[RunData]] | None:
    """Runs matched by seed when both sides hold the same distinct seeds, else None."""
    seeds_o, seeds_b = [canon(_seed(r)) for r in other], [canon(_seed(r)) for r in base]
    if len(set(seeds_o)) != len(seeds_o) or set(seeds_o) != set(seeds_b) or len(seeds_o) != len(seeds_b):
        return None
    by_seed = dict(zip(seeds_b, base, strict=True))
    return other, [by_seed[s] for s in seeds_o]


def _bootstrap_difference(x: np.ndarray, y: np.ndarray, how: str, paired: bool) -> tuple[float, float]:
    rng = stream(BOOTSTRAP_SEED, "bootstrap")
    tail = 100.0 * (1.0 - CI_LEVEL) / 2.0
    if paired:
        idx = rng.integers(0, x.size, size=(N_RESAMPLES, x.size))
        diffs = aggregate(x[idx], how, axis=1) - aggregate(y[idx], how, axis=1)
    else:
        ix = rng.integers(0, x.size, size=(N_RESAMPLES, x.size))
        iy = rng.integers(0, y.size, size=(N_RESAMPLES, y.size))
        diffs = aggregate(x[ix], how, axis=1) - aggregate(y[iy], how, axis=1)
    low, high = np.percentile(diffs, [tail, 100.0 - tail])
    return float(low), float(high)


def compare_values(x: np.ndarray, y: np.ndarray, how: str, paired: bool, higher_better: bool,
                   ) -> tuple[float, float, float, str, float, float, float]:
    """(difference, low, high, test name, statistic, p, P(improvement)) of x against the
    baseline y (aligned by seed when ``paired``); NaN where there are too few values, and no
    test (NaN p) where the values do not vary beyond rounding."""
    from scipy import stats as scipy_stats

    nan = float("nan")
    difference = aggregate(x, how) - aggregate(y, how)
    prob = probability_of_improvement(x, y, higher_better)
    test = "paired t" if paired else "Welch t"
    if x.size < 2 or y.size < 2:
        return difference, nan, nan, test, nan, nan, prob
    spread = [x - y] if paired else [x, y]
    if all(np.ptp(v) <= 1e-12 * max(np.abs(v).max(), 1e-300) for v in spread):
        # no spread beyond rounding (e.g. a byte count fixed by the config): the difference is
        # exact and a t statistic would be rounding noise over rounding noise
        return difference, difference, difference, test, nan, nan, prob
    with warnings.catch_warnings(), np.errstate(all="ignore"):  # zero spread: scipy returns NaN
        warnings.simplefilter("ignore")
        result = (scipy_stats.ttest_rel(x, y) if paired else scipy_stats.ttest_ind(x, y, equal_var=False))
        if how == "mean":
            ci = result.confidence_interval(CI_LEVEL)
            low, high = float(ci.low), float(ci.high)
        else:
            low, high = _bootstrap_difference(x, y, how, paired)
    return difference, low, high, test, float(result.statistic), float(result.pvalue), prob


def _follows(runs: Sequence[RunData], key: str, factor: str) -> bool:
    """True when ``key`` has one value per value of ``factor``: a setting of the compared
    thing itself (DP's pinned ``local_steps = 1``, a method's own rounds), not a context."""
    seen: dict[str, set[str]] = {}
    for run in runs:
        if factor in run.config:
            seen.setdefault(canon(run.config[factor]), set()).add(canon(run.config.get(key)))
    return all(len(values) == 1 for values in seen.values())


def compare(runs: Sequence[RunData], metrics: Sequence[str], factor: str, baseline: str, *,
            how: str = "mean", which: str = "final", ignore: Sequence[str] = ()) -> list[Comparison]:
    """Every comparison of the report (see the module docstring), Holm-corrected together.
    Keys in ``ignore`` do not split contexts (``--over``'s key: each method at its own best)."""
    values = {canon(run.config[factor]): run.config[factor] for run in runs if factor in run.config}
    if not values:
        known = sorted({key for run in runs for key in run.config})
        raise UserError(f"--compare: unknown key {factor!r}; allowed keys: {', '.join(known)}")
    base_key = next((key for key, value in values.items() if show(value) == baseline.strip() or key == baseline),
                    None)
    if base_key is None:
        shown = ", ".join(show(v) for v in sorted(values.values(), key=order_key))
        raise UserError(f"--baseline: {baseline!r} is not a value of {factor}; allowed: {shown}")
    context_keys = [key for key in varying_keys(runs)
                    if key not in ("seed", factor, *ignore) and not _follows(runs, key, factor)]
    contexts: dict[tuple[str, ...], dict[str, list[RunData]]] = {}
    for run in runs:
        if factor not in run.config:
            continue
        ident = tuple(canon(run.config.get(key)) for key in context_keys)
        contexts.setdefault(ident, {}).setdefault(canon(run.config[factor]), []).append(run)
    out: list[Comparison] = []
    for ident in sorted(contexts, key=lambda i: tuple(order_key(json_value(v)) for v in i)):
        by_value = contexts[ident]
        base = by_value.get(base_key)
        if not base:
            continue
        context = dict(zip(context_keys, (json_value(v) for v in ident), strict=True))
        for key in sorted(by_value, key=lambda k: order_key(values[k])):
            if key == base_key:
                continue
            other = by_value[key]
            pairs = _pairs(other, base)
            left, right = pairs if pairs else (other, base)
            for metric in metrics:
                x = np.array([run_value(r, metric, which) for r in left])
                y = np.array([run_value(r, metric, which) for r in right])
                if pairs:
                    keep = np.isfinite(x) & np.isfinite(y)
                    x, y = x[keep], y[keep]
                else:
                    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
                if x.size == 0 or y.size == 0:
                    continue
                diff, low, high, test, stat, p, prob = compare_values(x, y, how, pairs is not None,
                                                                      higher_is_better(metric))
                out.append(Comparison(metric, context, values[key], values[base_key], how, int(x.size),
                                      int(y.size), aggregate(x, how), aggregate(y, how), diff, low, high, test,
                                      stat, p, prob))
    for comparison, adjusted in zip(out, holm([c.p for c in out]), strict=True):
        comparison.p_holm = adjusted
    return out


def json_value(text: str) -> Any:
    """A config value back from its ``canon`` spelling."""
    return json.loads(text)


def _num(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}g}" if math.isfinite(value) else "-"


def _p(value: float) -> str:
    if not math.isfinite(value):
        return "-"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def comparison_rows(comparisons: Sequence[Comparison], factor: str,
                    format_value=None) -> tuple[list[str], list[list[str]]]:
    """Header and text cells of the comparison table (``format_value(metric, x)`` prints a
    metric's value, e.g. with its unit)."""
    fmt_value = format_value or (lambda metric, x: _num(x))
    context_keys = list(comparisons[0].context) if comparisons else []
    how = comparisons[0].aggregate if comparisons else "mean"
    header = [*context_keys, factor, "metric", "n", f"{how}", f"baseline {how}", "difference [95% CI]", "test",
              "p", "p (Holm)", "P(improvement)"]
    rows = []
    for c in comparisons:
        interval = (f"{fmt_value(c.metric, c.difference)} [{fmt_value(c.metric, c.low)}, "
                    f"{fmt_value(c.metric, c.high)}]" if math.isfinite(c.low) else fmt_value(c.metric, c.difference))
        rows.append([*(show(c.context[k]) for k in context_keys), f"{show(c.value)} vs {show(c.baseline)}", c.metric,
                     f"{c.n} vs {c.n_baseline}", fmt_value(c.metric, c.other_value),
                     fmt_value(c.metric, c.baseline_value), interval, c.test, _p(c.p), _p(c.p_holm),
                     _num(c.prob_improvement, 3)])
    return header, rows


def comparison_documents(comparisons: Sequence[Comparison]) -> list[dict[str, Any]]:
    """The comparisons as JSON-ready dicts (non-finite numbers as None)."""

    def clean(value: Any) -> Any:
        return None if isinstance(value, float) and not math.isfinite(value) else value

    return [{key: clean(value) for key, value in vars(c).items()} for c in comparisons]
