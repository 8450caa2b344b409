"""The coordinator half of a training method and the contract it keeps with the runner.

The runner owns processes, timing, logging and faults; an ``Algorithm`` owns the math:
which arrays live in the arena, what each round's plan is, how results are combined,
what crosses the network. Its ``worker_program`` is the half that runs in workers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from ist_cli.algorithms.plans import PLANS, MethodPlan
from ist_cli.comm import Traffic
from ist_cli.io.sliced import SlicedArray
from ist_cli.runtime.arena import ArraySpec
from ist_cli.runtime.forkserver import run_preload
from ist_cli.runtime.transport import Transport, WorkerProgram
from ist_cli.settings import RunSettings
from ist_cli.training.goal import EvalSchedule, Goal


def worker_preload(settings: RunSettings) -> tuple[str, ...]:
    """What a worker process of this method imports and warms first (``MethodPlan.preload``)."""
    return PLANS[settings.model][settings.algorithm].preload(settings)


class Algorithm(ABC):
    """One training method on one model, as seen by the coordinator."""

    #: what the method is before anything is loaded: its name, rows, footprint and rules
    plan: ClassVar[type[MethodPlan]]
    #: processes the run needs
    n_workers: int
    settings: RunSettings

    @abstractmethod
    def arena_spec(self) -> ArraySpec:
        """Name -> (shape, dtype) of every array workers and coordinator share."""

    @abstractmethod
    def initialize(self, arrays: dict[str, np.ndarray]) -> None:
        """Fill the arena (data, problem, initial model) before workers start."""

    def warm_up(self) -> None:
        """Compile the numba kernels (or load them from numba's cache) in this process: what the
        fork server does for workers; for in-process use (the runner does not call it)."""
        run_preload(worker_preload(self.settings))

    @abstractmethod
    def worker_program(self) -> WorkerProgram:
        """The picklable worker half, sent to every worker process."""

    def attach(self, workers: Transport | None) -> None:
        """The run's transport, once built (before the initial evaluation); None: no transport.
        A method whose model lives in its workers (the partitioned server) reaches it through it."""

    def plan_round(self, arrays: dict[str, np.ndarray], round_index: int) -> Sequence[Any] | None:
        """Write the round's plan into the arena; return small per-worker payloads (or None)."""
        return None

    @abstractmethod
    def aggregate(self, arrays: dict[str, np.ndarray], round_index: int, results: Sequence[Any]) -> None:
        """Combine the workers' outputs into the server model."""

    @abstractmethod
    def round_traffic(self, round_index: int) -> Traffic:
        """Exact bytes and messages of the round just run."""

    @abstractmethod
    def evaluate(self, arrays: dict[str, np.ndarray]) -> dict[str, float]:
        """Metrics of the server model; must contain ``loss`` unless a goal is set (then its set's loss)."""

    def complete(self, arrays: dict[str, np.ndarray], metrics: Mapping[str, float], full: bool) -> dict[str, float]:
        """The row of ``metrics`` with what ``evaluate`` skipped: measured if ``full``, else NaN."""
        return dict(metrics)

    @abstractmethod
    def final_params(self, arrays: dict[str, np.ndarray]) -> Mapping[str, np.ndarray | SlicedArray]:
        """The model to store under ``/final`` (a ``SlicedArray`` is written block by block)."""

    def problem_arrays(self) -> Mapping[str, np.ndarray]:
        """Arrays to store under ``/problem`` (empty when the model has none)."""
        return {}

    def run_file_groups(self) -> Mapping[str, Mapping[str, np.ndarray]]:
        """Groups written once before the rounds (e.g. ``/mask``), group -> name -> array."""
        return {}

    def snapshot(self, arrays: dict[str, np.ndarray]) -> np.ndarray | None:
        """The iterate for ``/params/x`` snapshots, where the model supports them."""
        return None

    def snapshot_every(self) -> int:
        """Rounds between ``snapshot``s stored in ``/params`` (0: never)."""
        return 0

    def steps_per_round(self) -> int | None:
        """SGD steps one worker takes a round, for methods that count steps (``/metrics/step``,
        goals, step budgets); None: the method does not count them."""
        return None

    def eval_schedule(self) -> EvalSchedule:
        """Which rounds are evaluated: every ``eval_every`` rounds and the last one."""
        s = self.settings
        return EvalSchedule(s.eval_every, 0, self.steps_per_round() or 1, s.rounds)

    def goal(self) -> Goal | None:
        """The error the run trains to (None: it runs its rounds)."""
        return None

    def round_metrics(self, results: Sequence[Any]) -> dict[str, float]:
        """Metrics from the workers' step results of the round just run (``[]`` before the first)."""
        return {}

    def summary_extras(self) -> dict[str, Any]:
        """Extra numbers for the end-of-run summary (e.g. what DP would have sent)."""
        return {}
