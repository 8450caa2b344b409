"""Whether numba's on-disk cache already holds a model's kernels (the first run compiles them)."""

from __future__ import annotations

import importlib

#: the kernel module of each model
MODULES = {"mlp": "ist_cli.kernels.mlp", "quadratic": "ist_cli.kernels.quadratic"}


def kernels_cached(model: str) -> bool | None:
    """True when every cached kernel of ``model`` has a fresh index in numba's cache (its
    source unchanged since it was written); False when one has none, so the run compiles;
    None when it cannot be told (a model without a kernel module here, or numba's cache
    internals differ from the ones read here)."""
    if model not in MODULES:
        return None
    # numba is imported here, not with this module: ``ist run`` imports this module before it
    # starts the fork server, which should begin warming the workers' kernels while this
    # process imports numba (150 ms), not after
    from numba.core.registry import CPUDispatcher

    module = importlib.import_module(MODULES[model])
    try:
        for value in vars(module).values():
            if isinstance(value, CPUDispatcher) and value._cache is not None \
                    and hasattr(value._cache, "_cache_file") and not value._cache._cache_file._load_index():
                return False
    except Exception:  # noqa: BLE001 - a private API of numba: unknown, never an error of the run
        return None
    return True
