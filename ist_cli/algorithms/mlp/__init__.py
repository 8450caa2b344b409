"""The MLP methods (docs/algorithms.md), one module each; ``common`` holds what they share."""

from ist_cli.algorithms.mlp.common import MLPMethod
from ist_cli.algorithms.mlp.dp import DataParallel
from ist_cli.algorithms.mlp.ist import IST
from ist_cli.algorithms.mlp.local_sgd import LocalSGD, Single

#: algorithm name (its plan's) -> method class
METHODS: dict[str, type[MLPMethod]] = {method.plan.algorithm: method for method in (IST, DataParallel, LocalSGD, Single)}

__all__ = ["IST", "METHODS", "DataParallel", "LocalSGD", "MLPMethod", "Single"]
