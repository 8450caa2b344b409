"""Top-k compressed data-parallel SGD, an ist plug-in.

This module is the method's *plan*: what ``ist`` needs to know before anything is loaded (its
name, model and memory footprint). It must stay light: ``ist --help`` imports it. The method
itself, which imports numba, is named by ``method`` and imported only for a run.
"""

from __future__ import annotations

from typing import ClassVar

from ist_cli.algorithms.plans import DPPlan


class TopKDPPlan(DPPlan):
    algorithm = "topk-dp"  # the entry point's name
    method = "ist_topk_dp.method:TopKDP"
    allreduce = False  # a sparse gradient is not summed in a ring here: through the server only
    #: share of the gradient's entries each worker sends a round (at least one)
    fraction: ClassVar[float] = 1 / 32
