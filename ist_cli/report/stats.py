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
  with the same number of resamples and a generator from the same stream; NaN where it is
  undefined (e.g. all values equal).

With one run the interval is [x, x]; non-finite values (diverged runs) are left out and counted.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ist_cli.report.choices import CI_METHODS, CI_NAMES, DEFAULT_CI
from ist_cli.report.metrics import run_value
from ist_cli.report.table import Group
from ist_cli.seeding import stream

N_RESAMPLES = 10_000
BAND_RESAMPLES = 1_000  # per-point bands on figures: many points, so fewer resamples
CI_LEVEL = 0.95
BOOTSTRAP_SEED = 0
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


def t_ci(values: Sequence[float] | np.ndarray, *, level: float = CI_LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): mean ± t_{(1+level)/2, n-1} · s/√n; [x, x] for one value."""
    x, trivial = _sample(values)
    if trivial is not None:
        return trivial
    mean = float(x.mean())
    from scipy import stats as scipy_stats  # lazily: scipy.stats takes a second to import

    half = float(scipy_stats.t.ppf((1.0 + level) / 2.0, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    return mean, mean - half, mean + half


def bca_ci(
    values: Sequence[float] | np.ndarray, *, n_resamples: int = N_RESAMPLES, level: float = CI_LEVEL,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float, float]:
    """(mean, low, high) by scipy's BCa bootstrap; the interval is NaN where BCa is undefined."""
    x, trivial = _sample(values)
    if trivial is not None:
        return trivial
    mean = float(x.mean())
    from scipy import stats as scipy_stats

    with warnings.catch_warnings(), np.errstate(all="ignore"):  # degenerate samples: NaN, said in the docs
        warnings.simplefilter("ignore")
        result = scipy_stats.bootstrap((x,), np.mean, n_resamples=n_resamples, confidence_level=level,
                                       method="BCa", rng=stream(seed, "bootstrap"))
    return mean, float(result.confidence_interval.low), float(result.confidence_interval.high)


def interval(values: Sequence[float] | np.ndarray, method: str = DEFAULT_CI, **kwargs: float) -> tuple[float, float, float]:
    """(mean, low, high) of ``values`` by ``method`` (one of ``CI_METHODS``)."""
    if method == "t":
        return t_ci(values, level=kwargs.get("level", CI_LEVEL))
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
) -> tuple[float, float, float]:
    """(mean, low, high) of ``values`` with the percentile-bootstrap CI described above."""
    x, trivial = _sample(values)
    if trivial is not None:
        return trivial
    mean = float(x.mean())
    counts = resample_counts(x.size, n_resamples, stream(seed, "bootstrap"))
    means = counts @ x / x.size
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return mean, float(low), float(high)


def t_band(curves: np.ndarray, *, level: float = CI_LEVEL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pointwise mean and Student-t CI of ``curves`` (runs × points) over the finite entries
    of each point; a point with one value has the band [x, x]."""
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
    return mean, mean - half, mean + half


def band(curves: np.ndarray, method: str = DEFAULT_CI) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pointwise mean and CI by ``method``; BCa bands use the percentile bootstrap (a BCa per
    point is costly and undefined wherever the runs agree), which the figure caption says."""
    return t_band(curves) if method == "t" else bootstrap_band(curves)


def bootstrap_band(
    curves: np.ndarray, *, n_resamples: int = BAND_RESAMPLES, level: float = CI_LEVEL, seed: int = BOOTSTRAP_SEED
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
    return mean, low, high


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


def summarize_values(values: Sequence[float], method: str = DEFAULT_CI, **kwargs: float) -> MetricSummary:
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
            metric: summarize_values([run_value(run, metric, which) for run in group.runs], ci, **options)
            for metric in metrics
        }
        summaries.append(GroupSummary(group, which, per_metric, ci))
    return summaries
