"""Mean and 95% confidence intervals over the seeds of a group.

Three methods (``CI_METHODS``), named in every table and caption of a report:

- ``t`` (default): Student-t interval mean ± t_{0.975, n-1} · s/√n, s the sample standard
  deviation (ddof 1). With the 2-5 seeds a study usually has, a percentile bootstrap cannot
  reach beyond the observed values and under-covers badly; the t-interval is the honest default.
- ``bootstrap`` (percentile bootstrap): draw ``N_RESAMPLES`` resamples of the n per-seed values with
replacement, take the mean of each, and report the 2.5th and 97.5th percentiles of those means
(numpy's default linear interpolation). The draws come from
``ist_cli.seeding.stream(BOOTSTRAP_SEED, "bootstrap")`` so a report is reproducible bit for bit.
- ``bca``: bias-corrected and accelerated bootstrap, ``scipy.stats.bootstrap(method="BCa")``
  with the same number of resamples and a generator from the same stream; [x, x] when all
  values are equal (BCa's acceleration is 0/0 there), NaN where scipy finds it undefined.

With one run the interval is [x, x]; non-finite values (diverged runs) are left out and counted.

Every interval respects the metric's range (``io.metric_info.metric_range``). The t-interval
of a bounded metric is built on a scale where the range is the whole line and mapped back
(the delta method): logit for a proportion, m·exp(±t·s/(√n·m)) (log scale) for a
non-negative quantity, so it is asymmetric near a bound and never crosses it; all values at
the bound give [x, x]. Bootstrap intervals are percentiles of resampled means, which lie
between the smallest and largest value already. With fewer than ``FEW_SEEDS`` runs an
interval says little (a bootstrap on 3 values has 10 distinct resamples); the tables say so
next to each interval.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ist_cli.io.metric_info import UNBOUNDED, metric_range
from ist_cli.report.choices import CI_METHODS, CI_NAMES, DEFAULT_CI
from ist_cli.report.metrics import run_value
from ist_cli.report.table import Group
from ist_cli.seeding import stream

N_RESAMPLES = 10_000
BAND_RESAMPLES = 1_000  # per-point bands on figures: many points, so fewer resamples
CI_LEVEL = 0.95
BOOTSTRAP_SEED = 0
FEW_SEEDS = 5  # below this many runs every interval carries a note
__all__ = ["CI_METHODS", "CI_NAMES", "DEFAULT_CI"]  # re-exported: the stats API names its methods


def ci_caption(method: str, level: float = CI_LEVEL) -> str:
    """How a table or figure names its interval, e.g. ``95% Student-t CI``."""
    return f"{level:.0%} {CI_NAMES[method]} CI"


def _sample(values: Sequence[float] | np.ndarray) -> tuple[np.ndarray, tuple[float, float, float] | None]:
    """The values as a flat float array, and the interval when there is nothing to estimate:
    NaN for no value, [x, x] for one."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        return x, (float("nan"), float("nan"), float("nan"))
    if x.size == 1:
        return x, (float(x[0]),) * 3
    return x, None


def t_ci(values: Sequence[float] | np.ndarray, *, level: float = CI_LEVEL,
         bounds: tuple[float, float] = UNBOUNDED) -> tuple[float, float, float]:
    """(mean, low, high): mean ± t_{(1+level)/2, n-1} · s/√n on the scale ``bounds`` call for
    (``bounded_t``); [x, x] for one value."""
    x, trivial = _sample(values)
    if trivial is not None:
        return trivial
    mean = float(x.mean())
    from scipy import stats as scipy_stats  # lazily: scipy.stats takes a second to import

    half = float(scipy_stats.t.ppf((1.0 + level) / 2.0, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    low, high = bounded_t(np.float64(mean), np.float64(half), bounds)
    return mean, float(low), float(high)


def bounded_t(mean: np.ndarray, half: np.ndarray, bounds: tuple[float, float] = UNBOUNDED,
              ) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of a t-interval mean ± half, built on the scale that fits ``bounds`` and
    mapped back (delta method): logit for two finite bounds, log of the distance to the one
    finite bound otherwise, the plain interval when unbounded. Elementwise; a mean on (or past)
    a bound gets [mean, mean], which is where every value lies."""
    lo, hi = bounds
    mean = np.asarray(mean, dtype=np.float64)
    half = np.asarray(half, dtype=np.float64)
    with np.errstate(all="ignore"):
        if np.isfinite(lo) and np.isfinite(hi):
            p = (mean - lo) / (hi - lo)
            inside = (p > 0) & (p < 1)
            z = np.log(p) - np.log1p(-p)
            dz = half / ((hi - lo) * p * (1 - p))
            low = lo + (hi - lo) / (1 + np.exp(-(z - dz)))
            high = lo + (hi - lo) / (1 + np.exp(-(z + dz)))
        elif np.isfinite(lo):
            gap = mean - lo
            inside = gap > 0
            low, high = lo + gap * np.exp(-half / gap), lo + gap * np.exp(half / gap)
        elif np.isfinite(hi):
            gap = hi - mean
            inside = gap > 0
            low, high = hi - gap * np.exp(half / gap), hi - gap * np.exp(-half / gap)
        else:
            return mean - half, mean + half
    ok = inside & np.isfinite(half)
    low = np.where(ok, np.minimum(low, mean), np.where(np.isfinite(half), mean, np.nan))
    high = np.where(ok, np.maximum(high, mean), np.where(np.isfinite(half), mean, np.nan))
    return clip_to(low, bounds), clip_to(high, bounds)


def clip_to(values: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    """``values`` inside ``bounds`` (NaN stays NaN): guards the last ulp of a back-transform."""
    return np.clip(np.asarray(values, dtype=np.float64), bounds[0], bounds[1])


def few_runs_note(n: int) -> str:
    """What a table prints beside an interval of n < ``FEW_SEEDS`` runs (empty otherwise)."""
    return f"n = {n} < {FEW_SEEDS}" if 1 < n < FEW_SEEDS else ""


def bca_ci(
    values: Sequence[float] | np.ndarray, *, n_resamples: int = N_RESAMPLES, level: float = CI_LEVEL,
    seed: int = BOOTSTRAP_SEED, bounds: tuple[float, float] = UNBOUNDED,
) -> tuple[float, float, float]:
    """(mean, low, high) by scipy's BCa bootstrap; the interval is NaN where BCa is undefined."""
    x, trivial = _sample(values)
    if trivial is not None:
        return trivial
    mean = float(x.mean())
    if np.ptp(x) == 0:  # no spread: every resample is the same, BCa's acceleration is 0/0
        return mean, mean, mean
    from scipy import stats as scipy_stats

    with warnings.catch_warnings(), np.errstate(all="ignore"):  # degenerate samples: NaN, said in the docs
        warnings.simplefilter("ignore")
        result = scipy_stats.bootstrap((x,), np.mean, n_resamples=n_resamples, confidence_level=level,
                                       method="BCa", rng=stream(seed, "bootstrap"))
    low, high = clip_to([result.confidence_interval.low, result.confidence_interval.high], bounds)
    return mean, float(low), float(high)


def interval(values: Sequence[float] | np.ndarray, method: str = DEFAULT_CI, **kwargs) -> tuple[float, float, float]:
    """(mean, low, high) of ``values`` by ``method`` (one of ``CI_METHODS``); ``bounds=(lo, hi)``
    keeps the interval in the metric's range."""
    if method == "t":
        return t_ci(values, level=kwargs.get("level", CI_LEVEL), bounds=kwargs.get("bounds", UNBOUNDED))
    if method == "bootstrap":
        return bootstrap_ci(values, **kwargs)  # type: ignore[arg-type]
    if method == "bca":
        return bca_ci(values, **kwargs)  # type: ignore[arg-type]
    raise ValueError(f"ci method must be one of {', '.join(CI_METHODS)}, got {method!r}")


def resample_counts(n: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, n) counts: how often each value appears in each resample.

    Drawn as ``rng.integers(0, n, size=(n_resamples, n))`` indices, then counted, so a mean of
    a resample is ``counts @ values / n`` (this also works for a matrix of curves).
    """
    idx = rng.integers(0, n, size=(n_resamples, n))
    counts = np.zeros((n_resamples, n))
    np.add.at(counts, (np.arange(n_resamples)[:, None], idx), 1.0)
    return counts


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    n_resamples: int = N_RESAMPLES,
    level: float = CI_LEVEL,
    seed: int = BOOTSTRAP_SEED,
    bounds: tuple[float, float] = UNBOUNDED,
) -> tuple[float, float, float]:
    """(mean, low, high) of ``values`` with the percentile-bootstrap CI described above."""
    x, trivial = _sample(values)
    if trivial is not None:
        return trivial
    mean = float(x.mean())
    counts = resample_counts(x.size, n_resamples, stream(seed, "bootstrap"))
    means = counts @ x / x.size
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = clip_to(np.percentile(means, [tail, 100.0 - tail]), bounds)
    return mean, float(low), float(high)


def t_band(curves: np.ndarray, *, level: float = CI_LEVEL, bounds: tuple[float, float] = UNBOUNDED,
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pointwise mean and Student-t CI of ``curves`` (runs × points) over the finite entries
    of each point, on the scale ``bounds`` call for; a point with one value has the band [x, x]."""
    from scipy import stats as scipy_stats

    Y = np.asarray(curves, dtype=np.float64)
    ok = np.isfinite(Y)
    n = ok.sum(axis=0)
    filled = np.where(ok, Y, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(axis=0) / n
        var = (np.where(ok, Y - mean, 0.0) ** 2).sum(axis=0) / (n - 1)
        half = scipy_stats.t.ppf((1.0 + level) / 2.0, np.maximum(n - 1, 1)) * np.sqrt(var / n)
    half = np.where(n > 1, half, 0.0)
    low, high = bounded_t(mean, half, bounds)
    return mean, low, high


def band(curves: np.ndarray, method: str = DEFAULT_CI, bounds: tuple[float, float] = UNBOUNDED,
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pointwise mean and CI by ``method``; BCa bands use the percentile bootstrap (a BCa per
    point is costly and undefined wherever the runs agree), which the figure caption says."""
    return t_band(curves, bounds=bounds) if method == "t" else bootstrap_band(curves, bounds=bounds)


def bootstrap_band(
    curves: np.ndarray, *, n_resamples: int = BAND_RESAMPLES, level: float = CI_LEVEL, seed: int = BOOTSTRAP_SEED,
    bounds: tuple[float, float] = UNBOUNDED,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pointwise mean and bootstrap CI of ``curves`` (runs × points); non-finite entries (a
    shorter or diverged run) are left out at that point. One resample draw is shared by all
    points, as the runs (not the points) are the independent units."""
    Y = np.asarray(curves, dtype=np.float64)
    ok = np.isfinite(Y)
    filled = np.where(ok, Y, 0.0)
    present = ok.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(axis=0) / present
    if Y.shape[0] <= 1:
        return mean, mean.copy(), mean.copy()
    counts = resample_counts(Y.shape[0], n_resamples, stream(seed, "bootstrap"))
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (counts @ filled) / (counts @ ok.astype(np.float64))
    means = np.where(np.isfinite(means), means, np.nan)
    tail = 100.0 * (1.0 - level) / 2.0
    with warnings.catch_warnings():  # a point no run reached is all-NaN: its band stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(means, [tail, 100.0 - tail], axis=0)
    return mean, clip_to(low, bounds), clip_to(high, bounds)


@dataclass
class MetricSummary:
    """One metric of one group: mean and CI over the finite per-run values."""

    mean: float
    low: float
    high: float
    n: int
    excluded: int
    values: list[float] = field(default_factory=list)


@dataclass
class GroupSummary:
    group: Group
    which: str
    metrics: dict[str, MetricSummary]
    ci: str = DEFAULT_CI

    @property
    def runs(self) -> int:
        return len(self.group.runs)

    @property
    def diverged(self) -> int:
        return sum(run.status == "diverged" for run in self.group.runs)


def summarize_values(values: Sequence[float], method: str = DEFAULT_CI, **kwargs) -> MetricSummary:
    x = np.asarray(values, dtype=np.float64)
    finite = x[np.isfinite(x)]
    mean, low, high = interval(finite, method, **kwargs)
    return MetricSummary(mean, low, high, int(finite.size), int(x.size - finite.size), [float(v) for v in x])


def summarize(
    groups: Sequence[Group], metrics: Sequence[str], which: str = "final", *, n_resamples: int = N_RESAMPLES,
    seed: int = BOOTSTRAP_SEED, ci: str = DEFAULT_CI,
) -> list[GroupSummary]:
    """Per group and metric: mean and 95% CI (method ``ci``) of each run's final (or best) value."""
    if ci not in CI_METHODS:
        raise ValueError(f"ci must be one of {', '.join(CI_METHODS)}, got {ci!r}")
    options = {} if ci == "t" else {"n_resamples": n_resamples, "seed": seed}
    summaries = []
    for group in groups:
        per_metric = {
            metric: summarize_values([run_value(run, metric, which) for run in group.runs], ci,
                                     bounds=metric_range(metric), **options)
            for metric in metrics
        }
        summaries.append(GroupSummary(group, which, per_metric, ci))
    return summaries
