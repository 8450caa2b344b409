"""Signal policy shared by ``ist run`` and ``ist sweep``: SIGTERM takes Ctrl-C's clean path,
a record being written is finished before an interrupt lands, and cleanup, once started, is
not cut short by a second signal."""

from __future__ import annotations

import signal
import sys
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


_raised: list[int] = []  # interrupts raised inside interrupts_raised(), newest last
_scopes: list[int] = []  # len(_raised) when each open interrupts_raised() block began, innermost last


@contextmanager
def interrupts_raised(on_sigterm: Callable[[], None] | None = None) -> Iterator[None]:
    """Raise KeyboardInterrupt on SIGINT and SIGTERM (main thread only); ``on_sigterm`` runs first.

    Each interrupt is also remembered, because a KeyboardInterrupt raised inside a ctypes
    callback (numba loading a kernel from its cache goes through one) is dropped, with a
    traceback on stderr: that traceback is not printed, and ``raise_if_interrupted`` at the
    next safe point raises the interrupt again.
    """
    def handler(signum: int, frame: Any) -> None:
        if signum == signal.SIGTERM and on_sigterm is not None:
            on_sigterm()
        _raised.append(signum)
        raise KeyboardInterrupt

    # an ignored SIGINT stays ignored: a job started in the background of a script opted out of Ctrl-C
    ignored = _main_thread() and signal.getsignal(signal.SIGINT) == signal.SIG_IGN

    def unraisable(info: Any) -> None:
        if not (isinstance(info.exc_value, KeyboardInterrupt) and _raised):
            previous_hook(info)

    depth, previous_hook = len(_raised), sys.unraisablehook
    sys.unraisablehook = unraisable
    _scopes.append(depth)
    try:
        with _handled_by(handler, (signal.SIGTERM,) if ignored else _INTERRUPTS):
            yield
    finally:
        _scopes.pop()
        sys.unraisablehook = previous_hook
        del _raised[depth:]


def raise_if_interrupted() -> None:
    """Raise the KeyboardInterrupt that an interrupt inside ``interrupts_raised`` should have raised."""
    if _scopes and len(_raised) > _scopes[-1]:  # one of the innermost block's own: an outer block handles its own
        raise KeyboardInterrupt


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
