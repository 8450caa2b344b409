"""Each method at its own best setting: ``ist report --best-by METRIC --over KEY``.

Runs are split by every varying config key except ``seed`` and KEY (e.g. per ``algorithm``
and ``workers``); within each, the value of KEY whose runs have the best mean of METRIC (each
run's final value, or its best with ``--best``; minimum for errors and losses, maximum for
accuracies) wins, and only the winners' runs are reported. A run that diverged counts as the
worst value, so a setting that sometimes diverges cannot win on its lucky seeds. A winner at
the smallest or largest value of the grid is flagged: the best setting may lie beyond it.
Choose METRIC on held-out data (``val_error``), never the test split the report shows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ist_cli.errors import UserError
from ist_cli.io.runfile import RunData
from ist_cli.report.metrics import higher_is_better, run_value
from ist_cli.report.table import canon, order_key, show, varying_keys


@dataclass
class Choice:
    """The winning value of ``key`` in one context, with every candidate's score."""

    context: dict[str, Any]
    key: str
    winner: Any
    scores: dict[str, float]  # shown value -> mean of the metric over its runs
    grid: list[Any]

    @property
    def on_edge(self) -> bool:
        """The winner is the smallest or largest value tried (with at least two tried)."""
        return len(self.grid) > 1 and canon(self.winner) in (canon(self.grid[0]), canon(self.grid[-1]))


def pick_best(runs: Sequence[RunData], metric: str, key: str, which: str = "final",
              ) -> tuple[list[RunData], list[Choice]]:
    """(the winners' runs, one ``Choice`` per context); see the module docstring."""
    if not any(key in run.config for run in runs):
        known = sorted({k for run in runs for k in run.config})
        raise UserError(f"--over: unknown key {key!r}; allowed keys: {', '.join(known)}")
    context_keys = [k for k in varying_keys(runs) if k not in ("seed", key)]
    maximise = higher_is_better(metric)
    worst = -math.inf if maximise else math.inf
    contexts: dict[tuple[str, ...], dict[str, list[RunData]]] = {}
    for run in runs:
        if key in run.config:
            ident = tuple(canon(run.config.get(k)) for k in context_keys)
            contexts.setdefault(ident, {}).setdefault(canon(run.config[key]), []).append(run)
    kept: list[RunData] = []
    choices: list[Choice] = []
    for by_value in contexts.values():
        grid_keys = sorted(by_value, key=lambda v: order_key(by_value[v][0].config[key]))
        scores: dict[str, float] = {}
        for value in grid_keys:
            x = np.array([run_value(run, metric, which) for run in by_value[value]], dtype=np.float64)
            scores[value] = float(np.where(np.isfinite(x), x, worst).mean()) if x.size else worst
        ranked = [v for v in grid_keys if not math.isnan(scores[v])]
        if not ranked:
            continue
        best = (max if maximise else min)(ranked, key=lambda v: scores[v])  # ties: the first in grid order
        kept.extend(by_value[best])
        first = by_value[best][0].config
        choices.append(Choice({k: first.get(k) for k in context_keys}, key, first[key],
                              {show(by_value[v][0].config[key]): scores[v] for v in grid_keys},
                              [by_value[v][0].config[key] for v in grid_keys]))
    choices.sort(key=lambda c: tuple(order_key(v) for v in c.context.values()))
    return kept, choices


def choice_rows(choices: Sequence[Choice], metric: str, which: str = "final") -> tuple[list[str], list[list[str]]]:
    """Header and cells: context, winner (flagged on the grid's edge), every candidate's score."""
    context_keys = list(choices[0].context) if choices else []
    key = choices[0].key if choices else ""
    header = [*context_keys, f"best {key}", f"mean {which} {metric} per {key}"]
    rows = []
    for c in choices:
        winner = show(c.winner) + (" (edge of the grid)" if c.on_edge else "")
        scores = ", ".join(f"{value}: {score:.4g}" for value, score in c.scores.items())
        rows.append([*(show(c.context[k]) for k in context_keys), winner, scores])
    return header, rows
