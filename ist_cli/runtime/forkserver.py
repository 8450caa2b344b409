"""Worker processes forked from a warm server: a worker starts in milliseconds.

A spawned worker is a fresh interpreter that imports numpy, numba and the method's modules
and loads the compiled kernels: about a second of CPU per worker, eight of them on two
cores. Instead, workers come from multiprocessing's *fork server*: one fresh interpreter,
started once per coordinator process with the one-thread environment, that imports and warms
what a worker needs (``preload``) and then forks every worker on request. A fork copies the
warm interpreter in about a millisecond, and the child leaves with ``os._exit``, so
stopping it costs no interpreter teardown either. The server holds no HDF5 file and runs
no thread (no BLAS pool, no numba threading layer: it never starts one), which is what makes
forking it safe; docs/architecture.md says why the coordinator itself is never forked.

``preload`` entries are ``module`` (imported) or ``module:function[:argument]`` (imported
and called, e.g. ``ist_cli.kernels.mlp:warm_up:float32``). The server reads them from
``PRELOAD_ENV`` in ``ist_cli.runtime.worker_preload``, the one module it is told to import.
Standard library only: the runner starts the server before it imports numba itself.
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from multiprocessing import forkserver, util
from multiprocessing.context import BaseContext

from ist_cli.runtime.threads import SINGLE_THREAD_ENV

PRELOAD_ENV = "IST_WORKER_PRELOAD"
SOCKET_DIR_ENV = "IST_FORKSERVER_DIR"  # the coordinator's multiprocessing temp dir, which holds the server's socket
SERVER_MODULE = "ist_cli.runtime.worker_preload"


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` updated with ``values`` inside the block (a child started there inherits them)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def start_server(preload: Sequence[str] = ()) -> BaseContext:
    """Start the fork server workers are forked from, unless it runs; returns its context.

    Returns at once: the server imports and warms ``preload`` in the background, and the
    first worker start waits for it. A server already running (an earlier run in this
    process) keeps what it preloaded; a worker then imports what it lacks itself.
    """
    context = mp.get_context("forkserver")
    context.set_forkserver_preload([SERVER_MODULE])
    # the server's socket is made in this process's temp dir, which this process removes at
    # exit; the server removes it too when it ends, which covers a SIGKILLed coordinator
    with environment({**SINGLE_THREAD_ENV, PRELOAD_ENV: ";".join(preload), SOCKET_DIR_ENV: util.get_temp_dir()}):
        forkserver.ensure_running()
    return context


def run_preload(entries: Sequence[str]) -> None:
    """Import each ``module`` and call each ``module:function[:argument]`` of ``entries``."""
    for entry in entries:
        module, _, call = entry.partition(":")
        imported = importlib.import_module(module)
        if call:
            function, _, argument = call.partition(":")
            getattr(imported, function)(*([argument] if argument else []))
