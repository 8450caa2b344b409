"""Signal policy shared by ``ist run`` and ``ist sweep``: SIGTERM takes Ctrl-C's clean path,
and cleanup, once started, is not cut short by a second signal."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def sigterm_as_interrupt(on_sigterm: Callable[[], None] | None = None) -> Iterator[None]:
    """Raise KeyboardInterrupt on SIGTERM (main thread only); ``on_sigterm`` runs first."""
    if not _main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if on_sigterm is not None:
            on_sigterm()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def signals_ignored() -> Iterator[None]:
    """Ignore SIGINT and SIGTERM for the duration (main thread only)."""
    if not _main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
