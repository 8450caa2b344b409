"""The MLP methods (docs/algorithms.md), one module each; ``common`` holds what they share."""

from ist_cli.algorithms.mlp.common import MLPMethod
from ist_cli.algorithms.mlp.dp import DataParallel
from ist_cli.algorithms.mlp.ist import IST
from ist_cli.algorithms.mlp.ist_partitioned import ISTPartitioned
from ist_cli.algorithms.mlp.local_sgd import LocalSGD, Single
from ist_cli.settings import MLPSettings

#: algorithm name (its plan's) -> method class
METHODS: dict[str, type[MLPMethod]] = {method.plan.algorithm: method for method in (IST, DataParallel, LocalSGD, Single)}



def method_for(settings: MLPSettings) -> type[MLPMethod]:
    """The class of an MLP run's method: IST's depends on where its model lives (``--server``)."""
    if settings.algorithm == "ist" and settings.server == "partitioned":
        return ISTPartitioned
    return METHODS[settings.algorithm]


__all__ = ["IST", "ISTPartitioned", "method_for", "METHODS", "DataParallel", "LocalSGD", "MLPMethod", "Single"]
