"""The report's named choices (CI methods, figure sizes), kept free of heavy imports so the
CLI can offer them in ``--help`` and shell completion without loading scipy or matplotlib."""

from __future__ import annotations

CI_METHODS = ("t", "bootstrap", "bca")
DEFAULT_CI = "t"
CI_NAMES = {"t": "Student-t", "bootstrap": "percentile bootstrap", "bca": "BCa bootstrap"}
# (width, height) in inches: a one-column figure of a two-column paper, and a full-width one
FIGSIZES = {"column": (3.4, 2.4), "page": (7.0, 3.0)}
DEFAULT_FIGSIZE = "column"
AGGREGATES = ("mean", "median", "iqm")  # what --compare compares (iqm: interquartile mean)
