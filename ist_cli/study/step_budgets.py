"""Trial pruning: start each trial with a step budget, the best steps-to-result known so far
for its (batch size, grid point).

A trial that has not reached the goal by then cannot lower the minimum, so stopping it there
changes no answer. The budget is inclusive (a trial that reaches the goal exactly at the
budget still does, and ties are broken by trial number), so the best trial and its steps are
the same with and without pruning and in any order of execution; only the records of the
trials that were stopped differ (``pruned`` instead of ``reached`` later or ``incomplete``).
The budget is not part of the run's config: the run id, and so resume, do not depend on it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from ist_cli.study.outcomes import BUDGET_FLAG, read_outcome
from ist_cli.study.spec import StudySpec
from ist_cli.sweep.manifest import run_file_name
from ist_cli.sweep.spec import PlannedRun


class TrialPruner:
    """``prepare(run)`` for the sweep engine: adds ``--step-budget N`` once a sibling reached the goal."""

    def __init__(self, study: StudySpec, out_dir: Path) -> None:
        self.study = study
        self.out_dir = out_dir
        self.siblings: dict[tuple, list[str]] = defaultdict(list)
        for trial in study.trials:
            self.siblings[(trial.batch_size, trial.group)].append(trial.run_id)

    def best_known(self, run_id: str) -> int | None:
        """Fewest steps to the goal among the finished siblings of ``run_id`` (None: none yet)."""
        trial = self.study.trial(run_id)
        steps = [read_outcome(self.out_dir / run_file_name(other)).steps
                 for other in self.siblings[(trial.batch_size, trial.group)] if other != run_id]
        known = [s for s in steps if s is not None]
        return min(known) if known else None

    def prepare(self, run: PlannedRun) -> PlannedRun:
        budget = self.best_known(run.run_id)
        if budget is None:
            return run
        return replace(run, run_args=(BUDGET_FLAG, str(budget)))
