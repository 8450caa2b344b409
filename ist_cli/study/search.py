"""The quasi-random metaparameter search of a study: distributions, transforms, samplers.

A ``[search]`` entry is ``key = { DIST = [a, b] }``; dimension j of the sampler feeds the
j-th entry (file order). Every point is a vector u in [0, 1)^d mapped through each
entry's transform, so the same u gives the same trial at every batch size (the protocol of
Shallue et al. 2019 and Lee et al. 2021).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ist_cli.errors import UserError
from ist_cli.seeding import stream

DISTRIBUTIONS = ("log", "reverse_log", "int", "uniform", "choice")
SAMPLERS = ("sobol", "halton", "random")
# scipy's unscrambled Sobol and Halton sequences start at the all-zero point; Lee et al.'s
# ``i4_sobol_generate(d, n, skip=2)`` (1-based seeds) starts at the next point, 1/2. Skip one.
SKIP = 1


@dataclass(frozen=True)
class Dimension:
    """One searched setting: ``key`` drawn from ``dist`` over ``bounds`` (or ``choices``)."""

    key: str
    dist: str
    bounds: tuple[float, float] = (0.0, 1.0)
    choices: tuple[Any, ...] = ()

    def value(self, u: float) -> Any:
        """Map u in [0, 1) to a value; monotone in u for the numeric distributions."""
        low, high = self.bounds
        if self.dist == "log":
            return float(math.exp(math.log(low) + u * (math.log(high) - math.log(low))))
        if self.dist == "reverse_log":  # 1 - value is log-uniform on [1 - high, 1 - low]
            return float(1.0 - math.exp(math.log(1.0 - low) + u * (math.log(1.0 - high) - math.log(1.0 - low))))
        if self.dist == "uniform":
            return float(low + u * (high - low))
        if self.dist == "int":  # equal cells [low, high] inclusive
            return int(min(high, low + math.floor(u * (high - low + 1))))
        return self.choices[min(len(self.choices) - 1, math.floor(u * len(self.choices)))]


def parse_dimension(key: str, entry: Any, where: str) -> Dimension:
    """``{ log = [a, b] }`` and friends; a bad entry is a one-line ``UserError`` naming ``where``."""
    example = f"e.g. {key} = {{ log = [1e-4, 1.0] }}"
    if not isinstance(entry, dict) or len(entry) != 1:
        raise UserError(f"{where}: {entry!r} is not allowed; expected a table with one distribution "
                        f"({', '.join(DISTRIBUTIONS)}), {example}")
    dist, args = next(iter(entry.items()))
    if dist not in DISTRIBUTIONS:
        raise UserError(f"{where}.{dist}: unknown distribution {dist!r}; expected one of {', '.join(DISTRIBUTIONS)}")
    path = f"{where}.{dist}"
    if dist == "choice":
        if not isinstance(args, list) or not args:
            raise UserError(f"{path}: {args!r} is not allowed; expected a non-empty array of values")
        return Dimension(key, dist, choices=tuple(args))
    if (not isinstance(args, list) or len(args) != 2
            or any(isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) for x in args)):
        raise UserError(f"{path}: {args!r} is not allowed; expected [low, high], two finite numbers")
    low, high = args
    if dist == "int" and not all(isinstance(x, int) or float(x).is_integer() for x in args):
        raise UserError(f"{path}: {args!r} is not allowed; expected [low, high], two integers")
    if not low < high:
        raise UserError(f"{path}: [{low}, {high}] is an empty range; expected low < high")
    if dist == "log" and low <= 0:
        raise UserError(f"{path}: [{low}, {high}] is not allowed; expected 0 < low < high (log scale)")
    if dist == "reverse_log" and not (high < 1):
        raise UserError(f"{path}: [{low}, {high}] is not allowed; expected low < high < 1 (1 - value on a log scale)")
    return Dimension(key, dist, bounds=(low, high))


def unit_points(sampler: str, n: int, d: int, seed: int = 0) -> np.ndarray:
    """``n`` points in [0, 1)^d: unscrambled Sobol or Halton after skipping ``SKIP`` points,
    or uniform random numbers from the seeded stream ``("study-search",)``."""
    if sampler == "random":
        return stream(seed, "study-search").random((n, d))
    from scipy.stats import qmc

    engine = qmc.Sobol(d, scramble=False) if sampler == "sobol" else qmc.Halton(d, scramble=False)
    engine.fast_forward(SKIP)
    with warnings.catch_warnings():  # n need not be a power of two for a search
        warnings.simplefilter("ignore", UserWarning)
        return engine.random(n)


def sample_points(dimensions: Sequence[Dimension], trials: int, sampler: str, seed: int = 0) -> list[dict[str, Any]]:
    """The trials' settings, trial i from point i of the sequence."""
    if sampler not in SAMPLERS:
        raise UserError(f"--sampler: {sampler!r} is not allowed; expected one of {', '.join(SAMPLERS)}")
    if not dimensions:
        return [{} for _ in range(trials)]
    units = unit_points(sampler, trials, len(dimensions), seed)
    return [{dim.key: dim.value(float(u)) for dim, u in zip(dimensions, row, strict=True)} for row in units]


def describe(dimensions: Sequence[Dimension]) -> Mapping[str, str]:
    """One human line per dimension (for dry runs and reports)."""
    return {dim.key: f"{dim.dist} {list(dim.choices) if dim.dist == 'choice' else list(dim.bounds)}"
            for dim in dimensions}
