"""Signal policy shared by ``ist run`` and ``ist sweep``: SIGTERM takes Ctrl-C's clean path,
a record being written is finished before an interrupt lands, and cleanup, once started, is
not cut short by a second signal."""

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


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then deliver them (main thread only).

    For writes that must not stop half-way, e.g. one metrics row across several datasets:
    an interrupt between two of them would leave a row of fill values.
    """
    if not _main_thread():
        yield
        return
    pending: list[int] = []
    watched = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda signum, frame: pending.append(signum)) for sig in watched}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(pending):
            signal.raise_signal(sig)
