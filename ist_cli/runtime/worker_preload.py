"""Imported only inside the fork server (``runtime.forkserver``): warms what workers need.

A failure here must not take the server down (it would fail every worker start with an
obscure error): a worker forked from a cold server imports and warms what it needs itself,
and reports a real error there if there is one.
"""

from __future__ import annotations

import os

from ist_cli.runtime.forkserver import PRELOAD_ENV, run_preload

try:
    run_preload([entry for entry in os.environ.pop(PRELOAD_ENV, "").split(";") if entry])
except Exception:  # noqa: BLE001 - see the module docstring
    pass
