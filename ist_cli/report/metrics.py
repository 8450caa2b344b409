"""Metric series of a run, including the derived ones the report plots against.

Derived series: ``bytes`` = bytes_up + bytes_down (cumulative over all workers) and
``sim_time`` = compute_time + comm_time_model (measured compute plus modelled network time).
``time`` on the x axis means ``wall_time``, the measured elapsed time of the run.
``steps`` = SGD steps one worker has taken (``/metrics/step``; else round × the steps per round
of the run's config: its ``local_steps``, 1 for data-parallel SGD) and ``samples`` = steps ×
``batch_size`` × ``workers``, the training examples processed by all workers: the axes for
equal-compute comparisons of methods that take different numbers of steps per round.
"""

from __future__ import annotations

import numpy as np

from ist_cli.io.runfile import RunData

DERIVED = {"bytes": ("bytes_up", "bytes_down"), "sim_time": ("compute_time", "comm_time_model")}
COUNTED = ("steps", "samples")  # derived from the round and the config, not from stored series
X_AXES = {"round": "round", "steps": "steps", "samples": "samples", "bytes": "bytes", "time": "wall_time",
          "sim_time": "sim_time"}
X_LABELS = {
    "round": "round",
    "steps": "SGD steps per worker",
    "samples": "training examples processed (all workers)",
    "bytes": "bytes communicated (cumulative, all workers)",
    "time": "measured wall time",
    "sim_time": "modelled time: compute + α–β network",
}
# what an axis counts: integer counts get integer ticks, bytes and seconds human units
X_UNITS = {"round": "count", "steps": "count", "samples": "count", "bytes": "byte", "time": "s", "sim_time": "s"}
# Preferred order of metrics shown when the user names none.
DEFAULT_METRICS = ("loss", "test_accuracy", "test_loss", "train_accuracy", "f_gap", "dist_to_opt_sq",
                   "grad_norm_sq", "bytes", "bytes_busiest_link")
# not plotted as curves (they are x axes or cumulative counters); the communication times are,
# when asked for by --metric, so the measured one can be set beside the model's
BOOKKEEPING = ("round", "wall_time", "compute_time", "bytes_up", "bytes_down", "bytes_busiest_link")


def higher_is_better(metric: str) -> bool:
    """Accuracies are maximised; losses, gaps, distances and costs are minimised."""
    return "accuracy" in metric


def series(run: RunData, name: str) -> np.ndarray | None:
    """The metric as a float array aligned with ``/metrics/round``, or None if the run lacks it."""
    if name in run.metrics:
        return np.asarray(run.metrics[name], dtype=np.float64)
    if name in DERIVED:
        parts = [run.metrics.get(part) for part in DERIVED[name]]
        if all(part is not None for part in parts):
            return np.asarray(parts[0], dtype=np.float64) + np.asarray(parts[1], dtype=np.float64)
    if name in COUNTED:
        return counted(run, name)
    return None


def counted(run: RunData, name: str) -> np.ndarray | None:
    """``steps`` or ``samples`` of the run at each logged round (see the module docstring)."""
    cfg = run.config
    if "step" in run.metrics:
        steps = np.asarray(run.metrics["step"], dtype=np.float64)
    elif "round" in run.metrics and "algorithm" in cfg:
        per_round = int(cfg.get("local_steps", 1))  # the one count (data-parallel SGD's is pinned to 1)
        steps = np.asarray(run.metrics["round"], dtype=np.float64) * per_round
    else:
        return None
    if name == "steps":
        return steps
    if "batch_size" not in cfg:
        return None
    return steps * float(cfg["batch_size"]) * float(cfg.get("workers", 1))


def available_metrics(runs: list[RunData]) -> list[str]:
    """Every metric name any run has, derived ones included."""
    names: set[str] = set()
    for run in runs:
        names.update(run.metrics)
        names.update(name for name in (*DERIVED, *COUNTED) if series(run, name) is not None)
    return sorted(names)


def default_metrics(runs: list[RunData]) -> list[str]:
    present = set(available_metrics(runs))
    return [name for name in DEFAULT_METRICS if name in present]


def final_value(run: RunData, name: str) -> float:
    """The metric's value at the end of the run.

    Metrics logged only every few rounds leave NaN in other rows, so a completed run uses its
    last non-NaN value; a diverged run keeps its last row (NaN/inf), which the summary then
    excludes and counts. NaN when the run lacks the metric.
    """
    values = series(run, name)
    if values is None or values.size == 0:
        return float("nan")
    if run.status == "diverged":
        return float(values[-1])
    measured = values[~np.isnan(values)]
    return float(measured[-1]) if measured.size else float("nan")


def best_value(run: RunData, name: str) -> float:
    """The best finite value over the run (max for accuracies, min otherwise); NaN if none."""
    values = series(run, name)
    if values is None:
        return float("nan")
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan")
    return float(finite.max() if higher_is_better(name) else finite.min())


def run_value(run: RunData, name: str, which: str = "final") -> float:
    if which == "final":
        return final_value(run, name)
    if which == "best":
        return best_value(run, name)
    raise ValueError(f"which must be 'final' or 'best', got {which!r}")
