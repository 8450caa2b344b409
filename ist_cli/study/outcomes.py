"""What one trial's run file says about the goal: reached (at which step), or why not.

Read from the run file's root attrs alone. ``ist run`` writes ``goal_reached`` and
``steps_to_result`` when it trains to a goal; a run started with ``--step-budget N``
records ``step_budget = N`` and, if the budget stopped it, ``budget_stopped = true``.
A file without the goal attrs is ``incomplete``.

The contract of ``--step-budget N`` that makes pruning change no answer: the run evaluates
on its own schedule (no extra evaluation); at each evaluation it first applies the goal,
then, if it has taken at least N steps without reaching it, stops (status ``completed``,
``goal_reached`` false). Every evaluation up to that point is the one the run would have
made without a budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ist_cli.io.runfile import read_attrs

# Shallue et al.'s COMPLETE / INFEASIBLE / INCOMPLETE, plus pruning and the sweep's states.
OUTCOMES = ("reached", "incomplete", "infeasible", "pruned", "failed", "not run")
BUDGET_FLAG = "--step-budget"       # the ist run option a trial is started with
BUDGET_ATTR = "step_budget"         # the root attr the run records the budget in
STOPPED_ATTR = "budget_stopped"     # true when the budget ended the run


@dataclass(frozen=True)
class Outcome:
    """``outcome`` is one of ``OUTCOMES``; ``steps`` is the steps-to-result when reached."""

    outcome: str
    steps: int | None = None


def classify(attrs: dict) -> Outcome:
    """The outcome from a finished run's root attrs."""
    status = str(attrs.get("status", "failed"))
    if status == "diverged":
        return Outcome("infeasible")
    if status != "completed":
        return Outcome("failed")
    if "goal_reached" not in attrs or "steps_to_result" not in attrs:
        return Outcome("incomplete")
    if bool(attrs["goal_reached"]):
        return Outcome("reached", int(attrs["steps_to_result"]))
    return Outcome("pruned" if bool(attrs.get(STOPPED_ATTR, False)) else "incomplete")


def read_outcome(path: Path) -> Outcome:
    """``not run`` when ``path`` does not exist; ``failed`` when it cannot be read."""
    if not path.exists():
        return Outcome("not run")
    try:
        return classify(read_attrs(path))
    except (OSError, ValueError, TypeError, KeyError):  # unreadable, or attrs of the wrong type
        return Outcome("failed")
