"""Imported only inside the fork server (``runtime.forkserver``): warms what workers need.

A failure here must not take the server down (it would fail every worker start with an
obscure error): a worker forked from a cold server imports and warms what it needs itself,
and reports a real error there if there is one.

The server ends when the coordinator has gone (multiprocessing's own rule); it then removes
the directory of its socket, the coordinator's ``pymp-*`` temp dir. The coordinator removes
that directory itself when it exits, but not when it is SIGKILLed.
"""

from __future__ import annotations

import atexit
import os
import shutil

from ist_cli.runtime.forkserver import PRELOAD_ENV, SOCKET_DIR_ENV, run_preload

_socket_dir = os.environ.pop(SOCKET_DIR_ENV, "")
if _socket_dir:
    atexit.register(shutil.rmtree, _socket_dir, True)

try:
    run_preload([entry for entry in os.environ.pop(PRELOAD_ENV, "").split(";") if entry])
except Exception:  # noqa: BLE001 - see the module docstring
    pass
