"""The simple gradient noise scale B_simple = tr(Sigma)/|G|^2 of McCandlish et al. 2018 (App. A.1).

Two gradient estimates at batch sizes b < B satisfy E|G_b|^2 = |G|^2 + tr(Sigma)/b, which
gives unbiased estimates of both terms. Their ratio per step is badly biased (a ratio of
noisy numbers), so each term is smoothed by its own bias-corrected exponential moving average
and the noise scale is the ratio of the averages.
"""

from __future__ import annotations

from dataclasses import dataclass

EMA_BETA = 0.99  # the smoothing of McCandlish et al.


def two_batch_estimates(small_norm_sq: float, big_norm_sq: float, small: int, big: int) -> tuple[float, float]:
    """Unbiased (|G|^2, tr Sigma) from |G_small|^2 and |G_big|^2 at batch sizes ``small`` < ``big``."""
    grad_norm_sq = (big * big_norm_sq - small * small_norm_sq) / (big - small)
    trace_cov = (small_norm_sq - big_norm_sq) / (1.0 / small - 1.0 / big)
    return grad_norm_sq, trace_cov


@dataclass
class NoiseScaleEMA:
    """Bias-corrected EMAs of both terms; ``value`` is (EMA |G|^2, EMA tr Sigma, their ratio)."""

    beta: float = EMA_BETA
    _grad: float = 0.0
    _trace: float = 0.0
    _weight: float = 0.0

    def update(self, grad_norm_sq: float, trace_cov: float) -> None:
        self._grad = self.beta * self._grad + (1.0 - self.beta) * grad_norm_sq
        self._trace = self.beta * self._trace + (1.0 - self.beta) * trace_cov
        self._weight = self.beta * self._weight + (1.0 - self.beta)

    def value(self) -> tuple[float, float, float]:
        if self._weight == 0.0:
            nan = float("nan")
            return nan, nan, nan
        grad, trace = self._grad / self._weight, self._trace / self._weight
        return grad, trace, trace / grad if grad != 0.0 else float("nan")
