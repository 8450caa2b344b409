"""Top-k compressed data-parallel SGD, an ist plug-in.

This module is the method's *plan*: what ``ist`` needs to know before anything is loaded (its
name, model and memory footprint). It must stay light: ``ist --help`` imports it. The method
itself, which imports numba, is named by ``method`` and imported only for a run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ist_cli.algorithms.plans import DPPlan, Where
from ist_cli.errors import UserError


class TopKDPPlan(DPPlan):
    algorithm = "topk-dp"  # the entry point's name
    method = "ist_topk_dp.method:TopKDP"
    allreduce = False  # a sparse gradient is not summed in a ring here: through the server only
    #: its own setting: ``--topk-fraction`` in ``ist run --help``, a float as its default
    options = {"topk_fraction": (1 / 32, "share of the gradient's entries each worker sends a round "
                                         "(at least one), in (0, 1].")}

    @classmethod
    def check(cls, config: Mapping[str, Any], given: Mapping[str, Any], where: Where) -> None:
        super().check(config, given, where)
        if not 0 < config["topk_fraction"] <= 1:
            raise UserError(f"{where('topk_fraction')}: {config['topk_fraction']} is not allowed; "
                            "expected a number in (0, 1]")
