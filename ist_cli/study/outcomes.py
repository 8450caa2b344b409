"""What one trial's run file says about the goal: reached (at which step), or why not.

Read from the run file alone (root attrs and ``/config``). ``ist run`` writes
``goal_reached`` and ``steps_to_result`` when it trains to a goal, and ``step_budget`` when
the study gave it one; a file without the goal attrs is ``incomplete``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py

from ist_cli.io.runfile import read_attrs

# Shallue et al.'s COMPLETE / INFEASIBLE / INCOMPLETE, plus pruning and the sweep's states.
OUTCOMES = ("reached", "incomplete", "infeasible", "pruned", "failed", "not run")
BUDGET_FLAG = "--step-budget"  # the ist run option a pruned trial is started with
BUDGET_ATTR = "step_budget"    # the root attr the run records it in


@dataclass(frozen=True)
class Outcome:
    """``outcome`` is one of ``OUTCOMES``; ``steps`` is the steps-to-result when reached."""

    outcome: str
    steps: int | None = None


def classify(attrs: dict, max_steps: int | None) -> Outcome:
    """The outcome from a finished run's root attrs (``max_steps``: its config's budget, if any)."""
    status = str(attrs.get("status", "failed"))
    if status == "diverged":
        return Outcome("infeasible")
    if status != "completed":
        return Outcome("failed")
    if "goal_reached" not in attrs or "steps_to_result" not in attrs:
        return Outcome("incomplete")
    if bool(attrs["goal_reached"]):
        return Outcome("reached", int(attrs["steps_to_result"]))
    budget = attrs.get(BUDGET_ATTR)
    if budget is not None and int(budget) >= 0 and (max_steps is None or int(budget) < max_steps):
        return Outcome("pruned")
    return Outcome("incomplete")


def read_outcome(path: Path) -> Outcome:
    """``not run`` when ``path`` does not exist; ``failed`` when it cannot be read."""
    if not path.exists():
        return Outcome("not run")
    try:
        attrs = read_attrs(path)
        with h5py.File(path, "r") as handle:
            raw = handle["config"][()]
        config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except (OSError, KeyError, ValueError):
        return Outcome("failed")
    max_steps = config.get("max_steps")
    return classify(attrs, int(max_steps) if max_steps not in (None, 0) else None)
