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
