"""The ``ist`` command: a thin layer that parses arguments and calls the library.

Every user mistake becomes one line on stderr and exit code 2; see ``ist_cli.errors``.
``ist`` (or ``ist sweep``, ...) without arguments prints its help on stdout and exits 0;
Ctrl-C prints ``ist: interrupted`` and exits 130.
"""

from __future__ import annotations

import atexit
import importlib
import os
import sys
import threading

import click

from ist_cli._version import __version__
from ist_cli.errors import RunFailed, RunInterrupted, UserError
from ist_cli.io.terminal import printable

#: command name -> "module:attribute"; a command's module (and what it imports: the runner,
#: matplotlib, scipy, dask) is imported only when that command runs or the group's help is shown
COMMANDS = {
    "run": "ist_cli.cli.run:run_command",
    "sweep": "ist_cli.cli.sweep:sweep_command",
    "study": "ist_cli.cli.study:study_command",
    "report": "ist_cli.cli.report:report_command",
    "theory": "ist_cli.cli.theory:theory_command",
    "calibrate": "ist_cli.cli.calibrate:calibrate_command",
    "ls": "ist_cli.cli.ls:ls_command",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use: ``ist run`` does not pay for
    ``ist report``'s plotting stack before its first round."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, _, attribute = COMMANDS[cmd_name].partition(":")
        return getattr(importlib.import_module(module), attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ist")
def cli() -> None:
    """A command-line lab for Independent Subnetwork Training (IST) research."""


def say(text: object = "", *, err: bool = False, nl: bool = True) -> None:
    """Print text (stdout, or stderr with ``err``) with its control characters made visible
    (``io.terminal.printable``): every plain-text line a command prints goes through here."""
    click.echo(printable(text), err=err, nl=nl)


def fail(message: str, code: int) -> None:
    """Print one line to stderr and exit; the single place the CLI reports an error."""
    first_line = " ".join(str(message).split())
    say(f"ist: error: {first_line}", err=True)
    sys.exit(code)


def interrupted(detail: str = "") -> None:
    """Ctrl-C is the user's choice, not an error: say so, exit 130."""
    say(f"ist: interrupted{': ' + detail if detail else ''}", err=True)
    sys.exit(RunInterrupted.exit_code)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        cli.main(args=argv, prog_name="ist", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.NoArgsIsHelpError as exc:  # `ist` alone: the help, readable, on stdout
        click.echo(exc.ctx.get_help())
        sys.exit(0)
    except click.exceptions.Abort:
        interrupted()
    except click.ClickException as exc:
        fail(exc.format_message(), 2)
    except UserError as exc:
        fail(str(exc), exc.exit_code)
    except RunInterrupted as exc:
        interrupted(" ".join(str(exc).split()))
    except RunFailed as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        interrupted()


_fast_exit_allowed = False


def allow_fast_exit() -> None:
    """Called by a command that has finished and leaves nothing for the interpreter's exit to
    do but tear modules down: its files closed, its workers stopped, no thread, pool or MPI
    left running (``ist run`` over shared memory)."""
    global _fast_exit_allowed
    _fast_exit_allowed = True


def entry() -> None:
    """The ``ist`` executable (and ``python -m ist_cli``): ``main``, then a fast exit if allowed.

    After ``ist run`` the interpreter's own teardown of numba, numpy and h5py takes another
    0.2-0.3 s of nothing. A command that allows it (``allow_fast_exit``) ends instead with
    the exit handlers (multiprocessing's cleanup among them), a flush of stdout and stderr,
    and ``os._exit``. Never under MPI: mpi4py finalizes MPI at the C level of the exit, and a
    rank that skips it makes the launcher kill the others. ``main`` itself returns normally:
    tests call it in-process.
    """
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    threads = any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread())
    if not _fast_exit_allowed or threads or "mpi4py.MPI" in sys.modules or not isinstance(code, int):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (``ist run --json | head``): nothing to deliver
            pass
    os._exit(code)
