"""Training methods, chosen by ``(model, algorithm)`` from a resolved config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ist_cli.algorithms.base import Algorithm, worker_preload
from ist_cli.settings import CNNSettings, MLPSettings, RunSettings


def method_class(settings: RunSettings) -> type[Algorithm]:
    """The class of the configured method (imports its model's methods, and so numba)."""
    if isinstance(settings, CNNSettings):
        from ist_cli.algorithms.convnet import METHODS
    elif isinstance(settings, MLPSettings):
        from ist_cli.algorithms.mlp import METHODS  # type: ignore[assignment]
    else:
        from ist_cli.algorithms.quadratic import METHODS  # type: ignore[assignment]
    return METHODS[settings.algorithm]


def build_algorithm(config: Mapping[str, Any]) -> Algorithm:
    """The coordinator half of the configured method (raises UserError on bad data/files)."""
    from ist_cli.config import (
        settings_from_config,  # the option table checks configs with ``plans``
    )

    settings = settings_from_config(config)
    return method_class(settings)(settings)  # type: ignore[call-arg]


__all__ = ["Algorithm", "build_algorithm", "method_class", "worker_preload"]
