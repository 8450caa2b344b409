"""Training methods, chosen by ``(model, algorithm)`` from a resolved config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ist_cli.algorithms.base import Algorithm, worker_preload
from ist_cli.settings import MLPSettings, settings_from_config


def build_algorithm(config: Mapping[str, Any]) -> Algorithm:
    """The coordinator half of the configured method (raises UserError on bad data/files)."""
    settings = settings_from_config(config)
    if isinstance(settings, MLPSettings):
        from ist_cli.algorithms.mlp import METHODS
    else:
        from ist_cli.algorithms.quadratic import METHODS  # type: ignore[assignment]
    return METHODS[settings.algorithm](settings)  # type: ignore[arg-type]


__all__ = ["Algorithm", "build_algorithm", "worker_preload"]
