"""Training methods, chosen by ``(model, algorithm)`` from a resolved config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ist_cli.algorithms.base import Algorithm


def build_algorithm(config: Mapping[str, Any]) -> Algorithm:
    """The coordinator half of the configured method (raises UserError on bad data/files)."""
    if config["model"] == "quadratic":
        from ist_cli.algorithms.quadratic import QuadraticAlgorithm

        return QuadraticAlgorithm(config)
    from ist_cli.algorithms.mlp import MLPAlgorithm  # noqa: PLC0415

    return MLPAlgorithm(config)


__all__ = ["Algorithm", "build_algorithm"]
