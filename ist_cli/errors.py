"""Error types that decide how a failure is reported to the user.

A ``UserError`` is a mistake in what the user asked for: the CLI prints its one-line
message and exits with code 2, never a traceback. Everything else is a bug or a fault.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (option value, config file, data file).

    The message must be one line naming the bad value and what is allowed.
    """

    exit_code = 2


class RunFailed(Exception):
    """The run could not finish: a worker died or raised, or the user interrupted it."""

    exit_code = 1


class RunInterrupted(RunFailed):
    """Ctrl-C or SIGTERM reached the coordinator."""

    exit_code = 130


SHOWN_CHARS = 80


def shown(value: object) -> str:
    """``repr(value)`` cut to about ``SHOWN_CHARS`` characters, for quoting bad input in a message."""
    text = repr(value)
    if len(text) <= SHOWN_CHARS:
        return text
    return f"{text[:SHOWN_CHARS - 20]}...({len(text)} chars)"


def install_hint(extra: str) -> str:
    """How to install an optional part of ist, worded the same in every message and doc."""
    return f"pip install -e '.[{extra}]' in the ist checkout"
