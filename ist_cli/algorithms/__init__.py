"""Training methods, chosen by ``(model, algorithm)`` from a resolved config."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import import_module
from typing import Any

from ist_cli.algorithms.base import Algorithm, worker_preload
from ist_cli.algorithms.plans import PLANS
from ist_cli.errors import UserError
from ist_cli.settings import CNNSettings, MLPSettings, RunSettings


def method_class(settings: RunSettings) -> type[Algorithm]:
    """The class of the configured method (imports its model's methods, and so numba)."""
    plugin = PLANS[settings.model][settings.algorithm].method  # an installed plug-in's "module:Class"
    if plugin:
        module, name = plugin.split(":")
        try:
            return getattr(import_module(module), name)
        except (ImportError, AttributeError) as exc:  # the plug-in's own fault: one line naming it
            raise UserError(f"--algorithm: plug-in {settings.algorithm!r} names its method {plugin!r}, which "
                            f"cannot be loaded ({type(exc).__name__}: {exc}); expected an installed class") from None
    if isinstance(settings, CNNSettings):
        from ist_cli.algorithms.convnet import METHODS as CONVNET_METHODS

        return CONVNET_METHODS[settings.algorithm]
    if isinstance(settings, MLPSettings):
        from ist_cli.algorithms.mlp import method_for

        return method_for(settings)
    from ist_cli.algorithms.quadratic import METHODS
    return METHODS[settings.algorithm]


def build_algorithm(config: Mapping[str, Any]) -> Algorithm:
    """The coordinator half of the configured method (raises UserError on bad data/files)."""
    from ist_cli.config import (
        settings_from_config,  # the option table checks configs with ``plans``
    )

    settings = settings_from_config(config)
    return method_class(settings)(settings)  # type: ignore[call-arg]


__all__ = ["Algorithm", "build_algorithm", "method_class", "worker_preload"]
