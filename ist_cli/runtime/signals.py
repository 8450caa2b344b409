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


_INTERRUPTS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def _handled_by(handler: Any, signals: tuple[int, ...] = _INTERRUPTS) -> Iterator[None]:
    """Install ``handler`` for ``signals`` for the duration, then restore the old handlers.

    Only the main thread may set handlers; elsewhere the block runs with them unchanged.
    """
    if not _main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def sigterm_as_interrupt(on_sigterm: Callable[[], None] | None = None) -> Iterator[None]:
    """Raise KeyboardInterrupt on SIGTERM (main thread only); ``on_sigterm`` runs first."""
    def handler(signum: int, frame: Any) -> None:
        if on_sigterm is not None:
            on_sigterm()
        raise KeyboardInterrupt

    with _handled_by(handler, (signal.SIGTERM,)):
        yield


@contextmanager
def signals_ignored() -> Iterator[None]:
    """Ignore SIGINT and SIGTERM for the duration (main thread only)."""
    with _handled_by(signal.SIG_IGN):
        yield


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then deliver them (main thread only).

    For writes that must not stop half-way, e.g. one metrics row across several datasets:
    an interrupt between two of them would leave a row of fill values.
    """
    pending: list[int] = []
    try:
        with _handled_by(lambda signum, frame: pending.append(signum)):
            yield
    finally:
        for sig in dict.fromkeys(pending):
            signal.raise_signal(sig)
