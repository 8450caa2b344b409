"""What each metric of ``/metrics`` means: its unit, a one-line description and a plot label.

One home for these facts: the run-file writer stores ``units`` and ``description`` as
attributes of every metric dataset, the report labels its axes from ``label``, and
docs/schema.md lists the same table (a test checks they agree).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricInfo:
    units: str
    description: str
    label: str  # matplotlib mathtext allowed
    #: a measured time: it differs between two runs of the same config (every other metric is reproducible)
    timing: bool = False


METRICS: dict[str, MetricInfo] = {
    "round": MetricInfo("1", "communication round at which the row was logged (0 = before training)", "round"),
    "loss": MetricInfo("1", "quadratic: f(x) = (1/n) sum_i f_i(x); MLP: mean training cross-entropy [nats]", "loss"),
    "f_gap": MetricInfo("1", "quadratic: f(x) - f(x*), x* the exact minimiser", r"$f(x)-f^\star$"),
    "grad_norm_sq": MetricInfo("1", "quadratic: squared norm of the full gradient at x", r"$\|\nabla f(x)\|^2$"),
    "dist_to_opt_sq": MetricInfo("1", "quadratic: squared distance ||x - x*||^2 to the minimiser",
                                 r"$\|x-x^\star\|^2$"),
    "train_accuracy": MetricInfo("1", "MLP: fraction of (evaluated) training examples classified right",
                                 "training accuracy"),
    "test_loss": MetricInfo("1", "MLP: mean cross-entropy on the test split [nats]", "test loss"),
    "test_accuracy": MetricInfo("1", "MLP: fraction of test examples classified right", "test accuracy"),
    "bytes_up": MetricInfo("byte", "cumulative bytes sent worker -> server, summed over workers",
                           "bytes up (cumulative)"),
    "bytes_down": MetricInfo("byte", "cumulative bytes sent server -> worker, summed over workers",
                             "bytes down (cumulative)"),
    "bytes_busiest_link": MetricInfo("byte", "cumulative bytes carried by the busiest link of the alpha-beta "
                                     "network model: the server's link (ps), a worker's link in one direction "
                                     "(ring), an ordered pair of ranks (partitioned server)",
                                     "bytes on the busiest link (cumulative)"),
    "compute_time": MetricInfo("s", "cumulative modelled compute: per round the slowest worker's step plus "
                               "the coordinator's plan and aggregation, each in CPU time of the thread that ran "
                               "it (as on a dedicated core)", "compute time [s]", timing=True),
    "compute_time_wall": MetricInfo("s", "compute_time's rounds in wall time: includes waiting for a core when "
                                    "workers outnumber cores", "compute time, wall [s]", timing=True),
    "comm_time_model": MetricInfo("s", "cumulative communication time of the alpha-beta network model",
                                  "modelled communication time [s]"),
    "sim_time": MetricInfo("s", "compute_time + comm_time_model", "modelled time [s]", timing=True),
    "wall_time": MetricInfo("s", "measured elapsed time since the coordinator began setting up the run",
                            "wall time [s]", timing=True),
    # MLP training (docs/sparsity.md)
    "step": MetricInfo("1", "MLP: SGD steps one worker has taken by the row's round", "SGD steps"),
    "worker_train_loss": MetricInfo("1", "MLP: the workers' mean training loss over the round's local steps "
                                    "[nats]", "workers' training loss"),
    "val_loss": MetricInfo("1", "MLP: mean cross-entropy on the validation split [nats]", "validation loss"),
    "val_accuracy": MetricInfo("1", "MLP: fraction of the validation split classified right",
                               "validation accuracy"),
    "val_error": MetricInfo("1", "MLP: 1 - val_accuracy", "validation error"),
    "noise_scale": MetricInfo("1", "MLP: simple gradient noise scale tr(Sigma)/|G|^2, in examples "
                              "(NaN on evaluations that do not measure it)", r"noise scale $B_{simple}$"),
    "grad_norm_sq_est": MetricInfo("1", "MLP: moving-average estimate of |G|^2, the full-batch gradient's "
                                   "squared norm", r"$|G|^2$ estimate"),
    "trace_cov_est": MetricInfo("1", "MLP: moving-average estimate of tr(Sigma), the per-example gradient "
                                "covariance's trace", r"tr$\Sigma$ estimate"),
    "lipschitz": MetricInfo("1", "MLP: local Lipschitz estimate of the gradient between the last two server "
                            "models (NaN on evaluations that do not measure it)", "local Lipschitz estimate"),
    # measured by the MPI transport (docs/cluster.md)
    "comm_time_measured": MetricInfo("s", "cumulative measured time of the rounds spent in messages and "
                                     "waiting (MPI transport)", "measured communication time [s]", timing=True),
    "bytes_up_measured": MetricInfo("byte", "cumulative bytes worker -> server counted at MPI's sends and "
                                    "receives", "bytes up, measured (cumulative)"),
    "bytes_down_measured": MetricInfo("byte", "cumulative bytes server -> worker counted at MPI's sends and "
                                      "receives", "bytes down, measured (cumulative)"),
}

#: the metrics that are measured times, never the same twice (compared apart from all others)
TIMING_METRICS: tuple[str, ...] = tuple(name for name, info in METRICS.items() if info.timing)

# The range each metric's values (and so every interval of its mean) lives in; a metric not
# named here is unbounded (the quadratic's loss f(x) can be negative, a noise-scale estimate
# too). The report computes intervals of bounded metrics on a scale that keeps them inside.
PROPORTION = (0.0, 1.0)
NONNEGATIVE = (0.0, float("inf"))
UNBOUNDED = (float("-inf"), float("inf"))
RANGES: dict[str, tuple[float, float]] = {
    **dict.fromkeys(("train_accuracy", "test_accuracy", "val_accuracy", "val_error"), PROPORTION),
    **dict.fromkeys(("round", "f_gap", "grad_norm_sq", "dist_to_opt_sq", "test_loss", "val_loss",
                     "worker_train_loss", "bytes_up", "bytes_down", "bytes_busiest_link", "compute_time", "comm_time_model", "sim_time",
                     "wall_time", "step", "lipschitz", "comm_time_measured",
                     "bytes_up_measured", "bytes_down_measured", "bytes", "steps", "samples"), NONNEGATIVE),
}

# derived series the report computes from stored ones (never stored)
DERIVED_LABELS = {"bytes": "bytes communicated (cumulative, all workers)",
                  "steps": "SGD steps per worker", "samples": "training examples processed (all workers)"}


def metric_range(name: str) -> tuple[float, float]:
    """(low, high) bounds of the metric's values; (-inf, inf) when it has none."""
    return RANGES.get(name, UNBOUNDED)


def metric_label(name: str) -> str:
    """The axis label of a metric: its math label when known, else its name."""
    if name in METRICS:
        return METRICS[name].label
    return DERIVED_LABELS.get(name, name)
