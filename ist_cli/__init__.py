"""ist: a lab for Independent Subnetwork Training research.

The library behind the ``ist`` command (docs/python-api.md)::

    from ist_cli import run_experiment, read_run
    summary = run_experiment({"model": "quadratic", "workers": 4, "dim": 32}, out_dir="results")
    data = read_run(summary.file)
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from ist_cli._version import __version__
from ist_cli.runtime.mpi_launch import pin_worker_threads

pin_worker_threads()  # an MPI worker rank computes on one thread; must precede numpy's import

# name -> module; imported on first use so `ist --help` stays fast
_EXPORTS = {
    "run_experiment": "ist_cli.runner",
    "resolve_config": "ist_cli.config",
    "config_hash": "ist_cli.config",
    "OPTIONS": "ist_cli.config",
    "read_run": "ist_cli.io.runfile",
    "RunData": "ist_cli.io.runfile",
    "RunFileError": "ist_cli.io.runfile",
    "UserError": "ist_cli.errors",
    "RunFailed": "ist_cli.errors",
    "build_algorithm": "ist_cli.algorithms",
    "QuadraticProblem": "ist_cli.models.quadratic",
    "generate_problem": "ist_cli.models.quadratic",
    "ist_limit": "ist_cli.models.theory",
    "NetworkModel": "ist_cli.comm",
    "load_dataset": "ist_cli.data",
    "partition_indices": "ist_cli.data",
    "load_runs": "ist_cli.runs",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ist_cli' has no attribute {name!r}")
