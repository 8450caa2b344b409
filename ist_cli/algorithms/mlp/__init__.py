"""The MLP methods (docs/algorithms.md), one module each; ``common`` holds what they share."""

from ist_cli.algorithms.mlp.common import MLPMethod
from ist_cli.algorithms.mlp.dp import DataParallel
from ist_cli.algorithms.mlp.ist import IST
from ist_cli.algorithms.mlp.local_sgd import LocalSGD, Single

METHODS: dict[str, type[MLPMethod]] = {"ist": IST, "dp": DataParallel, "local-sgd": LocalSGD, "single": Single}

__all__ = ["IST", "METHODS", "DataParallel", "LocalSGD", "MLPMethod", "Single"]
