"""Learning-rate schedules over SGD steps (the search space of Shallue et al. 2018)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCHEDULES = ("constant", "linear-decay")


@dataclass(frozen=True)
class LRSchedule:
    """lr at global step t (0 for the first update).

    ``linear-decay``: lr_t = lr_end + (lr - lr_end) (1 - min(t, N)/N) with lr_end = lr F,
    i.e. linear from lr to lr F over N = ``decay_steps`` steps, then constant (TensorFlow's
    ``polynomial_decay`` with power 1, as in the code of Shallue et al. and Lee et al.).
    """

    lr: float
    kind: str = "constant"
    decay_steps: int = 1
    end_factor: float = 1.0

    def for_steps(self, first: int, count: int) -> np.ndarray:
        """float64 (count,): the rates of steps ``first, first+1, ...`` (a worker's round)."""
        if self.kind == "constant":
            return np.full(count, self.lr, dtype=np.float64)
        steps = np.arange(first, first + count, dtype=np.float64)
        end = self.lr * self.end_factor
        return end + (self.lr - end) * (1.0 - np.minimum(steps, self.decay_steps) / self.decay_steps)

    def at(self, step: int) -> float:
        return float(self.for_steps(step, 1)[0])
