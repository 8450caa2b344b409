"""When to evaluate (every K rounds and/or every K SGD steps) and when a goal is reached
(the steps-to-result protocol of Shallue et al. 2018: the first evaluation at or below the goal)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# goal metric -> the accuracy metric it is one minus
ERROR_OF = {"val_error": "val_accuracy", "test_error": "test_accuracy", "train_error": "train_accuracy"}
# goal metric -> the evaluation set it is measured on, and that set's loss column
SET_OF = {"val_error": "val", "test_error": "test", "train_error": "train"}
LOSS_OF = {"val": "val_loss", "test": "test_loss", "train": "loss"}


@dataclass(frozen=True)
class EvalSchedule:
    """Round r is evaluated if r is a multiple of ``every_rounds``, the step count crossed a
    multiple of ``every_steps`` during it (0: off), or it is the last round."""

    every_rounds: int
    every_steps: int
    steps_per_round: int
    rounds: int

    def due(self, round_index: int) -> bool:
        if round_index % self.every_rounds == 0 or round_index == self.rounds:
            return True
        if self.every_steps <= 0:
            return False
        k, s = self.every_steps, self.steps_per_round
        return round_index * s // k > (round_index - 1) * s // k


@dataclass(frozen=True)
class Goal:
    """Stop at the first evaluation whose ``metric`` (an error) is <= ``error``."""

    error: float
    metric: str

    @classmethod
    def from_settings(cls, settings: Any) -> Goal | None:
        """The goal of an MLP run's settings, or None (no ``goal_error``)."""
        return None if settings.goal_error is None else cls(float(settings.goal_error), str(settings.goal_metric))

    @property
    def eval_set(self) -> str:
        """The set an evaluation must measure for this goal: ``val``, ``test`` or ``train``."""
        return SET_OF[self.metric]

    @property
    def loss_metric(self) -> str:
        """The loss column of the goal's set (divergence is judged on it when ``loss`` was skipped)."""
        return LOSS_OF[self.eval_set]

    def value(self, metrics: Mapping[str, float]) -> float:
        return 1.0 - float(metrics[ERROR_OF[self.metric]])

    def reached(self, metrics: Mapping[str, float]) -> bool:
        value = self.value(metrics)
        return math.isfinite(value) and value <= self.error
